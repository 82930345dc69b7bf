"""Read the tensors of a weights file (torch's zip serialization) as numpy arrays, without torch.

A file written by ``torch.save`` is a zip archive holding ``<root>/data.pkl`` (a pickle of
the saved object whose tensors point at storages) and one raw little-endian file per storage
(``<root>/data/<key>``). The unpickler below accepts only what a dict of plain tensors
needs: dicts, ``collections.OrderedDict`` (empty hook lists), torch's tensor rebuild
functions and storage types. Anything else, in particular any other callable, is refused,
so reading a weights file never runs code from it (like ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

# torch's typed storages and dtypes, by the names pickles refer to them with.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "int64": np.int64,
    "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
}


class PtFileError(ValueError):
    """The file is not a torch zip archive of plain tensors."""


class _Storage:
    def __init__(self, data: bytes, dtype) -> None:
        self.data, self.dtype = data, dtype


class _StorageType:
    def __init__(self, dtype) -> None:
        self.dtype = dtype  # None: untyped (the tensor names its dtype)


class _Dtype:
    def __init__(self, dtype) -> None:
        self.dtype = dtype


def _tensor(storage: _Storage, offset: int, size, stride, dtype) -> np.ndarray:
    flat = np.frombuffer(storage.data, dtype=np.dtype(dtype).newbyteorder("<"))
    if not size:
        return flat[offset:offset + 1].reshape(()).astype(dtype)
    if any(s < 0 for s in stride) or offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(flat):
        raise PtFileError("a tensor reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                           strides=tuple(s * flat.itemsize for s in stride))
    return np.array(view, dtype=dtype)  # a native-order, contiguous copy


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    if not isinstance(storage, _Storage) or storage.dtype is None:
        raise PtFileError("a tensor without a typed storage")
    return _tensor(storage, offset, size, stride, storage.dtype)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_):
    if not isinstance(storage, _Storage) or not isinstance(dtype, _Dtype):
        raise PtFileError("a tensor without a storage or dtype")
    return _tensor(storage, offset, size, stride, dtype.dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_tensor_v3
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch.storage", "UntypedStorage"):
            return _StorageType(None)
        if module == "torch" and name in _DTYPES:
            return _Dtype(_DTYPES[name])
        raise PtFileError(f"the file refers to {module}.{name}, which a weights file may not")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise PtFileError("unknown persistent object in the file")
        _, kind, key, _location, _numel = pid
        try:
            data = self.archive.read(f"{self.root}/data/{key}")
        except KeyError:
            raise PtFileError(f"storage {key!r} is missing") from None
        return _Storage(data, kind.dtype)


def load_tensors(data: bytes) -> dict[str, np.ndarray]:
    """The ``{name: array}`` dict saved in ``data`` (the bytes of a ``torch.save`` file)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PtFileError("not a torch zip archive")
        root = pickles[0].split("/")[0]
        byteorder = archive.read(f"{root}/byteorder") if f"{root}/byteorder" in archive.namelist() else b"little"
        if byteorder.strip() != b"little":
            raise PtFileError("big-endian weights files are not supported")
        obj = _Unpickler(archive.read(pickles[0]), archive, root).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as exc:
        raise PtFileError(str(exc) or type(exc).__name__) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                            for k, v in obj.items()):
        raise PtFileError("the file does not hold a dict of tensors")
    return dict(obj)

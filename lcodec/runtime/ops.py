"""Network layers on numpy arrays in channels-last layout: ``(H, W, C)``, one image at a time.

Each convolution gathers its input patches into a matrix (``im2col``) and multiplies it by
the filters in one matrix product, a few rows of output at a time so that the gathered patches
stay under :data:`CHUNK_ELEMENTS` numbers. With few input channels (the first layer: RGB)
the patches are gathered plane by plane instead, which copies long rows rather than 3-number
pieces (measured 2.4x faster on a Kodak image). A transposed convolution with stride ``s`` is
computed as ``s * s`` ordinary convolutions, one per output phase, folded into one product
(sub-pixel form), which avoids both the zero-stuffed input and a scatter; with few output
channels (the last layer: RGB) it multiplies first and scatters the ``k * k`` products of
each input instead, which moves far fewer numbers.

The functions are dtype-generic: float32 for the pixel transforms, float64 for the integer
networks of :mod:`.exact` (whose values are integers below ``2^53``, so every product and sum
is exact whatever the summation order of the BLAS library).
"""
from __future__ import annotations

import math

import numpy as np

CHUNK_ELEMENTS = 1 << 22  # numbers in one gathered patch matrix (16 MiB of float32)
PLANAR_MAX_CHANNELS = 8   # conv2d inputs with at most this many channels are gathered per plane
SCATTER_MAX_CHANNELS = 8  # transposed convolutions with at most this many outputs scatter


def _rows_per_chunk(width: int, patch: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, width * patch))


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1,
           padding: int = 0) -> np.ndarray:
    """``torch.nn.functional.conv2d`` of one ``(H, W, Cin)`` image with a torch-layout weight
    ``(Cout, Cin, k, k)``; returns ``(Ho, Wo, Cout)``."""
    cout, cin, k, _ = weight.shape
    if x.shape[2] != cin:
        raise ValueError(f"conv2d: input has {x.shape[2]} channels, the filters expect {cin}")
    if cin <= PLANAR_MAX_CHANNELS:
        return _conv2d_planar(x, weight, bias, stride, padding)
    xp = np.pad(x, ((padding, padding), (padding, padding), (0, 0))) if padding else x
    ho = (xp.shape[0] - k) // stride + 1
    wo = (xp.shape[1] - k) // stride + 1
    wmat = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(k * k * cin, cout), dtype=x.dtype)
    out = np.empty((ho, wo, cout), dtype=x.dtype)
    step = _rows_per_chunk(wo, k * k * cin)
    for r0 in range(0, ho, step):
        r1 = min(ho, r0 + step)
        cols = np.empty((r1 - r0, wo, k, k, cin), dtype=x.dtype)
        for ky in range(k):
            rows = xp[r0 * stride + ky:(r1 - 1) * stride + ky + 1:stride]
            for kx in range(k):
                cols[:, :, ky, kx] = rows[:, kx:(wo - 1) * stride + kx + 1:stride]
        np.matmul(cols.reshape(-1, k * k * cin), wmat, out=out[r0:r1].reshape(-1, cout))
    if bias is not None:
        out += bias.astype(x.dtype)
    return out


def _conv2d_planar(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int,
                   padding: int) -> np.ndarray:
    """:func:`conv2d` for inputs with few channels: patches gathered as whole output planes."""
    cout, cin, k, _ = weight.shape
    s = stride
    xc = np.pad(np.ascontiguousarray(x.transpose(2, 0, 1)), ((0, 0), (padding, padding), (padding, padding)))
    ho = (xc.shape[1] - k) // s + 1
    wo = (xc.shape[2] - k) // s + 1
    wmat = weight.reshape(cout, cin * k * k).astype(x.dtype)
    out = np.empty((ho, wo, cout), dtype=x.dtype)
    step = _rows_per_chunk(wo, cin * k * k)
    for r0 in range(0, ho, step):
        r1 = min(ho, r0 + step)
        cols = np.empty((cin, k, k, r1 - r0, wo), dtype=x.dtype)
        for c in range(cin):
            for ky in range(k):
                rows = xc[c, r0 * s + ky:(r1 - 1) * s + ky + 1:s]
                for kx in range(k):
                    cols[c, ky, kx] = rows[:, kx:(wo - 1) * s + kx + 1:s]
        out[r0:r1] = (wmat @ cols.reshape(cin * k * k, -1)).T.reshape(r1 - r0, wo, cout)
    if bias is not None:
        out += bias.astype(x.dtype)
    return out


def _phase_filters(weight: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """The filters of a transposed convolution as one ordinary convolution over input offsets
    ``d_lo..d_hi`` yielding all ``stride^2`` output phases: ``(n*n*Cin, s*s*Cout)``."""
    cin, cout, k, _ = weight.shape
    s, p = stride, padding
    d_lo = min(math.ceil((r + p - k + 1) / s) for r in range(s))
    d_hi = max((r + p) // s for r in range(s))
    n = d_hi - d_lo + 1
    big = np.zeros((n, n, cin, s, s, cout), dtype=weight.dtype)
    for dy in range(n):
        for ry in range(s):
            ky = ry + p - s * (dy + d_lo)
            if not 0 <= ky < k:
                continue
            for dx in range(n):
                for rx in range(s):
                    kx = rx + p - s * (dx + d_lo)
                    if 0 <= kx < k:
                        big[dy, dx, :, ry, rx, :] = weight[:, :, ky, kx]
    return big.reshape(n * n * cin, s * s * cout), d_lo, d_hi


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int,
                     padding: int, output_padding: int) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d`` of one ``(H, W, Cin)`` image with a torch-layout
    weight ``(Cin, Cout, k, k)``, for the exact-upsampling case (output ``stride`` times the
    input); returns ``(s*H, s*W, Cout)``."""
    cin, cout, k, _ = weight.shape
    s = stride
    if x.shape[2] != cin:
        raise ValueError(f"conv_transpose2d: input has {x.shape[2]} channels, the filters expect {cin}")
    if output_padding != s + 2 * padding - k:
        raise ValueError("conv_transpose2d: only output size = stride * input size is supported")
    if cout <= SCATTER_MAX_CHANNELS:
        return _conv_transpose2d_scatter(x, weight, bias, stride, padding)
    wmat, d_lo, d_hi = _phase_filters(weight.astype(x.dtype), s, padding)
    n = d_hi - d_lo + 1
    h, w = x.shape[:2]
    xp = np.pad(x, ((-d_lo, d_hi), (-d_lo, d_hi), (0, 0)))
    out = np.empty((h, s, w, s, cout), dtype=x.dtype)
    step = _rows_per_chunk(w, n * n * cin)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        cols = np.empty((r1 - r0, w, n, n, cin), dtype=x.dtype)
        for dy in range(n):
            for dx in range(n):
                cols[:, :, dy, dx] = xp[r0 + dy:r1 + dy, dx:dx + w]
        res = (cols.reshape(-1, n * n * cin) @ wmat).reshape(r1 - r0, w, s, s, cout)
        out[r0:r1] = res.transpose(0, 2, 1, 3, 4)
    out = out.reshape(h * s, w * s, cout)
    if bias is not None:
        out += bias.astype(x.dtype)
    return out


def _conv_transpose2d_scatter(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                              stride: int, padding: int) -> np.ndarray:
    """:func:`conv_transpose2d` for few output channels: every input's ``k * k`` products in one
    matrix product, laid out as planes, then added into place plane by plane."""
    cin, cout, k, _ = weight.shape
    s = stride
    h, w = x.shape[:2]
    wmat = np.ascontiguousarray(weight.reshape(cin, cout * k * k).T, dtype=x.dtype)
    full = np.zeros((cout, s * h + k, s * w + k), dtype=x.dtype)
    step = _rows_per_chunk(w, max(cin, k * k * cout))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        planes = (wmat @ x[r0:r1].reshape(-1, cin).T).reshape(cout, k, k, r1 - r0, w)
        for c in range(cout):
            for ky in range(k):
                for kx in range(k):
                    full[c, s * r0 + ky:s * (r1 - 1) + ky + 1:s, kx:s * (w - 1) + kx + 1:s] += planes[c, ky, kx]
    out = np.ascontiguousarray(full[:, padding:padding + s * h, padding:padding + s * w].transpose(1, 2, 0))
    if bias is not None:
        out += bias.astype(x.dtype)
    return out


def gdn(x: np.ndarray, beta: np.ndarray, gamma: np.ndarray, inverse: bool) -> np.ndarray:
    """Generalized divisive normalization of ``(H, W, C)`` with effective (already squared)
    ``beta`` ``(C,)`` and ``gamma`` ``(C, C)``: ``x / sqrt(beta + gamma @ x^2)`` per position
    (times, for the inverse)."""
    c = x.shape[2]
    flat = x.reshape(-1, c)
    norm = np.square(flat) @ gamma.T.astype(x.dtype)
    norm += beta.astype(x.dtype)
    np.sqrt(norm, out=norm)
    if inverse:
        np.multiply(flat, norm, out=norm)
    else:
        np.divide(flat, norm, out=norm)
    return norm.reshape(x.shape)


def leaky_relu(x: np.ndarray, slope: float = 0.01) -> np.ndarray:
    """``x`` where ``x >= 0``, else ``slope * x`` (``0 < slope < 1``), as ``max(x, slope x)``:
    the same values as a select (NaN stays NaN), in two passes and no mask."""
    out = x * x.dtype.type(slope)
    return np.maximum(x, out, out=out)

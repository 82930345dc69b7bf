"""Inference of trained lcodec models with numpy alone: no torch import on the CPU path.

``import torch`` takes 1.3-1.7 s on the reference machine, most of a short ``lcodec decode``.
This package runs everything a CPU encode or decode needs (the pixel transforms, the integer
entropy-parameter networks and the reading of weights files) with numpy, from the same
weights files; torch stays for training, for CUDA, and for latent refinement (``-e 2`` and
up), which needs gradients.

* :mod:`.ptfile`: reads the tensors of a weights file (torch's zip format) without torch and
  without running pickled code.
* :mod:`.ops`: convolutions, GDN and leaky ReLU on ``(C, H, W)`` arrays.
* :mod:`.exact`: the integer networks that feed the entropy coder (bit-exact everywhere).
* :mod:`.transforms`: the float pixel transforms of the hyperprior family.
"""

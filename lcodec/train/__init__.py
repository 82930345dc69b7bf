"""Training: data loading, the resumable training loop and the export of shipped weights.

Inference code never imports this package. Run it as ``python -m lcodec.train`` or
``lcodec train``.
"""

"""Evaluation tools for lcodec: metrics, BD-rate, classical codecs, RD runs, plots.

Submodules:
    metrics     PSNR and MS-SSIM (numpy only)
    bdrate      Bjontegaard delta rate / PSNR with a numpy PCHIP
    images      image-folder helpers and ``EvalError``
    classical   JPEG, WebP, AVIF (Pillow), JPEG XL (imagecodecs) and the lcodec wrapper
    runner      ``run_eval``: encode/decode an image folder with several codecs
    plots       rate-distortion plots (matplotlib, optional)
    compare     side-by-side crops of several codecs at one target bpp
    commands    click commands ``eval`` and ``compare``
    scaling     large-image memory/time and tiled-vs-whole measurements
    benchmark   ``python -m lcodec.eval.benchmark`` (what ``make bench`` runs)

Nothing in this package imports torch directly; lcodec itself is only reached
through ``lcodec.api``. Importing this package is cheap (no heavy imports).
"""

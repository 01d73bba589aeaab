"""The plugin author's toolkit: batched augmentation ops, heads, momentum encoders, losses, metrics.

The core pipeline never imports the kit; built-in plugins and third-party ones do, e.g.
``from ssl_bench.harness.kit.losses import info_nce``. Modules: ``augment`` (batched ops),
``draws`` (resumable random streams), ``heads``, ``labels``, ``losses`` (InfoNCE, NT-Xent),
``metrics``, ``momentum`` (EMA encoders and rows), ``pixels`` (denormalise, jitter normalised views).
"""

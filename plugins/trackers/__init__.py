"""Trackers: plugins that listen to the ``bench_step_logged`` event and record a pretraining's curves.

``jsonl`` is always on (``metrics.jsonl`` in each job's artifact folder); ``tensorboard`` and ``wandb``
work only when their package is installed and their switch is set (``BENCH_TENSORBOARD=1``,
``BENCH_WANDB=1``).
"""

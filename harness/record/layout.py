"""The layout of an output folder: the one place that names its files.

Layout of an output folder (``bench run --out <out>``)::

    <out>/artifacts/<pretrain key>/encoder.pt      backbone weights of a finished pretraining
    <out>/artifacts/<pretrain key>/pretrain.json   PretrainStats
    <out>/artifacts/<key>/job.json                 the fully resolved job spec (and the data it read)
    <out>/artifacts/<pretrain key>/done.json       written last: the files above are complete
    <out>/artifacts/<select key>/selection.json    a pretraining sweep's scores and winner (written last)
    <out>/artifacts/<pretrain key>/last.pt         resumable state of an unfinished pretraining
    <out>/artifacts/<pretrain key>/features/       cached features per dataset split
    <out>/artifacts/<pretrain key>/metrics.jsonl   one JSON object per logged training step (appended)
    <out>/artifacts/<pretrain key>/log.txt         the job's progress lines, with their times (appended)
    <out>/artifacts/<pretrain key>/tensorboard/    TensorBoard event files (only with BENCH_TENSORBOARD=1)
    <out>/results/<eval key>.parquet               result rows of a finished evaluation
    <out>/evaluations/<eval key>/                  files an evaluator writes (gallery PNG)
    <out>/logs/<key>.log                           traceback of a failed job
    <out>/logs/<key>.failed.json                   what failed and why (the leaderboard's failed rows; gone on success)
    <out>/leaderboard.md                           regenerated after every run

A finished pretraining is one unit: ``encoder.pt``, ``pretrain.json`` and ``job.json`` are each written
atomically, then ``done.json`` (:meth:`RunFolder.done_marker`) is; a folder without it (a kill or a full
disk in between) is not done and the job is redone. The runner writes these, ``bench run --dry-run``
reads them to mark jobs done, and the
``pretrained`` method reads another run's folder through the same class. ``bench worker`` keeps its
default job queue beside them (``<out>/optuna.journal``, see :mod:`ssl_bench.harness.scale.storage`).
"""

from __future__ import annotations

from pathlib import Path


class RunFolder:
    """The paths of one output folder; nothing here touches the disk.

    Args:
        out_dir: the output folder (``bench run --out``).
    """

    # File names inside an artifact folder (``<out>/artifacts/<key>/``). CHECKPOINT is the name
    # pipeline.train writes in the folder it is given (its own CHECKPOINT constant; a test keeps them equal).
    ENCODER = "encoder.pt"
    STATS = "pretrain.json"
    JOB = "job.json"
    DONE = "done.json"
    SELECTION = "selection.json"
    CHECKPOINT = "last.pt"
    FEATURES = "features"
    METRICS = "metrics.jsonl"
    TEXT_LOG = "log.txt"
    TENSORBOARD = "tensorboard"

    def __init__(self, out_dir: Path | str) -> None:
        self.root = Path(out_dir)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    @property
    def results_dir(self) -> Path:
        """``<out>/results``: one Parquet file per finished evaluation."""
        return self.root / "results"

    def result(self, eval_key: str) -> Path:
        """``<out>/results/<eval key>.parquet``: the rows of a finished evaluation."""
        return self.results_dir / self.result_name(eval_key)

    def has_result(self, eval_key: str) -> bool:
        """Whether the evaluation ``eval_key`` is done: its rows exist and are not an empty file."""
        path = self.result(eval_key)
        return path.is_file() and path.stat().st_size > 0

    @staticmethod
    def result_name(eval_key: str) -> str:
        """The file name of an evaluation's rows inside a results folder."""
        return f"{eval_key}.parquet"

    @property
    def artifacts_dir(self) -> Path:
        """``<out>/artifacts``: one folder per pretraining job."""
        return self.root / "artifacts"

    def artifacts(self, pretrain_key: str) -> Path:
        """``<out>/artifacts/<pretrain key>``: the folder of one pretraining job."""
        return self.artifacts_dir / pretrain_key

    def encoder(self, pretrain_key: str) -> Path:
        """The backbone weights (a state dict) of a finished pretraining."""
        return self.artifacts(pretrain_key) / self.ENCODER

    def stats(self, pretrain_key: str) -> Path:
        """The ``PretrainStats`` (JSON) saved beside the encoder."""
        return self.artifacts(pretrain_key) / self.STATS

    def job_spec(self, pretrain_key: str) -> Path:
        """The fully resolved spec (JSON) of the job whose artifact folder this is."""
        return self.artifacts(pretrain_key) / self.JOB

    def done(self, pretrain_key: str) -> Path:
        """The marker written after every other file of a finished pretraining (see :meth:`done_marker`)."""
        return self.artifacts(pretrain_key) / self.DONE

    def selection(self, select_key: str) -> Path:
        """A pretraining sweep's record (JSON): every cell's validation score and the winner's key."""
        return self.artifacts(select_key) / self.SELECTION

    def checkpoint(self, pretrain_key: str) -> Path:
        """The resumable state of an unfinished pretraining (removed when it finishes)."""
        return self.artifacts(pretrain_key) / self.CHECKPOINT

    def features(self, pretrain_key: str) -> Path:
        """The folder of an encoder's cached features, one file per dataset split."""
        return self.artifacts(pretrain_key) / self.FEATURES

    def metrics_log(self, pretrain_key: str) -> Path:
        """One JSON object per logged training step (step, epoch, loss, terms, lr, images_per_s, time)."""
        return self.artifacts(pretrain_key) / self.METRICS

    def text_log(self, pretrain_key: str) -> Path:
        """The job's human-readable lines (what it printed while it trained), each with its time."""
        return self.artifacts(pretrain_key) / self.TEXT_LOG

    def tensorboard(self, pretrain_key: str) -> Path:
        """The folder of the job's TensorBoard event files (written only when that tracker is on)."""
        return self.artifacts(pretrain_key) / self.TENSORBOARD

    @property
    def evaluations_dir(self) -> Path:
        """``<out>/evaluations``: what evaluators write beside their metrics."""
        return self.root / "evaluations"

    def evaluation(self, eval_key: str) -> Path:
        """The folder an evaluation's files go in (a gallery PNG)."""
        return self.evaluations_dir / eval_key

    @property
    def logs_dir(self) -> Path:
        """``<out>/logs``: one traceback per failed job."""
        return self.root / "logs"

    def log(self, key: str) -> Path:
        """The traceback of the failed job ``key``."""
        return self.logs_dir / f"{key}.log"

    @property
    def leaderboard(self) -> Path:
        """``<out>/leaderboard.md``, regenerated after every run."""
        return self.root / "leaderboard.md"

    def done_marker(self, pretrain_key: str, *, select: bool = False) -> Path:
        """The file whose presence marks a pretraining job finished: written last, after the whole unit.

        Args:
            pretrain_key: the job's content key.
            select: the job selects a sweep's winner (its record is ``selection.json``, written after its
                ``job.json``); otherwise ``done.json``, written after ``encoder.pt``, ``pretrain.json`` and
                ``job.json``, so an encoder without it is a half-written job, redone.
        """
        return self.selection(pretrain_key) if select else self.done(pretrain_key)

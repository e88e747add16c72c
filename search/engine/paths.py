"""The layout of a run folder (local, or staged locally for a URI storage)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rts.search.config.schema import ConfigError, SearchConfig

STUDIES_INDEX = "studies.json"
"""The index of a run of several main tasks (``rts.search.results.studies``)."""


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps everything.

    Attributes:
        root: the run folder ``<storage>/<name>`` (the local staging copy for a URI storage).
        remote: ``<storage URI>/<name>`` for a URI storage, else ``None``.
    """

    root: Path
    remote: str | None = None

    @property
    def location(self) -> str:
        """Where the results are: the URI, or the folder."""
        return self.remote or str(self.root)

    @property
    def display(self) -> str:
        """The location for messages (with the staging copy for a URI)."""
        return f"{self.remote} (local copy: {self.root})" if self.remote else str(self.root)

    @property
    def config(self) -> Path:
        """The resolved config (``config.yaml``)."""
        return self.root / "config.yaml"

    @property
    def ray(self) -> str:
        """Ray Tune's storage (``<location>/ray``, holding ``stage1``, ``stage2``): on the
        remote itself for a URI storage."""
        return f"{self.remote}/ray" if self.remote else str(self.root / "ray")

    def experiment(self, stage: int) -> str:
        """Ray Tune's experiment of ``stage`` (a folder or URI)."""
        return f"{self.ray}/stage{stage}"

    @property
    def journal(self) -> Path:
        """The Optuna study of stage 1 (journal storage)."""
        return self.root / "optuna.journal"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, ``tensorboard/stage<n>/<trial_id>/`` (``tracking``)."""
        return self.root / "tensorboard"

    @property
    def batches(self) -> Path:
        """Deterministic stage 1: one record per finished rung and batch (``stages/stage1/``)."""
        return self.root / "stages" / "stage1"

    def stage(self, stage: int, table: str) -> Path:
        """A finished stage's table: ``stages/stage<n>_<table>.parquet``."""
        return self.root / "stages" / f"stage{stage}_{table}.parquet"

    @property
    def trials(self) -> Path:
        """One row per trial of both stages."""
        return self.root / "trials.parquet"

    @property
    def history(self) -> Path:
        """One row per trial and epoch."""
        return self.root / "history.parquet"

    @property
    def attacks(self) -> Path:
        """Stage-2 attack rows."""
        return self.root / "attacks.parquet"

    @property
    def images(self) -> Path:
        """Stage-2 per-image errors of the main task (``results.tables.IMAGE_COLUMNS``)."""
        return self.root / "images.parquet"

    @property
    def candidates(self) -> Path:
        """One row per stage-2 candidate: the mean over its training seeds, with its interval."""
        return self.root / "candidates.parquet"

    @property
    def checkpoints(self) -> Path:
        """Stage-2 model checkpoints, one folder per trial."""
        return self.root / "checkpoints"

    @property
    def summary_json(self) -> Path:
        """The summary as JSON."""
        return self.root / "summary.json"

    @property
    def summary_md(self) -> Path:
        """The summary as printed."""
        return self.root / "summary.md"

    @property
    def studies(self) -> Path:
        """A run of several main tasks: the index of its studies (``studies.json``), each a
        run folder of its own below this one."""
        return self.root / STUDIES_INDEX

    @property
    def storage(self) -> str:
        """What holds the studies of a multi-main run: ``--storage`` for each of them."""
        return self.remote or str(self.root)


def run_dir(cfg: SearchConfig, storage: str | os.PathLike[str] = "runs") -> RunPaths:
    """The run folder of ``cfg`` under ``storage``: a local or shared folder, or a URI that
    pyarrow opens (then ``root`` is the local staging copy; nothing is read or written here).

    Raises:
        ConfigError: a URI with an unsupported scheme or no bucket / absolute path.
    """
    text = os.fspath(storage)
    if "://" in text:
        from rts.search.engine.storage import check_uri, staging_dir

        try:
            uri = check_uri(text)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return RunPaths(staging_dir(uri, cfg.name), remote=f"{uri}/{cfg.name}")
    return RunPaths(Path(text).expanduser().resolve() / cfg.name)

"""Where things are: the layout of a run folder (local, or staged locally for a URI storage) and
the names of its trials (Ray's trial folders, the results' trial ids ``s<stage>-<n>``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @property
    def retries(self) -> Path:
        """Trials Ray ran again after losing their node or worker: ``{trial id: count}``
        (``stages/retries.json``, written by the driver's progress callback)."""
        return self.root / "stages" / "retries.json"

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


# ------------------------------------------------------------------------------------------
# Trial names


def trial_counter(path: str | Path) -> int:
    """The creation index of a trial, from its folder name ``trial_<n>_<id>``."""
    name = Path(str(path)).name
    parts = name.split("_")
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
        return int(parts[1])
    raise ValueError(f"not a trial folder of this search: {name!r}")


def stage_trial_id(stage: int, number: int) -> str:
    """The results' id of the ``number``-th trial (1-based, creation order) of ``stage``."""
    return f"s{stage}-{number:04d}"


def trial_number(trial: Any, first: int = 1) -> int | None:
    """A Ray trial's number in its stage, as the results will give it (1-based): its batch
    member number (deterministic stage 1), else its creation order in the experiment.

    Args:
        trial: a live Ray Tune trial.
        first: the counter Ray gives an experiment's first trial: 1 under a searcher (stage 1),
            0 under a grid search (stage 2, :func:`run_fixed`).

    Returns:
        The number, or ``None`` if Ray has not numbered the trial.
    """
    member = trial.config.get("candidate", trial.config).get("member")
    if member:
        return int(member)
    counter = str(trial.experiment_tag).split("_")[0]
    return int(counter) - first + 1 if counter.isdigit() else None


def trial_dirname(trial: Any) -> str:
    """Ray ``trial_dirname_creator``: ``trial_<n>_<ray id>`` (``n`` = creation order)."""
    counter = str(trial.experiment_tag).split("_")[0]
    return f"trial_{int(counter):04d}_{trial.trial_id}" if counter.isdigit() else trial.trial_id


def trial_config(result: Any) -> dict[str, Any]:
    """The trial's config; from its ``params.json`` (local or on the remote storage) if Ray's
    result lacks it."""
    config = result.config
    if config:
        return config
    params = f"{result.path}/params.json"
    fs = getattr(result, "filesystem", None)
    if fs is None:
        return json.loads(Path(params).read_text()) if Path(params).exists() else {}
    try:
        with fs.open_input_stream(params) as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return {}


def read_retries(path: Path) -> dict[str, int]:
    """``{trial id: times retried}`` from :attr:`RunPaths.retries` (empty when none)."""
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}

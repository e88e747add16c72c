"""How a search runs, apart from what it searches: one options object for
:func:`~rts.search.results.pipeline.run_search` and
:func:`~rts.search.results.studies.run_studies`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rts.search.engine.session import Echo
from rts.search.engine.trial import TrialFn


@dataclass(frozen=True)
class RunOptions:
    """Where and how a search runs (the config says what it searches).

    Attributes:
        storage: folder that holds ``<name>/``, shared between nodes on a cluster; or a URI
            (``s3://bucket/runs``, ``file:///abs``; see :mod:`rts.search.engine.storage`).
        address: ``None`` starts Ray locally; ``"auto"`` or ``"ray://host:10001"`` joins a
            cluster. Ignored when Ray is already initialised in this process.
        num_cpus: CPUs of a local Ray (default: all of the machine's).
        trial_fn: the trial function; default ``search.trial_fn`` if set, else
            :func:`rts.search.engine.trial.run_trial` (the built-in training and attacks).
        echo: prints progress (:mod:`rts.search.engine.progress`: a redrawn status block on a
            terminal, else a line per epoch report; a line per finished trial); ``None`` is
            silent.
        callbacks: Ray Tune callbacks (``ray.tune.Callback``, e.g. a logger of your own) added
            to every experiment of both stages, after the trackers of ``cfg.tracking``. Ray
            pickles them with the experiment, so they must pickle (define them at module level).
        worker_logs: show the trials' own output and logs (Ray's ``log_to_driver``).
        dashboard: start Ray's dashboard with the local Ray and echo its URL (needs
            ``ray[default]``).
    """

    storage: str | os.PathLike[str] = "runs"
    address: str | None = None
    num_cpus: int | None = None
    trial_fn: TrialFn | None = None
    echo: Echo | None = None
    callbacks: Sequence[Any] = ()
    worker_logs: bool = False
    dashboard: bool = False

    @classmethod
    def of(cls, options: RunOptions | None = None, **fields: Any) -> RunOptions:
        """``options`` (default: the defaults) with ``fields`` replaced: so both
        ``run_search(cfg, RunOptions(...))`` and ``run_search(cfg, storage=...)`` work."""
        return dataclasses.replace(options or cls(), **fields)

    def say(self, line: str) -> None:
        """Echo ``line`` (nothing when :attr:`echo` is ``None``)."""
        if self.echo is not None:
            self.echo(line)

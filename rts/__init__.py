"""robust-task-search: which auxiliary tasks make a multi-task model hardest to attack.

The installed namespace. Its subpackages live in the repository's top-level folders and are
mapped here by ``pyproject.toml`` (``[tool.setuptools] package-dir``):

- :mod:`rts.tasks`: the 11 Taskonomy tasks, losses, synthetic data, the loader;
- :mod:`rts.models`: encoders, decoders, the multi-task model, training, checkpoints;
- :mod:`rts.attacks`: FGSM, PGD, MIM, Auto-PGD, WGD and the paper's metrics;
- :mod:`rts.search`: the two-stage Ray Tune + Optuna search, its tables, analysis and report;
- :mod:`rts.cli`: the ``rts`` command.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robust-task-search")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]

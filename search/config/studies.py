"""Several main tasks in one run: ``search.main: [s, d, D, n, E]`` is one study per main task.

Each study is an ordinary search (its own config, run folder, tables, summary), kept in a
sub-folder of the run (:func:`study_folder`); its pool is the run's pool less its own main task
(every other task when the run sets no pool).
"""

from __future__ import annotations

import dataclasses

from rts.search.config.schema import SearchConfig, main_tasks
from rts.tasks.registry import canonical_tasks, get_task


def study_folder(main: str) -> str:
    """The sub-folder (and run name) of the study of ``main``: ``main-d-depth_zbuffer``.

    The Taskonomy domain keeps the names distinct on case-insensitive file systems, where
    ``main-d`` and ``main-D`` would be one folder.
    """
    return f"main-{main}-{get_task(main).domain}"


def study_configs(cfg: SearchConfig) -> list[SearchConfig]:
    """One single-main config per main task of ``cfg``, in the order ``search.main`` lists
    them; each named :func:`study_folder`, its pool less its main task."""
    space = cfg.search
    out = []
    for main in main_tasks(space):
        pool = None  # every other task
        if space.pool is not None:
            pool = canonical_tasks(k for k in canonical_tasks(space.pool) if k != main)
        study = dataclasses.replace(space, main=main, pool=pool)
        out.append(dataclasses.replace(cfg, name=study_folder(main), search=study))
    return out

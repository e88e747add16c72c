"""A run of several main tasks (``search.main: [s, d, D, n, E]``): one study per main task.

Each study is an ordinary search (:func:`~rts.search.results.pipeline.run_search`) in a
sub-folder of the run (:func:`rts.search.config.studies.study_folder`), so ``rts analyze``,
``rts report`` and ``rts attack`` work on it as on any run. The run folder itself holds the
multi-main ``config.yaml``, ``studies.json`` (the studies, in order, and which have finished) and
a combined ``summary.md`` / ``summary.json``. Rerunning the same command resumes: finished
studies are read back (no trial runs), the interrupted one resumes as a single search does, and
the rest run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rts.search.config.schema import SearchConfig
from rts.search.config.studies import study_configs
from rts.search.engine.paths import RunPaths
from rts.search.results.options import RunOptions
from rts.search.results.pipeline import SearchOutcome, open_run, run_search, sync_up
from rts.search.results.summary import Summary, format_interval, short_label
from rts.tasks.io import atomic_write_text


@dataclass(frozen=True)
class StudiesOutcome:
    """What :func:`run_studies` returns: the run folder and each main task's outcome."""

    paths: RunPaths
    outcomes: dict[str, SearchOutcome]


def run_studies(
    cfg: SearchConfig, options: RunOptions | None = None, **fields: Any
) -> StudiesOutcome:
    """Run (or resume) one search per main task of ``cfg``, in the order listed.

    Options as :func:`~rts.search.results.pipeline.run_search` (one
    :class:`~rts.search.results.options.RunOptions`, or its ``fields``); each study's results go
    to ``<storage>/<name>/<study folder>/``.

    Raises:
        ConfigError: bad config, or the run folder holds a different search.
        SearchInterrupted: a study was interrupted; call again to resume.
    """
    opts = RunOptions.of(options, **fields)
    say = opts.say
    cfg, paths = open_run(cfg, opts)
    studies = study_configs(cfg)
    finished = finished_studies(paths)
    outcomes: dict[str, SearchOutcome] = {}
    for i, study in enumerate(studies, start=1):
        main = study.search.main
        state = "finished earlier, read back" if main in finished else "running"
        say(f"study {i}/{len(studies)}: main task {main!r} in {study.name}/ ({state})")
        _write_index(paths, studies, set(outcomes) | finished)
        outcomes[main] = run_search(study, opts, storage=paths.storage)
        _write_index(paths, studies, set(outcomes) | finished)
        sync_up(paths)
    summaries = {m: o.summary for m, o in outcomes.items()}
    folders = {s.search.main: s.name for s in studies}
    atomic_write_text(paths.summary_md, format_studies_summary(summaries, folders) + "\n")
    atomic_write_text(
        paths.summary_json,
        json.dumps({m: json.loads(s.to_json()) for m, s in summaries.items()}, indent=2),
    )
    sync_up(paths)
    return StudiesOutcome(paths, outcomes)


def finished_studies(paths: RunPaths) -> set[str]:
    """The main tasks whose study ``studies.json`` records as finished (none without it)."""
    if not paths.studies.is_file():
        return set()
    index = json.loads(paths.studies.read_text(encoding="utf-8"))
    return {s["main"] for s in index["studies"] if s["finished"]}


def _write_index(paths: RunPaths, studies: list[SearchConfig], finished: set[str]) -> None:
    """``studies.json``: every study's main task and folder, in order, and whether it finished."""
    index = {
        "studies": [
            {"main": s.search.main, "folder": s.name, "finished": s.search.main in finished}
            for s in studies
        ]
    }
    atomic_write_text(paths.studies, json.dumps(index, indent=2) + "\n")


def format_studies_summary(summaries: Mapping[str, Summary], folders: Mapping[str, str]) -> str:
    """The combined summary: one row per main task (its recommendation against its single-task
    model, with intervals and the paired test), then the trials and compute of all studies."""
    lines = [
        f"## Search summary: {len(summaries)} main tasks ({', '.join(summaries)})",
        "",
        "| main task | recommended | vuln | single-task model | difference | skill | study |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for main, s in summaries.items():
        lines.append(
            f"| {main} | {short_label(main, s.recommended_aux) if s.recommended_trial else '-'} "
            f"| {format_interval(s.vuln, s.vuln_low, s.vuln_high)} "
            f"| {format_interval(s.baseline_vuln, s.baseline_low, s.baseline_high)} "
            f"| {_verdict(s)} | {s.skill:.3g} | {folders[main]}/summary.md |"
        )
    units = sum(s.cost_units for s in summaries.values())
    exhaustive = sum(s.exhaustive_units for s in summaries.values())
    s1 = sum(s.stage1_trials for s in summaries.values())
    s2 = sum(s.stage2_trials for s in summaries.values())
    repeats = sum(s.stage1_repeats for s in summaries.values())
    first = next(iter(summaries.values()), None)
    lines += [
        "",
        "vuln: the main task's relative vulnerability"
        + (f" ({first.aggregate} case of {', '.join(first.attacks)})" if first else "")
        + ", simultaneous 95 % interval (over the attacked images with one training seed, over "
        "the seeds with several); difference: recommendation minus the single-task model, "
        "paired over the same images and seeds, with a family-wise error of 5 % over each "
        "study's stage-2 models.",
        f"Trials: stage 1 {s1}, stage 2 {s2}"
        + (f"; {repeats} repeated stage-1 proposal(s) answered, not trained" if repeats else "")
        + ".",
        f"Compute: {units:.1f} ResNet18-epoch units, "
        + (f"{units / exhaustive:.1%} of " if exhaustive else "")
        + f"exhaustive searches of every main task ({exhaustive:.1f} units).",
        "Tables 1-2 (rows: main task, columns: auxiliary task): rts report on this folder.",
    ]
    return "\n".join(lines)


def _verdict(s: Summary) -> str:
    """The recommendation against the single-task model, as the noise allows."""
    d, lo, hi = s.vs_baseline
    if not s.recommended_aux:
        return "the single-task model is the recommendation"
    if math.isnan(d):
        return "no paired test"
    word = {
        "better": "significantly more robust",
        "worse": "significantly less robust",
    }.get(s.verdict, "within the noise (tied)")
    return f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}], {word}"

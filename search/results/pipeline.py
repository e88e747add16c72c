"""The two-stage search: stage 1 → choice → stage 2 → tables and summary; resume and URIs.

Stages run on Ray Tune (:mod:`rts.search.engine.stages`); between them, the stage-1 table decides
what stage 2 trains (:mod:`rts.search.results.select`). Rerunning :func:`run_search` with the
same config resumes: a finished stage is read back from its tables, an interrupted one is
restored by Ray from its trials' checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rts.search.config.convert import diff_configs, dump_config, load_config, resolve
from rts.search.config.schema import (
    SAME_ENCODER,
    ConfigError,
    SearchConfig,
    is_multi,
    reuses_stage1,
)
from rts.search.config.validate import validate
from rts.search.engine.experiment import drop_resume_checkpoints
from rts.search.engine.paths import RunPaths, read_retries, run_dir, stage_trial_id
from rts.search.engine.plan import mode_name
from rts.search.engine.session import Echo, check_dashboard, check_ray_args, ray_session
from rts.search.engine.space import Space
from rts.search.engine.stages import answered_repeats, run_stage1, run_stage2
from rts.search.engine.trial import TrialFn
from rts.search.results.candidates import candidate_table, compare_candidates, per_candidate
from rts.search.results.collect import collect_stage
from rts.search.results.options import RunOptions
from rts.search.results.select import add_surrogate_columns, select_stage2, with_seeds
from rts.search.results.summary import Summary, format_summary, summarize
from rts.search.results.tables import (
    ATTACK_KEY,
    IMAGE_KEY,
    STAGE_TABLES,
    StageTables,
    keep_added_rows,
    read_parquet,
    write_parquet,
)
from rts.tasks.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    """What :func:`run_search` returns: where the results are, the tables and the summary."""

    paths: RunPaths
    trials: pd.DataFrame
    history: pd.DataFrame
    attacks: pd.DataFrame
    summary: Summary


def run_search(
    cfg: SearchConfig, options: RunOptions | None = None, **fields: Any
) -> SearchOutcome:
    """Run (or resume) the two-stage search of ``cfg``; returns the tables and the summary.

    Args:
        cfg: the search config (validated again here).
        options: where and how it runs (:class:`~rts.search.results.options.RunOptions`);
            ``fields`` replace single options (``run_search(cfg, storage="runs")``).

    Raises:
        ConfigError: bad config, the run folder holds a different search, or a tracker or the
            dashboard needs a package that is not installed.
        SearchInterrupted: a stage was interrupted; call again to resume.
    """
    opts = RunOptions.of(options, **fields)
    if is_multi(resolve(cfg)):
        raise ConfigError(
            "search.main lists several main tasks: run them with "
            "rts.search.results.studies.run_studies (one study each)"
        )
    say = opts.say
    cfg, paths = open_run(cfg, opts)
    trial_fn = opts.trial_fn
    if trial_fn is None:
        from rts.search.engine.trial import load_trial_fn, run_trial

        trial_fn = load_trial_fn(cfg.search.trial_fn) if cfg.search.trial_fn else run_trial
    callbacks = opts.callbacks
    space = Space.from_config(cfg)
    with _mirrored(paths):
        sync_up(paths)
        finished = all(_read_stage(paths, stage) is not None for stage in (1, 2))
        session = ray_session(
            opts.address,
            opts.num_cpus,
            worker_logs=opts.worker_logs,
            dashboard=opts.dashboard,
            echo=say,
        )
        with contextlib.nullcontext() if finished else session:
            s1 = _stage1_tables(cfg, paths, trial_fn, say, callbacks)
            sync_up(paths)
            entries = select_stage2(
                s1.trials,
                space,
                top_k=cfg.stage2.top_k,
                uniform_twins=cfg.stage2.uniform_twins,
                pareto=cfg.search.objective == "pareto",
                metric=cfg.stage1.metric,
                baseline=cfg.stage2.baseline,
                model=cfg.stage1.model,
                reuse=reuses_stage1(cfg),
            )
            train = [e.to_config() for e in entries if not e.reuse_of]
            configs = with_seeds(train, cfg.stage2.seeds, cfg.trial_seed)
            reused = reused_tables(s1, [e for e in entries if e.reuse_of], start=len(configs) + 1)
            s2 = _stage2_tables(cfg, paths, trial_fn, configs, say, callbacks, reused)
            sync_up(paths)
        outcome = _write_results(cfg, paths, space, s1, s2)
    return outcome


def open_run(cfg: SearchConfig, opts: RunOptions) -> tuple[SearchConfig, RunPaths]:
    """Resolve and validate ``cfg`` (and that its trackers and the dashboard can start),
    download its run from a URI storage, and check that the run folder holds this search
    (writing ``config.yaml``); the resolved config and the paths.
    """
    cfg = resolve(cfg)
    validate(cfg)
    check_ray_args(opts.address, opts.num_cpus)
    from rts.search.engine.tracking import check_trackers  # imports ray: not for a dry run

    check_trackers(cfg.tracking)
    if opts.dashboard and not opts.address:
        check_dashboard()
    paths = run_dir(cfg, opts.storage)
    if paths.remote:
        from rts.search.engine.storage import sync_down

        if sync_down(paths.remote, paths.root):
            opts.say(f"resuming from {paths.display}")
    prepare_run_dir(cfg, paths)
    return cfg, paths


def sync_up(paths: RunPaths) -> None:
    """Upload what changed in the staging copy (nothing for a folder storage)."""
    if paths.remote:
        from rts.search.engine.storage import sync_up as upload

        upload(paths.root, paths.remote)


@contextlib.contextmanager
def _mirrored(paths: RunPaths) -> Iterator[None]:
    """Upload the staging copy when the block stops on an error too (best effort)."""
    try:
        yield
    except BaseException:
        if paths.remote:
            try:
                sync_up(paths)
            except Exception as exc:  # keep the original error
                log.warning("could not upload %s to %s: %s", paths.root, paths.remote, exc)
        raise
    sync_up(paths)


def _write_results(
    cfg: SearchConfig, paths: RunPaths, space: Space, s1: StageTables, s2: StageTables
) -> SearchOutcome:
    """Join both stages, write the tables and the summary, and return them."""
    trials = pd.concat([s1.trials, add_surrogate_columns(s2.trials, s1.trials)], ignore_index=True)
    history = pd.concat([s1.history, s2.history], ignore_index=True)
    s2t = s2.trials
    done = s2t[(s2t["status"] == "completed") & s2t["vuln"].notna()] if len(s2t) else s2t
    comparison = compare_candidates(  # once: the summary's and candidates.parquet's intervals
        per_candidate(done),
        done,
        s2.images,
        aggregate=cfg.attack.aggregate,
        statistic=cfg.attack.statistic,
        seed=cfg.trial_seed,
        encoder=space.encoders[0],
    )
    summary = summarize(
        s1.trials,
        s2.trials,
        space,
        stage2_epochs=cfg.stage2.epochs,
        aggregate=cfg.attack.aggregate,
        attacks=cfg.attack.ensemble,
        pareto=cfg.search.objective == "pareto",
        images=s2.images,
        statistic=cfg.attack.statistic,
        seed=cfg.trial_seed,
        mode=mode_name(cfg.search.deterministic, cfg.stage1.design),
        batch=cfg.search.batch if cfg.search.deterministic else 0,
        repeats=answered_repeats(paths.journal),
        comparison=comparison,
        retries=read_retries(paths.retries),
    )
    if cfg.replay is not None:  # a replayed value has no attack and no skill behind it
        summary = dataclasses.replace(summary, replayed=True, skill_flags=())
    write_parquet(trials, paths.trials)
    write_parquet(history, paths.history)
    budget = (cfg.attack.norm, cfg.attack.eps, cfg.attack.steps)
    attacks = keep_added_rows(s2.attacks, paths.attacks, ATTACK_KEY, budget)
    write_parquet(keep_added_rows(s2.images, paths.images, IMAGE_KEY, budget), paths.images)
    write_parquet(attacks, paths.attacks)
    cands = candidate_table(done, comparison)
    write_parquet(cands, paths.candidates)
    atomic_write_text(paths.summary_json, summary.to_json())
    atomic_write_text(paths.summary_md, format_summary(summary, paths.location) + "\n")
    return SearchOutcome(paths, trials, history, attacks, summary)


def prepare_run_dir(cfg: SearchConfig, paths: RunPaths) -> None:
    """Write ``config.yaml``; if the folder holds a run already, it must be the same search."""
    if paths.config.exists():
        previous = load_config(paths.config, check=False)
        changed = diff_configs(previous, cfg)
        if changed:
            raise ConfigError(
                f"{paths.location} holds a search with another config ({'; '.join(changed[:3])}); "
                "rerun with the same config to resume, or pick another name=..."
            )
        if cfg.search.deterministic:
            _warn_numerics(previous, cfg)
    atomic_write_text(paths.config, dump_config(cfg))


NUMERIC_RESOURCES = ("cpus_per_trial", "gpus_per_trial", "device")
"""Resources that change a real trial's floating-point results (torch's thread count, the
device), although a run may resume with them changed."""


def _warn_numerics(previous: SearchConfig, cfg: SearchConfig) -> None:
    """Warn when a deterministic run resumes with resources that change the trials' numerics."""
    sections = [("resources", previous.resources, cfg.resources)]
    sections += [
        (f"stage{n}.resources", getattr(previous, f"stage{n}").resources, st.resources)
        for n, st in ((1, cfg.stage1), (2, cfg.stage2))
    ]
    changed = [
        f"{where}.{k}: {getattr(old, k)!r} -> {getattr(new, k)!r}"
        for where, old, new in sections
        for k in NUMERIC_RESOURCES
        if hasattr(new, k) and getattr(old, k) != getattr(new, k)
    ]
    if changed:
        warnings.warn(
            f"{'; '.join(changed)}: the trials still to run compute with another thread count "
            "or device, so their numbers (and a close decision) may differ in the last digits "
            "from an uninterrupted run",
            stacklevel=3,
        )


def _stage1_tables(
    cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo, callbacks: Sequence[Any]
) -> StageTables:
    """Stage 1's tables: read back when it finished before, else run (or resume) it."""
    done = _finished(paths, 1, echo)
    if done is not None:
        return done
    results = run_stage1(cfg, paths, trial_fn, echo, callbacks)
    encoder = None if cfg.stage1.encoder == SAME_ENCODER else cfg.stage1.encoder
    tables = collect_stage(
        results, 1, epochs=cfg.stage1.epochs, trained_encoder=encoder, seed=cfg.trial_seed
    )
    if reuses_stage1(cfg):  # stage 2 takes these models as they are: keep them as its own
        tables = dataclasses.replace(
            tables, trials=_save_checkpoints(results, tables.trials, paths)
        )
    _write_stage(paths, 1, tables)
    return tables


def _stage2_tables(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    entries: list[dict[str, Any]],
    echo: Echo,
    callbacks: Sequence[Any],
    reused: StageTables | None = None,
) -> StageTables:
    """Stage 2's tables: read back when it finished before, else run (or resume) it; the
    ``reused`` stage-1 trials (:func:`reused_tables`) join the trained ones."""
    done = _finished(paths, 2, echo)
    if done is not None:
        return done
    if entries:
        results = run_stage2(cfg, paths, trial_fn, entries, echo, callbacks)
        tables = collect_stage(
            results, 2, epochs=cfg.stage2.epochs, trained_encoder=None, seed=cfg.trial_seed
        )
        trials = _save_checkpoints(results, tables.trials, paths)
        tables = dataclasses.replace(tables, trials=trials)
    else:
        echo("stage 2: every candidate was trained in full in stage 1; nothing to train")
        tables = StageTables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    if reused is not None and len(reused.trials):
        tables = concat_tables(tables, reused)
    _write_stage(paths, 2, tables)
    return tables


def reused_tables(s1: StageTables, entries: Sequence[Any], *, start: int) -> StageTables:
    """Stage-2 rows of the stage-1 trials stage 2 reuses (``Stage2Entry.reuse_of``): copies
    of their rows under stage-2 ids ``s2-<start>``, ``s2-<start+1>``, … with the entry's role,
    ``reused_from`` naming the stage-1 trial, and no compute (it was charged in stage 1)."""
    ids = {e.reuse_of: (stage_trial_id(2, start + i), e.role) for i, e in enumerate(entries)}
    trials = s1.trials[s1.trials["trial_id"].isin(ids)].copy() if len(s1.trials) else s1.trials
    if not len(trials):
        return StageTables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    trials["reused_from"] = trials["trial_id"]
    trials["surrogate_trial_id"] = trials["trial_id"]
    trials["role"] = [ids[t][1] for t in trials["trial_id"]]
    trials["stage"] = 2
    trials["cost_units"] = 0.0

    def renamed(df: pd.DataFrame) -> pd.DataFrame:
        if not len(df) or "trial_id" not in df.columns:
            return df
        out = df[df["trial_id"].isin(ids)].copy()
        if "stage" in out.columns:
            out["stage"] = 2
        out["trial_id"] = [ids[t][0] for t in out["trial_id"]]
        return out

    history, attacks, images = (renamed(t) for t in (s1.history, s1.attacks, s1.images))
    trials["trial_id"] = [ids[t][0] for t in trials["trial_id"]]
    return StageTables(trials, history, attacks, images)


def concat_tables(a: StageTables, b: StageTables) -> StageTables:
    """Both stages' tables, row-wise (empty ones left out)."""

    def cat(x: pd.DataFrame, y: pd.DataFrame) -> pd.DataFrame:
        parts = [t for t in (x, y) if len(t)]
        if not parts:
            return x if len(x.columns) else y
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    return StageTables(**{n: cat(getattr(a, n), getattr(b, n)) for n in STAGE_TABLES})


def _finished(paths: RunPaths, stage: int, echo: Echo) -> StageTables | None:
    """A stage's tables when it finished in an earlier run (and says so), else ``None``."""
    done = _read_stage(paths, stage)
    if done is not None:
        echo(f"stage {stage}: finished earlier ({len(done.trials)} trials), skipped")
    return done


def _read_stage(paths: RunPaths, stage: int) -> StageTables | None:
    files = {t: paths.stage(stage, t) for t in STAGE_TABLES}
    if not all(files[t].exists() for t in ("trials", "history", "attacks")):
        return None
    # runs written before the images table existed resume without it
    return StageTables(**{t: read_parquet(f) for t, f in files.items() if f.exists()})


def _write_stage(paths: RunPaths, stage: int, tables: StageTables) -> None:
    for name in STAGE_TABLES:  # trials last: it marks the stage as finished (_read_stage)
        write_parquet(getattr(tables, name), paths.stage(stage, name))
    drop_resume_checkpoints(paths.experiment(stage))


def _save_checkpoints(results: Any, trials: pd.DataFrame, paths: RunPaths) -> pd.DataFrame:
    """Copy every completed trial's last checkpoint to ``checkpoints/<trial_id>`` (stage 2's,
    and stage 1's when stage 2 reuses them)."""
    out = trials.copy()
    by_ray_id = {Path(str(r.path)).name.split("_")[-1]: r for r in results}
    for i, row in out.iterrows():
        result = by_ray_id.get(str(row["ray_trial_id"]))
        if row["status"] != "completed" or result is None or result.checkpoint is None:
            continue
        target = paths.checkpoints / str(row["trial_id"])
        tmp = paths.checkpoints / f".{row['trial_id']}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        result.checkpoint.to_directory(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        out.loc[i, "checkpoint"] = str(target.relative_to(paths.root))
    return out

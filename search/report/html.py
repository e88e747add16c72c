"""``report.html`` (self-contained, opens offline) and ``summary.md`` for a search run.

The report puts the answer first (the most robust combination found, how it compares with the
single-task model, which surrogate to trust next time), then the Table-3-style surrogate
analysis, the Table 1/2-style heatmaps, the retrained chains and Definition 3, the Pareto front, the
surrogate-vs-target scatter plots, every combination, the compute the search spent and the
config. Images are PNGs embedded as base64 ``data:`` URIs, styles are inline: the one HTML file
is the whole report. ``summary.md`` says the same in Markdown and links the PNGs, which are also
written to ``figures/``. Every value that comes from the run is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rts.attacks.registry import format_eps
from rts.search.analysis.budgets import budget_display, budget_points, headline_attack
from rts.search.analysis.correlate import analyze, surrogate_values
from rts.search.analysis.effects import effects_display, task_effects
from rts.search.analysis.paper import (
    chain_candidate,
    definition3_chains,
    enable_chain,
    heatmap_panels,
    pair_cells,
    task_set_values,
    trim_panels,
)
from rts.search.analysis.recommend import recommendation
from rts.search.analysis.rundata import RunData, combinations, compute_summary, target_attacks
from rts.search.analysis.stats import MIN_BOOTSTRAP
from rts.search.engine.plan import mode_name, mode_text
from rts.search.report.text import fmt, fmt_p, format_analysis, text_table
from rts.tasks.io import atomic_write_bytes, atomic_write_text
from rts.tasks.registry import canonical_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FigureItem:
    """One figure of the report.

    Attributes:
        id: stable identifier (``heatmap-pgd``, ``pareto``…): the PNG's file stem and the
            ``id`` of its ``<img>`` in the HTML.
        title: heading.
        caption: what it shows and how to read it.
        png: the image.
        tables: ``(caption, table)`` pairs with the figure's numbers (shown under it).
        numbers: what the tables' rows and columns are (the HTML's fold title).
    """

    id: str
    title: str
    caption: str
    png: bytes
    tables: tuple[tuple[str, pd.DataFrame], ...] = ()
    numbers: str = "The numbers (rows: main task, columns: auxiliary task)"


def attack_title(name: str) -> str:
    """Display name of an attack; ``worst`` is the per-sample worst case over the ensemble."""
    if name == "worst":
        return "the worst case of the attacks (per image)"
    return name.upper()


def report_figures(run: RunData, table: pd.DataFrame) -> list[FigureItem]:
    """Every figure of the report, drawn from ``run`` and its analysis ``table``."""
    from rts.search.report import plots

    items: list[FigureItem] = []

    def add(fid: str, title: str, caption: str, fig: Any, tables: tuple = ()) -> None:
        """A figure, or with ``fig=None`` (no data) the caption alone: one line, no frame."""
        png = plots.figure_png(fig) if fig is not None else b""
        items.append(FigureItem(fid, title, caption, png, tables))

    cells = pair_cells(run)
    panels = heatmap_panels(cells)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in panels:
        groups.setdefault((p["encoder"], p["attack"]), []).append(p)
    several = len({enc for enc, _ in groups}) > 1
    for (enc, attack), ps in groups.items():
        fid = f"heatmap-{attack}" + (f"-{enc}" if several else "")
        add(
            fid,
            f"Relative task vulnerability under {attack_title(attack)}"
            + (f" ({enc})" if enc else ""),
            "Table 1/2 of the paper: each row is the main task attacked and evaluated, each column "
            "the auxiliary task trained with it (the diagonal is the single-task model). "
            "Single-task attack = only the main task is attacked; multi-task = both tasks. "
            "Baseline = uniform loss weights, weighted = the best non-uniform weights found. "
            "Lower (green) is more robust; '–' = not run.",
            plots.heatmap_figure(ps, title=attack_title(attack) + (f" — {enc}" if enc else "")),
            tuple(
                (f"{attack_title(attack)}, {p['mode']}-task attack, {p['weighting']}", p["table"])
                for p in trim_panels(ps)
            ),
        )
    if not groups:
        add(
            "heatmap",
            "Relative task vulnerability (main × auxiliary task)",
            "Table 1/2 of the paper needs completed stage-2 models with the main task and one "
            "auxiliary task (an exhaustive search with stage2.top_k covering the pairs, or "
            "search.max_aux: 1). None in this run.",
            None,
        )

    chains = []
    for main in sorted(set(run.trials["main"])):
        for source, prefix in (("target", ""), ("surrogate", "stage 1, ")):
            values = task_set_values(run, main, source=source)
            if len(values) < 2:
                continue
            full = max(values, key=lambda k: (len(k), -values[k]))
            least = enable_chain(values, main, full)
            if len(least) < 2:  # no nested task set was measured
                continue
            chains.append((f"{main}: {prefix}least vulnerable next", least))
            most = enable_chain(values, main, full, order="most")
            if list(most["tasks"]) != list(least["tasks"]):
                chains.append((f"{main}: {prefix}most vulnerable next", most))
    add(
        "chains",
        "Effect of adding a task on the main task's relative vulnerability (retrained models)",
        "Supplement Figures 12-13, across separately trained models: starting from the main task "
        "alone, one auxiliary task is added per step (choosing the task whose model is least, or "
        "most, vulnerable among those measured). Each point is the best measured model of that "
        "task set: solid lines the stage-2 target, dashed lines the stage-1 (surrogate) models, "
        "which an exhaustive search has for every subset. Right: the effect of adding task t on "
        "the main task's relative vulnerability (the difference between two models); red bars "
        "made it worse, hatched bars belong to the later chains of the legend. This is not the "
        "paper's marginal vulnerability (Definition 3, next figure), which attacks one model.",
        plots.chain_figure(chains) if chains else None,
    )
    add_definition3(run, add, plots)
    differences = differences_item(run, table)
    if differences is not None:
        items.append(differences)
    add_replay_correlation(run, add)
    points = budget_points(run)
    if len(points.drop_duplicates(["norm", "eps"])) > 1:  # RQ1's budgets: only once swept
        items.append(budget_item(points, plots))

    combos = combinations(run)
    add(
        "pareto",
        "Clean error vs worst-case vulnerability",
        "Every combination with a target. The Pareto front (blue) holds the combinations no "
        "other beats on both clean error and worst-case relative vulnerability; '*' marks "
        "non-uniform weights. Pick on the front by how much clean error you can trade.",
        plots.pareto_figure(combos),
    )

    values, _, _ = surrogate_values(run)
    target = combos.set_index("combo")["target"] if len(combos) else pd.Series(dtype=float)
    add(
        "scatter",
        "Surrogates vs target",
        "Table 3 of the paper: each point is a combination; x = the cheap surrogate, y = the "
        "target (worst-case main-task relative vulnerability after full training). Red: least-"
        "squares line; r: Pearson correlation (the analysis table gives Spearman, Kendall and "
        "bootstrap intervals).",
        plots.scatter_figure(values, target, table),
    )
    add(
        "history",
        "Stage-1 vulnerability per epoch",
        "The cheap attack's main-task relative vulnerability after each epoch of every trial "
        "(dotted: pruned or unfinished trials). This is what ASHA pruned on.",
        plots.history_figure(
            run.history[run.history["trial_id"].isin(run.surrogate_trials()["trial_id"])],
            run.trials,
        ),
    )
    return items


def differences_item(run: RunData, table: pd.DataFrame) -> FigureItem | None:
    """The paired differences of every stage-2 combination to the recommendation and to the
    single-task model (``None`` without per-image errors)."""
    from rts.search.report import differences, plots

    comp = recommendation(run, table).get("comparison")
    if comp is None or len(comp.table) < 2:
        return None
    return FigureItem(
        "differences",
        "Paired differences to the recommendation and to the single-task model",
        "Each combination's vulnerability minus the recommendation's (left) and minus the "
        f"single-task model's (right), paired over the same images and seeds ({comp.statistic} "
        "statistic). Lines: simultaneous 95 % intervals over all the combinations compared "
        f"({comp.error_rate()}; resting on {comp.rests_on()}). Red: significantly more "
        "vulnerable than the reference (interval above 0), green: more robust (below 0), grey: "
        "tied (the interval reaches 0). The verdicts of the recommendation are read from these "
        "intervals, not from whether two models' own intervals overlap.",
        plots.figure_png(differences.differences_figure(comp)),
        (
            (
                "paired difference [simultaneous 95 % interval] (verdict)",
                differences.differences_table(comp),
            ),
        ),
        "The numbers (rows: combination, columns: reference)",
    )


def budget_item(points: pd.DataFrame, plots: Any) -> FigureItem:
    """RQ1's figure: each stage-2 model's vulnerability against the budget, per norm."""
    budgets = ", ".join(
        f"{n} {format_eps(n, e)}" for n, e in points[["norm", "eps"]].drop_duplicates().values
    )
    return FigureItem(
        "budgets",
        "Vulnerability against the attack budget (RQ1)",
        "Each stage-2 model's main-task vulnerability (the run's statistic, under "
        f"{attack_title(headline_attack(points['attack']))}) at every budget measured: {budgets}. "
        "Bars: 95 % bootstrap intervals over the attacked images of each model on its own; "
        "overlapping bars do not make two models indistinguishable (they are attacked on the "
        "same images: the paired differences figure tells them apart). The search's own budget "
        "comes from its ranking, the others from rts attack RUN --eps ... --norm ... (no "
        "retraining).",
        plots.figure_png(plots.budget_figure(points)),
        (("main-task vulnerability [95 % interval] per budget", budget_display(points)),),
        "The numbers (rows: model, columns: budget; skill = main-task skill)",
    )


def add_definition3(run: RunData, add: Any, plots: Any) -> None:
    """The Definition-3 figure from the chains ``rts attack --chain`` wrote beside checkpoints,
    or, without any, the command that measures one on this run's largest model."""
    chains = definition3_chains(run)
    caption = (
        "Figure 1 / Definition 3 of the paper: one model, its attacked task set enabled one task "
        "per step on the same images; left the adversarial vulnerability E|ΔL| of the joint loss "
        "of each attacked set (Definition 1), right the marginal vulnerability of each added "
        "task (the increment), with 95 % bootstrap intervals over the images (grey bars: the "
        "interval holds 0, a tie). "
    )
    if chains:
        tables = tuple(
            (f"{label}: chain under each attack", t.drop(columns=["n"])) for label, t in chains
        )
        add(
            "definition3",
            "Marginal adversarial vulnerability (Definition 3)",
            caption + f"Measured with rts attack --chain ({len(chains)} chain(s)).",
            plots.definition3_figure(chains),
            tables,
        )
        return
    candidate = chain_candidate(run)
    if candidate is None:
        hint = "No stage-2 model with two or more tasks: nothing to measure it on."
    else:
        ckpt, tasks = candidate
        main = str(run.trials["main"].iloc[0])
        rest = [k for k in tasks if k != main]
        sets = [canonical_tasks(main + "".join(rest[:i])) for i in range(len(rest) + 1)]
        root = run.path if run.path is not None else Path(".")
        hint = (
            f"Not measured yet; on the model with tasks {tasks}: rts attack "
            f"{Path(root) / ckpt} --chain {','.join(sets)}"
        )
    add(
        "definition3",
        "Marginal adversarial vulnerability (Definition 3)",
        caption + hint,
        None,
    )


def add_replay_correlation(run: RunData, add: Any) -> None:
    """A replayed run (``replay:``): how its early tables rank every task set against the full
    one (:func:`rts.search.analysis.replay.replay_correlations`), as a table, no figure."""
    from rts.search.analysis.replay import correlation_line, replay_correlations

    table = replay_correlations(run.config)
    if table is None:
        return
    add(
        "replay-correlation",
        "Early vs full training on the replayed tables",
        " ".join(correlation_line(r) for r in table.reset_index().to_dict("records")),
        None,
        (("every task set with both values, per main task and early fraction", table),),
    )


# --------------------------------------------------------------------------------------------
# Text


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:+.0f}%"


def _skill_lines(rec: Mapping[str, Any]) -> list[str]:
    """What the recommendation's skill says about its vulnerability (before the headline)."""
    from rts.attacks.skill import skill_flag

    value = float(rec.get("skill", math.nan))
    flag = skill_flag(rec["tasks"], rec["main"], value)
    if math.isnan(value):
        return [f"This run did not record the models' skill: {flag}."]
    if flag:
        return [f"**Not trusted**: {flag}."]
    base = float(rec.get("baseline_skill", math.nan))
    return [
        f"Main-task skill (1 − error / error of the training mean): {fmt(value)}"
        + (f", single-task baseline {fmt(base)}." if not math.isnan(base) else ".")
    ]


def _interval(rec: Mapping[str, Any], key: str) -> str:
    """`` [low, high]`` of ``rec[key]`` when the run gave one, else ``""``."""
    lo, hi = rec.get(f"{key}_low", math.nan), rec.get(f"{key}_high", math.nan)
    return "" if math.isnan(lo) or math.isnan(hi) else f" [{fmt(lo)}, {fmt(hi)}]"


def _verdict_line(rec: Mapping[str, Any]) -> str:
    """The recommendation against the single-task model by their paired difference: better,
    tied or worse, with the error rate it controls and what it rests on."""
    d, lo, hi = rec["diff"]
    base = f"{fmt(rec['baseline'])}{_interval(rec, 'baseline')}"
    comp = rec["comparison"]
    paired = (
        f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}], paired over the same images and seeds "
        f"(simultaneous 95 % intervals, {comp.error_rate()}, resting on {comp.rests_on()})"
    )
    if rec["verdict"] == "better":
        return (
            f"The single-task model {rec['main']} has {base}: the auxiliary tasks change "
            f"its vulnerability by **{_pct(rec['change'])}** (difference {paired})."
        )
    if rec["verdict"] == "worse":
        return (
            f"**Worse**: the single-task model {rec['main']} has {base} and is significantly "
            f"more robust (difference {paired}, above 0): keep the single-task model."
        )
    return (
        f"**Not significant**: the single-task model {rec['main']} has {base}; the "
        f"difference, {paired}, includes 0: treat them as tied."
    )


def recommendation_lines(rec: Mapping[str, Any], table: pd.DataFrame) -> list[str]:
    """The recommendation as plain sentences (Markdown emphasis, escaped later for HTML)."""
    lines: list[str] = []
    if rec["status"] == "empty":
        return ["The run has no combination with results yet: nothing to recommend."]
    if rec["status"] == "surrogate":
        lines.append(
            f"No stage-2 model was fully trained and attacked, so there is no target. By the "
            f"surrogate **{rec['by']}** the most promising combination is **{rec['tasks']}** "
            f"(main task {rec['main']}, weights {rec['weights']}, encoder "
            f"{rec['encoder'] or '?'}; {rec['by']} = {fmt(rec['value'])}). Confirm it with a "
            "stage-2 run before relying on it."
        )
        return lines
    aux = rec["tasks"].replace(rec["main"], "")
    what = (
        f"the main task **{rec['main']}** alone"
        if not aux
        else (f"main task **{rec['main']}** with auxiliary task(s) **{aux}**")
    )
    target = f"**{fmt(rec['target'])}**" + _interval(rec, "target")
    lines.append(
        f"Most robust combination found: **{rec['tasks']}**, {what}, weights {rec['weights']}, "
        f"encoder {rec['encoder'] or '?'}: worst-case relative vulnerability "
        f"{target} ({rec['target_attack']}), clean error "
        f"{fmt(rec['clean_error'])}; best of {rec['n']} combination(s) with a target."
    )
    notes = _skill_lines(rec)
    lines[-1:] = notes + lines[-1:] if notes[0].startswith("**Not") else lines[-1:] + notes
    if not aux:
        lines.append(
            "No auxiliary task set that was tried made the main task more robust than training "
            "it alone."
        )
    elif not math.isnan(rec["baseline"]) and "diff" in rec:
        lines.append(_verdict_line(rec))
    elif not math.isnan(rec["baseline"]):
        lines.append(
            f"The single-task model {rec['main']} has {fmt(rec['baseline'])}: the auxiliary "
            f"tasks change its vulnerability by **{_pct(rec['change'])}** (no per-image errors "
            "in this run to test it against the noise)."
        )
    else:
        lines.append("The single-task model was not attacked in stage 2, so no baseline.")
    if rec.get("seeds", 1) == 1 and "target_low" in rec:
        lines.append(
            "One training seed: these intervals cover the attacked images, not the training "
            "seed, which can reorder candidates by more than that (docs/studies.md: one seed's "
            "ranking of the toy's subsets agrees with another's at Spearman 0.55); confirm "
            "with `stage2.seeds: K`."
        )
    elif rec.get("seeds", 1) > 1:
        lines.append(
            f"Values are means over {rec['seeds']} training seeds; intervals and the paired "
            "tests rest on the seeds (each seed's statistic is one observation)."
        )
    s = rec.get("surrogate")
    if s:
        saved = ""
        if not pd.isna(s["compute_saved"]):
            how = f"(surrogate for all {s['n']}, target for its top {s['k']})"
            if s["compute_saved"] >= 0:
                saved = (
                    f", and would have saved {100 * s['compute_saved']:.0f}% of the compute {how}"
                )
            else:
                saved = (
                    f"; with only {s['n']} targets it would not have saved compute {how}: "
                    f"{-100 * s['compute_saved']:.0f}% more than the target for all"
                )
        hit = (
            "picked the best combination"
            if s["top1_hit"]
            else (f"picked the combination ranked {s['pick_rank']} (regret {fmt(s['regret'])})")
        )
        lines.append(
            f"Best surrogate for the next search: **{s['surrogate']}** ({s['description']}): "
            f"Spearman {fmt(s['spearman_rho'], 2)}, Pearson {fmt(s['pearson_r'], 2)} "
            f"(p = {fmt_p(s['pearson_p'])}, n = {s['n']}); ranking by it {hit}{saved}."
        )
    n = rec["n"]
    if n < MIN_BOOTSTRAP:
        lines.append(
            f"Only {n} combination(s) have a target: too few for bootstrap intervals; treat "
            "the correlations and p-values as anecdotal. More stage-2 trials "
            "(stage2.top_k) give the analysis more points."
        )
    elif n < 8:
        lines.append(
            f"Only {n} combination(s) have a target: treat correlations and p-values as "
            "indicative (the bootstrap intervals show how wide the uncertainty is)."
        )
    return lines


def md_to_html(text: str) -> str:
    """Escape ``text`` and turn ``**bold**`` into ``<strong>`` (the only markup we emit)."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def html_table(
    frame: pd.DataFrame, formats: Mapping[str, Any] | None = None, index: bool = False
) -> str:
    """An escaped HTML table; ``formats`` maps a column to a callable formatting its cells."""
    formats = formats or {}
    f = frame.reset_index() if index else frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in f.columns)
    body = []
    for row in f.itertuples(index=False):
        cells = []
        for col, v in zip(f.columns, row, strict=True):
            text = formats[col](v) if col in formats else _cell(v)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt(v)
    return str(v)


def _with_ci(value: float, lo: float, hi: float) -> str:
    """``0.93 [0.81, 0.99]``, or just the value when there is no interval."""
    if pd.isna(lo) or pd.isna(hi):
        return fmt(value, 2)
    return f"{fmt(value, 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def common_note(table: pd.DataFrame) -> str:
    """The note every row shares (shown once above the table), or ``""``."""
    notes = set(table["note"]) if len(table) else set()
    return notes.pop() if len(notes) == 1 else ""


def analysis_display(table: pd.DataFrame) -> pd.DataFrame:
    """The analysis columns shown in the report (full precision stays in analysis.csv)."""
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "surrogate": r["surrogate"],
                "what": r["description"],
                "n": r["n"],
                "Pearson r [CI]": _with_ci(r["pearson_r"], r["pearson_lo"], r["pearson_hi"]),
                "p": fmt_p(r["pearson_p"]),
                "Spearman ρ": fmt(r["spearman_rho"], 2),
                "Kendall τ": fmt(r["kendall_tau"], 2),
                "picked best": "-"
                if pd.isna(r["top1_hit"])
                else ("yes" if r["top1_hit"] else f"no (rank {int(r['pick_rank'])})"),
                f"top-{int(r['k']) if r['k'] else 'k'} overlap": fmt(r["topk_overlap"], 2),
                "regret": fmt(r["regret"]),
                "compute saved": "-"
                if pd.isna(r["compute_saved"])
                else f"{100 * r['compute_saved']:.0f}%",
                "note": r["note"],
            }
        )
    out = pd.DataFrame(rows)
    if common_note(table):
        out = out.drop(columns="note")  # shown once above the table
    return out


def combos_display(combos: pd.DataFrame) -> pd.DataFrame:
    """Every combination, best target first, in display form."""
    if combos.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "tasks": combos["tasks"],
            "main": combos["main"],
            "weights": combos["weights"],
            "encoder": combos["encoder"],
            "stage-2 role": combos["role"],
            "target": [fmt(v) for v in combos["target"]],
            "worst attack": combos["target_attack"],
            "clean error": [fmt(v) for v in combos["clean_error"]],
            "stage-2 trials": combos["n_target"],
            "stage-2 s/trial": [fmt(v, 1) for v in combos["target_cost"]],
        }
    )


def compute_display(run: RunData) -> pd.DataFrame:
    """Compute spent per stage, display form."""
    c = compute_summary(run)
    if c.empty:
        return c
    c = c.copy()
    c["epochs"] = [fmt(v, 0) for v in c["epochs"]]
    c["wall_s"] = [fmt(v, 1) for v in c["wall_s"]]
    return c.rename(columns={"wall_s": "trial seconds (sum)"})


def _config_yaml(config: Mapping[str, Any]) -> str:
    import yaml

    if not config:
        return "(no config.yaml in the run)"
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1.5em;color:#222;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin-bottom:.1em}h2{margin-top:1.8em;border-bottom:2px solid #ddd;
padding-bottom:.2em;font-size:1.25em}.meta{color:#666;font-size:.9em}
.rec{background:#eef7ee;border-left:6px solid #2e8b57;padding:.8em 1.2em;border-radius:4px}
.rec p{margin:.4em 0}.warn{background:#fff6e0;border-left:6px solid #e0a800;padding:.5em 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left}
th{background:#f0f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1.2em 0;padding:.6em;border:1px solid #e3e3e3;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:.88em;color:#444;margin-top:.4em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.82em;border-radius:4px}
nav a{margin-right:1em}
"""


def search_mode(run: RunData) -> str:
    """How the run's stage 1 ran, from its config (runs from before the option: asynchronous)."""
    space = run.config.get("search", {}) if isinstance(run.config, Mapping) else {}
    space = space if isinstance(space, Mapping) else {}
    deterministic = bool(space.get("deterministic", False))
    stage1 = run.config.get("stage1", {}) if isinstance(run.config, Mapping) else {}
    design = stage1.get("design", "sampler") if isinstance(stage1, Mapping) else "sampler"
    mode = mode_name(deterministic, str(design))
    return mode_text(mode, space.get("batch") if deterministic else None)


def render_html(
    run: RunData,
    table: pd.DataFrame,
    figures: Sequence[FigureItem],
    *,
    title: str | None = None,
) -> str:
    """The whole report as one HTML document (inline CSS, base64 PNGs)."""
    rec = recommendation(run, table)
    name = title or (run.path.name if run.path else "search")
    combos = combinations(run)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    attacks = ", ".join(target_attacks(run)) or "none"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rts report: {html.escape(name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Robust task search: {html.escape(name)}</h1>",
        f'<p class="meta">{len(run.trials)} trials, {len(combos)} combinations, target attacks: '
        f"{html.escape(attacks)}; generated {now} by <code>rts report</code>.</p>",
        f'<p class="meta">Search mode: {html.escape(search_mode(run))}.</p>',
        '<nav><a href="#recommendation">Recommendation</a><a href="#surrogates">Surrogates</a>'
        '<a href="#figures">Figures</a><a href="#combinations">Combinations</a>'
        '<a href="#compute">Compute</a><a href="#config">Config</a></nav>',
        '<h2 id="recommendation">Recommendation</h2><div class="rec">',
        *(f"<p>{md_to_html(line)}</p>" for line in recommendation_lines(rec, table)),
        "</div>",
    ]
    if run.notes:
        parts.append('<p class="warn">' + "<br>".join(html.escape(n) for n in run.notes) + "</p>")
    effects = task_effects(run)
    if effects is not None:
        parts += [
            '<h2 id="effects">Task effects</h2>',
            f"<p>{html.escape(_effects_caption(effects))}</p>",
            html_table(effects_display(effects, _main(run))),
        ]
    target_desc = table["target"].iloc[0] if len(table) else "no target"
    ci_text = (
        f"{100 * table['confidence'].iloc[0]:g}% bootstrap intervals "
        f"({int(table['n_resamples'].iloc[0])} resamples"
        if len(table)
        else "bootstrap intervals ("
    )
    parts += [
        '<h2 id="surrogates">Surrogates vs target (Table 3)</h2>',
        f"<p>Target: {html.escape(str(target_desc))}. Surrogates are read from "
        f"{html.escape(str(table['surrogate_source'].iloc[0]) if len(table) else '-')}. "
        f"Correlations and p-values from <code>scipy.stats</code>; {ci_text}, paired, "
        "percentile). <em>Picked best</em>: ranking by the surrogate puts the "
        "combination with the lowest target first; <em>regret</em>: target of the surrogate's "
        "pick minus the best target; <em>compute saved</em>: computing the surrogate for every "
        "combination and the target only for its top k, versus the target for all.</p>",
        f'<p class="warn">Note: {html.escape(common_note(table))}.</p>'
        if common_note(table)
        else "",
        html_table(analysis_display(table)) if len(table) else "<p>No surrogate.</p>",
    ]
    parts.append('<h2 id="figures">Figures</h2>')
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        img = (  # no data: the caption is the one line, no empty frame
            f'<img id="{html.escape(fig.id)}" alt="{html.escape(fig.title)}" '
            f'src="data:image/png;base64,{data}">'
            if fig.png
            else ""
        )
        parts.append(
            f'<figure id="figure-{html.escape(fig.id)}"><h3>{html.escape(fig.title)}</h3>'
            f"{img}<figcaption>{html.escape(fig.caption)}</figcaption>"
        )
        if fig.tables:
            parts.append(f"<details><summary>{html.escape(fig.numbers)}</summary>")
            for caption, t in fig.tables:
                parts.append(f"<p>{html.escape(caption)}</p>")
                parts.append(html_table(t.map(fmt), index=True))
            parts.append("</details>")
        parts.append("</figure>")
    parts += [
        '<h2 id="combinations">All combinations</h2>',
        html_table(combos_display(combos)) if len(combos) else "<p>None.</p>",
        '<h2 id="compute">Compute spent</h2>',
        html_table(compute_display(run)),
        f"<p>Total trial time: {fmt(run.trials['wall_s'].sum(min_count=1), 1)} s over "
        f"{fmt(run.trials['epochs'].sum(min_count=1), 0)} epochs.</p>",
        '<h2 id="config">Config</h2>',
        f"<pre>{html.escape(_config_yaml(run.config))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _main(run: RunData) -> str:
    mains = run.trials["main"].dropna().unique()
    return str(mains[0]) if len(mains) else "?"


def _effects_caption(model: Any) -> str:
    return (
        f"What each auxiliary task adds to the main task's stage-1 vulnerability, from a "
        f"{model.kind} model of {model.n} trials (ridge, 95 % bootstrap intervals over trials); "
        f"its cross-validated error {model.cv_rmse:.3g} against a spread of {model.spread:.3g} "
        "between trials says how far to trust it."
    )


def _effects_markdown(run: RunData) -> list[str]:
    effects = task_effects(run)
    if effects is None:
        return []
    table = text_table(effects_display(effects, _main(run)))
    return ["", "## Task effects", "", _effects_caption(effects), "", table]


def render_markdown(run: RunData, table: pd.DataFrame, figures: Sequence[FigureItem]) -> str:
    """``summary.md``: the recommendation, the tables, links to ``figures/*.png``, the config."""
    rec = recommendation(run, table)
    name = run.path.name if run.path else "search"
    combos = combinations(run)
    out = [f"# Robust task search: {name}", "", f"Search mode: {search_mode(run)}.", ""]
    out += ["## Recommendation", ""]
    out += [f"- {line}" for line in recommendation_lines(rec, table)]
    out += _effects_markdown(run)
    out += ["", "## Surrogates vs target (Table 3)", ""]
    out += [format_analysis(table) if len(table) else "No surrogate.", ""]
    if common_note(table):
        out += [f"Note: {common_note(table)}.", ""]
    elif len(table):
        out += [f"- {r.surrogate}: {r.note}" for r in table.itertuples() if r.note] + [""]
    out += ["## Figures", ""]
    for f in figures:
        image = [f"![{f.title}](figures/{f.id}.png)", ""] if f.png else []
        out += [f"### {f.title}", "", *image, f.caption, ""]
        for caption, t in f.tables:
            out += [f"{caption}:", "", text_table(t.map(fmt).reset_index()), ""]
    out += ["", "## All combinations", ""]
    out += [text_table(combos_display(combos)) if len(combos) else "None.", ""]
    out += ["## Compute spent", "", text_table(compute_display(run)), ""]
    out += ["## Config", "", "```yaml", _config_yaml(run.config).rstrip(), "```", ""]
    return "\n".join(out)


def write_report(
    run: RunData,
    out: str | Path,
    *,
    table: pd.DataFrame | None = None,
    k: int | None = None,
    n_resamples: int = 999,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``report.html``, ``summary.md`` and ``figures/*.png`` under ``out`` (atomically).

    Returns the written paths: ``{"html", "markdown", "figures"}``.
    """
    out = Path(out)
    if table is None:
        table = analyze(run, k=k, n_resamples=n_resamples, seed=seed)
    figures = report_figures(run, table)
    for fig in figures:
        if fig.png:
            atomic_write_bytes(out / "figures" / f"{fig.id}.png", fig.png)
    html_path = atomic_write_text(out / "report.html", render_html(run, table, figures))
    md_path = atomic_write_text(out / "summary.md", render_markdown(run, table, figures))
    log.info("report written to %s", html_path)
    return {"html": html_path, "markdown": md_path, "figures": out / "figures"}

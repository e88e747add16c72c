"""Paper-style figures of a search, drawn with matplotlib's object API (Agg, no pyplot).

Figures are built as :class:`matplotlib.figure.Figure` objects attached to an Agg canvas, so
nothing here touches pyplot's global state or the user's interactive backend, and everything
renders headless. :func:`figure_png` turns a figure into PNG bytes (the report embeds them).

The figures follow the paper: Table 1/2 heatmaps (main × auxiliary task), Figure 1 / Definition 3
(one model's adversarial vulnerability as its attacked tasks are enabled one by one, with the
marginal vulnerability of each added task), the retrained chains of supplement Figures 12-13 (the
effect of adding a task on the main task's relative vulnerability, across models), the Pareto
front of clean error vs worst-case vulnerability, and surrogate-vs-target scatter plots (Table 3).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from rts.search.analysis.budgets import headline_attack, norm_order
from rts.search.analysis.correlate import MIN_POINTS
from rts.search.analysis.paper import trim_panels
from rts.search.analysis.rundata import FINISHED
from rts.search.report.text import fmt
from rts.search.results.pareto import pareto_front

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
YLABELS = {
    "vuln": "main-task rel. vulnerability (cheap attack)",
    "grad_bound": "first-order bound ε·E‖∂x L'‖_q",
    "grad_bound_all": "first-order bound of the training loss",
    "clean_error": "main-task clean error",
}
HATCHES = ("", "//", "..", "xx", "\\\\")
LOW_GOOD_CMAP = "RdYlGn_r"
"""Colormap of vulnerability values: green = low = robust, red = high = vulnerable."""


def new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _empty(fig: Figure, message: str) -> Figure:
    """Write ``message`` in the middle of an otherwise empty figure."""
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def heatmap_figure(panels: Sequence[dict[str, Any]], *, title: str = "") -> Figure:
    """Table 1/2-style heatmaps: one annotated panel per (mode, weighting) of one attack.

    ``panels`` are entries of :func:`search.analysis.heatmap_panels` (each with ``table``: rows
    = main task, columns = auxiliary task, NaN = not run). Cells show the main task's relative
    vulnerability; lower (green) is more robust. Colours share one scale across panels.
    """
    n = len(panels)
    if n == 0:
        return _empty(
            new_figure(6, 1.6),
            "no two-task model (main + one auxiliary task) completed stage 2:\n"
            "the main × auxiliary table needs them",
        )
    panels = trim_panels(panels)
    size = max(p["table"].shape[1] for p in panels)
    w = max(3.2, 0.62 * size + 1.6)
    h = max(2.6, 0.5 * max(p["table"].shape[0] for p in panels) + 1.5)
    fig = new_figure(w * n + 0.8, h)
    values = np.concatenate([p["table"].to_numpy(dtype=float).ravel() for p in panels])
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    axes = fig.subplots(1, n, squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, panels, strict=True):
        table: pd.DataFrame = panel["table"]
        data = np.ma.masked_invalid(table.to_numpy(dtype=float))
        image = ax.imshow(data, cmap=LOW_GOOD_CMAP, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_facecolor("#e6e6e6")
        ax.set_xticks(range(table.shape[1]), list(table.columns))
        ax.set_yticks(range(table.shape[0]), list(table.index))
        ax.set_xlabel("auxiliary task")
        ax.set_ylabel("main task (attacked, evaluated)")
        ax.set_title(f"{panel['mode']}-task attack, {panel['weighting']}", fontsize=10)
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
            label = "–" if math.isnan(v) else f"{v:.3g}"
            color = (
                "#444444"
                if math.isnan(v)
                else ("white" if abs(v - mid) > 0.3 * (vmax - vmin) else "black")
            )
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color=color)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, label="relative vulnerability")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def chain_figure(chains: Sequence[tuple[str, pd.DataFrame]], *, title: str = "") -> Figure:
    """Chains across separately trained models and the effect of each added task.

    ``chains`` are ``(label, frame)`` pairs from :func:`search.analysis.enable_chain`. Left: the
    main task's value after each step (x labels ``d``, ``+s``, ``+n``…); right: the effect of
    adding task t on the main task's relative vulnerability, one bar group per chain (red = the
    task made it worse). Not Definition 3: see :func:`definition3_figure`.
    """
    chains = [
        (f"({i + 1}) {label}", c)
        for i, (label, c) in enumerate((label, c) for label, c in chains if len(c) > 0)
    ]
    if not chains:
        return _empty(new_figure(6, 2), "no nested task sets with targets: no chain to draw")
    longest = max(len(c) for _, c in chains)
    bars = sum(len(c) for _, c in chains)
    fig = new_figure(max(8.5, 0.9 * longest + 0.35 * bars + 5), 3.6)
    ax_curve, ax_bar = fig.subplots(1, 2, width_ratios=[1.15, 1])
    markers = "osD^v"
    for idx, (label, c) in enumerate(chains):
        names = [c["tasks"].iloc[0]] + [f"+{a}" for a in c["added"].iloc[1:]]
        ax_curve.plot(
            range(len(c)),
            c["value"],
            marker=markers[idx % len(markers)],
            linestyle="--" if "stage 1" in label else "-",
            label=label,
        )
        for x, (name, y) in enumerate(zip(names, c["value"], strict=True)):
            ax_curve.annotate(
                name,
                (x, y),
                textcoords="offset points",
                xytext=(0, 6 if idx % 2 == 0 else -13),
                ha="center",
                fontsize=8,
                color=ax_curve.lines[-1].get_color(),
            )
    ax_curve.margins(y=0.15)
    ax_curve.set_xticks(range(longest), [str(i + 1) for i in range(longest)])
    ax_curve.set_xlabel("number of tasks in the model")
    ax_curve.set_ylabel("worst-case main-task rel. vulnerability")
    ax_curve.legend(fontsize=8)
    ax_curve.grid(alpha=0.3)
    start = 0
    ticks, labels = [], []
    for idx, (label, c) in enumerate(chains):
        m = c.iloc[1:]
        x = np.arange(len(m)) + start
        colors = ["#c0392b" if v > 0 else "#27ae60" for v in m["effect"]]
        ax_bar.bar(
            x,
            m["effect"],
            width=0.8,
            color=colors,
            edgecolor="black",
            linewidth=0.5,
            hatch=HATCHES[idx % len(HATCHES)],
        )
        ticks += list(x)
        labels += [f"+{a}" for a in m["added"]]
        if len(chains) > 1 and len(m):
            ax_bar.annotate(
                label.split(" ")[0],
                (float(x.mean()), 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        start += len(m) + 1
    ax_bar.set_xticks(ticks, labels)
    ax_bar.axhline(0, color="black", linewidth=0.8)
    ax_bar.set_xlabel("added task, in chain order")
    ax_bar.set_ylabel("effect on main-task rel. vulnerability")
    ax_bar.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def definition3_attack(table: pd.DataFrame) -> str:
    """The attack a Definition-3 figure draws: ``worst`` when present, else the first one."""
    return headline_attack(table["attack"])


def definition3_figure(chains: Sequence[tuple[str, pd.DataFrame]]) -> Figure:
    """Figure 1 / Definition 3: one model's adversarial vulnerability as its attacked set grows.

    ``chains`` are ``(label, table)`` pairs of :func:`rts.attacks.chain.chain_table` tables.
    Left: ``AV(T_N)`` per step with its bootstrap interval; right: the marginal vulnerability
    ``Δ_N`` of each added task with its interval (red: the task made the model more vulnerable,
    grey: the interval holds 0, a tie). One attack per chain (:func:`definition3_attack`).
    """
    chains = [(label, c) for label, c in chains if len(c) > 0]
    if not chains:
        return _empty(new_figure(6, 2), "no Definition-3 chain measured (rts attack --chain)")
    longest = max(c["step"].max() + 1 for _, c in chains)
    fig = new_figure(max(8.5, 1.6 * longest + 4), 3.6)
    ax_curve, ax_bar = fig.subplots(1, 2, width_ratios=[1.15, 1])
    start, ticks, names = 0, [], []
    for idx, (label, table) in enumerate(chains):
        attack = definition3_attack(table)
        c = table[table["attack"] == attack].sort_values("step")
        av = c["adv_vulnerability"].to_numpy(float)
        err = np.abs(np.stack([c["adv_vulnerability_lo"], c["adv_vulnerability_hi"]]) - av)
        steps = [c["tasks"].iloc[0]] + [f"+{a}" for a in c["added"].iloc[1:]]
        marker = "os^"[idx % 3]
        line = ax_curve.errorbar(
            range(len(c)), av, yerr=err, marker=marker, capsize=3, label=f"{label} ({attack})"
        )
        for x, (name, y) in enumerate(zip(steps, av, strict=True)):
            ax_curve.annotate(
                name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8,
                color=line.lines[0].get_color(),
            )  # fmt: skip
        m = c.iloc[1:]
        x = np.arange(len(m)) + start
        tie = (m["marginal_lo"] <= 0) & (m["marginal_hi"] >= 0)
        colors = [
            "#95a5a6" if t else ("#c0392b" if v > 0 else "#27ae60")
            for t, v in zip(tie, m["marginal"], strict=True)
        ]
        merr = np.abs(np.stack([m["marginal_lo"], m["marginal_hi"]]) - m["marginal"].to_numpy())
        ax_bar.bar(
            x, m["marginal"], yerr=merr, capsize=3, width=0.8, color=colors, edgecolor="black",
            linewidth=0.5, hatch=HATCHES[idx % len(HATCHES)],
        )  # fmt: skip
        ticks += list(x)
        names += [f"+{a}" for a in m["added"]]
        start += len(m) + 1
    ax_curve.set_xticks(range(longest), [str(i + 1) for i in range(longest)])
    ax_curve.set_xlabel("attacked tasks (one model)")
    ax_curve.set_ylabel("adversarial vulnerability E|ΔL|")
    ax_curve.legend(fontsize=8)
    ax_curve.grid(alpha=0.3)
    ax_bar.set_xticks(ticks, names)
    ax_bar.axhline(0, color="black", linewidth=0.8)
    ax_bar.set_xlabel("added task, in chain order")
    ax_bar.set_ylabel("marginal vulnerability (Definition 3)")
    ax_bar.grid(axis="y", alpha=0.3)
    return fig


def budget_figure(points: pd.DataFrame) -> Figure:
    """RQ1's budget figure: each model's main-task vulnerability against eps, one panel per
    norm, with its 95 % bootstrap interval as bars (:func:`search.analysis.budgets.budget_points`).
    """
    if len(points) == 0:
        return _empty(new_figure(6, 2), "no budget measured (rts attack RUN --eps ...)")
    norms = sorted(set(points["norm"]), key=norm_order)
    fig = new_figure(4.6 * len(norms) + 1.6, 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(norms), squeeze=False)[0])
    for ax, norm in zip(axes, norms, strict=True):
        scale = 255.0 if norm == "linf" else 1.0
        for idx, (model, g) in enumerate(points[points["norm"] == norm].groupby("model")):
            g = g.sort_values("eps")
            low = (g["vuln"] - g["vuln_low"]).fillna(0).clip(lower=0)
            high = (g["vuln_high"] - g["vuln"]).fillna(0).clip(lower=0)
            ax.errorbar(
                g["eps"] * scale, g["vuln"], yerr=np.stack([low, high]), marker="os^Dv"[idx % 5],
                capsize=3, label=model,
            )  # fmt: skip
        ax.set_xlabel("eps (/255)" if norm == "linf" else "eps (L2, [0,1] pixels)")
        ax.set_ylabel("main-task vulnerability")
        ax.set_title("L-inf" if norm == "linf" else norm.upper())
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def pareto_figure(combos: pd.DataFrame, *, title: str = "") -> Figure:
    """Clean error vs worst-case vulnerability of every targeted combination, front highlighted.

    ``combos`` is :func:`search.analysis.combinations`; both axes are minimised; front points are
    labelled with their task set (and ``*`` when the weights are not uniform).
    """
    c = combos.dropna(subset=["target", "clean_error"]) if len(combos) else combos
    if len(c) == 0:
        return _empty(new_figure(6, 2), "no combination has both a clean error and a target")
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    front = pareto_front(c["clean_error"], c["target"])
    ax.scatter(
        c.loc[~front, "clean_error"],
        c.loc[~front, "target"],
        color="#7f8c8d",
        label="dominated",
        zorder=2,
    )
    f = c[front].sort_values("clean_error")
    ax.step(f["clean_error"], f["target"], where="post", color="#2980b9", zorder=1)
    ax.scatter(
        f["clean_error"],
        f["target"],
        color="#2980b9",
        s=60,
        edgecolor="black",
        label="Pareto front",
        zorder=3,
    )
    for _, r in c[~front].iterrows():
        star = "" if r["weights"] == "uniform" else "*"
        ax.annotate(
            f"{r['tasks']}{star}",
            (r["clean_error"], r["target"]),
            textcoords="offset points",
            xytext=(5, 3),
            fontsize=7,
            color="#7f8c8d",
        )
    for _, r in f.iterrows():
        star = "" if r["weights"] == "uniform" else "*"
        ax.annotate(
            f"{r['tasks']}{star}",
            (r["clean_error"], r["target"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    ax.set_xlabel("main-task clean error (lower is better)")
    ax.set_ylabel("worst-case main-task rel. vulnerability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def scatter_figure(values: pd.DataFrame, target: pd.Series, table: pd.DataFrame) -> Figure:
    """Surrogate vs target, one panel per surrogate, with the least-squares line and Pearson r.

    ``values``: combinations × surrogates (:func:`search.analysis.surrogate_values`);
    ``target``: the target per combination; ``table``: :func:`search.analysis.analyze` (for r
    and p, so the figure shows exactly the numbers of the table).
    """
    names = [s for s in table["surrogate"] if s in values.columns]
    if not names:
        return _empty(new_figure(6, 2), "no surrogate was recorded")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(3.6 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    stats = table.set_index("surrogate")
    for ax, name in zip(axes, names, strict=False):
        df = pd.DataFrame({"x": values[name], "y": target.reindex(values.index)}).dropna()
        ax.scatter(df["x"], df["y"], color="#2c3e50", s=22, zorder=2)
        r = stats.loc[name, "pearson_r"]
        enough = len(df) >= MIN_POINTS and np.ptp(df["x"].to_numpy()) > 0 and not pd.isna(r)
        if enough:  # a line and an r only with enough points to mean something
            slope, intercept = np.polyfit(df["x"], df["y"], 1)
            xs = np.linspace(df["x"].min(), df["x"].max(), 20)
            ax.plot(xs, slope * xs + intercept, color="#e74c3c", zorder=1)
            lo, hi = stats.loc[name, "pearson_lo"], stats.loc[name, "pearson_hi"]
            title = f"{name}: r = {fmt(r, 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}], n = {len(df)}"
        else:
            title = f"{name}: n = {len(df)}, no correlation below {MIN_POINTS} points"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("target", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.axis("off")
    return fig


def history_figure(history: pd.DataFrame, trials: pd.DataFrame, column: str = "vuln") -> Figure:
    """Per-epoch curves of ``column`` for the stage-1 trials (pruned trials end early)."""
    h = history.dropna(subset=[column]) if column in history.columns else history.iloc[0:0]
    if h.empty:
        return _empty(new_figure(6, 2), f"no per-epoch {column!r} was recorded")
    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    info = trials.set_index("trial_id")
    for tid, g in h.groupby("trial_id", sort=True):
        row = info.loc[tid]
        style = "-" if row["status"] == FINISHED else ":"
        star = "" if row["weights"] == "uniform" else "*"
        ax.plot(
            g["epoch"],
            g[column],
            style,
            marker=".",
            linewidth=1,
            label=f"{row['tasks']}{star} ({tid})",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(YLABELS.get(column, column))
    ax.grid(alpha=0.3)
    if h["trial_id"].nunique() <= 12:
        ax.legend(fontsize=7, ncol=2)
    return fig

"""Plain-text formatting of numbers and tables for the terminal and Markdown."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def format_analysis(table: pd.DataFrame) -> str:
    """The analysis as a compact Table-3-style text table (for the terminal and Markdown)."""
    cols = {
        "surrogate": "surrogate",
        "n": "n",
        "pearson_r": "Pearson r",
        "pearson_p": "p",
        "pearson_ci": "CI",
        "spearman_rho": "Spearman",
        "kendall_tau": "Kendall",
        "top1_hit": "top-1",
        "topk_overlap": "top-k",
        "regret": "regret",
        "compute_saved": "saved",
    }
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "surrogate": r["surrogate"],
                "n": str(r["n"]),
                "pearson_r": fmt(r["pearson_r"], 2),
                "pearson_p": fmt_p(r["pearson_p"]),
                "pearson_ci": "-"
                if pd.isna(r["pearson_lo"])
                else f"[{fmt(r['pearson_lo'], 2)}, {fmt(r['pearson_hi'], 2)}]",
                "spearman_rho": fmt(r["spearman_rho"], 2),
                "kendall_tau": fmt(r["kendall_tau"], 2),
                "top1_hit": "-" if pd.isna(r["top1_hit"]) else ("yes" if r["top1_hit"] else "no"),
                "topk_overlap": "-"
                if pd.isna(r["topk_overlap"])
                else f"{r['topk_overlap']:.2f} (k={r['k']})",
                "regret": fmt(r["regret"], 3),
                "compute_saved": "-"
                if pd.isna(r["compute_saved"])
                else f"{100 * r['compute_saved']:.0f}%",
            }
        )
    frame = pd.DataFrame(rows, columns=list(cols)).rename(columns=cols)
    return text_table(frame)


def text_table(frame: pd.DataFrame) -> str:
    """A plain aligned text table (Markdown pipe syntax, readable in a terminal)."""
    cols = [str(c) for c in frame.columns]
    cells = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    out = [line(cols) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) + " |" for r in cells]
    return "\n".join(out)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for tables: fixed digits, ``-`` for NaN/None, scientific when tiny or huge."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e6):
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}f}"


def fmt_p(p: Any) -> str:
    """A p-value: 3 significant digits, scientific below 1e-3."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    if p == 0:
        return "0"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"

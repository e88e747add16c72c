"""Definition 3 for real: the marginal adversarial vulnerability along a chain of attacked sets.

The paper (RQ2, Figure 1) trains one model with all the tasks, then "successively enable[s] the
tasks": it attacks the task sets ``T_1 ⊂ T_2 ⊂ …`` (each adding one task) of that **same model**
on the same images and reports each set's adversarial vulnerability (Definition 1,
``AV(T_N) = E_x|L_{T_N}(x + δ) - L_{T_N}(x)|`` with the joint loss of the attacked set, uniform
weights ``1/N``); the marginal vulnerability of the added task is the increment
``Δ_N = AV(T_{N+1}) - AV(T_N)`` (Definition 3). Both come with percentile bootstrap intervals
over the images; the increments are paired (the same images in both sets), and they telescope:
``Σ Δ_N = AV(T_last) - AV(T_first)``.

This is not the difference between separately trained models (the report's "effect of adding
task t"): the model is fixed, only the attacked set grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from rts.attacks.evaluate import PerImage, attack_per_image, parse_task_sets
from rts.attacks.metrics import check_chain, image_bootstrap, mean_interval
from rts.attacks.registry import DEFAULT_ATTACKS

CHAIN_FILE = "chain.parquet"
"""What ``rts attack CHECKPOINT --chain ...`` writes beside the checkpoint (the report reads it)."""

CHAIN_COLUMNS = (
    "attack",
    "step",
    "tasks",
    "added",
    "n",
    "adv_vulnerability",
    "adv_vulnerability_lo",
    "adv_vulnerability_hi",
    "marginal",
    "marginal_lo",
    "marginal_hi",
)
"""Columns of :func:`chain_table`: one row per attack and chain step (step 0: the first set;
its ``added`` is its own tasks and its ``marginal`` NaN)."""


def parse_chain(chain: str | Sequence[str], model_tasks: str | None) -> list[tuple[str, ...]]:
    """``"d,dD,dDn"`` → ``[("d",), ("d", "D"), ("d", "D", "n")]``, each set adding one task,
    all of them tasks of the model."""
    sets = parse_task_sets(chain, model_tasks)
    check_chain(sets)
    if model_tasks is not None:
        missing = [k for k in sets[-1] if k not in model_tasks]
        if missing:
            raise ValueError(
                f"chain task(s) {', '.join(missing)} not in the model; the model has tasks "
                f"{', '.join(model_tasks)} (Definition 3 attacks one model with every chain task)"
            )
    return sets


def chain_table(
    per_image: PerImage,
    sets: Sequence[Sequence[str]],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
):
    """The chain's adversarial vulnerabilities and increments, with bootstrap intervals.

    Args:
        per_image: :func:`attacks.evaluate.attack_per_image` run on the chain's sets.
        sets: the chain, in order (each set adds one task).
        confidence, n_resamples, seed: of the percentile bootstrap over images.

    Returns:
        A DataFrame with :data:`CHAIN_COLUMNS`, per attack (``worst`` included when present).
    """
    import pandas as pd

    sets = [tuple(s) for s in sets]
    added = check_chain(sets)
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    attacks = list(dict.fromkeys(name for name, _ in per_image.results))
    rows: list[dict[str, Any]] = []
    for name in attacks:
        av = [per_image.results[name, s].av.double().numpy() for s in sets]
        for step, s in enumerate(sets):
            mean, lo, hi = mean_interval(av[step], **kw)
            row = {
                "attack": name,
                "step": step,
                "tasks": "".join(s),
                "added": "".join(s) if step == 0 else added[step - 1],
                "n": len(av[step]),
                "adv_vulnerability": mean,
                "adv_vulnerability_lo": lo,
                "adv_vulnerability_hi": hi,
                "marginal": np.nan,
                "marginal_lo": np.nan,
                "marginal_hi": np.nan,
            }
            if step > 0:
                diff = av[step] - av[step - 1]
                m_lo, m_hi = image_bootstrap(lambda idx, d=diff: d[idx].mean(-1), len(diff), **kw)
                row.update(marginal=float(diff.mean()), marginal_lo=m_lo, marginal_hi=m_hi)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(CHAIN_COLUMNS))


def vulnerability_chain(
    model: nn.Module,
    data: Any,
    chain: str | Sequence[str],
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    **kwargs: Any,
):
    """Attack ``model`` on every set of ``chain`` (same images) and tabulate Definition 3.

    ``kwargs`` are :func:`attacks.evaluate.attack_per_image`'s (``eps``, ``steps`` required;
    ``weights`` default uniform ``1/N`` per set, as the paper); the bootstrap uses ``seed``.
    """
    tasks = getattr(model, "tasks", None)
    sets = parse_chain(chain, tasks if isinstance(tasks, str) else None)
    per_image = attack_per_image(model, data, attacks, sets, **kwargs)
    return chain_table(
        per_image,
        sets,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=kwargs.get("seed", 0),
    )


def format_chain(table) -> str:
    """The chain as text, one block per attack: each set's ``AV [lo, hi]`` and each added
    task's increment ``Δ [lo, hi]``; an increment whose interval holds 0 is called a tie."""
    lines = []
    for name, rows in table.groupby("attack", sort=False):
        rows = rows.sort_values("step")
        n = int(rows["n"].iloc[0])
        lines.append(
            f"Definition 3 under {name}: one model, the attacked set grows one task per step "
            f"(adversarial vulnerability E|dL|, 95% bootstrap interval over {n} images)"
        )
        for r in rows.itertuples():
            av = f"{r.adv_vulnerability:.4g} [{r.adv_vulnerability_lo:.4g}, "
            av += f"{r.adv_vulnerability_hi:.4g}]"
            if r.step == 0:
                lines.append(f"  {r.tasks:<8} {av}")
                continue
            tie = r.marginal_lo <= 0 <= r.marginal_hi
            lines.append(
                f"  {r.tasks:<8} {av}   +{r.added}: marginal {r.marginal:+.4g} "
                f"[{r.marginal_lo:+.4g}, {r.marginal_hi:+.4g}]"
                + ("  (tie: within noise)" if tie else "")
            )
    return "\n".join(lines)

"""Ensemble robustness evaluation: several attacks × attacked task sets × evaluated tasks.

:func:`evaluate_robustness` runs every attack on every batch for every attacked task set and
returns a tidy table (one row per attack, attacked set and evaluated task). Its ``"worst"`` rows
are the per-sample worst case over the attacks: for each example and evaluated task, the largest
adversarial error (and loss) any attack reached. The worst case over PGD, APGD and WGD is the
project's default robustness number: an example counts as robust on a task only if it withstands
every attack (as AutoAttack's ensemble).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rts.attacks.metrics import relative_vulnerability, task_error_values, undefined_count
from rts.attacks.objective import attack_mode, forward, resolve_tasks, resolve_weights
from rts.attacks.registry import DEFAULT_ATTACKS, get_attack, parse_attacks, run_attack
from rts.tasks.losses import PerSampleLoss, task_losses, weighted_sum

log = logging.getLogger(__name__)

WORST = "worst"
"""The ``attack`` value of the per-sample worst-case rows."""

COLUMNS = (
    "attack",
    "attacked",
    "task",
    "norm",
    "eps",
    "steps",
    "n",
    "clean_loss",
    "adv_loss",
    "clean_error",
    "adv_error",
    "relative_vulnerability",
    "n_undefined",
    "adv_vulnerability",
    "adv_vulnerability_model",
)
"""Columns of the table :func:`evaluate_robustness` returns."""

IMAGE_COLUMNS = ("attack", "attacked", "task", "image", "clean_error", "adv_error")
"""Columns of the per-example table ``evaluate_robustness(..., per_image=True)`` adds."""

Batch = tuple[Tensor, Mapping[str, Tensor]]


@dataclass(frozen=True)
class AttackResult:
    """One attack on one attacked set: per-image values ``[N]`` (CPU).

    Attributes:
        loss: adversarial loss per evaluated task.
        error: adversarial error ``f_i`` per evaluated task.
        av: ``|L_T'(x+δ) - L_T'(x)|`` over the attacked set (attack weights; Definition 1).
        av_model: the same over every evaluated task, uniform (the published code's variant).
    """

    loss: dict[str, Tensor]
    error: dict[str, Tensor]
    av: Tensor
    av_model: Tensor


@dataclass(frozen=True)
class PerImage:
    """Every image's values of an ensemble evaluation (:func:`attack_per_image`).

    Attributes:
        sets: the attacked task sets, in the order given.
        eval_keys: the evaluated tasks.
        clean: ``{task: (clean loss [N], clean error [N])}``.
        results: ``{(attack, attacked set): AttackResult}``, ``"worst"`` included.
        norm, eps, steps: the budget every attack had.
    """

    sets: tuple[tuple[str, ...], ...]
    eval_keys: tuple[str, ...]
    clean: dict[str, tuple[Tensor, Tensor]]
    results: dict[tuple[str, tuple[str, ...]], AttackResult]
    norm: str
    eps: float
    steps: int


def iter_batches(data: Any, batch_size: int) -> Iterator[Batch]:
    """Batches ``(x, y)`` of a ``TaskDataset`` (``.batches``), an ``(x, y)`` pair or an iterable."""
    if hasattr(data, "batches"):
        yield from data.batches(batch_size)
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            yield x[sl], {k: v[sl] for k, v in y.items()}
    elif isinstance(data, Iterable):
        yield from data
    else:
        raise ValueError(
            f"data must be a TaskDataset, an (x, y) pair or an iterable of batches, "
            f"got {type(data).__name__}"
        )


def _model_tasks(model: nn.Module) -> str | None:
    tasks = getattr(model, "tasks", None)
    return tasks if isinstance(tasks, str) else None


def _check_in_model(keys: Sequence[str], model_tasks: str | None, what: str) -> None:
    if model_tasks is None:
        return
    missing = [k for k in keys if k not in model_tasks]
    if missing:
        raise ValueError(
            f"{what} task(s) {', '.join(missing)} not in the model; the model has tasks "
            f"{', '.join(model_tasks)}"
        )


def parse_task_sets(
    tasks: str | Sequence[str] | None,
    model_tasks: str | None,
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> list[tuple[str, ...]]:
    """Attacked task sets: ``"s,sd"`` → ``[("s",), ("s", "d")]``; None → all the model's tasks.

    A string is split on commas into sets (``"sd"`` alone is one set of two tasks); a sequence
    holds one set per item. Keys outside the registry need a loss in ``losses``.
    """
    if tasks is None:
        if model_tasks is None:
            raise ValueError("tasks=None needs a model with a .tasks attribute; name the tasks")
        return [tuple(model_tasks)]
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    sets = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        keys = resolve_tasks(item.strip() if isinstance(item, str) else item, losses)
        if keys in sets:
            raise ValueError(f"attacked task set {''.join(keys)!r} appears twice in {tasks!r}")
        sets.append(keys)
    if not sets:
        raise ValueError(f"no attacked task set in tasks={tasks!r}")
    return sets


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _mean(values: Tensor) -> float:
    return float(values.double().mean()) if values.numel() else float("nan")


def attack_per_image(
    model: nn.Module,
    data: Any,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    tasks: str | Sequence[str] | None = None,
    *,
    eps: float,
    steps: int,
    norm: str = "linf",
    step_size: float | None = None,
    weights: Mapping[str, float] | None = None,
    eval_tasks: str | Sequence[str] | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    seed: int = 0,
    losses: Mapping[str, PerSampleLoss] | None = None,
    errors: Mapping[str, PerSampleLoss] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PerImage:
    """Attack ``data`` with each attack on each attacked task set; every image's values.

    The one loop behind :func:`evaluate_robustness` (means per attack, set and task) and
    :func:`attacks.chain.vulnerability_chain` (bootstrap intervals over images need each
    image's value).

    Args:
        model: a multi-task model (``dict`` outputs); batches are moved to its device.
        data: a ``TaskDataset``, an ``(x, y)`` pair, or an iterable of ``(x, y)`` batches.
        attacks: registry names (``"pgd,apgd,wgd"`` or a sequence).
        tasks: attacked task sets (``"s,sd"`` = the set ``s`` and the set ``sd``); default all the
            model's tasks as one set.
        eps, steps, norm: the attack budget (shared by all attacks).
        step_size: the step of the fixed-step attacks (pgd, mim, wgd: default ``eps/4``);
            APGD keeps its own schedule (``2·eps``, halved) whatever it is.
        weights: attack weights per task (restricted to each attacked set; default uniform).
        eval_tasks: tasks whose errors are reported; default the model's tasks (or the union of
            the attacked sets when the model has no ``.tasks``).
        batch_size: examples per attack call.
        limit: evaluate only the first ``limit`` examples.
        seed: seeds the one generator every random start draws from (deterministic results).
        losses: per-task loss overrides for the attacks and the loss columns.
        errors: per-task error overrides ``f_i`` (needed for keys outside the registry).
        attack_options: each attack's own options, winning over the shared ones
            (``{"wgd": {"gamma": -1}, "apgd": {"step_size": 0.01}}``; see
            :attr:`attacks.AttackSpec.options`).
        progress: called with the number of examples finished after each batch.

    Returns:
        A :class:`PerImage` whose ``"worst"`` entries are the per-image maximum over the
        attacks (present when more than one attack runs).
    """
    names = parse_attacks(attacks)
    model_tasks = _model_tasks(model)
    sets = parse_task_sets(tasks, model_tasks, losses)
    for keys in sets:
        _check_in_model(keys, model_tasks, "attacked")
    if eval_tasks is None:
        if model_tasks is not None:
            eval_keys = tuple(model_tasks)
        else:
            eval_keys = tuple(dict.fromkeys(k for keys in sets for k in keys))
    else:
        eval_keys = resolve_tasks(eval_tasks, {**(errors or {}), **(losses or {})})
        _check_in_model(eval_keys, model_tasks, "evaluated")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 or None, got {limit!r}")
    set_weights = {
        keys: resolve_weights(keys, {k: w for k, w in weights.items() if k in keys})
        if weights is not None
        else None
        for keys in sets
    }
    unknown = [a for a in attack_options or {} if a not in names]
    if unknown:
        raise ValueError(f"attack_options for attack(s) not run: {', '.join(unknown)}")
    options = {a: get_attack(a).parse_options(o) for a, o in (attack_options or {}).items()}

    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    clean_err: dict[str, list[Tensor]] = defaultdict(list)
    clean_loss: dict[str, list[Tensor]] = defaultdict(list)
    adv_err: dict[tuple, list[Tensor]] = defaultdict(list)
    adv_loss: dict[tuple, list[Tensor]] = defaultdict(list)
    av: dict[tuple, list[Tensor]] = defaultdict(list)
    av_model: dict[tuple, list[Tensor]] = defaultdict(list)
    seen = 0
    for x, y in iter_batches(data, batch_size):
        if limit is not None and seen >= limit:
            break
        if limit is not None and seen + x.shape[0] > limit:
            keep = limit - seen
            x, y = x[:keep], {k: v[:keep] for k, v in y.items()}
        x = x.to(device)
        y = {k: v.to(device) for k, v in y.items()}
        loss_c, err_c = _measure(model, x, y, eval_keys, losses, errors)
        for k in eval_keys:
            clean_loss[k].append(loss_c[k].cpu())
            clean_err[k].append(err_c[k].cpu())
        for keys in sets:
            joint_c = weighted_sum({k: loss_c[k] for k in keys}, set_weights[keys])
            joint_c_model = weighted_sum(loss_c)
            for name in names:
                x_adv = run_attack(
                    name,
                    model,
                    x,
                    y,
                    keys,
                    set_weights[keys],
                    eps=eps,
                    steps=steps,
                    step_size=step_size,
                    norm=norm,
                    generator=generator,
                    losses=losses,
                    options=options.get(name),
                )
                loss_a, err_a = _measure(model, x_adv, y, eval_keys, losses, errors)
                for k in eval_keys:
                    adv_loss[name, keys, k].append(loss_a[k].cpu())
                    adv_err[name, keys, k].append(err_a[k].cpu())
                joint_a = weighted_sum({k: loss_a[k] for k in keys}, set_weights[keys])
                av[name, keys].append((joint_a - joint_c).abs().cpu())
                av_model[name, keys].append((weighted_sum(loss_a) - joint_c_model).abs().cpu())
        seen += x.shape[0]
        if progress is not None:
            progress(x.shape[0])
    if seen == 0:
        raise ValueError("no example to evaluate: the data is empty")
    log.info("evaluated %d examples, %d attacks, %d task sets", seen, len(names), len(sets))

    clean = {k: (torch.cat(clean_loss[k]), torch.cat(clean_err[k])) for k in eval_keys}
    results: dict[tuple[str, tuple[str, ...]], AttackResult] = {}
    for keys in sets:
        per_attack = {
            name: AttackResult(
                {k: torch.cat(adv_loss[name, keys, k]) for k in eval_keys},
                {k: torch.cat(adv_err[name, keys, k]) for k in eval_keys},
                torch.cat(av[name, keys]),
                torch.cat(av_model[name, keys]),
            )
            for name in names
        }
        if len(names) > 1:
            stacked = list(per_attack.values())
            per_attack[WORST] = AttackResult(
                {k: torch.stack([r.loss[k] for r in stacked]).amax(0) for k in eval_keys},
                {k: torch.stack([r.error[k] for r in stacked]).amax(0) for k in eval_keys},
                torch.stack([r.av for r in stacked]).amax(0),
                torch.stack([r.av_model for r in stacked]).amax(0),
            )
        results.update({(name, keys): r for name, r in per_attack.items()})
    return PerImage(tuple(sets), eval_keys, clean, results, norm, float(eps), int(steps))


def evaluate_robustness(
    model: nn.Module,
    data: Any,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    tasks: str | Sequence[str] | None = None,
    *,
    per_image: bool = False,
    **kwargs: Any,
):
    """Attack ``data`` with each attack on each attacked task set; a tidy DataFrame of results.

    Arguments are those of :func:`attack_per_image` (``eps`` and ``steps`` required);
    ``per_image=True`` also returns every example's errors (:func:`images_table`), for
    intervals and paired tests.

    Returns:
        A DataFrame with :data:`COLUMNS`. Errors, losses and relative vulnerabilities are means
        over the examples (relative vulnerability over those with a non-zero clean error;
        ``n_undefined`` counts the others). ``adv_vulnerability`` is ``E|ΔL_T'|`` over the
        attacked set (attack weights), ``adv_vulnerability_model`` over all evaluated tasks
        (uniform, the published code's variant). Rows with ``attack == "worst"`` hold the
        per-sample worst case over the attacks (present when more than one attack runs).
        With ``per_image=True``, a pair ``(table, images)``.
    """
    values = attack_per_image(model, data, attacks, tasks, **kwargs)
    table = robustness_table(values)
    return (table, images_table(values)) if per_image else table


def images_table(per_image: PerImage):
    """One row per (attack, attacked set, task, example) with :data:`IMAGE_COLUMNS`."""
    import pandas as pd

    parts = [
        pd.DataFrame(
            {
                "attack": name,
                "attacked": "".join(keys),
                "task": k,
                "image": range(int(per_image.clean[k][1].shape[0])),
                "clean_error": per_image.clean[k][1].double().numpy(),
                "adv_error": r.error[k].double().numpy(),
            }
        )
        for (name, keys), r in per_image.results.items()
        for k in per_image.eval_keys
    ]
    if not parts:
        return pd.DataFrame(columns=list(IMAGE_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def robustness_table(per_image: PerImage):
    """The tidy table of :func:`evaluate_robustness` from every image's values (means)."""
    import pandas as pd

    rows = []
    for (name, keys), r in per_image.results.items():
        for k in per_image.eval_keys:
            l_clean, e_clean = per_image.clean[k]
            rows.append(
                {
                    "attack": name,
                    "attacked": "".join(keys),
                    "task": k,
                    "norm": per_image.norm,
                    "eps": per_image.eps,
                    "steps": per_image.steps,
                    "n": int(e_clean.shape[0]),
                    "clean_loss": _mean(l_clean),
                    "adv_loss": _mean(r.loss[k]),
                    "clean_error": _mean(e_clean),
                    "adv_error": _mean(r.error[k]),
                    "relative_vulnerability": relative_vulnerability(e_clean, r.error[k]),
                    "n_undefined": undefined_count(e_clean),
                    "adv_vulnerability": _mean(r.av),
                    "adv_vulnerability_model": _mean(r.av_model),
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _measure(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    errors: Mapping[str, PerSampleLoss] | None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-example losses and errors of ``keys`` at ``x`` (eval mode, no gradient)."""
    with attack_mode(model, x), torch.no_grad():
        pred = forward(model, x, keys)
        loss = {k: v.detach() for k, v in task_losses(pred, y, list(keys), losses).items()}
        err = task_error_values(pred, y, keys, errors)
    return loss, err

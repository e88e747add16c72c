"""WGD's readings side by side: which one attacks every task of a weighted model hardest?

On the synthetic RQ3 models (main task ``d`` with ``s`` or ``n``, uniform vs the paper's "optimal"
loss weights; ResNet18, decoders of width 32, 16 epochs at 64 px on 96 images), every attacked
task's relative vulnerability under PGD, APGD and each WGD reading (:mod:`attacks.wgd`) at the
same budget and steps; the attack is the multi-task attack on both tasks with uniform attack
weights (what ``rts attack`` and ``attack.target: all`` do), or with the model's own loss weights
(``--attack-weights model``: the optimal models' auxiliary task then has "a smaller contribution
to the joint loss" in the attacked objective too).

Every value carries a 95 % percentile bootstrap interval over the attacked images, and every
model's skill (1 − error / error of predicting the training mean) is printed; tasks with skill
below :data:`LEARNED` are flagged and left out of the ranking (also shown over all
cells). The ranking score of
a reading is the share of the strongest attack's damage it reaches, averaged over the (model,
task) cells: ``mean over cells of v / max_r v̂_r`` (``v`` the relative vulnerability, ``v̂_r``
reading ``r``'s value on all the images), so every cell counts the same whatever its scale and a
reading that leaves one task untouched pays for it; cells that no attack moves (``max_r v̂_r <=
0``) are left out. Readings are compared with a paired bootstrap over images, and a difference
whose interval holds 0 is called a tie.

    python -m benchmarks.wgd --cache /tmp/wgd      # the table of docs/attacks.md
    python -m benchmarks.wgd --cache /tmp/wgd --attack-weights model   # same models, reused
    python -m benchmarks.wgd --pairs s --epochs 2  # a quick look (nothing learned: says so)

Prints Markdown tables, the median seconds per attacked image of each reading (over the models),
the peak RSS and the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

READINGS: tuple[tuple[str, str, dict], ...] = (
    ("pgd", "pgd", {}),
    ("apgd", "apgd", {}),
    ("wgd γ=1", "wgd", {"gamma": 1.0, "balance": "loss"}),
    ("wgd γ=0 (RELATIVE_WEIGHT)", "wgd", {"gamma": 0.0, "balance": "loss"}),
    ("wgd γ=−1 (ρ∝r, paper's words)", "wgd", {"gamma": -1.0, "balance": "loss"}),
    ("wgd γ=4", "wgd", {"gamma": 4.0, "balance": "loss"}),
    ("wgd cyclic (CYCLIC_STEP)", "wgd", {"select": "cyclic"}),
    ("wgd gradient, γ=0", "wgd", {"balance": "gradient", "gamma": 0.0}),
    ("wgd gradient, γ=1", "wgd", {"balance": "gradient", "gamma": 1.0}),
)
"""(label, attack, options): the baselines, then WGD's readings (every option that differs
between readings given explicitly, so the table does not move when the default does)."""

CURRENT = "wgd γ=1"
"""The default WGD reading before this benchmark (``gamma=1, balance=loss``), the reference."""

LEARNED = 0.1
"""Below this skill a task counts as not learned here (stricter than the product's flag at
``rts.attacks.skill.MIN_SKILL`` = 0: a ranking of attacks needs tasks the model clearly learned)."""


@dataclass
class Cell:
    """One (model, attacked task): per-image ``f_adv / f_clean`` of each reading ``[R, n]``."""

    model: str
    task: str
    skill: float
    ratios: np.ndarray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="s,n", help="auxiliaries of d (default s,n; RQ3: s,D,n,E)")
    p.add_argument("--size", type=int, default=64, help="image side (64)")
    p.add_argument("--n", type=int, default=128, help="synthetic images (128: 96 train, 32 val)")
    p.add_argument("--width", type=int, default=32, help="decoder width (32)")
    p.add_argument("--epochs", type=int, default=16, help="training epochs (16)")
    p.add_argument("--batch", type=int, default=8, help="training batch (8)")
    p.add_argument(
        "--lr",
        type=float,
        default=1e-2,
        help="Adam lr (1e-2: at 1e-3, or with fewer than ~14 epochs, the toy's depth head does "
        "not beat predicting the training mean)",
    )
    p.add_argument("--images", type=int, default=32, help="attacked validation images (32)")
    p.add_argument("--eps", default="8/255", help="budget (8/255)")
    p.add_argument("--steps", type=int, default=10, help="steps of every attack (10)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: two oversubscribe a loaded machine)",
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    p.add_argument(
        "--cache",
        default=None,
        help="folder keeping the trained weights between runs (trained again when missing)",
    )
    p.add_argument(
        "--attack-weights",
        choices=("uniform", "model"),
        default="uniform",
        help="the attacked objective's task weights: uniform (default) or the model's own",
    )
    return p.parse_args(argv)


def train_models(args: argparse.Namespace, train, val):
    """The RQ3 models: ``d`` + each auxiliary, uniform and optimal weights; ``{name: (model,
    weights)}``."""
    import torch

    from rts.models import SCHEDULES, WeightingSpec, build_model, static_weights
    from rts.models import train as train_model

    out = {}
    for aux in args.pairs.replace(",", ""):
        tasks = "".join(sorted("d" + aux, key="sdDnE".index))
        for scheme in ("uniform", "optimal"):
            weights = static_weights(scheme, tasks, main="d")
            model = build_model("resnet18", tasks, decoder_width=args.width, seed=0)
            model = model.to(args.device)
            name = f"d+{aux} {scheme}"
            cached = None
            if args.cache:
                tag = f"{tasks}-{scheme}-w{args.width}-e{args.epochs}-lr{args.lr:g}-{args.size}px"
                cached = Path(args.cache) / f"{tag}.pt"
            start = time.perf_counter()
            if cached is not None and cached.is_file():
                model.load_state_dict(torch.load(cached, map_location=args.device))
                log(f"loaded {name} from {cached}")
            else:
                schedule = dataclasses.replace(SCHEDULES["code"], lr=args.lr).scaled(args.epochs)
                train_model(
                    model,
                    train,
                    None,
                    WeightingSpec("manual", weights=weights),
                    schedule,
                    args.device,
                    epochs=args.epochs,
                    batch_size=args.batch,
                    seed=0,
                    save_last=False,
                    precision="fp32",
                )
                log(f"trained {name} ({weights}) in {time.perf_counter() - start:.0f} s")
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(model.state_dict(), cached)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            out[name] = (model, weights)
            torch.set_num_threads(args.threads)
    return out


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def attack_models(args: argparse.Namespace, models, train, probe):
    """Every reading on every model; the cells and the seconds per image of each reading."""
    from rts.attacks.evaluate import attack_per_image
    from rts.attacks.registry import parse_eps
    from rts.attacks.skill import model_skill

    eps = parse_eps(args.eps)
    cells: list[Cell] = []
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in READINGS}
    for name, (model, weights) in models.items():
        tasks = model.tasks
        errors = {}
        for label, attack, options in READINGS:
            start = time.perf_counter()
            per_image = attack_per_image(
                model,
                probe,
                attack,
                [tasks],
                eps=eps,
                steps=args.steps,
                weights=weights if args.attack_weights == "model" else None,
                batch_size=args.images,
                seed=0,
                attack_options={attack: options} if options else None,
            )
            seconds[label].append((time.perf_counter() - start) / len(probe))
            errors[label] = per_image.results[attack, tuple(tasks)].error
        skills = model_skill(per_image, train, probe, batch_size=args.images)
        for k in tasks:
            clean = per_image.clean[k][1].double().numpy()
            ratios = np.stack([errors[label][k].double().numpy() for label, _, _ in READINGS])
            # NaN where the clean error is 0 (no relative vulnerability); images stay aligned
            ratios = np.where(clean > 0, ratios / np.where(clean > 0, clean, 1), np.nan)
            cells.append(Cell(name, k, skills[k], ratios))
        log(f"attacked {name}: skill {', '.join(f'{k} {skills[k]:.2f}' for k in tasks)}")
    return cells, seconds


def interval(stat, n: int, resamples: int) -> tuple[float, float]:
    from rts.attacks.metrics import image_bootstrap

    return image_bootstrap(stat, n, n_resamples=resamples)


def fmt(v: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def cell_table(cells: list[Cell], resamples: int) -> list[str]:
    """Markdown: every cell's relative vulnerability per reading, with intervals."""
    labels = [label for label, _, _ in READINGS]
    lines = [
        "| model | task | skill | " + " | ".join(labels) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    for c in cells:
        values = []
        for r in range(len(labels)):
            v = c.ratios[r] - 1
            lo, hi = interval(lambda idx, v=v: np.nanmean(v[idx], -1), len(v), resamples)
            values.append(fmt(float(np.nanmean(v)), lo, hi))
        flag = "" if c.skill >= LEARNED else " (not learned)"
        lines.append(f"| {c.model} | {c.task} | {c.skill:.2f}{flag} | " + " | ".join(values) + " |")
    return lines


def scores(cells: list[Cell], resamples: int) -> dict[str, tuple[float, float, float]]:
    """Each reading's mean share of the strongest attack's damage on ``cells`` and, for each
    reading, its paired difference from :data:`CURRENT`: ``{label: (value, low, high)}``,
    ``{f"{label} - current": ...}``."""
    labels = [label for label, _, _ in READINGS]
    stack = np.stack([c.ratios for c in cells])  # [C, R, n]: the same probe images everywhere
    best = (np.nanmean(stack, -1) - 1).max(1)  # [C]: the strongest reading's v̂ per cell
    stack = stack[best > 0]  # a cell no attack moves has nothing to rank
    scale = best[best > 0][:, None, None]
    n = stack.shape[-1]
    cur = labels.index(CURRENT)

    def score(idx: np.ndarray) -> np.ndarray:  # idx [B, n] -> [R, B]
        v = np.nanmean(stack[:, :, idx], -1) - 1  # [C, R, B] relative vulnerabilities
        return (v / scale).mean(0)

    full = score(np.arange(n)[None])[:, 0]
    out = {}
    for r, label in enumerate(labels):
        out[label] = (full[r], *interval(lambda idx, r=r: score(idx)[r], n, resamples))
        diff = lambda idx, r=r: score(idx)[r] - score(idx)[cur]  # noqa: E731
        out[f"{label} - current"] = (full[r] - full[cur], *interval(diff, n, resamples))
    return out


def pct(v: float, lo: float, hi: float) -> str:
    return f"{100 * v:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def verdict(lo: float, hi: float) -> str:
    """``tie`` when the interval holds 0, else ``better`` or ``worse``."""
    return "tie" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from rts.tasks.data import DataSpec, load_data

    pool = args.pairs.replace(",", "")
    train, val = load_data(DataSpec(size=args.size, n=args.n, seed=0), "d" + pool)
    probe = val.subset(list(range(min(args.images, len(val)))))
    models = train_models(args, train, val)
    cells, seconds = attack_models(args, models, train, probe)
    learned = [c for c in cells if c.skill >= LEARNED]
    if not learned:
        log("no attacked task was learned: the ranking below uses every cell and means little")
    ranked = scores(learned or cells, args.resamples)
    every = scores(cells, args.resamples)

    print(
        f"## WGD readings: {len(models)} models (d + {', '.join(pool)}; uniform and optimal "
        f"weights), resnet18, decoders {args.width}, {args.epochs} epochs (Adam, lr {args.lr:g}) "
        f"at {args.size} px on {len(train)} images; multi-task attack on both tasks with "
        f"{args.attack_weights} attack weights, eps {args.eps}, {args.steps} steps (step: each "
        f"attack's default), {len(probe)} validation images\n"
    )
    print("Relative vulnerability E[(f_adv − f_clean)/f_clean] per attacked task, 95 % bootstrap")
    print("interval over images:\n")
    print("\n".join(cell_table(cells, args.resamples)))
    print(
        f"\nRanking: share of the strongest attack's vulnerability reached (v / max over "
        f"readings), averaged over the cells, 95 % paired bootstrap over the {len(probe)} "
        f"images; the default is chosen on the {len(learned)} learned cells of {len(cells)} "
        f"(skill >= {LEARNED}); "
        f"'vs {CURRENT}' is the paired difference on those; s/img = median over the "
        f"{len(models)} models:\n"
    )
    print(
        "| reading | share, learned cells | vs " + CURRENT + " | share, all cells (not learned "
        "too) | backward passes per step | s/img |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label, _, options in READINGS:
        cost = "M (= 2)" if options.get("balance") == "gradient" else "1"
        d, dlo, dhi = ranked[f"{label} - current"]
        versus = (
            ""
            if label == CURRENT
            else f"{100 * d:+.0f} [{100 * dlo:+.0f}, {100 * dhi:+.0f}] ({verdict(dlo, dhi)})"
        )
        print(
            f"| {label} | {pct(*ranked[label])} | {versus} | {pct(*every[label])} | {cost} | "
            f"{statistics.median(seconds[label]):.3f} |"
        )
    wgd = [label for label, attack, _ in READINGS if attack == "wgd"]
    best = max(wgd, key=lambda label: ranked[label][0])
    d, lo, hi = ranked[f"{best} - current"]
    print(
        f"\nStrongest WGD reading on the learned cells: {best}; vs the previous default "
        f"({CURRENT}): {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points of share: "
        f"{verdict(lo, hi)}."
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"Peak RSS {rss:.0f} MiB; wall time {time.perf_counter() - wall:.0f} s "
        f"({args.threads} threads, {args.device})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do the synthetic toy's models learn? Skill per task of small recipes, on held-out buildings.

Each recipe trains one model the way a search trial does (:func:`rts.models.train`, the
``code`` schedule compressed to the run, flips, precise BN, ``build_model(seed=)`` and the
recipe's ``output_init``), then measures every task's clean error on the validation buildings
and its **skill** ``1 − error / error of the training set's per-pixel mean map``
(:mod:`rts.attacks.skill`; 1 = perfect, 0 = no better than that mean, < 0 = worse). Each
(recipe, seed) runs in its own process with one thread, so its wall time and peak RSS are its
own. Prints a Markdown table: skill of the main task (mean ± half the range over seeds), the
auxiliaries' skills (means), seconds of training per run (median) and peak RSS.

    python -m benchmarks.toy_learning                          # the default rows, 2 seeds
    python -m benchmarks.toy_learning --recipes recipe-r,recipe-r5 --seeds 0,1,2
    python -m benchmarks.toy_learning --list

The recipes are the measurements behind the synthetic configs (docs/synthetic.md, "Models that
learn"): ``old-*`` are the previous toy (ResNet18, 2×2 feature map, 80 training images),
``recipe-*`` the current one (``resnet18_s8``, standardised outputs, 160 training images).
Times depend on the machine's load: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """One trained model: data size, encoder, tasks (the first is the main one), training."""

    name: str
    encoder: str
    tasks: str
    output_init: str = "standardise"
    n: int = 192
    size: int = 64
    epochs: int = 6
    batch_size: int = 8
    lr: float = 1e-3
    decoder_width: int = 16

    @property
    def main(self) -> str:
        return self.tasks[0]


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # The previous quickstart's stage 2 (depth main task) and what each lever does to it.
        Recipe("old-d", "resnet18", "d", "default", n=96),
        Recipe("old-d+std", "resnet18", "d", n=96),
        Recipe("recipe-d", "resnet18_s8", "d"),
        Recipe("recipe-d-e12", "resnet18_s8", "d", n=384, epochs=12),
        # Reshading: the toy's main task now.
        Recipe("old-r", "resnet18", "r", "default", n=96),
        Recipe("r-resnet18", "resnet18", "r"),
        Recipe("r-s8-n96", "resnet18_s8", "r", n=96),
        Recipe("r-s8-default", "resnet18_s8", "r", "default"),
        Recipe("recipe-r", "resnet18_s8", "r"),  # quickstart stage 2 (single-task)
        Recipe("recipe-r5", "resnet18_s8", "rsdnE", epochs=8),  # RQ1's largest model
        Recipe("recipe-r5-resnet50_s8", "resnet50_s8", "rsdnE", epochs=8),  # RQ4's target
    )
}
DEFAULT = ("old-d", "old-d+std", "recipe-d", "old-r", "recipe-r", "recipe-r5")


def run_one(recipe: Recipe, seed: int, threads: int = 1) -> dict:
    """Train ``recipe`` with ``seed`` in this process; skills, seconds, peak RSS."""
    import dataclasses

    import torch

    from rts.attacks.skill import fit_trivial, skills, trivial_errors
    from rts.models import SCHEDULES, WeightingSpec, apply_output_init, build_model, evaluate
    from rts.models import train as train_model
    from rts.tasks.data import DataSpec, load_data

    torch.set_num_threads(threads)
    train_set, val_set = load_data(DataSpec(size=recipe.size, n=recipe.n), recipe.tasks)
    trivial = fit_trivial(train_set.batches(64), recipe.tasks)
    baseline = trivial_errors(trivial, val_set.batches(64), recipe.tasks)
    start = time.perf_counter()
    model = build_model(recipe.encoder, recipe.tasks, decoder_width=recipe.decoder_width, seed=seed)
    apply_output_init(model, train_set, recipe.output_init, seed=seed)
    _, first = evaluate(model, val_set, batch_size=32)
    schedule = dataclasses.replace(SCHEDULES["code"], lr=recipe.lr).scaled(recipe.epochs)
    train_model(
        model,
        train_set,
        None,
        WeightingSpec("uniform"),
        schedule,
        "cpu",
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        seed=seed,
        save_last=False,
        precision="fp32",
    )
    _, errors = evaluate(model, val_set, batch_size=32)
    seconds = time.perf_counter() - start
    return {
        "recipe": recipe.name,
        "seed": seed,
        "train": len(train_set),
        "val": len(val_set),
        "steps": recipe.epochs * (len(train_set) // recipe.batch_size),
        "skill": skills(errors, baseline),
        "skill_init": skills(first, baseline)[recipe.main],
        "seconds": seconds,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _spawn(name: str, seed: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.toy_learning", "--one", name, str(seed)]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _fmt(values: list[float]) -> str:
    if not values or any(math.isnan(v) for v in values):
        return "nan"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {(max(values) - min(values)) / 2:.2f}"


def table(rows: list[dict]) -> str:
    """Markdown: one line per recipe, seeds aggregated."""
    lines = [
        "| recipe | encoder | px | train/val images | epochs (steps) | output init | main skill "
        "(± half range) | skill at init | auxiliaries' skill | train s | peak RSS MiB | seeds |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["recipe"] for r in rows):
        runs = [r for r in rows if r["recipe"] == name]
        rec = RECIPES[name]
        main = [r["skill"][rec.main] for r in runs]
        aux = " ".join(
            f"{k} {statistics.fmean(r['skill'][k] for r in runs):.2f}" for k in rec.tasks[1:]
        )
        lines.append(
            f"| {name} | {rec.encoder} | {rec.size} | {runs[0]['train']}/{runs[0]['val']} | "
            f"{rec.epochs} ({runs[0]['steps']}) | {rec.output_init} | {rec.main} {_fmt(main)} | "
            f"{_fmt([r['skill_init'] for r in runs])} | {aux or '-'} | "
            f"{statistics.median(r['seconds'] for r in runs):.0f} | "
            f"{max(r['rss_mib'] for r in runs):.0f} | {len(runs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--recipes", default=",".join(DEFAULT), help="comma-separated recipe names")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--list", action="store_true", help="print the recipes and exit")
    p.add_argument("--one", nargs=2, metavar=("RECIPE", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        for r in RECIPES.values():
            print(json.dumps(asdict(r)))
        return 0
    if args.one:
        print(json.dumps(run_one(RECIPES[args.one[0]], int(args.one[1]), args.threads)))
        return 0
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in names:
        for seed in seeds:
            row = _spawn(name, seed, args.threads)
            rows.append(row)
            print(
                f"{name} seed {seed}: {RECIPES[name].main} skill "
                f"{row['skill'][RECIPES[name].main]:.3f} ({row['seconds']:.0f} s)",
                file=sys.stderr,
            )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

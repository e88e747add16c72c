"""Memory and speed of concurrent trials: a private copy of the data each vs one per node.

    python -m benchmarks.data_sharing                       # 256 px, 2,048 images, 1/2/4 trials
    python -m benchmarks.data_sharing --size 128 --n 512 --trials 1,2

Each "trial" is a process that loads the synthetic data (``load_data``) and trains a ResNet18
multi-task model for a few steps on it, one thread each, as a search trial does. Two modes:

* ``private``: today's default outside a search: every process renders and decodes its own copy.
* ``shared``: ``DataSpec.cache_dir``: the node-local cache (built once, before the timing; its
  build time is printed), memory-mapped by every process.

Memory is the proportional set size (PSS, ``/proc/<pid>/smaps_rollup``): a page shared by k
processes counts 1/k in each, so the sum over processes is what the node really holds. "Per
additional trial" = (sum of PSS with k trials − PSS with 1) / (k − 1). Throughput: training
images per second summed over the processes, shared against private at the same k (goal ≥ 0.95),
each trial reading its batches straight from its store (a view of the first ``steps × batch``
samples, as a search trial reads its training split: no private copy in the shared mode). The two
modes run side by side in every repeat (their order alternating), so the ratio is taken per
repeat; the table gives medians over ``--repeats`` and the ratio's range.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

TASKS = "sdDnE"


def pss_mb() -> float:
    """This process's proportional set size in MB (Linux)."""
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def trial(spec: dict, steps: int, batch: int, queue: mp.Queue, start: mp.Event) -> None:
    """Load the data, wait for the others, train ``steps`` steps; report PSS and img/s."""
    import torch

    from rts.models import SCHEDULES, WeightingSpec, build_model, train
    from rts.tasks.data import DataSpec, load_data

    torch.set_num_threads(1)
    train_set, _ = load_data(DataSpec(**spec), TASKS)
    next(train_set.batches(8))  # touch the data once
    loaded = pss_mb()
    model = build_model("resnet18", TASKS, decoder_width=16, seed=0)
    sub = train_set.head(steps * batch)  # a view: read from the store, as a trial does
    start.wait()
    t0 = time.perf_counter()
    train(
        model,
        sub,
        None,
        WeightingSpec("uniform"),
        SCHEDULES["code"],
        "cpu",
        epochs=1,
        batch_size=batch,
        seed=0,
        save_last=False,
        precise_bn=0,
        precision="fp32",
    )
    wall = time.perf_counter() - t0
    queue.put({"pss_loaded": loaded, "pss_end": pss_mb(), "img_s": len(sub) / wall})


def run(spec: dict, k: int, steps: int, batch: int) -> dict:
    """``k`` concurrent trial processes; summed PSS and throughput."""
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=trial, args=(spec, steps, batch, queue, start)) for _ in range(k)]
    for p in procs:
        p.start()
    results = []
    start.set()  # each process trains once its data is loaded
    for _ in procs:
        results.append(queue.get(timeout=3600))
    for p in procs:
        p.join()
    return {
        "pss_loaded": sum(r["pss_loaded"] for r in results),
        "pss_end": sum(r["pss_end"] for r in results),
        "img_s": sum(r["img_s"] for r in results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--trials", default="1,2,4")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    from rts.tasks.data import DataSpec, load_data

    cache = tempfile.mkdtemp(prefix="rts-cache-")
    base = {"size": args.size, "n": args.n, "seed": 0}
    t0 = time.perf_counter()
    load_data(DataSpec(**base, cache_dir=cache), TASKS)  # build the node's copy once
    build_s = time.perf_counter() - t0
    counts = [int(k) for k in args.trials.split(",")]
    specs = {"private": base, "shared": {**base, "cache_dir": cache}}
    runs: dict[tuple[str, int], list[dict]] = {(m, k): [] for m in specs for k in counts}
    for rep in range(args.repeats):
        for k in counts:
            order = ("private", "shared") if rep % 2 == 0 else ("shared", "private")
            for mode in order:
                runs[mode, k].append(run(specs[mode], k, args.steps, args.batch))
                print(f"done {mode} x{k} (repeat {rep + 1})", file=sys.stderr, flush=True)
    print(
        f"\n{args.n} synthetic images of {args.size} px, tasks {TASKS}; cache built in "
        f"{build_s:.0f} s; {args.steps} training steps of batch {args.batch} per trial, "
        f"1 thread each; PSS summed over the trial processes; medians of {args.repeats} "
        "repeats, the modes side by side in each.\n"
    )
    print(
        "| mode | trials | PSS after loading (MB) | PSS at the end (MB) | per additional "
        "trial, after loading / at the end (MB) | img/s (all trials) | shared / private "
        "(median [min, max] over repeats) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {key: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for key, rs in runs.items()}
    for mode in specs:
        for k in counts:
            r, one = med[mode, k], med[mode, counts[0]]
            if k > counts[0]:
                extra = [(r[f] - one[f]) / (k - counts[0]) for f in ("pss_loaded", "pss_end")]
                extra_s = f"{extra[0]:.0f} / {extra[1]:.0f}"
            else:
                extra_s = ""
            ratio_s = ""
            if mode == "shared":
                pairs = zip(runs["shared", k], runs["private", k], strict=True)
                ratios = [s["img_s"] / p["img_s"] for s, p in pairs]
                ratio_s = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
            print(
                f"| {mode} | {k} | {r['pss_loaded']:.0f} | {r['pss_end']:.0f} | {extra_s} | "
                f"{r['img_s']:.2f} | {ratio_s} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

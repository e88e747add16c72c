"""Data pipeline speed: synthetic generation, disk and in-memory loading, vs. a training step.

Run ``python -m benchmarks.data [--sizes 64 128 256] [--repeats 3] [--threads 2]``; prints a
Markdown table. Per resolution (each in a fresh process, so its peak RSS is its own):

* generation: synthetic views rendered + encoded in memory (``tasks.synthetic.iter_raw``), and
  written as PNG files (``write_dataset``), wall clock (CPU time in brackets): from the
  synthetic part's ``benchmarks/data_synth.py`` (its ``main``, one core), else measured here;
* load from disk: ``load_data`` of the written folder with ``cache=True`` (read + decode every
  PNG once into memory), and one epoch of ``cache=False`` batches (PNG decoding per batch);
* load in memory: ``load_data(DataSpec(source="synthetic"))`` (render + decode), and one epoch
  of cached ``batches(32, shuffle=True, flip=True)``: what the trainer waits for per step;
* a training step of the project's ResNet18 multi-task model with the 5 decoders ``sdnkE``
  (batch 32, fp32, the shared losses), timed in the same process on the same data, and the
  ratio *cached batch time / training step time* (goal: ≤ 10 %).

Every figure is the median over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = "sdDnkKeEprA"
BATCH = 32


def _median_rate(fn, images: int, repeats: int) -> float:
    """Images per second of ``fn()`` (which handles ``images`` images), median of runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def _own_generation(size: int, n: int, repeats: int) -> tuple[float, float]:
    """(render+encode img/s, write-PNG img/s), wall clock, when data_synth.py is unavailable."""
    from rts.tasks.synthetic import iter_raw, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        render = _median_rate(lambda: list(iter_raw(n, size, 0)), n, repeats)
        write = _median_rate(lambda: write_dataset(Path(tmp) / "g", n, size, 0), n, repeats)
    return render, write


def _synth_benchmark(sizes: list[int], repeats: int) -> dict[int, dict[str, float]] | None:
    """Generation figures of the synthetic part's ``benchmarks/data_synth.py``, per size.

    Calls its ``main`` and reads its Markdown rows (size, images/run, in-memory img/s wall and
    CPU, to-disk img/s wall and CPU, ...). ``None`` when the script is absent or its table
    changed shape, and the figures are then measured here.
    """
    try:
        from benchmarks import data_synth
    except ImportError:
        return None
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        data_synth.main(["--sizes", *map(str, sizes), "--repeats", str(repeats)])
    rows: dict[int, dict[str, float]] = {}
    for line in buffer.getvalue().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].isdigit():
            try:
                values = [float(c) for c in cells[2:6]]
            except ValueError:
                return None
            keys = ("render", "render_cpu", "write", "write_cpu")
            rows[int(cells[0])] = dict(zip(keys, values, strict=True))
    return rows if set(rows) == set(sizes) else None


def _train_step_seconds(data, repeats: int) -> tuple[float, str]:
    """Seconds per image of an fp32 training step (batch 32) on ``data``, and the model used.

    The project's ResNet18 multi-task model with the 5 decoders ``sdnkE`` when ``models`` is
    importable; otherwise a stand-in (torchvision ResNet18 trunk + 5 light heads).
    """
    import torch

    from rts.tasks.losses import task_losses, weighted_sum

    x, y = next(data.batches(BATCH))
    tasks = "sdnkE"
    try:
        from rts.models import build_model

        model = build_model("resnet18", tasks, seed=0)
        name = "models.build_model('resnet18', 'sdnkE')"
        forward = model
    except Exception:  # the models part is not importable: a stand-in of similar cost
        import torchvision

        trunk = torch.nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
        chans = {"s": 18, "d": 1, "n": 3, "k": 1, "E": 1}
        heads = torch.nn.ModuleDict({k: torch.nn.Conv2d(512, c, 1) for k, c in chans.items()})
        model = torch.nn.ModuleDict({"trunk": trunk, "heads": heads})
        name = "stand-in: torchvision resnet18 + 1x1 heads"

        def forward(inp):
            feats = trunk(inp)
            size = inp.shape[-2:]
            return {
                k: torch.nn.functional.interpolate(h(feats), size=size, mode="bilinear")
                for k, h in heads.items()
            }

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = weighted_sum(task_losses(forward(x), y, tasks)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    return 1.0 / _median_rate(step, BATCH, repeats), name


def measure(size: int, n: int, repeats: int, threads: int) -> dict[str, float]:
    """All figures at one resolution (run in a child process)."""
    import torch

    torch.set_num_threads(threads)
    from rts.tasks.data import DataSpec, load_data

    out: dict = {"size": size, "n": n}
    from rts.tasks.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(Path(tmp) / "synth", n, size, 0)
        disk = DataSpec(source=str(folder), size=size, val_fraction=0.0)
        out["disk_cache"] = _median_rate(lambda: load_data(disk, TASKS), n, repeats)
        lazy, _ = load_data(
            DataSpec(source=str(folder), size=size, val_fraction=0.0, cache=False), TASKS
        )
        out["disk_batches"] = _median_rate(lambda: [b for b in lazy.batches(BATCH)], n, repeats)
    mem = DataSpec(size=size, n=n, val_fraction=0.0)
    out["mem_load"] = _median_rate(lambda: load_data(mem, TASKS), n, repeats)
    data, _ = load_data(mem, TASKS)
    out["cache_mb"] = data.nbytes / 2**20
    gen = torch.Generator().manual_seed(0)

    def epoch() -> None:
        for _ in data.batches(BATCH, shuffle=True, flip=True, generator=gen):
            pass

    out["mem_batches"] = _median_rate(epoch, n, max(repeats, 5))
    out["train_step"], out["model"] = _train_step_seconds(data, repeats)
    out["ratio"] = (1.0 / out["mem_batches"]) / out["train_step"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--n", type=int, nargs="+", default=None, help="images per size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = args.n or [max(16, 8192 // s) for s in args.sizes]  # 128, 64, 32 images
    if args.child:  # one size, in a fresh process so that its peak RSS is its own
        print(json.dumps(measure(args.sizes[0], counts[0], args.repeats, args.threads)))
        return
    generation = _synth_benchmark(args.sizes, args.repeats)
    source = "benchmarks/data_synth.py" if generation else "measured here"
    print(f"generation figures: {source}", file=sys.stderr)
    rows = []
    for size, n in zip(args.sizes, counts, strict=True):
        cmd = [sys.executable, __file__, "--child", "--sizes", str(size), "--n", str(n)]
        cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if generation:
            row.update(generation[size])
        else:
            row["render"], row["write"] = _own_generation(size, n, args.repeats)
            row["render_cpu"] = row["write_cpu"] = float("nan")
        rows.append(row)
        print(f"measured {size} px (training step: {rows[-1]['model']})", file=sys.stderr)
    print(
        "| px | n | generate img/s (CPU) | write PNG img/s (CPU) | disk → cache img/s "
        "| disk batches, cache=False img/s | synthetic → cache img/s | cached batches img/s "
        "| cache MB | train step ms/img | cached batch / train step | peak RSS MB |"
    )
    print("|" + "---:|" * 12)
    for r in rows:
        print(
            f"| {r['size']} | {r['n']} | {r['render']:.0f} ({r['render_cpu']:.0f}) "
            f"| {r['write']:.0f} ({r['write_cpu']:.0f}) "
            f"| {r['disk_cache']:.0f} | {r['disk_batches']:.0f} | {r['mem_load']:.0f} "
            f"| {r['mem_batches']:.0f} | {r['cache_mb']:.1f} | {1000 * r['train_step']:.1f} "
            f"| {100 * r['ratio']:.2f} % | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()

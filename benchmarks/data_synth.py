"""Benchmark of the synthetic mini-Taskonomy generator: images per second and peak memory.

Prints a Markdown table, per image size: views rendered + encoded in memory (``iter_raw``) and
views written to disk as the 11 Taskonomy PNGs (``write_dataset``), each the median of
``--repeats`` runs, in wall-clock and in CPU time of this process (the CPU figure is the one to
compare on a shared machine), plus the peak resident memory after that size. Single process, one
core: the generator is plain numpy without BLAS calls.

    python -m benchmarks.data_synth [--sizes 64 128 256] [--repeats 3] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rts.tasks.synthetic import iter_raw, write_dataset


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _count_for(size: int, seconds: float) -> int:
    """Images per run so that a run takes about ``seconds`` (from one quick probe)."""
    probe = 4
    wall, _ = _timed(lambda: [None for _ in iter_raw(probe, size, seed=123)])
    return max(4, int(seconds / max(wall / probe, 1e-6)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="target duration of one run")
    args = parser.parse_args(argv)

    rows = []
    for size in args.sizes:
        n = _count_for(size, args.seconds)
        mem_wall, mem_cpu, disk_wall, disk_cpu = [], [], [], []
        with tempfile.TemporaryDirectory(prefix="rts-synth-bench-") as tmp:
            for rep in range(args.repeats):
                wall, cpu = _timed(lambda n=n, s=size, r=rep: [None for _ in iter_raw(n, s, r)])
                mem_wall.append(n / wall)
                mem_cpu.append(n / cpu)
                out = Path(tmp) / f"run{rep}"
                wall, cpu = _timed(lambda o=out, n=n, s=size, r=rep: write_dataset(o, n, s, r))
                disk_wall.append(n / wall)
                disk_cpu.append(n / cpu)
            mib = sum(p.stat().st_size for p in Path(tmp).rglob("*.png")) / args.repeats / n / 2**10
        med = statistics.median
        rows.append(
            (size, n, med(mem_wall), med(mem_cpu), med(disk_wall), med(disk_cpu),
             med(disk_cpu) / med(mem_cpu), mib, _peak_rss_mib())
        )  # fmt: skip

    print(f"synthetic generator, median of {args.repeats} runs (one core)\n")
    print(
        "| size | images/run | in memory img/s (wall) | in memory img/s (CPU) "
        "| to disk img/s (wall) | to disk img/s (CPU) | disk / memory (CPU) "
        "| KiB on disk per view | peak RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, n, mw, mc, dw, dc, ratio, kib, rss in rows:
        print(
            f"| {size} | {n} | {mw:.1f} | {mc:.1f} | {dw:.1f} | {dc:.1f} | {ratio:.2f} "
            f"| {kib:.1f} | {rss:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

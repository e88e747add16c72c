"""Benchmark of ``rts search``: Ray/Optuna overhead per trial and the quickstart's wall time.

    python -m benchmarks.search                 # overhead (no-op trials) + quickstart
    python -m benchmarks.search --skip-quickstart --repeat 5

Overhead: searches of no-op trials (:class:`tests.search.fake_trial.FakeTrial`, one epoch, no sleep)
with 8 and 32 stage-1 trials on a local Ray with 2 CPUs, run alternately in the same process;
the per-trial overhead is the slope between the two sizes (so Ray start-up and stage 2 cancel
out). Quickstart: ``configs/quickstart.yaml`` end to end, real models and attacks. Prints a
Markdown table: medians over ``--repeat`` runs, and the driver's peak RSS (Ray's worker
processes are not included: ``ru_maxrss`` of this process only).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def noop_search(n_trials: int, storage: str) -> float:
    """Wall seconds of a search of ``n_trials`` no-op stage-1 trials (Ray already running)."""
    from rts.search.config.convert import load_config
    from rts.search.results.pipeline import run_search
    from tests.search.fake_trial import FakeTrial

    cfg = load_config(
        None,
        [
            f"name=noop{n_trials}",
            "search.pool=sDnkKeEprA",
            "search.sampler=random",
            f"search.n_trials={n_trials}",
            "search.encoders=[resnet18]",
            "stage1.epochs=1",
            "stage1.scheduler=fifo",
            "stage2.top_k=0",
            "stage2.epochs=1",
        ],
    )
    start = time.perf_counter()
    run_search(cfg, storage=storage, trial_fn=FakeTrial())
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per overhead measurement")
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import ray

    from rts.search.engine.stages import RAY_ENV_DEFAULTS, ray_session
    from rts.search.results.pipeline import run_search

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    rows = []
    init_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.shutdown()
        init_times.append(time.perf_counter() - start)
    rows.append(("ray.init + shutdown (2 CPUs)", args.repeat, statistics.median(init_times), ""))

    times: dict[int, list[float]] = {8: [], 32: []}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, 2):
        for r in range(args.repeat):
            for n in (8, 32):
                times[n].append(noop_search(n, os.path.join(tmp, f"r{r}")))
    for n, values in times.items():
        med = statistics.median(values)
        rows.append((f"no-op search, {n} stage-1 trials + 1 stage-2", args.repeat, med, ""))
    slopes = [(b - a) / 24 for a, b in zip(times[8], times[32], strict=True)]
    rows.append(
        (
            "overhead per no-op trial (32 vs 8, same run)",
            args.repeat,
            None,
            f"{statistics.median(slopes):.2f} s/trial",
        )
    )
    rss_overhead = peak_rss_mib()

    qs = None
    if not args.skip_quickstart:
        from rts.search.config.convert import load_config

        cfg = load_config(ROOT / "configs" / "quickstart.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = run_search(cfg, storage=tmp, num_cpus=2)
            qs = time.perf_counter() - start
        s = out.summary
        rows.append(
            (
                "quickstart (configs/quickstart.yaml), end to end",
                1,
                qs,
                f"{s.stage1_trials}+{s.stage2_trials} trials; recommends "
                f"{{{', '.join(s.recommended_aux) or 'none'}}} (vuln {s.vuln:.3g} vs baseline "
                f"{s.baseline_vuln:.3g})",
            )
        )

    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"python {sys.version.split()[0]}, ray {ray.__version__}"
    )
    print()
    print("| measurement | runs | median wall (s) | notes |")
    print("| --- | --- | --- | --- |")
    for name, runs, wall, note in rows:
        wall_s = "" if wall is None else f"{wall:.1f}"
        print(f"| {name} | {runs} | {wall_s} | {note} |")
    print()
    print(
        f"driver peak RSS: {rss_overhead:.0f} MiB after the overhead runs, "
        f"{peak_rss_mib():.0f} MiB at the end (Ray workers not included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

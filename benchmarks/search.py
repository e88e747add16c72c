"""Benchmark of ``rts search``: Ray/Optuna overhead per trial, the quickstart's wall time, and
the deterministic mode against the asynchronous one.

    python -m benchmarks.search                 # overhead, modes, quickstart in both modes
    python -m benchmarks.search --skip-quickstart --repeat 5
    python -m benchmarks.search --skip-overhead --interrupt 3   # + a quickstart killed 3 times

Overhead: searches of no-op trials (:class:`tests.search.fake_trial.FakeTrial`, one epoch, no sleep)
with 8 and 32 stage-1 trials on a local Ray with 2 CPUs, run alternately in the same process;
the per-trial overhead is the slope between the two sizes (so Ray start-up and stage 2 cancel
out). Quickstart: ``configs/quickstart.yaml`` end to end, real models and attacks. Prints a
Markdown table: medians over ``--repeat`` runs, and the driver's peak RSS (Ray's worker
processes are not included: ``ru_maxrss`` of this process only).

Modes: a 16-trial search of fake trials (``--fake-sleep`` seconds per epoch plus up to
``--fake-jitter`` at random, so concurrent trials report in a different order every run; 3
epochs, successive halving, 2 trials at once) in each mode, ``--repeat`` times, alternately; the
notes say whether the repeats gave the same ``trials.parquet`` (ids, times and hosts aside).
The quickstart runs in both modes (``search.deterministic`` true, as shipped, and false); with
``--interrupt N`` a deterministic quickstart is also run as ``rts search`` in a subprocess that
is killed (``kill -9``) N times at random moments and rerun, and compared with the first.
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

import pandas as pd

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


RUN_SPECIFIC = ("ray_trial_id", "wall_s", "node_id", "hostname")
"""Columns of ``trials.parquet`` that say where and how fast a trial ran, not what it found."""


def comparable(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` without :data:`RUN_SPECIFIC`."""
    return trials.drop(columns=[c for c in RUN_SPECIFIC if c in trials.columns])


def same(tables: list[pd.DataFrame]) -> str:
    """``"yes"`` when every table equals the first (exactly), else ``"no"``."""
    first = comparable(tables[0])
    return "yes" if all(comparable(t).equals(first) for t in tables[1:]) else "no"


def fake_search(deterministic: bool, storage: str, sleep_s: float, jitter_s: float) -> tuple:
    """Wall seconds and trials table of the 16-trial fake search (Ray already running)."""
    from rts.search.config.convert import load_config
    from rts.search.results.pipeline import run_search
    from tests.search.fake_trial import FakeTrial

    mode = "det" if deterministic else "async"
    cfg = load_config(
        None,
        [
            f"name=fake16-{mode}",
            "search.pool=sDnkE",
            "search.n_trials=16",
            "search.encoders=[resnet18]",
            f"search.deterministic={str(deterministic).lower()}",
            "search.batch=4",
            "stage1.epochs=3",
            "stage2.top_k=2",
            "stage2.epochs=2",
        ],
    )
    start = time.perf_counter()
    out = run_search(cfg, storage=storage, trial_fn=FakeTrial(sleep_s=sleep_s, jitter_s=jitter_s))
    return time.perf_counter() - start, out.trials


def quickstart(deterministic: bool, storage: str) -> tuple:
    """Wall seconds and outcome of ``configs/quickstart.yaml`` in one mode (Ray started here)."""
    from rts.search.config.convert import load_config
    from rts.search.results.pipeline import run_search

    value = str(deterministic).lower()
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [f"search.deterministic={value}"])
    start = time.perf_counter()
    out = run_search(cfg, storage=storage, num_cpus=2)
    return time.perf_counter() - start, out


def interrupted_quickstart(storage: str, kills: int, seed: int = 0) -> tuple[float, pd.DataFrame]:
    """``rts search configs/quickstart.yaml`` killed ``kills`` times, each after a random 15-90 s
    of its own start, then run to the end; total wall seconds and its ``trials.parquet``."""
    import random
    import signal
    import subprocess

    from tests.search.subproc import kill_session

    cmd = [sys.executable, "-m", "rts", "search", str(ROOT / "configs" / "quickstart.yaml")]
    cmd += ["--storage", storage, "--num-cpus", "2"]
    rng = random.Random(seed)
    start = time.perf_counter()
    for _ in range(kills):
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=rng.uniform(15, 90))
            raise RuntimeError("the search ended before its kill: use shorter delays")
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            kill_session(proc.pid)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, start_new_session=True)
    wall = time.perf_counter() - start
    return wall, pd.read_parquet(Path(storage) / "quickstart" / "trials.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per overhead measurement")
    parser.add_argument("--skip-quickstart", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-modes", action="store_true", help="no 16-trial fake searches")
    parser.add_argument("--fake-sleep", type=float, default=0.5, help="fake epoch (s)")
    parser.add_argument("--fake-jitter", type=float, default=0.2, help="random extra (s)")
    parser.add_argument("--interrupt", type=int, default=0, help="kills of a quickstart run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import ray

    from rts.search.engine.session import RAY_ENV_DEFAULTS

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    rows: list[tuple] = []
    if not args.skip_overhead:
        rows += overhead_rows(args.repeat)
    rss_overhead = peak_rss_mib()
    if not args.skip_modes:
        rows += mode_rows(args.repeat, args.fake_sleep, args.fake_jitter)

    if not args.skip_quickstart:
        rows += quickstart_rows(args.interrupt)

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
    overhead = "" if args.skip_overhead else f"{rss_overhead:.0f} MiB after the overhead runs, "
    print(
        f"driver peak RSS: {overhead}{peak_rss_mib():.0f} MiB at the end (Ray workers not included)"
    )
    return 0


def overhead_rows(repeat: int) -> list[tuple]:
    """``ray.init`` and the no-op searches of 8 and 32 trials (asynchronous mode)."""
    import ray

    from rts.search.engine.session import ray_session

    rows = []
    init_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.shutdown()
        init_times.append(time.perf_counter() - start)
    rows.append(("ray.init + shutdown (2 CPUs)", repeat, statistics.median(init_times), ""))
    times: dict[int, list[float]] = {8: [], 32: []}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, 2):
        for r in range(repeat):
            for n in (8, 32):
                times[n].append(noop_search(n, os.path.join(tmp, f"r{r}")))
    for n, values in times.items():
        med = statistics.median(values)
        rows.append((f"no-op search, {n} stage-1 trials + 1 stage-2", repeat, med, ""))
    slopes = [(b - a) / 24 for a, b in zip(times[8], times[32], strict=True)]
    note = f"{statistics.median(slopes):.2f} s/trial"
    rows.append(("overhead per no-op trial (32 vs 8, same run)", repeat, None, note))
    return rows


def mode_rows(repeat: int, sleep_s: float, jitter_s: float) -> list[tuple]:
    """The 16-trial fake search in each mode, ``repeat`` times each, alternately."""
    from rts.search.engine.session import ray_session

    walls: dict[bool, list[float]] = {True: [], False: []}
    tables: dict[bool, list[pd.DataFrame]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, 2):
        for r in range(repeat):
            for det in (True, False):
                wall, trials = fake_search(det, os.path.join(tmp, f"r{r}"), sleep_s, jitter_s)
                walls[det].append(wall)
                tables[det].append(trials)
    rows = []
    for det in (True, False):
        name = "deterministic" if det else "asynchronous"
        note = f"same trials.parquet in all {repeat} runs: {same(tables[det])}"
        epochs = int(tables[det][0]["epochs"].sum())
        note += f"; {epochs} trial-epochs"
        label = f"fake search, 16 + 3 trials ({sleep_s:g} s/epoch + up to {jitter_s:g}), {name}"
        rows.append((label, repeat, statistics.median(walls[det]), note))
    return rows


def quickstart_rows(interrupt: int) -> list[tuple]:
    """The quickstart in both modes; with ``interrupt``, also a deterministic run killed that
    many times and resumed, compared with the uninterrupted one."""
    rows = []
    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for det in (True, False):
            wall, out = quickstart(det, os.path.join(tmp, "det" if det else "async"))
            outcomes[det] = out
            s = out.summary
            name = "deterministic (as shipped)" if det else "asynchronous"
            rows.append(
                (
                    f"quickstart, {name}",
                    1,
                    wall,
                    f"{s.stage1_trials}+{s.stage2_trials} trials, "
                    f"{int(out.trials['epochs'].sum())} trial-epochs; recommends "
                    f"{{{', '.join(s.recommended_aux) or 'none'}}} (vuln {s.vuln:.4g} vs "
                    f"baseline {s.baseline_vuln:.4g})",
                )
            )
        if interrupt:
            first = outcomes[True].trials
            wall, again = quickstart(True, os.path.join(tmp, "again"))
            note = f"same trials.parquet as the first run: {same([first, again.trials])}"
            rows.append(("quickstart, deterministic, again", 1, wall, note))
            wall, trials = interrupted_quickstart(os.path.join(tmp, "cut"), interrupt)
            note = f"same trials.parquet as the first run: {same([first, trials])}"
            rows.append((f"quickstart, deterministic, killed {interrupt} times", 1, wall, note))
    return rows


if __name__ == "__main__":
    sys.exit(main())

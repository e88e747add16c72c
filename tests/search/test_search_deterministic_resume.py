"""A deterministic search killed (``kill -9``) three times and rerun gives the tables of an
uninterrupted run, and trains no finished rung again.

``rts search`` runs in a subprocess (its own session, cleaned up by PID) with fake trials that
sleep a random extra time per epoch; it is killed in the middle of a stage-1 rung, just after a
new batch was proposed, and in the middle of stage 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from rts.search.engine.session import RAY_ENV_DEFAULTS
from tests.search.fake_trial import ENV_TRIAL
from tests.search.subproc import ROOT, kill_session, read_events, saved_statuses
from tests.search.test_search_deterministic import comparable

CONFIG = """
search: {main: d, pool: sDnk, max_aux: 2, n_trials: 6, batch: 3, encoders: [resnet18],
         seed: 5, deterministic: true}
stage1: {design: sampler, model: none, epochs: 2, grace_period: 1, reduction_factor: 2}
stage2: {top_k: 2, epochs: 2}
"""


def command(config: Path, name: str, storage: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rts",
        "search",
        str(config),
        f"name={name}",
        f"search.trial_fn={ENV_TRIAL}",
        "--storage",
        str(storage),
        "--num-cpus",
        "2",
    ]


def environment(log_path: Path) -> dict[str, str]:
    fake = {"sleep_s": 0.2, "jitter_s": 0.3, "noise": 0.05, "log_path": str(log_path)}
    # Ray's experiment snapshot at every step (its default waits seconds between snapshots, and
    # a snapshot that lags lets the kill moments pass unseen).
    snapshot = {"TUNE_GLOBAL_CHECKPOINT_S": "0"}
    return {**os.environ, **RAY_ENV_DEFAULTS, **snapshot, "RTS_FAKE_TRIAL": json.dumps(fake)}


def run_until(cmd: list[str], env: dict, log: Path, ready: Callable[[], bool]) -> None:
    """Start ``cmd``, ``kill -9`` it once ``ready()`` holds (which must happen before it ends)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert proc.poll() is None, f"it ended before the kill: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the moment of the kill never came"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_session(proc.pid)


def tables(root: Path) -> dict[str, pd.DataFrame]:
    return comparable(
        {
            name: pd.read_parquet(root / f"{name}.parquet")
            for name in ("trials", "history", "attacks")
        }
    )


def recorded_epochs(root: Path) -> set[tuple[str, int]]:
    """``(aux, epoch)`` of every stage-1 epoch in a rung record (auxes are distinct here)."""
    out = set()
    for path in (root / "stages" / "stage1").glob("batch*-rung*.json"):
        for trial in json.loads(path.read_text())["trials"]:
            out |= {(trial["config"]["aux"], row["epoch"]) for row in trial["rows"]}
    return out


def stage2_finished(events: Path) -> set[str]:
    """Stage-2 trials that have logged their last epoch (``stage2.epochs: 2``)."""
    return {
        e["trial_id"]
        for e in read_events(events)
        if e["stage"] == 2 and e["event"] == "epoch" and e["epoch"] == 2
    }


@pytest.mark.slow
def test_killed_three_times_then_rerun_gives_the_uninterrupted_tables(tmp_path):
    config = tmp_path / "det.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    storage = tmp_path / "runs"
    reference = subprocess.run(
        command(config, "ref", storage),
        cwd=ROOT,
        env=environment(tmp_path / "ref.jsonl"),
        capture_output=True,
        text=True,
        timeout=400,
        start_new_session=True,
    )
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    cmd = command(config, "cut", storage)
    events = tmp_path / "cut.jsonl"
    env = environment(events)
    root = storage / "cut"
    rung1 = root / "ray" / "stage1" / "batch0001-rung1"
    moments = [
        # A rung half done: one of its trials finished, the others not, no record yet.
        lambda: "TERMINATED" in saved_statuses(rung1).values(),
        # Batch 2 proposed (its asks are in the journal) and its first rung starting.
        lambda: (root / "ray" / "stage1" / "batch0002-rung1").exists(),
        # Stage 2 half done: a trial finished in Ray's snapshot, another still training (by
        # the trials' own log; Ray snapshots at every step here, see environment()).
        lambda: (
            "TERMINATED" in saved_statuses(root / "ray" / "stage2").values()
            and len(stage2_finished(events)) < 3
        ),
    ]
    recorded_before: list[tuple[int, set]] = []
    for i, ready in enumerate(moments):
        run_until(cmd, env, tmp_path / f"cut{i}.log", ready)
        recorded_before.append((len(read_events(events)), recorded_epochs(root)))
    assert not (root / "trials.parquet").exists()
    assert (root / "stages" / "stage1_trials.parquet").exists()  # the third kill was in stage 2
    # What a kill -9 can also take: the lines Ray's driver had buffered for its result files
    # (seen: finished stage-2 trials read back as "pruned after 0 epochs"). The rows each
    # trial keeps in its checkpoints must make up for them.
    for trial_dir in (root / "ray" / "stage2").glob("trial_*"):
        (trial_dir / "result.json").write_text("")
        (trial_dir / "progress.csv").unlink(missing_ok=True)

    rerun = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, start_new_session=True
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "stage 2: resuming" in rerun.stdout
    assert "Mode: deterministic" in rerun.stdout

    # The same tables as the uninterrupted run, to the last bit.
    ref, cut = tables(storage / "ref"), tables(root)
    for name in ref:
        pd.testing.assert_frame_equal(ref[name], cut[name], check_exact=True, obj=name)

    # Nothing recorded was trained again after a kill.
    log = read_events(events)
    for start, recorded in recorded_before:
        again = {
            (e["aux"], e["epoch"]) for e in log[start:] if e["event"] == "epoch" and e["stage"] == 1
        }
        assert not again & recorded

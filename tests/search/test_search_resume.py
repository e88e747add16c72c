"""Resume after ``kill -9``: ``rts search`` in a subprocess is killed mid-search and rerun.

Finished trials must be neither lost nor run again, and the rerun completes the search. The
subprocess runs in its own session; every process of that session (the driver and the Ray
processes it started) is killed by PID afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from rts.search.engine.session import RAY_ENV_DEFAULTS
from rts.search.engine.space import Candidate
from tests.search.fake_trial import ENV_TRIAL, fake_vulnerability
from tests.search.subproc import ROOT, kill_session, read_events, saved_statuses

CONFIG = """
name: resume
search: {main: d, pool: sDnk, max_aux: 2, n_trials: 8, encoders: [resnet18], seed: 3}
stage1: {design: sampler, model: none, epochs: 3, grace_period: 1, reduction_factor: 2}
stage2: {top_k: 2, epochs: 2}
"""


@pytest.mark.slow
def test_kill_9_then_rerun_loses_and_repeats_nothing(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    log_path = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        **RAY_ENV_DEFAULTS,
        "RTS_FAKE_TRIAL": json.dumps({"sleep_s": 0.6, "log_path": str(log_path)}),
    }
    cmd = [
        sys.executable,
        "-m",
        "rts",
        "search",
        str(config),
        f"search.trial_fn={ENV_TRIAL}",
        "--storage",
        str(tmp_path / "runs"),
        "--num-cpus",
        "2",
    ]
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    exp = tmp_path / "runs" / "resume" / "ray" / "stage1"
    try:
        deadline = time.monotonic() + 240
        while sum(v == "TERMINATED" for v in saved_statuses(exp).values()) < 2:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no stage-1 trial finished in time"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_session(proc.pid)
    statuses = saved_statuses(exp)
    finished_before = {t for t, status in statuses.items() if status == "TERMINATED"}
    assert len(finished_before) >= 2
    assert len(finished_before) < 8, "the kill came after stage 1 had finished"
    assert not (tmp_path / "runs" / "resume" / "trials.parquet").exists()
    before = read_events(log_path)
    # What a kill -9 can also take: the lines Ray's driver had buffered for its result files.
    # The rows each trial keeps in its checkpoints must make up for them.
    for trial_dir in exp.glob("trial_*"):
        (trial_dir / "result.json").write_text("")
        (trial_dir / "progress.csv").unlink(missing_ok=True)

    rerun = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, start_new_session=True
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "stage 1: resuming" in rerun.stdout
    assert "Recommended" in rerun.stdout

    after = read_events(log_path)[len(before) :]
    # Not repeated: a trial that had finished trains no epoch after the restart.
    assert not [e for e in after if e["trial_id"] in finished_before and e["event"] == "epoch"]
    # Not lost: every trial of stage 1 is in the table once, the finished ones with the
    # oracle's metrics, and no more trials than asked for were run.
    trials = pd.read_parquet(tmp_path / "runs" / "resume" / "trials.parquet")
    s1 = trials[trials["stage"] == 1].set_index("ray_trial_id")
    assert len(s1) == 8 and s1.index.is_unique and trials["trial_id"].is_unique
    assert finished_before <= set(s1.index)
    stage1_ids = {e["trial_id"] for e in before + after if e["stage"] == 1}
    assert stage1_ids == set(s1.index)
    for tid in finished_before:
        row = s1.loc[tid]
        assert row["status"] in ("completed", "pruned")
        ran = [e["epoch"] for e in before if e["trial_id"] == tid and e["event"] == "epoch"]
        assert row["epochs"] == max(ran)
        cand = Candidate(
            "d", row["aux"], "uniform", (1 / len(row["tasks"]),) * len(row["tasks"]), "resnet18"
        )
        assert row["vuln"] == pytest.approx(fake_vulnerability(cand, "resnet18", row["epochs"]))
    # Resumed trials continued from their checkpoint: no stage-1 trial trained an epoch twice
    # except the one interrupted mid-epoch.
    epochs = pd.DataFrame([e for e in before + after if e["stage"] == 1 and e["event"] == "epoch"])
    repeats = epochs.groupby(["trial_id", "epoch"]).size()
    assert (repeats > 1).sum() <= 2  # at most the two trials running at the kill
    assert (trials.loc[trials["stage"] == 2, "status"] == "completed").all()


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_exits_1(tmp_path):
    """Scripts must see a search that produced no recommendation (here: an injected fault)."""
    config = tmp_path / "fail.yaml"
    config.write_text(
        "name: fail\nsearch: {main: d, pool: s, max_aux: 1, n_trials: 2, encoders: [resnet18]}\n"
        "stage1: {epochs: 1}\nstage2: {top_k: 1, epochs: 1}\n"
    )
    # fail_on="" is contained in every auxiliary set, the empty one included: every trial fails.
    env = {**os.environ, **RAY_ENV_DEFAULTS, "RTS_FAKE_TRIAL": json.dumps({"fail_on": ""})}
    cmd = [sys.executable, "-m", "rts", "search", str(config), f"search.trial_fn={ENV_TRIAL}"]
    cmd += ["--storage", str(tmp_path / "runs"), "--num-cpus", "2"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, start_new_session=True
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no stage-2 trial completed" in proc.stderr
    trials = pd.read_parquet(tmp_path / "runs" / "fail" / "trials.parquet")
    assert (trials["status"] == "failed").all()
    assert trials["failure"].str.contains("injected fault").all()

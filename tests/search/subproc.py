"""Helpers of the tests that run ``rts search`` in a subprocess and kill it (``kill -9``).

The subprocess runs in its own session; every process of that session (the driver and the Ray
processes it started) is killed by PID afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: Ray workers import the fake trial from ``tests`` (the cwd)."""


def session_pids(sid: int) -> list[int]:
    """PIDs of the live processes of session ``sid`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(sid: int) -> None:
    for _ in range(50):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def saved_statuses(exp: Path) -> dict[str, str]:
    """Trial statuses in Ray's latest saved experiment state (what a restore starts from)."""
    files = sorted(exp.glob("experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except (OSError, ValueError):  # being written: read it on the next poll
        return {}
    out = {}
    for trial, _ in data["trial_data"]:
        trial = json.loads(trial)
        out[trial["trial_id"]] = trial["status"]
    return out

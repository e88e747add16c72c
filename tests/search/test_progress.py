"""The live progress callback on stand-in trials: plain lines, the terminal block, the estimate."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from rts.search.engine import progress
from rts.search.engine.progress import ProgressCallback, clock


def trial(n: int, status: str, epoch: int | None = None, aux: str = "s", encoder="resnet18"):
    """A stand-in for a Ray trial (what the callback reads of one)."""
    entry = {"main": "d", "aux": aux, "encoder": encoder}
    last = {} if epoch is None else {"epoch": epoch, "vuln": 1.0 + epoch / 10}
    return SimpleNamespace(
        trial_id=f"abc_{n:05d}",
        experiment_tag=f"{n}_candidate=x",
        config={"candidate": entry},
        status=status,
        last_result=last,
    )


def callback(lines: list[str], **kw) -> ProgressCallback:
    cb = ProgressCallback(
        "stage1", 1, 4, lines.append, final_epoch=3, planned_units=12.0, tty=False, **kw
    )
    cb.setup()
    return cb


def test_clock_reads_like_a_duration():
    assert [clock(None), clock(4.4), clock(65), clock(7260)] == ["?", "4s", "1m05s", "2h01m"]


def test_a_plain_line_per_epoch_with_trial_counts_and_eta(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    cb = callback(lines)
    a, b = trial(1, "RUNNING", 1), trial(2, "TERMINATED", 3)
    c, d = trial(3, "TERMINATED", 1, aux=""), trial(4, "ERROR", 1)
    trials = [a, b, c, d]
    now[0] = 110.0  # 10 s in, 1 unit seen: 1 unit per 10 s
    cb.on_trial_result(0, trials, a, {"epoch": 1, "vuln": 0.8123})
    line = lines[-1]
    assert line.startswith("stage1 s1-0001 d+s epoch 1/3 vuln 0.8123 | ")
    assert "1 running, 1 done, 1 pruned, 1 failed of 4 | 10s elapsed" in line
    assert line.endswith("ETA 1m50s")  # 12 planned - 1 reached = 11 units at 10 s each

    cb.on_trial_complete(0, trials, c)
    assert lines[-1] == "stage1 3/4: s1-0003 d alone epoch 1/3 vuln 1.1 pruned"
    cb.on_trial_error(0, trials, d)
    assert lines[-1] == "stage1 3/4: s1-0004 d+s failed"
    cb.on_experiment_end(trials)
    assert lines[-1].startswith("stage1: 1 running, 1 done, 1 pruned, 1 failed of 4 |")


def test_the_estimate_weighs_each_trial_by_its_encoder_cost(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    cb = callback(lines, costs={"resnet18": 1.0, "resnet50": 3.0})
    big = trial(1, "RUNNING", 1, encoder="resnet50")
    now[0] = 30.0
    cb.on_trial_result(0, [big], big, {"epoch": 1})
    assert cb.eta() == pytest.approx((12.0 - 3.0) / (3.0 / 30.0))  # 3 units in 30 s
    assert cb.eta(finished=True) == 0.0


def test_no_estimate_before_an_epoch_was_seen():
    lines: list[str] = []
    cb = callback(lines)
    t = trial(1, "RUNNING", 0)
    cb.on_trial_result(0, [t], t, {"epoch": 0, "vuln": 2.0})
    assert lines[-1].endswith("ETA ?")


def test_a_terminal_gets_a_redrawn_block_at_most_every_interval(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out: list[str] = []
    cb = callback(out)
    cb.tty = True
    a, b = trial(1, "RUNNING", 2), trial(2, "RUNNING", 1)
    now[0] = 3.0
    cb.on_trial_result(0, [a, b], a, {"epoch": 2})
    first = out[-1].splitlines()
    assert first[0] == "stage1: 2 running, 0 done, 0 pruned, 0 failed of 4 | 3s elapsed, ETA 30s"
    assert first[1:] == ["  s1-0001 d+s epoch 2/3 vuln 1.2", "  s1-0002 d+s epoch 1/3 vuln 1.1"]
    now[0] = 4.0
    cb.on_step_end(0, [a, b])  # within the interval: nothing
    cb.on_trial_result(0, [a, b], b, {"epoch": 1})
    assert len(out) == 1
    now[0] = 5.5
    cb.on_step_end(0, [a, b])
    assert out[-1].startswith("\x1b[3F\x1b[J")  # up over the 3 lines drawn, then cleared
    a.last_result = {"epoch": 3, "vuln": 0.9}  # Ray calls before it sets TERMINATED
    cb.on_trial_complete(0, [a, b], a)  # kept above the block, drawn at once
    lines = out[-1].removeprefix("\x1b[3F\x1b[J").splitlines()
    assert lines[0] == "stage1 1/4: s1-0001 d+s epoch 3/3 vuln 0.9 completed"
    assert lines[1].startswith("stage1: 1 running, 1 done")
    assert lines[2:] == ["  s1-0002 d+s epoch 1/3 vuln 1.1"]
    a.status = "TERMINATED"
    c = trial(3, "RUNNING")  # started, nothing reported yet
    now[0] = 8.0
    cb.on_step_end(0, [a, b, c])
    assert out[-1].splitlines()[-1] == "  s1-0003 d+s starting"
    cb.on_experiment_end([a, b])
    assert out[-1].startswith("\x1b[3F\x1b[Jstage1: ")


def test_it_pickles_with_the_experiment():
    cb = callback([])
    back = pickle.loads(pickle.dumps(cb))
    assert (back.label, back.final_epoch, back.planned_units) == ("stage1", 3, 12.0)


def test_a_trial_that_lost_its_node_is_said_to_be_retried_and_counted(tmp_path):
    """Ray's own "Trial task failed for trial <Ray id>" names no trial of ours; the progress
    line says which, from where it restarts and which retry it is; the count is kept for the
    summary."""
    from rts.search.engine.paths import read_retries

    lines: list[str] = []
    retries = tmp_path / "stages" / "retries.json"
    cb = ProgressCallback(
        "stage2",
        2,
        2,
        lines.append,
        final_epoch=4,
        tty=False,
        first=0,
        retries_file=str(retries),
        max_retries=3,
    )
    cb.setup()
    lost = trial(1, "RUNNING", epoch=3)
    lost.checkpoint = object()
    cb.on_trial_recover(1, [lost], lost)
    assert lines[-1] == (
        "stage2 s2-0002 lost its node or worker at epoch 3; retrying from its epoch-3 "
        "checkpoint (retry 1 of 3)"
    )
    cb.on_trial_recover(2, [lost], lost)
    assert lines[-1].endswith("(retry 2 of 3)")
    assert read_retries(retries) == {"s2-0002": 2}
    assert "2 retried" in cb.status([lost])


def test_a_full_training_trial_shows_its_clean_error_until_vuln_is_reported():
    from rts.search.engine.progress import metric_text

    nan = float("nan")
    assert metric_text({"epoch": 1, "vuln": nan, "clean_error": 0.42}, "vuln") == "clean_error 0.42"
    assert metric_text({"epoch": 1, "vuln": nan, "clean_error": nan}, "vuln") == "-"
    assert metric_text({"epoch": 3, "vuln": 0.5, "clean_error": 0.42}, "vuln") == "vuln 0.5"

"""A fake-trial search watched live: progress lines, TensorBoard files, MLflow runs, a caller's
Ray callback, and per-stage resources reaching the trials (one search, several checks)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import struct
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.trial import TrialSession, TrialSpec
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


@dataclass(frozen=True)
class RecordingTrial:
    """A :class:`FakeTrial` that logs the Ray resources of its worker at its start and the time
    of every report (Ray stops a trial inside a report: nothing after the last one runs)."""

    log_path: str

    def __call__(self, spec: TrialSpec, session: TrialSession) -> None:
        def log(event: str) -> None:
            line = {
                "trial": session.trial_id,
                "event": event,
                "time": time.time(),
                "stage": spec.stage,
                "threads": spec.threads,
                "resources": ray.get_runtime_context().get_assigned_resources(),
            }
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

        def report(metrics, write_checkpoint=None) -> None:
            log("report")
            session.report(metrics, write_checkpoint)

        log("start")
        FakeTrial(sleep_s=0.2)(spec, dataclasses.replace(session, report=report))


class ResultFile(tune.Callback):
    """A caller's callback: one JSON line per ``on_trial_result`` (module level: it pickles)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"trial": trial.trial_id, "epoch": result.get("epoch")}) + "\n")


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> step -> value (the
    TFRecord framing read by hand, the records by tensorboardX's protobuf)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                out[value.tag][event.step] = value.simple_value
    return dict(out)


@pytest.fixture(scope="module")
def live(local_ray, tmp_path_factory):
    """Run the search once; its outcome, echoed lines and the files its observers wrote."""
    tmp = tmp_path_factory.mktemp("live")
    mlruns = tmp / "mlruns"
    overrides = [
        "name=live",
        "search.pool=sk",
        *EARLY_SCREEN,
        "search.max_aux=1",
        "search.sampler=grid",
        "search.encoders=[resnet18]",
        "stage1.epochs=2",
        "stage1.grace_period=1",
        "stage2.top_k=1",
        "stage2.epochs=1",
        "stage2.uniform_twins=false",
        "stage1.resources.cpus_per_trial=0.5",
        "stage1.resources.max_concurrent=1",
        "resources.cpus_per_trial=1",
    ]
    if HAS_MLFLOW:
        overrides += [f"tracking.mlflow.tracking_uri={mlruns.as_uri()}"]
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
        out = run_search(
            load_config(None, overrides),
            storage=tmp,
            trial_fn=RecordingTrial(str(tmp / "trials.jsonl")),
            echo=lines.append,
            callbacks=[ResultFile(str(tmp / "callback.jsonl"))],
        )
    trials = [json.loads(x) for x in (tmp / "trials.jsonl").read_text().splitlines()]
    results = [json.loads(x) for x in (tmp / "callback.jsonl").read_text().splitlines()]
    return {"out": out, "lines": lines, "trials": trials, "results": results, "mlruns": mlruns}


def test_progress_prints_a_line_per_epoch_with_counts_and_eta(live):
    history = live["out"].history
    epochs = history[history["epoch"] >= 0]
    per_epoch = [x for x in live["lines"] if " epoch " in x and " | " in x]
    # one line per epoch report (not a terminal: plain lines), stage 1 evaluates epoch 0 too
    assert len(per_epoch) == len(epochs)
    for _, row in epochs.iterrows():
        stage = f"stage{row['stage']}"
        final = 2 if row["stage"] == 1 else 1
        hits = [
            x
            for x in per_epoch
            if x.startswith(f"{stage} {row['trial_id']} ")
            and f" epoch {row['epoch']}/{final} " in x
        ]
        assert len(hits) == 1, (row.to_dict(), per_epoch)
        line = hits[0]
        assert "vuln " in line or "clean_error " in line
        for field in (" running, ", " done, ", " pruned, ", " failed of ", "elapsed, ETA "):
            assert field in line, line
    closing = [x for x in live["lines"] if x.startswith("stage2: ")]
    assert closing and "ETA 0s" in closing[-1] and "of 2 |" in closing[-1]


def test_tensorboard_files_hold_every_epoch_of_every_trial(live):
    out = live["out"]
    root = out.paths.root
    for trial_id, hist in out.history.groupby("trial_id"):
        stage = int(hist["stage"].iloc[0])
        scalars = read_scalars(root / "tensorboard" / f"stage{stage}" / str(trial_id))
        assert set(scalars["clean_error"]) == set(hist["epoch"])
        for _, row in hist.iterrows():
            assert scalars["clean_error"][row["epoch"]] == pytest.approx(row["clean_error"])
        assert "hostname" not in scalars  # strings are not scalars
    # Ray's own TensorBoard logger is replaced: no event files in the trials' Ray folders
    assert not list((root / "ray").rglob("events.out.tfevents.*"))


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed (the [mlflow] extra)")
def test_mlflow_file_store_has_a_run_per_trial_with_epoch_metrics(live, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(live["mlruns"].as_uri())
    experiment = client.get_experiment_by_name("live")
    runs = client.search_runs([experiment.experiment_id])
    trials = live["out"].trials
    assert len(runs) == len(trials)
    assert {r.data.tags["stage"] for r in runs} == {"stage1", "stage2"}
    for run in runs:
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert epochs and max(m.value for m in epochs) >= 1
        assert client.get_metric_history(run.info.run_id, "clean_error")


def test_a_callers_callback_gets_every_result(live):
    history = live["out"].history
    assert len(live["results"]) == len(history)
    assert sorted(r["epoch"] for r in live["results"]) == sorted(history["epoch"])


def test_stage_resources_reach_the_trials(live):
    events = pd.DataFrame(live["trials"])
    cpus = events.groupby("stage")["resources"].agg(lambda r: {x.get("CPU") for x in r})
    assert cpus[1] == {0.5} and cpus[2] == {1.0}  # stage1.resources over resources
    assert set(events["threads"]) == {1}
    assert events[events["event"] == "start"].groupby("stage").size().to_dict() == {1: 3, 2: 2}
    # stage1.resources.max_concurrent=1: no two stage-1 trials overlapped in time, although
    # 2 CPUs fit 4 trials of 0.5
    s1 = events[events["stage"] == 1].groupby("trial")["time"].agg(["min", "max"])
    spans = sorted(zip(s1["min"], s1["max"], strict=True))
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))

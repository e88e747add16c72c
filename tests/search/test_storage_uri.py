"""``--storage URI``: staging, ordered atomic uploads, the journal in Ray's snapshot, and a
search that stops on one "machine" and resumes on another from a ``file://`` URI (the same
pyarrow code path as ``s3://``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import optuna
import pandas as pd
import pytest

import rts.search.engine.storage as storage
from rts.cli import main
from rts.search.config.convert import load_config
from rts.search.engine.paths import run_dir
from rts.search.engine.samplers import journal_storage
from rts.search.engine.space import Candidate
from rts.search.engine.storage import journal_at, sync_down, sync_up
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial, fake_vulnerability
from tests.search.tiny import EARLY_SCREEN

ray = pytest.importorskip("ray")

CFG = load_config(None, ["name=uri"])


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# URIs and staging


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/runs", "unsupported URI scheme 'ftp'; choose from"),
        ("foo://bucket/runs", "unsupported URI scheme 'foo'; choose from"),
        ("file://relative/runs", "a file:// URI needs an absolute path"),
        ("s3:///runs", "names no bucket or host"),
    ],
)
def test_bad_uri_is_a_one_line_value_error(uri, message):
    with pytest.raises(ValueError) as info:
        run_dir(CFG, uri)
    text = str(info.value)
    assert "\n" not in text and repr(uri) in text and message in text
    if "scheme" in message:
        assert "s3://" in text and "gs://" in text and "file://" in text


def test_cli_bad_scheme_exits_2_with_one_line(capsys):
    assert main(["search", "configs/quickstart.yaml", "--storage", "ftp://h/x", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rts: error: --storage 'ftp://h/x': unsupported")


def test_uri_run_dir_is_a_staging_copy_and_dry_run_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    paths = run_dir(CFG, "file:///data/runs/")
    assert paths.remote == "file:///data/runs/uri"
    assert paths.root.name == "uri" and paths.root.parent.parent == tmp_path / "staging"
    assert paths.ray == "file:///data/runs/uri/ray"
    assert paths.experiment(2) == "file:///data/runs/uri/ray/stage2"
    # Distinct URIs never share a staging folder, even when they sanitise alike.
    assert run_dir(CFG, "s3://a/b").root != run_dir(CFG, "s3://a_b").root
    # Folder storage is unchanged: no remote, Ray's storage is the folder.
    local = run_dir(CFG, tmp_path / "runs")
    assert local.remote is None and local.ray == str(tmp_path / "runs" / "uri" / "ray")

    code = main(["search", "configs/quickstart.yaml", "--storage", "s3://bucket/r", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "results would go to s3://bucket/r/quickstart (local copy: " in out
    assert not (tmp_path / "staging").exists()


# --------------------------------------------------------------------------------------------
# Sync up and down

RUN_FILES = {
    "config.yaml": b"name: uri\n",
    "optuna.journal": b'{"op_code": 0}\n',
    "checkpoints/s2-0001/last.pt": b"model-1" * 100,
    "checkpoints/s2-0002/last.pt": b"model-2" * 100,
    "stages/stage1_history.parquet": b"h1",
    "stages/stage1_attacks.parquet": b"a1",
    "stages/stage1_trials.parquet": b"t1",
    "stages/stage2_history.parquet": b"h2",
    "stages/stage2_attacks.parquet": b"a2",
    "stages/stage2_trials.parquet": b"t2",
    "history.parquet": b"h",
    "attacks.parquet": b"a",
    "trials.parquet": b"t",
    "summary.json": b"{}",
    "summary.md": b"# summary",
}
CHECKPOINTS = ["checkpoints/s2-0001/last.pt", "checkpoints/s2-0002/last.pt"]
NEEDS = {  # a file on the remote is only useful with these (what it references or summarises)
    "stages/stage1_trials.parquet": [
        "stages/stage1_history.parquet",
        "stages/stage1_attacks.parquet",
    ],
    "stages/stage2_trials.parquet": [
        "stages/stage2_history.parquet",
        "stages/stage2_attacks.parquet",
        *CHECKPOINTS,
    ],
    "trials.parquet": ["history.parquet", "attacks.parquet", *CHECKPOINTS],
    "summary.md": ["trials.parquet", "history.parquet", "attacks.parquet"],
    "summary.json": ["trials.parquet"],
}


def make_run(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


@pytest.mark.parametrize("fail_at", range(len(RUN_FILES)))
def test_an_upload_cut_anywhere_leaves_a_consistent_remote(tmp_path, monkeypatch, fail_at):
    local, remote = tmp_path / "staging", tmp_path / "remote"
    make_run(local, RUN_FILES)
    (local / ".trials.parquet.abc.tmp").write_bytes(b"half")  # an atomic write in progress
    (local / "optuna.journal.lock").write_bytes(b"")
    uri = f"file://{remote}"
    real_put, calls = storage._put, []

    def failing_put(src, fs, dest):  # the fault: the connection drops at upload number fail_at
        if len(calls) == fail_at:
            raise OSError("connection reset")
        calls.append(dest)
        real_put(src, fs, dest)

    monkeypatch.setattr(storage, "_put", failing_put)
    with pytest.raises(OSError, match="connection reset"):
        sync_up(local, uri)
    up = files_under(remote) if remote.exists() else {}
    assert len(up) == fail_at
    for rel, needed in NEEDS.items():
        if rel in up:
            assert set(needed) <= set(up), f"{rel} uploaded before {set(needed) - set(up)}"
    assert all(up[rel] == RUN_FILES[rel] for rel in up)  # no partial file

    monkeypatch.setattr(storage, "_put", real_put)
    rest = sync_up(local, uri)  # the rerun uploads only what is missing
    assert sorted(rest) == sorted(set(RUN_FILES) - set(up))
    assert files_under(remote) == RUN_FILES  # no temporary, lock or manifest file
    assert sync_up(local, uri) == []


def test_sync_up_sends_only_changed_files(tmp_path):
    local, remote = tmp_path / "staging", tmp_path / "remote"
    make_run(local, RUN_FILES)
    uri = f"file://{remote}"
    assert len(sync_up(local, uri)) == len(RUN_FILES)
    (local / "trials.parquet").write_bytes(b"t, longer now")
    (local / "checkpoints" / "s2-0003").mkdir()
    (local / "checkpoints" / "s2-0003" / "last.pt").write_bytes(b"model-3")
    assert sync_up(local, uri) == ["checkpoints/s2-0003/last.pt", "trials.parquet"]
    assert (remote / "trials.parquet").read_bytes() == b"t, longer now"


def test_sync_down_mirrors_the_remote_run_without_ray_state(tmp_path):
    remote, local = tmp_path / "remote", tmp_path / "staging"
    make_run(remote, RUN_FILES)
    make_run(remote, {"ray/stage1/experiment_state.json": b"{}", ".x.upload": b"partial"})
    make_run(local, {"trials.parquet": b"stale", "stages/stage3_trials.parquet": b"local only"})
    assert sync_down(f"file://{remote}", local) is True
    got = files_under(local)
    got.pop(storage.MANIFEST)
    assert got == {**RUN_FILES, "stages/stage3_trials.parquet": b"local only"}
    # Nothing changed since the download: nothing to upload back.
    assert sync_up(local, f"file://{remote}") == ["stages/stage3_trials.parquet"]


def test_sync_down_clears_a_staging_copy_whose_remote_is_gone(tmp_path):
    local = tmp_path / "staging"
    make_run(local, RUN_FILES)
    assert sync_down(f"file://{tmp_path / 'nothing'}", local) is False
    assert not local.exists()


# --------------------------------------------------------------------------------------------
# The Optuna journal travels with Ray's snapshot


def searcher_at(journal: Path):
    from rts.search.engine.samplers import SamplerRecipe
    from rts.search.engine.searcher import StudySearcher
    from rts.search.engine.space import Space

    sp = Space(  # continuous weights: no proposal repeats an earlier one
        main="d", pool="sDnk", min_aux=0, max_aux=4, encoders=("resnet18",), schemes=("searched",)
    )
    return StudySearcher(
        sp,
        sampler=SamplerRecipe("random", sp, 8),
        metrics=("vuln",),
        final_epoch=1,
        budget=8,
        storage=journal,
    )


def finished_values(journal: Path) -> list[float]:
    study = optuna.load_study(study_name="stage1", storage=journal_storage(journal))
    return [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_the_searchers_journal_is_restored_where_the_run_is_now(tmp_path):
    """The study travels in the searcher's saved state (what Ray's snapshot holds) and comes
    back into the staging copy of the machine that restores (journal_at)."""
    a, b = tmp_path / "machine-a" / "optuna.journal", tmp_path / "machine-b" / "optuna.journal"
    first = searcher_at(a)
    for i, x in enumerate((3.0, 1.0, 2.0)):
        first.suggest(f"t{i}")
        first.on_trial_complete(f"t{i}", {"vuln": x, "epoch": 1})
    state = tmp_path / "searcher-state.pkl"
    first.save(str(state))
    first.suggest("t3")
    first.on_trial_complete("t3", {"vuln": 9.0, "epoch": 1})  # after the save

    shutil.rmtree(a.parent)  # the first machine is gone
    with journal_at(b):
        searcher_at(a).restore(str(state))
    assert finished_values(b) == [3.0, 1.0, 2.0]
    assert not a.exists()

    # A journal that went on after the save is kept.
    again = searcher_at(b)
    again.restore(str(state))
    again.suggest("t3")
    again.on_trial_complete("t3", {"vuln": 5.0, "epoch": 1})
    with journal_at(b):
        searcher_at(a).restore(str(state))
    assert finished_values(b) == [3.0, 1.0, 2.0, 5.0]
    # A journal of another history is replaced by the saved one.
    b.write_bytes(b"")
    with journal_at(b):
        searcher_at(a).restore(str(state))
    assert finished_values(b) == [3.0, 1.0, 2.0]


# --------------------------------------------------------------------------------------------
# End to end: stop on one machine, resume on another


def ray_statuses(exp: Path) -> dict[str, str]:
    """Trial statuses in Ray's latest saved experiment state on the remote."""
    latest = max(exp.glob("experiment_state-*.json"))
    return {
        json.loads(t)["trial_id"]: json.loads(t)["status"]
        for t, _ in json.loads(latest.read_text())["trial_data"]
    }


def test_search_on_a_uri_resumes_on_a_fresh_machine(local_ray, tmp_path, monkeypatch):
    cfg = load_config(
        None,
        [
            "name=uri",
            *EARLY_SCREEN,
            "search.pool=sDnk",
            "search.max_aux=2",
            "search.n_trials=6",
            "search.seed=3",
            "search.encoders=[resnet18]",
            "stage1.epochs=2",
            "stage2.top_k=1",
            "stage2.epochs=1",
        ],
    )
    remote = tmp_path / "bucket" / "runs"
    uri = f"file://{remote}"
    log_path = tmp_path / "events.jsonl"
    trial_fn = FakeTrial(sleep_s=0.2, log_path=str(log_path))

    # Machine A stops after three stage-1 trials (SIGUSR1: Ray Tune's graceful stop).
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "machine-a"))
    stopped: list[str] = []

    def stop_after_three(line: str) -> None:
        if line.startswith("stage1 3/") and not stopped:
            stopped.append(line)
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(RuntimeError, match="run the same command again"):
        run_search(cfg, storage=uri, trial_fn=trial_fn, echo=stop_after_three)
    assert stopped
    finished_before = {
        t for t, s in ray_statuses(remote / "uri" / "ray" / "stage1").items() if s == "TERMINATED"
    }
    assert 3 <= len(finished_before) < 6
    # As after a kill -9 of A: on the remote only what went up before stage 1 started.
    for entry in (remote / "uri").iterdir():
        if entry.name not in ("config.yaml", "ray"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.rmtree(tmp_path / "machine-a")
    n_before = len(log_path.read_text().splitlines())

    # Machine B: another staging folder, the same command.
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "machine-b"))
    lines: list[str] = []
    out = run_search(cfg, storage=uri, trial_fn=trial_fn, echo=lines.append)
    assert out.paths.root.is_relative_to(tmp_path / "machine-b")
    assert any(line.startswith("resuming from file://") for line in lines)
    assert "stage 1: resuming " + uri + "/uri/ray/stage1" in lines

    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    before, after = events[:n_before], events[n_before:]
    assert not [e for e in after if e["trial_id"] in finished_before and e["event"] == "epoch"]
    s1 = out.trials[out.trials["stage"] == 1].set_index("ray_trial_id")
    assert len(s1) == 6 and s1.index.is_unique and finished_before <= set(s1.index)
    assert {e["trial_id"] for e in events if e["stage"] == 1} == set(s1.index)
    for tid in finished_before:
        row = s1.loc[tid]
        ran = [e["epoch"] for e in before if e["trial_id"] == tid and e["event"] == "epoch"]
        assert row["status"] in ("completed", "pruned") and row["epochs"] == max(ran)
        w = (1 / len(row["tasks"]),) * len(row["tasks"])
        cand = Candidate("d", row["aux"], "uniform", w, "resnet18")
        assert row["vuln"] == pytest.approx(fake_vulnerability(cand, "resnet18", row["epochs"]))
    s2 = out.trials[out.trials["stage"] == 2]
    assert len(s2) == 2 and (s2["status"] == "completed").all()

    # The study came back from Ray's snapshot (A's journal is gone) and no trial is left open.
    study = optuna.load_study(study_name="stage1", storage=journal_storage(out.paths.journal))
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("COMPLETE") + states.count("PRUNED") >= 6

    # The remote holds the finished run, byte for byte what B has.
    local = files_under(out.paths.root)
    local.pop(storage.MANIFEST)
    mirrored = {k: v for k, v in files_under(remote / "uri").items() if not k.startswith("ray/")}
    assert mirrored == local
    pd.testing.assert_frame_equal(pd.read_parquet(remote / "uri" / "trials.parquet"), out.trials)
    for ckpt in s2["checkpoint"]:
        assert (remote / "uri" / ckpt / "state.json").is_file()
    summary = (remote / "uri" / "summary.md").read_text()
    assert f"Results: {uri}/uri" in summary

    # Machine C finds the finished run: nothing is trained again.
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "machine-c"))
    lines.clear()
    again = run_search(cfg, storage=uri, trial_fn=trial_fn, echo=lines.append)
    assert "stage 1: finished earlier (6 trials), skipped" in lines
    assert len(log_path.read_text().splitlines()) == len(events)
    pd.testing.assert_frame_equal(again.trials, out.trials)


def test_analyze_and_report_read_a_run_from_its_uri_as_from_its_folder(
    tmp_path, monkeypatch, capsys
):
    """`rts analyze|report URI` equal `rts analyze|report FOLDER` (the URI read via pyarrow)."""
    from tests.search.test_analysis import write_fake_run_folder

    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    folder = write_fake_run_folder(tmp_path / "bucket" / "runs" / "fake")
    uri = f"file://{folder}"
    assert main(["analyze", str(folder), "--resamples", "99"]) == 0
    by_folder = capsys.readouterr().out
    assert main(["analyze", uri, "--resamples", "99"]) == 0
    staged = storage.staging_dir(f"file://{folder.parent}", "fake")
    by_uri = capsys.readouterr().out.replace(str(staged), str(folder))
    assert by_uri == by_folder
    assert main(["report", uri, "--resamples", "99"]) == 0
    where = capsys.readouterr().out
    assert str(staged) in where and (staged / "report" / "report.html").is_file()
    assert main(["report", str(folder), "--resamples", "99"]) == 0
    capsys.readouterr()
    a = (staged / "report" / "summary.md").read_text()
    b = (folder / "report" / "summary.md").read_text()
    assert a.replace(str(staged), "RUN") == b.replace(str(folder), "RUN")


def test_fetch_copies_a_checkpoint_folder_and_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    ckpt = tmp_path / "bucket" / "run" / "checkpoints" / "s2-0001"
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(b"weights")
    local = storage.fetch(f"file://{ckpt}")
    assert (local / "last.pt").read_bytes() == b"weights"
    single = storage.fetch(f"file://{ckpt}/last.pt")
    assert single.read_bytes() == b"weights"
    assert storage.fetch(tmp_path / "plain") == tmp_path / "plain"
    with pytest.raises(FileNotFoundError, match="nothing at"):
        storage.fetch(f"file://{tmp_path}/bucket/none")
    assert main(["attack", f"file://{tmp_path}/bucket/none"]) == 2

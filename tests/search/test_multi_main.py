"""Several main tasks in one run (``search.main: [d, s]``): one study each, resumable as a
whole, reported as the paper's Tables 1-2 (real Ray, real Optuna, fake trials)."""

from __future__ import annotations

import json

import pytest

from rts.cli import main as rts_main
from rts.search.config.convert import load_config
from rts.search.config.studies import study_configs
from rts.search.results.studies import run_studies
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

OVERRIDES = [
    "name=multi",
    "search.main=[d,s]",
    "search.pool=sdD",  # each study's pool leaves out its own main task
    "search.max_aux=1",  # pairs, as Tables 1-2
    *EARLY_SCREEN,  # the grid sampler's every pair, screened; the best observed carried over
    "search.sampler=grid",
    "search.encoders=[resnet18]",
    "stage1.epochs=1",
    "stage1.scheduler=fifo",
    "stage2.top_k=2",  # every pair reaches stage 2
    "stage2.reuse=false",  # and is trained there again (stage 1 has its recipe: 1 epoch, fifo)
    "stage2.epochs=1",
    "resources.max_concurrent=2",
]


class Stop(Exception):
    """Stands for a Ctrl-C between two studies."""


def starts(path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "start"]


def test_config_lists_one_study_per_main_task_without_its_main_in_the_pool():
    studies = study_configs(load_config(None, OVERRIDES))
    assert [(s.name, s.search.main, s.search.pool) for s in studies] == [
        ("main-d-depth_zbuffer", "d", "sD"),
        ("main-s-segment_semantic", "s", "dD"),
    ]
    assert load_config(None, ["search.main=[d]"]).search.main == ("d",)  # resolves to "d"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[d,x]", "search.main[1]: unknown task 'x'"),
        ("[d,s,d]", "search.main: lists 'd' twice: ['d', 's', 'd']"),
    ],
)
def test_a_bad_main_list_is_one_line_and_exit_2(value, message, capsys):
    rc = rts_main(["search", "configs/quickstart.yaml", f"search.main={value}", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"rts: error: {message}") and err.count("\n") == 1


def test_dry_run_sums_the_studies(tmp_path, capsys):
    args = ["search", "configs/quickstart.yaml", "--dry-run", "--storage", str(tmp_path)]
    assert rts_main([*args, "search.main=[r,d]", "search.max_aux=2"]) == 0
    out = capsys.readouterr().out
    assert "search 'main-r-reshading': main task 'r'" in out
    assert "search 'main-d-depth_zbuffer': main task 'd'" in out
    assert "all 2 studies (main tasks r, d): estimated trials" in out
    assert not any(tmp_path.iterdir())


def test_two_main_tasks_run_resume_and_report_tables_1_2(local_ray, tmp_path, capsys):
    cfg = load_config(None, OVERRIDES)
    first_log = tmp_path / "first.jsonl"

    def stop_at_second_study(line: str) -> None:
        if line.startswith("study 2/2"):
            raise Stop(line)

    with pytest.raises(Stop):
        run_studies(
            cfg,
            storage=tmp_path,
            trial_fn=FakeTrial(log_path=str(first_log)),
            echo=stop_at_second_study,
        )
    root = tmp_path / "multi"
    index = json.loads((root / "studies.json").read_text())
    assert index["studies"] == [
        {"main": "d", "folder": "main-d-depth_zbuffer", "finished": True},
        {"main": "s", "folder": "main-s-segment_semantic", "finished": False},
    ]
    assert (root / "main-d-depth_zbuffer" / "trials.parquet").is_file()
    assert len(starts(first_log)) == 3 + 3  # d: 3 stage-1 trials, 2 pairs + baseline

    second_log = tmp_path / "second.jsonl"
    lines: list[str] = []
    out = run_studies(
        cfg, storage=tmp_path, trial_fn=FakeTrial(log_path=str(second_log)), echo=lines.append
    )
    read_back = "study 1/2: main task 'd' in main-d-depth_zbuffer/ (finished earlier, read back)"
    assert read_back in lines
    # Only the unfinished study trained: s alone, s+d, s+D in each stage.
    assert sorted(e["aux"] for e in starts(second_log)) == ["", "", "D", "D", "d", "d"]
    assert set(out.outcomes) == {"d", "s"}
    assert all(s["finished"] for s in json.loads((root / "studies.json").read_text())["studies"])
    summary = (root / "summary.md").read_text()
    assert "## Search summary: 2 main tasks (d, s)" in summary
    assert "| d | " in summary and "| s | " in summary

    assert rts_main(["report", str(root)]) == 0
    capsys.readouterr()
    report = (root / "report" / "report.md").read_text()
    assert "## Tables 1-2: main task x auxiliary task" in report
    assert "### the worst case of the attacks (per image), uniform weights" in report
    table = report.split("### the worst case of the attacks (per image), uniform weights")[1]
    header, _, cells_d, cells_s = [
        [c.strip() for c in line.split("|")[1:-1]] for line in table.strip().splitlines()[:4]
    ]
    assert header == ["main", "s", "d", "D"]  # registry order
    assert cells_d[0] == "d" and cells_s[0] == "s"
    assert "Δ" not in cells_d[2] and "Δ" in cells_d[1] and "Δ" in cells_d[3]  # diagonal: d alone
    assert "Δ" not in cells_s[1] and "Δ" in cells_s[2] and "Δ" in cells_s[3]
    # The fake oracle: s and D make d more robust (-0.20, -0.05), d makes s less (+0.10); the
    # per-image spread is tiny, so every difference is significant (bold).
    assert "**Δ -0.2 " in cells_d[1] and "**Δ -0.05 " in cells_d[3]
    assert "**Δ +0.1 " in cells_s[2]
    assert (root / "main-d-depth_zbuffer" / "report" / "report.html").is_file()
    assert (root / "report" / "report.html").is_file()

"""``rts attack RUN --eps ... --norm ...``: budget sweeps of a real search run, no retraining.

One tiny real search (two stage-2 models, 4 attacked images, FGSM + 1-step PGD) is run once per
module; every test sweeps its own copy of the run folder.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from rts.attacks.registry import parse_budgets
from rts.cli import main
from rts.search.analysis.rundata import load_run
from rts.search.config.convert import load_config
from rts.search.results.pipeline import run_search
from tests.search.tiny import TINY_REAL_SEARCH

pytest.importorskip("ray")
# an untrained resnet has dead ReLU paths: zero input gradients are expected here
pytestmark = pytest.mark.filterwarnings("ignore:.*input gradient is zero:RuntimeWarning")

OVERRIDES = ["name=sweep", *TINY_REAL_SEARCH, "attack.ensemble=[fgsm,pgd]"]
ROWS_PER_BUDGET = 3 * (2 + 1)
"""(fgsm, pgd, worst) × evaluated tasks of the two models (sd: 2, d: 1)."""
IMAGE_ROWS_PER_BUDGET = 3 * 4 * 2
"""(fgsm, pgd, worst) × 4 images × 2 models (the main task only)."""


@pytest.fixture(scope="module")
def search_run(local_ray, tmp_path_factory):
    """A finished real search: ``runs/sweep`` with two stage-2 checkpoints (eps 8/255, linf)."""
    storage = tmp_path_factory.mktemp("runs")
    out = run_search(load_config(None, OVERRIDES), storage=storage)
    assert (out.trials["status"] == "completed").all(), out.trials["failure"].tolist()
    return out.paths.root


@pytest.fixture
def run(search_run, tmp_path):
    """This test's own copy of the run folder."""
    copy = tmp_path / "runs" / search_run.name
    shutil.copytree(search_run, copy, ignore=shutil.ignore_patterns("ray"))
    return copy


def sweep(run, *args: str) -> int:
    return main(["attack", str(run), *args, "--no-progress", "--device", "cpu"])


def tables(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(run / "attacks.parquet"), pd.read_parquet(run / "images.parquet")


def budget_rows(frame: pd.DataFrame, eps: float) -> pd.DataFrame:
    return frame[(frame["eps"] - eps).abs() < 1e-9]


def test_sweep_appends_only_missing_budgets_and_a_rerun_adds_nothing(run, capsys):
    attacks0, images0 = tables(run)
    assert sweep(run, "--eps", "4/255,8/255") == 0
    attacks1, images1 = tables(run)
    # 8/255 is the search's own budget: only 4/255 was attacked
    assert len(attacks1) == len(attacks0) + ROWS_PER_BUDGET
    assert len(budget_rows(attacks1, 4 / 255)) == ROWS_PER_BUDGET
    assert len(budget_rows(images1, 4 / 255)) == IMAGE_ROWS_PER_BUDGET
    assert len(images1) == len(images0) + IMAGE_ROWS_PER_BUDGET
    pd.testing.assert_frame_equal(attacks1.iloc[: len(attacks0)][attacks0.columns], attacks0)
    new = budget_rows(attacks1, 4 / 255)
    assert new[["skill", "vuln"]].notna().all().all()
    main_rows = new[new["task"] == "d"]
    assert main_rows[["vuln_low", "vuln_high"]].notna().all().all()
    assert (main_rows["vuln_low"] <= main_rows["vuln"]).all()
    assert (main_rows["vuln"] <= main_rows["vuln_high"]).all()
    assert "s2-0001 d+s linf 4/255: vuln" in capsys.readouterr().out

    assert sweep(run, "--eps", "4/255,8/255") == 0  # idempotent
    attacks2, images2 = tables(run)
    pd.testing.assert_frame_equal(attacks2, attacks1)
    pd.testing.assert_frame_equal(images2, images1)
    assert "0 model-budget(s) to attack, 4 there" in capsys.readouterr().out

    assert sweep(run, "--eps", "4/255,8/255,16/255") == 0  # one more eps: only its rows
    attacks3, images3 = tables(run)
    added = attacks3.iloc[len(attacks2) :]
    assert len(added) == ROWS_PER_BUDGET
    assert added["eps"].tolist() == pytest.approx([16 / 255] * ROWS_PER_BUDGET)
    assert len(images3) == len(images2) + IMAGE_ROWS_PER_BUDGET


def test_a_sweep_at_the_search_budget_reproduces_the_search(run):
    """The sweep attacks as the search did (images, seed, attacked set): with the search's rows
    removed (an injected loss), it measures the search's numbers again, intervals included."""
    attacks, images = tables(run)
    attacks.iloc[0:0].to_parquet(run / "attacks.parquet", index=False)
    images.iloc[0:0].to_parquet(run / "images.parquet", index=False)
    assert sweep(run, "--eps", "8/255") == 0
    again, again_images = tables(run)
    key = ["trial_id", "attack", "attacked", "task"]
    both = attacks.merge(again, on=key, suffixes=("", "_sweep"))
    assert len(both) == len(attacks) == len(again)
    assert both["adv_error_sweep"].tolist() == pytest.approx(both["adv_error"].tolist())
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    worst = again[(again["attack"] == "worst") & (again["task"] == "d")].set_index("trial_id")
    for column in ("vuln", "vuln_low", "vuln_high"):
        assert worst[column].tolist() == pytest.approx(trials.loc[worst.index, column].tolist())
    assert again_images["adv_error"].tolist() == pytest.approx(images["adv_error"].tolist())


def test_a_run_whose_images_have_no_budget_columns_is_swept(run):
    """Runs written before the budget columns: their rows are the search's budget."""
    _, images = tables(run)
    images.drop(columns=["norm", "eps", "steps"]).to_parquet(run / "images.parquet", index=False)
    assert sweep(run, "--eps", "4/255,8/255", "--trials", "s2-0002") == 0
    _, after = tables(run)
    assert len(after) == len(images) + 3 * 4  # (fgsm, pgd, worst) × 4 images of one model
    assert after[["norm", "eps", "steps"]].notna().all().all()
    assert len(budget_rows(after, 8 / 255)) == len(images)


def test_report_draws_vulnerability_against_eps_once_swept(run, tmp_path):
    assert main(["report", str(run), "--out", str(tmp_path / "before")]) == 0
    assert not (tmp_path / "before" / "figures" / "budgets.png").exists()
    assert sweep(run, "--eps", "4/255,8/255", "--trials", "s2-0001") == 0
    assert sweep(run, "--eps", "linf:2/255,l2:0.25") == 0
    assert main(["report", str(run), "--out", str(tmp_path / "after")]) == 0
    assert (tmp_path / "after" / "figures" / "budgets.png").stat().st_size > 0
    text = (tmp_path / "after" / "summary.md").read_text(encoding="utf-8")
    section = text.split("Vulnerability against the attack budget (RQ1)")[2]
    for budget in ("linf 2/255", "linf 4/255", "linf 8/255", "l2 0.25"):
        assert budget in section
    html = (tmp_path / "after" / "report.html").read_text(encoding="utf-8")
    assert 'id="budgets"' in html
    # the paper's tables still read the search's own budget only
    data = load_run(run)
    assert data.attacks["eps"].tolist() == pytest.approx([8 / 255] * len(data.attacks))
    assert set(data.sweeps["norm"]) == {"linf", "l2"}


def test_rerunning_the_search_keeps_the_swept_rows(run):
    assert sweep(run, "--eps", "4/255") == 0
    before, images = tables(run)
    run_search(load_config(None, OVERRIDES), storage=run.parent)  # finished: read back
    after, after_images = tables(run)
    assert len(after) == len(before) and len(after_images) == len(images)
    assert len(budget_rows(after, 4 / 255)) == ROWS_PER_BUDGET


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "4/255", "--norm", "linf,l3"], "unknown norm 'l3'; choose from linf, l2"),
        (["--eps", "4/255,big"], "eps must be a number or a fraction like 8/255, got eps='big'"),
        (["--eps", "l3:4/255"], "unknown norm 'l3'; choose from linf, l2"),
        (["--eps", "4/255", "--tasks", "d"], "--tasks applies to one checkpoint"),
        (["--eps", "4/255", "--trials", "s2-9"], "no completed stage-2 model 's2-9'"),
        ([], "a sweep of a search run needs --eps"),
    ],
)
def test_bad_sweep_arguments_exit_2_with_one_line(run, capsys, args, message):
    assert sweep(run, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rts: error: ") and message in err and err.count("\n") == 1


def test_a_list_of_budgets_on_one_checkpoint_exits_2(run, capsys):
    ckpt = run / "checkpoints" / "s2-0001"
    assert sweep(ckpt, "--eps", "4/255,8/255") == 2
    assert "sweeps the folder of an `rts search` run" in capsys.readouterr().err


def test_parse_budgets_reads_lists_and_norm_items():
    assert parse_budgets("4/255,8/255", "linf,l2") == (
        ("linf", 4 / 255),
        ("l2", 4 / 255),
        ("linf", 8 / 255),
        ("l2", 8 / 255),
    )
    assert parse_budgets("linf:8/255,l2:0.5", "linf") == (("linf", 8 / 255), ("l2", 0.5))
    with pytest.raises(ValueError, match="appears twice"):
        parse_budgets("8/255,linf:8/255", "linf")

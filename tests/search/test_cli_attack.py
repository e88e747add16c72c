"""``rts attack``: end to end on a tiny checkpoint, and the one-line errors (exit 2)."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import pytest
import torch

from rts.cli import main

# an untrained resnet at 16 px has dead ReLU paths: zero input gradients are expected here
pytestmark = pytest.mark.filterwarnings("ignore:.*input gradient is zero:RuntimeWarning")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with ``last.pt``: an untrained resnet18 s+d model on 16 px synthetic data."""
    from rts.models import build_model, save_checkpoint
    from rts.tasks.data import DataSpec

    folder = tmp_path_factory.mktemp("run")
    model = build_model("resnet18", "sd", decoder_width=4, seed=0)
    spec = DataSpec(size=16, n=8, seed=0)
    save_checkpoint(folder / "last.pt", model, {"data": asdict(spec)})
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_attack_writes_table(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "attack",
            str(run_dir),
            "--attack",
            "fgsm,pgd",
            "--eps",
            "8/255",
            "--steps",
            "1",
            "--tasks",
            "d,sd",
            "--n",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "relative_vulnerability" in printed and "worst" in printed
    df = pd.read_parquet(out / "attack.parquet")
    # (fgsm, pgd, worst) × attacked sets (d, sd) × evaluated tasks (s, d)
    assert len(df) == 12
    assert set(df["attacked"]) == {"d", "sd"} and set(df["task"]) == {"s", "d"}
    assert (df["n"] == 2).all()
    assert df["eps"].tolist() == pytest.approx([8 / 255] * 12)
    # The worst case is per sample over the attacks: its mean error is at least each attack's.
    # (A 1-step attack's final loss may be slightly below the clean one on an untrained model.)
    errors = df.pivot_table(index=["attacked", "task"], columns="attack", values="adv_error")
    assert (errors["worst"] >= errors[["fgsm", "pgd"]].max(axis=1) - 1e-9).all()
    assert set(df["clean_loss"].round(6)) == set(df[df["attack"] == "worst"]["clean_loss"].round(6))
    assert (out / "attack.json").is_file()
    assert not (run_dir / "attack.parquet").exists()


def test_attack_defaults_to_the_run_folder(run_dir, capsys):
    code = main(
        [
            "attack",
            str(run_dir / "last.pt"),
            "--attack",
            "fgsm",
            "--n",
            "1",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    df = pd.read_parquet(run_dir / "attack.parquet")
    assert set(df["attack"]) == {"fgsm"} and set(df["attacked"]) == {"sd"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eps", "0"], "eps must be in (0, 1]"),
        (["--eps", "2"], "eps must be in (0, 1]"),
        (["--eps=-1/255"], "eps must be in (0, 1]"),
        (["--eps", "abc"], "eps must be a number or a fraction"),
        (["--attack", "pgd,cw"], "unknown attack 'cw'"),
        (["--norm", "l3"], "unknown norm 'l3'"),
        (["--norm", "l2-batch", "--attack", "apgd"], "does not support norm 'l2-batch'"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--weights", "s:1"], "--weights: weights take task=weight pairs"),
        (["--tasks", "sk"], "attacked task(s) k not in the model"),
        (["--tasks", "sz"], "unknown task 'z'"),
        (["--option", "wgd.gama=1"], "unknown option 'gama' for attack 'wgd'; it takes"),
        (["--option", "pgd.step_size"], "ATTACK.OPTION=VALUE"),
        (["--option", "wgd.select=x"], "unknown wgd.select 'x'; choose from all, cyclic"),
        (["--attack", "pgd", "--option", "wgd.gamma=1"], "options for attack(s) wgd that"),
        (["--attack", "pgd", "--gamma", "1"], "options for attack(s) wgd that"),
        (["--gamma", "1", "--option", "wgd.gamma=2"], "--gamma and --option wgd.gamma"),
        (["--gamma", "inf"], "wgd.gamma must be a finite number"),
        (["--attack", "apgd", "--step-size", "1/255"], "--step-size applies to the fixed-step"),
        (["--step-size", "0"], "--step-size must be > 0"),
        (["--chain", "d,sd", "--tasks", "d"], "--chain and --tasks both"),
        (["--chain", "d"], "a chain needs at least two task sets"),
        (["--chain", "d,dk"], "not in the model"),
        (["--chain", "s,d"], "must add exactly one task to the previous set 's'"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_dir, capsys, argv, message):
    code = main(["attack", str(run_dir), "--no-progress", "--device", "cpu", *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rts: error: ") and message in err
    assert err.count("\n") == 1


def test_missing_checkpoint_exits_2(tmp_path, capsys):
    assert main(["attack", str(tmp_path / "nope")]) == 2
    assert "no checkpoint or run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["attack", str(tmp_path / "empty")]) == 2
    assert "has no last.pt or epoch_XXX.pt" in capsys.readouterr().err


def test_chain_writes_definition_3_and_prints_skill(run_dir, tmp_path, capsys):
    out = tmp_path / "chain"
    argv = ["attack", str(run_dir), "--attack", "pgd,wgd", "--steps", "2", "--chain", "d,sd"]
    argv += ["--n", "4", "--batch-size", "2", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "skill (1 - error / error of the training mean): s " in printed
    assert "Definition 3 under pgd" in printed and "+s: marginal" in printed
    chain = pd.read_parquet(out / "chain.parquet")
    assert set(chain["attack"]) == {"pgd", "wgd", "worst"}
    for _, rows in chain.groupby("attack"):
        rows = rows.sort_values("step")
        assert list(rows["tasks"]) == ["d", "sd"]
        av = rows["adv_vulnerability"].to_numpy()
        assert rows["marginal"].iloc[1] == pytest.approx(av[1] - av[0])
    table = pd.read_parquet(out / "attack.parquet")
    assert set(table["attacked"]) == {"d", "sd"}  # the per-task table of the same attacks
    pgd_sd = table[(table["attack"] == "pgd") & (table["attacked"] == "sd")]
    got = chain[(chain["attack"] == "pgd") & (chain["tasks"] == "sd")]["adv_vulnerability"]
    assert float(got.iloc[0]) == pytest.approx(float(pgd_sd["adv_vulnerability"].iloc[0]))
    import json

    settings = json.loads((out / "attack.json").read_text())
    assert settings["chain"] is True and set(settings["skill"]) == {"s", "d"}
    assert settings["step_rules"]["pgd"] == "eps/4"


def test_option_reaches_its_attack_and_shared_step_skips_apgd(run_dir, tmp_path):
    def table(name, *extra):
        out = tmp_path / name
        argv = ["attack", str(run_dir), "--attack", "pgd,apgd", "--steps", "2", "--n", "2"]
        argv += ["--tasks", "d", "--out", str(out), "--no-progress", "--device", "cpu", *extra]
        assert main(argv) == 0
        df = pd.read_parquet(out / "attack.parquet")
        return df.set_index(["attack", "task"])["adv_loss"]

    plain = table("plain")
    shared = table("shared", "--step-size", "1/255")
    own = table("own", "--option", "pgd.step_size=1/255")
    assert shared["apgd"].tolist() == plain["apgd"].tolist()  # APGD never takes it
    assert shared["pgd"].tolist() == own["pgd"].tolist()  # the same step, two ways
    assert shared["pgd"].tolist() != plain["pgd"].tolist()  # and it did reach PGD
    apgd_own = table("apgd_own", "--option", "apgd.step_size=1/255")
    assert apgd_own["apgd"].tolist() != plain["apgd"].tolist()

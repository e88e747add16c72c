"""``rts train``: end to end on tiny synthetic data, YAML configs, resume, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from rts.cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    """``rts train --threads`` sets torch's thread count for the process; give it back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


TINY = [
    "--size",
    "32",
    "--n",
    "24",
    "--decoder-width",
    "8",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--no-progress",
    "--device",
    "cpu",
]


def test_train_writes_checkpoints_metrics_config_and_resumes(tmp_path, capsys):
    from rts.models import load_checkpoint

    out = tmp_path / "run"
    args = ["train", "--tasks", "sd", "--epochs", "2", "--out", str(out), *TINY]
    assert main([*args, "--checkpoint-epochs", "1"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # one line per epoch while training, by default, with each task's skill
    assert "epoch 1/2: val error s=" in captured.err and "epoch 2/2:" in captured.err
    assert "(skill " in captured.err
    assert "val_error/s" in printed and "val_error/d" in printed and "weight/d" in printed
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "epoch_001.pt",
        "epoch_002.pt",
        "last.pt",
        "metrics.parquet",
    }
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics["epoch"]) == [1, 2]
    assert {"train_loss/s", "val_loss/d", "val_error/d", "weight/s"} <= set(metrics.columns)
    # skill = 1 - error / the trivial predictor's: finite, at most 1, and printed per epoch
    assert "skill/d" in printed and (metrics["skill/d"] <= 1).all()
    assert metrics[["skill/s", "skill/d"]].notna().all().all()
    model, meta = load_checkpoint(out / "epoch_002.pt", encoder="resnet18", tasks="sd")
    assert model.tasks == "sd" and meta["epoch"] == 2 and meta["main"] == "s"
    assert meta["data"]["size"] == 32 and meta["data"]["n"] == 24
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["tasks"] == "sd" and config["epochs"] == 2 and config["weighting"] == "uniform"
    assert config["schedule_resolved"]["optimizer"] == "adam"

    # a second run into the same folder must be explicit about resuming
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (
        main(["train", "--tasks", "sd", "--epochs", "3", "--out", str(out), *TINY, "--resume"]) == 0
    )
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert (out / "epoch_003.pt").exists()


def test_yaml_config_and_command_line_override(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tasks": "d,n",
                "main": "d",
                "epochs": 5,
                "weighting": "manual",
                "weights": {"d": 1.0, "n": 0.5},
                "size": 32,
                "n": 24,
                "decoder-width": 8,
                "batch_size": 4,
                "threads": 1,
                "progress": False,
                "device": "cpu",
            }
        )
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(out)]) == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["epochs"] == 1  # the command line wins
    assert resolved["weights"] == {"d": 1.0, "n": 0.5}
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics.loc[0, "weight/n"] == 0.5 and metrics.loc[0, "weight/d"] == 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tasks", "sx"], "unknown task 'x'"),
        (["--tasks", "sd", "--main", "n"], "main: 'n' is not among tasks 'sd'"),
        (["--tasks", "sd", "--epochs", "0"], "epochs: must be >= 1, got 0"),
        (["--tasks", "sd", "--epochs", "two"], "epochs: expected an integer, got 'two'"),
        (["--tasks", "sd", "--data", "/no/such/folder"], "data folder not found"),
        (["--tasks", "sd", "--weighting", "manual"], "weights: weighting manual needs weights"),
        (["--tasks", "sd", "--weights", "s=1,d=1"], "weights: only used with weighting manual"),
        (
            ["--tasks", "sd", "--weighting", "equal"],
            "weighting: unknown value 'equal'",
        ),
        (
            ["--tasks", "sd", "--precision", "fp16"],
            "choose from auto, bf16, fp32",
        ),
        (["--tasks", "sd", "--epochs", "3", "--checkpoint-epochs", "5"], "after the last epoch"),
        (["--tasks", "sd", "--lr", "-1"], "lr: must be a number > 0"),
        (["--epochs", "3"], "tasks: is required"),
        (
            ["--tasks", "sd", "--encoder", "resnet19"],
            "encoder: unknown value 'resnet19'",
        ),
        (["--tasks", "sk", "--weighting", "optimal"], "optimal weights cover auxiliaries"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    assert main(["train", "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rts: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unknown_config_key_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("tasks: sd\nepoch: 3\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "epoch: unknown key; choose from" in capsys.readouterr().err


def test_bad_arguments_fail_before_torch_is_imported(tmp_path):
    code = (
        "import sys; from rts.cli import main; "
        f"rc = main(['train', '--tasks', 'sq', '--out', {str(tmp_path)!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert "unknown task 'q'" in done.stderr


def _registry_names() -> list[tuple[str, str]]:
    import typing

    from rts.models import ENCODERS, SCHEDULES
    from rts.models.train import Precision
    from rts.models.weighting import WEIGHTINGS
    from rts.tasks.encoding import CONVENTIONS

    names = [("encoder", n) for n in ENCODERS] + [("schedule", n) for n in SCHEDULES]
    names += [("weighting", n) for n in WEIGHTINGS] + [("convention", n) for n in CONVENTIONS]
    from rts.models import OUTPUT_INITS

    names += [("output_init", n) for n in OUTPUT_INITS]
    return names + [("precision", n) for n in typing.get_args(Precision)]


@pytest.mark.parametrize(("key", "name"), _registry_names())
def test_train_config_accepts_every_registered_name(tmp_path, key, name):
    """Registry names are read from the registries: a new entry is accepted without edits."""
    from rts.search.config.train import load_train_config

    flags = {"tasks": "sd", "main": "s", "out": str(tmp_path / "r"), key: name}
    if name == "manual":
        flags["weights"] = "s=1,d=0.5"
    cfg = load_train_config(None, flags)
    assert getattr(cfg, key) == name


def test_train_takes_key_value_overrides_after_the_flags(tmp_path):
    from rts.search.config.train import load_train_config

    flags = {"tasks": "sd", "out": str(tmp_path / "r")}
    overrides = ["epochs=3", "milestones=1,2", "weighting=manual", "weights={s: 1, d: 2}"]
    cfg = load_train_config(None, flags, overrides)
    assert (cfg.epochs, cfg.milestones, cfg.weights) == (3, (1, 2), {"s": 1.0, "d": 2.0})

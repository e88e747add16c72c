"""train(): determinism, resume, callbacks, checkpoints, NaN handling, metrics, learning."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rts.models import (
    SCHEDULES,
    NonFiniteLossError,
    Schedule,
    WeightingSpec,
    build_model,
    evaluate,
    load_checkpoint,
    make_weighting,
    precise_batchnorm,
    train,
)
from rts.tasks.losses import task_errors, task_losses

ADAM = Schedule("adam", 1e-3, milestones=())


def _model(tasks="sd", seed=0):
    return build_model("resnet18", tasks, decoder_width=8, seed=seed)


def _equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_identical_weights_other_seed_differs(tiny_data):
    data = tiny_data("sd", n=6)
    runs = []
    for seed in (0, 0, 1):
        model = _model()
        train(model, data, None, "uniform", ADAM, "cpu", epochs=1, batch_size=3, seed=seed)
        runs.append(model)
    assert _equal_states(runs[0], runs[1])
    assert not _equal_states(runs[0], runs[2])


def test_resume_continues_exactly(tiny_data, tmp_path):
    """1 epoch + resume to 2 == 2 epochs straight, learned weighting and RNG included."""
    data, val = tiny_data("sd", n=6), tiny_data("sd", n=3, seed=1)
    spec = WeightingSpec("gradnorm", lr=0.05)
    straight = _model()
    full = train(straight, data, val, spec, ADAM, "cpu", epochs=2, batch_size=3)
    first = _model()
    train(first, data, val, spec, ADAM, "cpu", epochs=1, batch_size=3, out_dir=tmp_path)
    resumed = _model(seed=99)  # the weights come from the checkpoint
    records = train(
        resumed,
        data,
        val,
        spec,
        ADAM,
        "cpu",
        epochs=2,
        batch_size=3,
        out_dir=tmp_path,
        resume_from=tmp_path / "last.pt",
    )
    assert _equal_states(straight, resumed)
    assert [r.epoch for r in records] == [1, 2]
    assert records[-1].weights == full[-1].weights
    assert records[-1].val_error == full[-1].val_error


def test_resume_refuses_another_setting(tiny_data, tmp_path):
    data = tiny_data("sd", n=4)
    train(_model(), data, None, "uniform", ADAM, "cpu", epochs=1, batch_size=2, out_dir=tmp_path)
    with pytest.raises(ValueError, match="its weighting is"):
        train(
            _model(),
            data,
            None,
            "gradnorm",
            ADAM,
            "cpu",
            epochs=2,
            batch_size=2,
            resume_from=tmp_path / "last.pt",
        )
    with pytest.raises(ValueError, match="its tasks is 'sd'"):
        train(
            _model("sdn"),
            tiny_data("sdn", n=4),
            None,
            "uniform",
            ADAM,
            "cpu",
            epochs=2,
            batch_size=2,
            resume_from=tmp_path / "last.pt",
        )


def test_on_epoch_false_stops_and_records_are_reported(tiny_data, tmp_path):
    data = tiny_data("sd", n=4)
    seen = []

    def on_epoch(record):
        seen.append(record)
        return False

    records = train(
        _model(),
        data,
        data,
        "uniform",
        ADAM,
        "cpu",
        on_epoch,
        epochs=3,
        batch_size=2,
        out_dir=tmp_path,
    )
    assert records == seen and len(records) == 1
    r = records[0]
    assert r.epoch == 1 and r.lr == 1e-3 and r.seconds > 0
    assert r.weights == {"s": 0.5, "d": 0.5}
    assert set(r.val_error) == set(r.val_loss) == set(r.train_loss) == {"s", "d"}
    frame = pd.read_parquet(tmp_path / "metrics.parquet")
    assert list(frame["epoch"]) == [1]
    assert frame.loc[0, "val_error/d"] == pytest.approx(r.val_error["d"])
    assert frame.loc[0, "weight/s"] == 0.5


def test_checkpoint_epochs_hold_the_model_after_that_epoch(tiny_data, tmp_path):
    data = tiny_data("sd", n=4)
    model = _model()
    train(
        model,
        data,
        None,
        "uniform",
        ADAM,
        "cpu",
        epochs=2,
        batch_size=2,
        checkpoint_epochs=[1, 2],
        out_dir=tmp_path,
        meta={"data": {"source": "toy"}},
    )
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "epoch_001.pt",
        "epoch_002.pt",
        "last.pt",
    ]
    loaded, meta = load_checkpoint(tmp_path / "epoch_002.pt", encoder="resnet18", tasks="ds")
    assert _equal_states(loaded, model)
    assert meta["epoch"] == 2 and meta["data"] == {"source": "toy"}
    assert meta["weighting"]["scheme"] == "uniform" and meta["task_weights"] == {"s": 0.5, "d": 0.5}
    first, meta1 = load_checkpoint(tmp_path / "epoch_001.pt")
    assert meta1["epoch"] == 1 and not _equal_states(first, model)


def test_zero_weight_decoder_is_untouched_by_training(tiny_data):
    model = _model()
    before = {k: v.clone() for k, v in model.decoders["d"].named_parameters()}
    spec = WeightingSpec("manual", weights={"s": 1.0, "d": 0.0})
    records = train(model, tiny_data("sd", n=4), None, spec, ADAM, "cpu", epochs=1, batch_size=2)
    after = dict(model.decoders["d"].named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert math.isnan(records[0].train_loss["d"]) and records[0].weights["d"] == 0.0


def test_nan_loss_names_task_and_epoch(tiny_data):
    model = _model()
    with torch.no_grad():
        model.decoders["d"].head.bias.fill_(float("nan"))  # inject the fault
    with pytest.raises(NonFiniteLossError, match=r"loss of task 'd' is nan at epoch 1 \(batch 0\)"):
        train(model, tiny_data("sd", n=4), None, "uniform", ADAM, "cpu", epochs=2, batch_size=2)


def test_precise_batchnorm_gives_the_population_statistics(tiny_data):
    """The first BN sees conv1 of the normalised image: its exact mean/var are an oracle."""
    data = tiny_data("d", n=6)
    model = _model("d")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    precise_batchnorm(model, data, images=6, batch_size=3, seed=0)
    x, _ = next(iter(data.batches(6)))
    with torch.no_grad():
        feats = model.encoder.conv1((x - model.mean) / model.std)
    bn = model.encoder.bn1
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, feats.var(dim=(0, 2, 3)), rtol=2e-3, atol=1e-6)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, state[k])}
    assert changed and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
    )
    assert model.training and bn.momentum == 0.1


def test_evaluate_averages_over_examples_not_batches(tiny_data):
    data = tiny_data("sdn", n=5)
    model = _model("sdn").eval()
    loss, error = evaluate(model, data, batch_size=2)  # batches of 2, 2, 1
    x, y = next(iter(data.batches(5)))
    with torch.no_grad():
        pred = model(x)
    for k in "sdn":
        assert loss[k] == pytest.approx(task_losses(pred, y, k)[k].mean().item(), rel=1e-5)
        assert error[k] == pytest.approx(task_errors(pred, y, k)[k].mean().item(), rel=1e-5)


def test_bf16_autocast_runs_on_cpu(tiny_data):
    model = _model()
    records = train(
        model,
        tiny_data("sd", n=4),
        tiny_data("sd", n=2),
        "uniform",
        ADAM,
        "cpu",
        epochs=1,
        batch_size=2,
        precision="bf16",
    )
    assert all(math.isfinite(v) for v in records[0].val_error.values())
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.encoder.conv1.weight.dtype == torch.float32  # autocast: fp32 master weights


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"epochs": 2, "checkpoint_epochs": [3]}, r"checkpoint epochs must be in 1\.\.2"),
        ({"epochs": 1, "checkpoint_epochs": [1]}, "needs out_dir"),
        ({"epochs": 1, "precision": "fp16"}, "unknown precision 'fp16'; choose from auto"),
        ({"epochs": 1, "batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_arguments(tiny_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(_model(), tiny_data("sd", n=2), None, "uniform", ADAM, "cpu", **kwargs)


def test_weighting_with_a_task_the_model_lacks_is_refused(tiny_data):
    with pytest.raises(ValueError, match=r"weighting has task\(s\) 'n'"):
        train(
            _model(),
            tiny_data("sd", n=2),
            None,
            make_weighting("uniform", "sdn"),
            ADAM,
            "cpu",
            epochs=1,
        )


def test_schedule_steps_and_presets():
    s = SCHEDULES["supplement"]
    assert (s.optimizer, s.lr, s.momentum) == ("sgd", 0.01, 0.99)
    assert [s.lr_at(e) for e in (0, 99, 100, 119, 120, 140, 149)] == pytest.approx(
        [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5, 1e-5]
    )
    code = SCHEDULES["code"]
    assert (code.optimizer, code.lr, code.milestones) == ("adam", 1e-3, (120, 140))
    assert code.scaled(15).milestones == (12, 14)
    assert code.scaled(150) == code
    with pytest.raises(ValueError, match="milestones must be increasing"):
        Schedule(milestones=(140, 120))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        Schedule("rmsprop")


@pytest.mark.slow
def test_training_on_synthetic_data_lowers_every_validation_error():
    """Learning really happens: every task's clean validation error falls."""
    from rts.tasks.data import DataSpec, load_data

    tasks = "sdn"
    train_set, val_set = load_data(DataSpec(size=32, n=64, seed=0), tasks)
    model = build_model("resnet18", tasks, decoder_width=16, seed=0)
    _, before = evaluate(model, val_set, batch_size=16)
    records = train(
        model,
        train_set,
        val_set,
        "uniform",
        Schedule("adam", 2e-3, milestones=()),
        "cpu",
        epochs=6,
        batch_size=8,
        seed=0,
    )
    after = records[-1].val_error
    for k in tasks:
        assert after[k] < 0.98 * before[k], (k, before[k], after[k])
    assert records[-1].train_loss["s"] < records[0].train_loss["s"]


@pytest.mark.needs_cuda
def test_amp_bf16_channels_last_on_cuda(tiny_data):
    model = _model()
    records = train(
        model,
        tiny_data("sd", n=8),
        tiny_data("sd", n=4),
        "gradnorm",
        ADAM,
        "cuda",
        epochs=1,
        batch_size=4,
        precision="auto",
    )
    assert next(model.parameters()).device.type == "cuda"
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(math.isfinite(v) for v in records[0].val_error.values())
    fp32 = evaluate(model, tiny_data("sd", n=4), precision="fp32")[1]
    bf16 = evaluate(model, tiny_data("sd", n=4), precision="bf16")[1]
    assert bf16["d"] == pytest.approx(fp32["d"], rel=0.1)

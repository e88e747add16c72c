"""Checkpoints: exact round trip, weights_only safety, mismatch refusal, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rts.models import (
    CHECKPOINT_FORMAT,
    build_model,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def model():
    m = build_model("resnet18", "sdn", decoder_width=8, seed=0)
    with torch.no_grad():  # non-default BN buffers, so the round trip covers them too
        m.train()(torch.rand(2, 3, 40, 24))
    return m.eval()


def test_round_trip_is_exact(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model, {"epoch": 3, "data": {"size": 64}})
    loaded, meta = load_checkpoint(path, encoder="resnet18", tasks="nds")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.training
    x = torch.rand(2, 3, 40, 24)
    with torch.no_grad():
        assert all(torch.equal(model(x)[k], loaded(x)[k]) for k in "sdn")
    assert meta["encoder"] == "resnet18" and meta["tasks"] == "sdn" and meta["decoder_width"] == 8
    assert meta["epoch"] == 3 and meta["data"] == {"size": 64}
    assert {"torch", "torchvision", "python"} <= set(meta["versions"])
    assert all(type(v) is str for v in meta["versions"].values())


def test_a_file_holding_a_pickled_object_is_refused(model, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "meta": {}, "model": model.state_dict(), "x": _Payload()},
        path,
    )
    with pytest.raises(ValueError, match=r"refusing checkpoint .* pickled objects"):
        load_checkpoint(path)
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)  # a pickled nn.Module
    with pytest.raises(ValueError, match="pickled objects"):
        load_checkpoint(whole)


class _Payload:
    """Stands for any object whose unpickling could run code."""


def test_foreign_or_broken_files_are_refused(model, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match="not an rts checkpoint"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_other_encoder_or_tasks_are_refused(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match="has encoder 'resnet18', not 'resnet50'"):
        load_checkpoint(path, encoder="resnet50")
    with pytest.raises(ValueError, match="has tasks 'sdn', not 'sd'"):
        load_checkpoint(path, tasks="sd")


def test_meta_must_be_primitives_and_a_failed_save_keeps_the_old_file(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"got float64 at meta\.lr"):
        save_checkpoint(path, model, {"epoch": 2, "lr": np.float64(0.1)})
    with pytest.raises(ValueError, match=r"got Tensor at meta\.w"):
        save_checkpoint(path, model, {"w": torch.ones(1)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_interrupted_write_leaves_the_previous_checkpoint(model, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model, {"epoch": 1})
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):  # write half a file, then die
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, {"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path)["meta"]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]

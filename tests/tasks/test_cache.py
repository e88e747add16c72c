"""The node-local data cache: built once, never half-written, read as memory maps."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from rts.tasks.cache import cache_key, cached
from rts.tasks.data import DataSpec, load_data

SPEC = {"size": 16, "n": 12, "seed": 0}


def _load(cache_dir: str, out: str) -> None:
    """A worker process: load through the cache and record what it saw."""
    train, _ = load_data(DataSpec(**SPEC, cache_dir=cache_dir), "sd")
    x, y = next(train.batches(len(train)))
    torch.save({"x": x, "d": y["d"], "pid": os.getpid()}, out)


def test_cached_data_equals_the_uncached_data_and_is_memory_mapped(tmp_path):
    plain = load_data(DataSpec(**SPEC), "sd")
    shared = load_data(DataSpec(**SPEC, cache_dir=str(tmp_path)), "sd")
    again = load_data(DataSpec(**SPEC, cache_dir=str(tmp_path)), "sd")  # read back
    for a, b, c in zip(plain, shared, again, strict=True):
        assert a.names == b.names == c.names
        xa, ya = next(a.batches(64))
        for other in (b, c):
            xb, yb = next(other.batches(64))
            assert torch.equal(xa, xb)
            assert torch.equal(ya["s"], yb["s"])
            assert torch.allclose(ya["d"], yb["d"], equal_nan=True)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (folder / "index.json").is_file() and (folder / "images.npy").is_file()
    import numpy as np

    mapped = np.load(folder / "images.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.uint8  # compact, raw dtype


def test_another_spec_gets_another_key(tmp_path):
    a = cache_key({"size": 16, "tasks": "sd"})
    assert a == cache_key({"tasks": "sd", "size": 16}) != cache_key({"size": 32, "tasks": "sd"})


def test_two_processes_racing_on_first_use_build_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    outs = [str(tmp_path / f"out{i}.pt") for i in range(2)]
    procs = [ctx.Process(target=_load, args=(str(tmp_path / "cache"), o)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    a, b = (torch.load(o, weights_only=True) for o in outs)
    assert torch.equal(a["x"], b["x"]) and torch.allclose(a["d"], b["d"], equal_nan=True)
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1  # one folder, no leftover temporary one


def test_a_build_that_fails_leaves_nothing_half_written(tmp_path):
    def broken():
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError, match="decoder crashed"):
        cached(tmp_path, "k", broken)
    assert not (tmp_path / "k").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
    names = ["b/point_0_view_0"]
    store = (names, torch.zeros(1, 3, 2, 2, dtype=torch.uint8), {"x": torch.ones(1, 2, 2)})
    got = cached(tmp_path, "k", lambda: store)
    assert got[0] == names and torch.equal(got[2]["x"], store[2]["x"])
    assert Path(tmp_path / "k" / "index.json").is_file()


def test_head_is_a_view_of_the_mapped_store_with_the_first_samples(tmp_path):
    train, _ = load_data(DataSpec(**SPEC, cache_dir=str(tmp_path)), "sd")
    head = train.head(3)
    assert head.names == train.names[:3] and len(head) == 3
    x, y = next(head.batches(8))
    xs, ys = next(train.subset([0, 1, 2]).batches(8))
    assert torch.equal(x, xs) and torch.allclose(y["d"], ys["d"], equal_nan=True)
    # no copy: the head's images live in the same (memory-mapped) storage as the whole set
    store = train._source.images.untyped_storage().data_ptr()
    assert head._source.images.untyped_storage().data_ptr() == store
    assert len(train.head(10_000)) == len(train) and len(train.head(0)) == 0
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        train.head(-1)

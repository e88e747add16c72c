"""One decoded copy of a data set per node: a read-only, memory-mapped cache on local disk.

Every trial process of a search used to decode and hold the whole data set; at the paper's scale
(256 px, ~12k views, 11 label domains) that is gigabytes per trial. With a cache folder
(``DataSpec.cache_dir``), the first process on a node decodes the data once into compact arrays
(uint8 images and class ids, float16 dense labels: 2 bytes a pixel, like Taskonomy's uint16
PNGs) and writes them, with the view names, into ``<cache_dir>/<key>/``; every process then maps
those files read-only (``numpy.load(mmap_mode="r")``), so the operating system keeps one copy in
its page cache for all of them. Batches are copied out of the map and converted per batch, as
from memory.

The folder is written once and atomically: the builder holds an exclusive lock
(``fcntl.flock``) while it writes into a temporary folder and renames it into place; others
wait on the lock and then map the finished folder, so two processes racing on first use never
see a half-written cache and never decode twice. The key is a hash of everything that changes
the decoded arrays (source, size, n, seed, convention, tasks, and the folder's modification
time for a real data set).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FORMAT = 1
"""Version of the cache layout; part of the key, so a new layout never reads an old one."""

Store = tuple[list[str], Tensor, dict[str, Tensor]]
"""``(names, images, {task domain: labels})`` of a decoded data set, in split-independent order."""


def cache_key(fields: dict) -> str:
    """A short stable hash of ``fields`` (JSON-serialisable)."""
    text = json.dumps({"format": FORMAT, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(folder: str | os.PathLike[str], key: str, build: Callable[[], Store]) -> Store:
    """The store under ``folder/key``: mapped when it exists, else built once and written.

    Args:
        folder: the node-local cache root (created if missing).
        key: :func:`cache_key` of what the store holds.
        build: decodes the data; called by at most one process per node and key.
    """
    root = Path(folder).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    if not (target / "index.json").is_file():
        with _locked(root / f".{key}.lock"):
            if not (target / "index.json").is_file():  # another process may have built it
                _write(target, build())
    return _open(target)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (a no-op where ``fcntl`` is missing: the
    atomic rename still keeps readers from half-written folders)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(target: Path, store: Store) -> None:
    names, images, labels = store
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        arrays = {"images": images, **{f"label_{k}": v for k, v in labels.items()}}
        for name, tensor in arrays.items():
            np.save(tmp / f"{name}.npy", tensor.contiguous().numpy(), allow_pickle=False)
        index = {"names": names, "labels": sorted(labels), "format": FORMAT}
        (tmp / "index.json").write_text(json.dumps(index), encoding="utf-8")  # written last
        if target.exists():  # a leftover without index.json: a crashed build
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open(target: Path) -> Store:
    index = json.loads((target / "index.json").read_text(encoding="utf-8"))

    def mapped(name: str) -> Tensor:
        array = np.load(target / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        with _quiet_readonly():
            return torch.from_numpy(array)

    labels = {k: mapped(f"label_{k}") for k in index["labels"]}
    return list(index["names"]), mapped("images"), labels


@contextlib.contextmanager
def _quiet_readonly() -> Iterator[None]:
    """torch warns that a read-only array is not writable; the cache is never written."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield

"""Datasets in memory: :class:`DataSpec` → :func:`load_data` → train / val :class:`TaskDataset`.

A data set is either the synthetic mini-Taskonomy, rendered in memory from its seed
(``source="synthetic"``), or a Taskonomy folder on disk (``source="/path/to/taskonomy"``).
Both are decoded by the same :func:`tasks.encoding.decode_sample`, so a written synthetic folder
loads to exactly the labels rendered in memory.

With ``cache=True`` (the default) every view is decoded once into compact tensors (uint8 images
and class ids, float16 dense labels); :meth:`TaskDataset.batches` is then plain tensor indexing
plus a dtype conversion, so CPU training never waits on PNG decoding. With ``cache=False`` a
folder's PNGs are read and decoded each time a batch is drawn (for data sets larger than RAM),
by ``workers`` ``torch.utils.data.DataLoader`` processes that decode the next batches while the
current one trains; the batches are the same for any number of workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rts.tasks.encoding import check_convention, decode_sample, expand, hflip
from rts.tasks.registry import canonical_tasks
from rts.tasks.taskonomy import Record, load_record, scan_folder, split_by_building

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
"""``DataSpec.source`` of the synthetic mini-Taskonomy (anything else is a folder path)."""

MIN_SIZE, MAX_SIZE = 8, 4096
"""Allowed square resolutions (pixels)."""


@dataclass(frozen=True)
class DataSpec:
    """Which data to load and how; only primitives, so it goes into checkpoints via ``asdict``.

    Attributes:
        source: ``"synthetic"`` or the path of a Taskonomy folder.
        size: square resolution the images and labels are resized to (pixels).
        n: number of synthetic images; for a folder, the most views read (evenly spread over
            the name-sorted views, so every building keeps its share; a warning is logged).
        seed: seed of the synthetic data (the folder split does not depend on it).
        convention: label normalisation, ``"mtrobust"`` (default) or ``"taskgrouping"``.
        val_fraction: share of the buildings held out for validation, in ``[0, 1)``.
        cache: decode everything once into memory (default) or re-read files per batch.
        cache_dir: with ``cache``, a node-local folder where the decoded arrays are written once
            and memory-mapped by every process (:mod:`rts.tasks.cache`: one copy per node);
            ``None`` keeps a private copy in this process.
    """

    source: str = SYNTHETIC
    size: int = 64
    n: int = 256
    seed: int = 0
    convention: str = "mtrobust"
    val_fraction: float = 0.2
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be 'synthetic' or a folder path, got {self.source!r}")
        for name in ("size", "n", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {name}={value!r}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(
                f"size must be in [{MIN_SIZE}, {MAX_SIZE}] pixels, got size={self.size}"
            )
        if self.n < 1:
            raise ValueError(f"n must be a positive number of images, got n={self.n}")
        check_convention(self.convention)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0.0 <= vf < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got val_fraction={vf!r}")
        object.__setattr__(self, "val_fraction", float(vf))
        if not isinstance(self.cache, bool):
            raise ValueError(f"cache must be true or false, got cache={self.cache!r}")
        if self.cache_dir is not None:
            if isinstance(self.cache_dir, os.PathLike):
                object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
            if not isinstance(self.cache_dir, str) or not self.cache_dir:
                raise ValueError(f"cache_dir must be a folder path or None, got {self.cache_dir!r}")

    @property
    def is_synthetic(self) -> bool:
        """True for the synthetic mini-Taskonomy."""
        return self.source == SYNTHETIC


class _MemorySource:
    """Decoded views in compact tensors: uint8 images, uint8 class ids, float16 dense labels."""

    def __init__(self, images: Tensor, labels: dict[str, Tensor]) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[index], {k: v[index] for k, v in self.labels.items()}

    def subset(self, index: Tensor) -> _MemorySource:
        return _MemorySource(*self.load(index))

    def slice(self, start: int, stop: int) -> _MemorySource:
        """Samples ``start:stop`` as views of this store (no copy)."""
        return _MemorySource(
            self.images[start:stop], {k: v[start:stop] for k, v in self.labels.items()}
        )

    @property
    def nbytes(self) -> int:
        tensors = [self.images, *self.labels.values()]
        return sum(t.element_size() * t.numel() for t in tensors)  # of this set (views counted)


class _FileSource:
    """Views read and decoded from their PNG files at every access (``cache=False``), by
    ``workers`` loader processes (0: in the calling process)."""

    def __init__(
        self, records: Sequence[Record], tasks: str, size: int, convention: str, workers: int = 0
    ) -> None:
        self.records = list(records)
        self.tasks, self.size, self.convention = tasks, size, convention
        self.workers = workers

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        picked = [self.records[int(i)] for i in index]
        return _stack(
            [load_record(r, self.tasks, size=self.size, convention=self.convention) for r in picked]
        )

    def subset(self, index: Tensor) -> _FileSource:
        picked = [self.records[int(i)] for i in index]
        return _FileSource(picked, self.tasks, self.size, self.convention, self.workers)

    def slice(self, start: int, stop: int) -> _FileSource:
        records = self.records[start:stop]
        return _FileSource(records, self.tasks, self.size, self.convention, self.workers)

    @property
    def nbytes(self) -> int:
        return 0


def _stack(samples: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, dict[str, Tensor]]:
    images = torch.stack([s[0] for s in samples])
    keys = samples[0][1].keys() if samples else ()
    return images, {k: torch.stack([s[1][k] for s in samples]) for k in keys}


class TaskDataset(torch.utils.data.Dataset):
    """Images and the labels of ``tasks``, as the contract's tensors.

    ``x`` is float32 ``[3, H, W]`` in ``[0, 1]``; labels are ``{key: Tensor}`` with dense labels
    float32 ``[C, H, W]`` (``NaN`` where invalid) and segmentation int64 ``[H, W]`` (255 =
    unlabelled). Use :meth:`batches` for training and evaluation loops.

    Attributes:
        tasks: task keys in registry order (``"sdn"``).
        convention: the label normalisation the data was decoded with.
        names: ``"<building>/point_<p>_view_<v>"`` of every sample, in order.
    """

    def __init__(
        self, tasks: str, convention: str, names: Sequence[str], source: _MemorySource | _FileSource
    ) -> None:
        if len(names) != len(source):
            raise ValueError(f"{len(names)} names for {len(source)} samples")
        self.tasks = canonical_tasks(tasks)
        self.convention = check_convention(convention)
        self.names = list(names)
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return (
            f"TaskDataset(tasks={self.tasks!r}, n={len(self)}, buildings={len(self.buildings)}, "
            f"convention={self.convention!r}, cached={self.cached})"
        )

    @property
    def cached(self) -> bool:
        """Whether the samples live decoded in memory."""
        return isinstance(self._source, _MemorySource)

    @property
    def buildings(self) -> list[str]:
        """The buildings the samples come from, sorted."""
        return sorted({n.rsplit("/", 1)[0] for n in self.names})

    @property
    def nbytes(self) -> int:
        """Memory held by the decoded cache in bytes (0 when reading from files)."""
        return self._source.nbytes

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Sample ``i``: ``(x [3, H, W], {key: label})``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        x, y = self._load(torch.tensor([i % n]))
        return x[0], {k: v[0] for k, v in y.items()}

    def subset(self, indices: Sequence[int] | Tensor) -> TaskDataset:
        """A dataset of the samples at ``indices`` (shares nothing mutable with this one)."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        names = [self.names[int(i)] for i in index]
        return TaskDataset(self.tasks, self.convention, names, self._source.subset(index))

    def head(self, n: int) -> TaskDataset:
        """The first ``n`` samples (all if fewer) as a view: no copy of a cached or mapped store."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        n = min(n, len(self))
        return TaskDataset(self.tasks, self.convention, self.names[:n], self._source.slice(0, n))

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        flip: bool = False,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """Yield one epoch of ``(x [B, 3, H, W], {key: label [B, ...]})`` CPU batches.

        Args:
            batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
            shuffle: visit the samples in a random order drawn from ``generator``.
            generator: CPU ``torch.Generator`` for the order and the flips (``None``: torch's
                default generator).
            flip: mirror each sample left-right with probability 1/2 (surface normals get
                their x component negated; see :func:`tasks.encoding.hflip`).
            drop_last: skip a last batch smaller than ``batch_size``.

        Files read per batch (``cache=False``) are decoded by the loader's worker processes,
        the order and flips of the whole epoch being drawn when it starts.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        plan = self._plan(batch_size, shuffle, generator, flip, drop_last)
        workers = getattr(self._source, "workers", 0)
        if workers == 0:
            for index, which in plan:
                yield self._load(index, which)
            return
        planned = _Planned(self, list(plan))
        yield from torch.utils.data.DataLoader(planned, batch_size=None, num_workers=workers)

    def _plan(
        self,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        flip: bool,
        drop_last: bool,
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The epoch's batches as (sample indices, flip mask or None), drawn lazily."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            if drop_last and len(index) < batch_size:
                break
            yield index, (torch.rand(len(index), generator=generator) < 0.5 if flip else None)

    def _load(self, index: Tensor, flip: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        images, labels = self._source.load(index)
        if flip is not None:
            images, labels = hflip(images, labels, flip)
        return expand(images, labels, self.tasks, self.convention)


class _Planned(torch.utils.data.Dataset):
    """An epoch's planned batches of a dataset, loaded by index (a loader worker's items)."""

    def __init__(self, data: TaskDataset, plan: list[tuple[Tensor, Tensor | None]]) -> None:
        self.data, self.plan = data, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.data._load(*self.plan[i])


def load_data(
    spec: DataSpec, tasks: str, *, progress: bool = False, workers: int | None = None
) -> tuple[TaskDataset, TaskDataset]:
    """Load the train and validation sets of ``spec`` with the labels of ``tasks``.

    The split is by building (see :func:`tasks.taskonomy.split_by_building`): deterministic,
    independent of file-system order and of ``spec.seed``.

    Args:
        spec: what to load.
        tasks: task keys (``"sdn"``); only their files (and their validity masks) are read.
        progress: show a progress bar while decoding.
        workers: threads decoding PNG files once (``cache``; 0 or 1 decode inline), or
            ``DataLoader`` processes decoding every batch (``cache=False``; 0 = inline);
            default ``min(4, CPUs)``.
    """
    workers = _workers(workers)
    keys = canonical_tasks(tasks)
    if spec.is_synthetic:

        def render() -> tuple[list[str], _MemorySource]:
            # Stored in split order (training views first), so both sets are slices (views) of
            # one store, also when that store is a memory map shared by processes.
            names, memory = _render_synthetic(spec, keys, progress)
            tr, va = split_by_building([_building_point(n) for n in names], spec.val_fraction)
            order = torch.tensor(tr + va, dtype=torch.long)
            return [names[i] for i in order], memory.subset(order)

        names, memory = _shared(spec, keys, {}, render)
        k = len(split_by_building([_building_point(n) for n in names], spec.val_fraction)[0])
        train = TaskDataset(keys, spec.convention, names[:k], memory.slice(0, k))
        val = TaskDataset(keys, spec.convention, names[k:], memory.slice(k, len(names)))
    else:
        if not Path(spec.source).expanduser().exists():
            raise FileNotFoundError(
                f"data folder not found: {spec.source} (source is 'synthetic' or a folder)"
            )
        records = cap_records(scan_folder(spec.source, keys, spec.convention), spec.n)
        items = [_building_point(r.name) for r in records]
        train_idx, val_idx = split_by_building(items, spec.val_fraction)
        # Decode in split order, so both sets are slices (views) of one store: no second copy.
        ordered = [records[i] for i in train_idx + val_idx]
        if spec.cache:
            stamp = {"mtime": Path(spec.source).expanduser().stat().st_mtime_ns}
            _, source = _shared(
                spec,
                keys,
                stamp,
                lambda: (
                    [r.name for r in ordered],
                    _decode_records(ordered, keys, spec, progress, workers),
                ),
            )
        else:
            source = _FileSource(ordered, keys, spec.size, spec.convention, workers)
        names = [r.name for r in ordered]
        k = len(train_idx)
        train = TaskDataset(keys, spec.convention, names[:k], source.slice(0, k))
        val = TaskDataset(keys, spec.convention, names[k:], source.slice(k, len(ordered)))
    log.info("loaded %s: %d train / %d val views (%s)", spec.source, len(train), len(val), keys)
    return train, val


def _workers(workers: int | None) -> int:
    """``workers`` checked, ``None`` = ``min(4, CPUs)``."""
    if workers is None:
        return min(4, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got workers={workers!r}")
    return workers


def _shared(
    spec: DataSpec, keys: str, extra: dict, build: Callable[[], tuple[list[str], _MemorySource]]
) -> tuple[list[str], _MemorySource]:
    """``build()``, or with ``spec.cache_dir`` its node-local memory-mapped copy."""
    if spec.cache_dir is None:
        return build()
    from rts.tasks.cache import cache_key, cached

    fields = dataclasses.asdict(spec) | {"tasks": keys, **extra}
    fields.pop("cache_dir")

    def store():
        names, memory = build()
        return names, memory.images, memory.labels

    names, images, labels = cached(spec.cache_dir, cache_key(fields), store)
    return names, _MemorySource(images, labels)


def cap_records(records: Sequence[Record], n: int) -> list[Record]:
    """At most ``n`` of the name-sorted ``records``, evenly spread so every building keeps its
    share (deterministic; a warning says when a folder is cut)."""
    if len(records) <= n:
        return list(records)
    log.warning(
        "reading %d of the %d views (DataSpec.n=%d caps a folder; raise n to read more)",
        n,
        len(records),
        n,
    )
    return [records[i * len(records) // n] for i in range(n)]


def _building_point(name: str) -> tuple[str, int]:
    """``"b/point_3_view_1"`` → ``("b", 3)``."""
    building, stem = name.rsplit("/", 1)
    return building, int(stem.split("_")[1])


def _allocate(first: tuple[Tensor, dict[str, Tensor]], n: int) -> tuple[Tensor, dict[str, Tensor]]:
    image, labels = first
    return (
        torch.empty((n, *image.shape), dtype=image.dtype),
        {k: torch.empty((n, *v.shape), dtype=v.dtype) for k, v in labels.items()},
    )


def _put(store: tuple[Tensor, dict[str, Tensor]], i: int, sample) -> None:
    store[0][i] = sample[0]
    for k, v in sample[1].items():
        store[1][k][i] = v


def _render_synthetic(
    spec: DataSpec, tasks: str, progress: bool
) -> tuple[list[str], _MemorySource]:
    """Render the synthetic views in memory and decode them exactly like files."""
    from tqdm import tqdm

    from rts.tasks import synthetic

    names: list[str] = []
    store = None
    stream = synthetic.iter_raw(spec.n, spec.size, spec.seed)
    for i, (building, stem, raw) in enumerate(
        tqdm(stream, total=spec.n, desc="rendering", unit="img", disable=not progress)
    ):
        sample = decode_sample(raw, tasks, size=spec.size, convention=spec.convention)
        if store is None:
            store = _allocate(sample, spec.n)
        _put(store, i, sample)
        names.append(f"{building}/{stem}")
    if store is None or len(names) != spec.n:
        raise ValueError(f"synthetic generator yielded {len(names)} views, expected n={spec.n}")
    return names, _MemorySource(*store)


def _decode_records(
    records: Sequence[Record], tasks: str, spec: DataSpec, progress: bool, workers: int
) -> _MemorySource:
    """Decode every record into preallocated compact tensors, in parallel threads.

    PNG decompression and the torch resizes release the GIL, so threads overlap well; results
    land at their record's index, so the outcome does not depend on scheduling.
    """
    from tqdm import tqdm

    def decode(record: Record) -> tuple[Tensor, dict[str, Tensor]]:
        return load_record(record, tasks, size=spec.size, convention=spec.convention)

    bar = tqdm(total=len(records), desc="decoding", unit="img", disable=not progress)
    store = None
    with bar, ThreadPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for i, sample in enumerate(pool.map(decode, records)):
            if store is None:
                store = _allocate(sample, len(records))
            _put(store, i, sample)
            bar.update()
    assert store is not None  # scan_folder never returns an empty list
    return _MemorySource(*store)


class _Inline:
    """A stand-in for a thread pool that maps in the calling thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn, items):
        return map(fn, items)

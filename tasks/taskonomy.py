"""Taskonomy folders on disk: scanning the layouts, reading the PNGs, splitting by building.

Layouts accepted (detected per folder, never by guessing from a name):

* MTRobust / Taskonomy: ``<root>/rgb/<building>/point_<p>_view_<v>_domain_rgb.png`` with the
  labels at ``<root>/<domain>/<building>/point_<p>_view_<v>_domain_<domain>.png``
  (``segment_semantic`` may be named ``segmentsemantic``, folder and suffix);
* taskgrouping: the same tree, but it finds a label by replacing ``rgb`` in the image path, so
  files may also be called ``point_<p>_view_<v>.png`` (no ``_domain_`` suffix); each
  ``<domain>/<building>`` folder may use either naming;
* flat (e.g. ``taskonomy-sample-model-1``): ``<root>/rgb/point_..._domain_rgb.png`` with no
  building level; the root folder's name is the single building.

Every problem is one line naming the file: ``missing label file for task 'd':
/x/depth_zbuffer/b1/point_0_view_0_domain_depth_zbuffer.png``. Decoding lives in
:mod:`tasks.encoding`; datasets in :mod:`tasks.data`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from rts.tasks.encoding import (
    MASK_DOMAIN,
    RAW_FORMATS,
    canonical_domain,
    check_convention,
    coerce_raw,
    decode_sample,
    domain_aliases,
    masked_tasks,
    required_domains,
)
from rts.tasks.registry import SEG_CLASSES, TASKS, get_task, parse_tasks

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^point_(\d+)_view_(\d+)(?:_domain_([A-Za-z0-9_]+))?\.png$")


@dataclass(frozen=True)
class Record:
    """One view on disk: its building, point and view, and the file of each raw domain.

    Attributes:
        building: building (Taskonomy "model") name, e.g. ``"allensville"``.
        point: point index ``p``.
        view: view index ``v``.
        files: ``(domain, path)`` pairs, canonical domain names (``"rgb"``, ``"normal"``, ...).
    """

    building: str
    point: int
    view: int
    files: tuple[tuple[str, str], ...] = field(default=())

    @property
    def stem(self) -> str:
        """``point_<p>_view_<v>``."""
        return f"point_{self.point}_view_{self.view}"

    @property
    def name(self) -> str:
        """``<building>/point_<p>_view_<v>``: unique within a data set."""
        return f"{self.building}/{self.stem}"

    def path(self, domain: str) -> Path:
        """The file holding ``domain`` for this view."""
        for d, p in self.files:
            if d == domain:
                return Path(p)
        raise KeyError(domain)


@dataclass(frozen=True)
class _Folder:
    """A domain folder resolved on disk: its path and, per building, ``{(p, v): file}``."""

    path: Path
    files: dict[str, dict[tuple[int, int], Path]]


def _must_be_data_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data folder not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"data source is not a folder: {path}")
    if not (path / "rgb").is_dir():
        raise FileNotFoundError(
            f"no 'rgb' folder in {path}: not a Taskonomy folder "
            "(expected rgb/<building>/point_<p>_view_<v>_domain_rgb.png)"
        )
    return path


def _domain_dir(root: Path, domain: str) -> Path | None:
    """The existing folder of ``domain`` under ``root`` (any alias), or ``None``."""
    for name in domain_aliases(domain):
        if (root / name).is_dir():
            return root / name
    return None


def _list_views(folder: Path, domain: str) -> dict[tuple[int, int], Path]:
    """``{(point, view): path}`` of the view PNGs in one ``<domain>/<building>`` folder.

    A file counts if it is ``point_<p>_view_<v>.png`` or ``..._domain_<name>.png`` where
    ``<name>`` is one of the domain's aliases; other files are ignored.
    """
    out: dict[tuple[int, int], Path] = {}
    aliases = domain_aliases(domain)
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _NAME_RE.match(entry.name)
            if m is None or (m.group(3) is not None and m.group(3) not in aliases):
                continue
            key = (int(m.group(1)), int(m.group(2)))
            # Both namings in one folder: prefer the suffixed (Taskonomy) name, deterministically.
            if key not in out or m.group(3) is not None:
                out[key] = Path(entry.path)
    return out


def _buildings(root: Path) -> tuple[list[str], bool]:
    """Building names in ``rgb/`` (sorted) and whether the layout is flat (no building level)."""
    rgb = root / "rgb"
    subdirs = sorted(e.name for e in os.scandir(rgb) if e.is_dir() and not e.name.startswith("."))
    if subdirs:
        return subdirs, False
    if any(_NAME_RE.match(e.name) for e in os.scandir(rgb)):
        return [root.resolve().name or "root"], True
    raise FileNotFoundError(
        f"no images in {rgb} (expected <building>/point_<p>_view_<v>_domain_rgb.png)"
    )


def _expected_name(rgb_file: Path, domain: str) -> str:
    """The label file name that pairs with ``rgb_file`` in the rgb file's own naming style."""
    m = _NAME_RE.match(rgb_file.name)
    assert m is not None  # only matching files are listed
    stem = f"point_{m.group(1)}_view_{m.group(2)}"
    return f"{stem}_domain_{domain}.png" if m.group(3) is not None else f"{stem}.png"


def _role(domain: str, tasks: str, convention: str) -> str:
    """How a domain is needed, for messages: ``label file for task 'd'`` / ``... mask ...``."""
    users = [k for k in tasks if get_task(k).domain == domain and k != "A"]
    if domain == "rgb":
        return "image file"
    if users:
        return f"label file for task {users[0]!r}"
    masked = masked_tasks(tasks, convention)
    return f"{domain} file (validity mask of task {masked[:1]!r})"


def _scan(
    root: Path, tasks: str, convention: str
) -> tuple[list[Record], list[str], dict[str, Path]]:
    """Records of every rgb view, the problems found (one line each) and the domain folders."""
    keys = parse_tasks(tasks)
    convention = check_convention(convention)
    buildings, flat = _buildings(root)
    has_mask = (root / MASK_DOMAIN).is_dir()
    domains = required_domains(keys, convention, has_mask_folder=has_mask)
    problems: list[str] = []
    folders: dict[str, Path] = {}
    for domain in domains:
        d = _domain_dir(root, domain)
        if d is None:
            role = _role(domain, keys, convention).replace(" file", " folder", 1)
            problems.append(f"missing {role}: {root / domain}")
        else:
            folders[domain] = d
    records: list[Record] = []
    for building in buildings:
        rgb_views = _list_views(root / "rgb" if flat else root / "rgb" / building, "rgb")
        label_views: dict[str, dict[tuple[int, int], Path] | None] = {}
        for domain, folder in folders.items():
            if domain == "rgb":
                continue
            sub = folder if flat else folder / building
            label_views[domain] = _list_views(sub, domain) if sub.is_dir() else None
        for key in sorted(rgb_views):
            rgb_file = rgb_views[key]
            files = [("rgb", str(rgb_file))]
            complete = True
            for domain, views in label_views.items():
                found = None if views is None else views.get(key)
                if found is None:
                    folder = folders[domain] if flat else folders[domain] / building
                    expected = folder / _expected_name(rgb_file, folders[domain].name)
                    problems.append(f"missing {_role(domain, keys, convention)}: {expected}")
                    complete = False
                else:
                    files.append((domain, str(found)))
            if complete:
                records.append(Record(building, key[0], key[1], tuple(files)))
    return records, problems, folders


def scan_folder(
    root: str | os.PathLike[str], tasks: str, convention: str = "mtrobust"
) -> list[Record]:
    """Every view of a Taskonomy folder with the files ``tasks`` need, sorted by name.

    Only the requested tasks' folders (plus their validity-mask source) are required. The first
    missing folder or file raises ``FileNotFoundError`` naming it; ``rts data check`` lists all.
    """
    path = _must_be_data_root(root)
    records, problems, _ = _scan(path, parse_tasks(tasks), convention)
    if problems:
        more = f" (and {len(problems) - 1} more; run `rts data check {path}`)"
        raise FileNotFoundError(problems[0] + (more if len(problems) > 1 else ""))
    if not records:
        raise FileNotFoundError(f"no views found in {path / 'rgb'}")
    return records


def read_png(path: str | os.PathLike[str], domain: str) -> np.ndarray:
    """Read one PNG as the raw array of ``domain`` (canonical shape and dtype, checked).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded or does not hold the domain's encoding (e.g. an 8-bit depth map).
    """
    from PIL import Image

    domain = canonical_domain(domain)
    try:
        with Image.open(path) as im:
            im.load()
            palette_rgb = im.mode == "P" and RAW_FORMATS[domain].channels == 3
            if palette_rgb or im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            array = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing {domain} file: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    return coerce_raw(domain, array, str(path))


def read_raw(record: Record, domains: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The raw arrays ``{domain: array}`` of one view (all its files, or ``domains``)."""
    wanted = None if domains is None else {canonical_domain(d) for d in domains}
    return {d: read_png(p, d) for d, p in record.files if wanted is None or d in wanted}


def load_record(
    record: Record,
    tasks: str,
    *,
    size: int | tuple[int, int] | None,
    convention: str = "mtrobust",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Read and decode one view: ``(image uint8 [3, H, W], compact labels)`` (see encoding)."""
    return decode_sample(read_raw(record), tasks, size=size, convention=convention)


# ---------------------------------------------------------------------------------------------
# Splits.


def _stable_rank(name: str) -> str:
    """A key that orders names pseudo-randomly but identically on every machine and run."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def split_names(names: Iterable[str], val_fraction: float) -> tuple[set[str], set[str]]:
    """Split unique names into ``(train, val)``: ``round(val_fraction · n)`` go to val.

    Deterministic and independent of the input order (names are ranked by a SHA-256 of the
    name). With at least two names and ``val_fraction > 0`` each side gets at least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(names), key=lambda n: (_stable_rank(n), n))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    return set(unique[n_val:]), set(unique[:n_val])


def split_by_building(
    items: Sequence[tuple[str, int]], val_fraction: float
) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` of items given as ``(building, point)``, split by building.

    Whole buildings go to one side, so no room is seen in training and validation. With a single
    building (e.g. the Taskonomy sample folder) the split falls back to whole points (all views
    of a point stay together) and logs a warning; with one point everything is training data.
    """
    buildings = {b for b, _ in items}
    if len(buildings) >= 2 or val_fraction == 0:
        _, val_b = split_names(buildings, val_fraction)
        val = [i for i, (b, _) in enumerate(items) if b in val_b]
    else:
        points = {str(p) for _, p in items}
        _, val_p = split_names(points, val_fraction)
        if val_p:
            log.warning(
                "only one building (%s): splitting validation by point instead",
                next(iter(buildings), ""),
            )
        val = [i for i, (_, p) in enumerate(items) if str(p) in val_p]
    val_set = set(val)
    return [i for i in range(len(items)) if i not in val_set], val


# ---------------------------------------------------------------------------------------------
# Validation (`rts data check`).


_CLIP_LIMITS = {"keypoints2d": round(0.005 * 65535), "edge_texture": round(0.08 * 65535)}
"""MTRobust clips these raw values: a large share above the limit hints at another encoding."""


@dataclass
class DomainSummary:
    """What ``rts data check`` found for one domain."""

    domain: str
    files: int = 0
    sizes: Counter = field(default_factory=Counter)
    dtype: str = ""
    minimum: float = float("inf")
    maximum: float = float("-inf")
    flagged: int = 0
    total: int = 0

    def add(self, array: np.ndarray, flagged: int = 0) -> None:
        """Account for one decoded raw array (its size, range and flagged pixel count)."""
        self.files += 1
        self.sizes[f"{array.shape[1]}x{array.shape[0]}"] += 1
        self.dtype = str(array.dtype)
        if array.size:
            self.minimum = min(self.minimum, float(array.min()))
            self.maximum = max(self.maximum, float(array.max()))
        self.flagged += flagged
        self.total += array.shape[0] * array.shape[1]


@dataclass
class CheckReport:
    """Result of :func:`check_folder`: per-domain summaries and the problems (one line each)."""

    root: Path
    tasks: str
    views: int
    buildings: int
    summaries: dict[str, DomainSummary]
    problems: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unreadable or out of range."""
        return not self.problems


def _flag_note(domain: str) -> str | None:
    if domain in ("depth_zbuffer", "depth_euclidean"):
        return "invalid (>= 64500)"
    if domain in _CLIP_LIMITS:
        return "clipped by MTRobust"
    if domain == "segment_semantic":
        return "unlabelled (0)"
    if domain == MASK_DOMAIN:
        return "masked out"
    return None


def _flagged(domain: str, a: np.ndarray) -> int:
    if domain in ("depth_zbuffer", "depth_euclidean"):
        return int((a >= 64500).sum())
    if domain in _CLIP_LIMITS:
        return int((a > _CLIP_LIMITS[domain]).sum())
    if domain == "segment_semantic":
        return int((a == 0).sum())
    if domain == MASK_DOMAIN:
        return int((~a).sum())
    return 0


def check_folder(
    root: str | os.PathLike[str],
    tasks: str | None = None,
    convention: str = "mtrobust",
    *,
    progress: bool = False,
) -> CheckReport:
    """Validate a Taskonomy folder for ``tasks`` (default all 11): every problem, not the first.

    Checks that the domain folders and every view's files exist, that each file decodes in its
    domain's raw encoding (dtype, channels), that all images share one size and each label has
    its image's size, and that segmentation ids are within ``0..17``.
    """
    path = _must_be_data_root(root)
    keys = parse_tasks(tasks if tasks is not None else "".join(TASKS))
    records, problems, folders = _scan(path, keys, convention)
    summaries = {d: DomainSummary(d) for d in ["rgb", *[d for d in folders if d != "rgb"]]}
    from tqdm import tqdm

    for rec in tqdm(records, desc="checking", unit="view", disable=not progress):
        rgb_hw = None
        for domain, file in rec.files:
            try:
                a = read_png(file, domain)
            except (ValueError, FileNotFoundError) as exc:
                problems.append(str(exc))
                continue
            summaries[domain].add(a, _flagged(domain, a))
            hw = a.shape[:2]
            if domain == "rgb":
                rgb_hw = hw
            elif rgb_hw is not None and hw != rgb_hw:
                problems.append(
                    f"size {hw[1]}x{hw[0]} differs from its image's {rgb_hw[1]}x{rgb_hw[0]}: {file}"
                )
            if domain == "segment_semantic" and a.size and int(a.max()) > SEG_CLASSES - 1:
                problems.append(
                    f"segmentation id {int(a.max())} out of range 0..{SEG_CLASSES - 1}: {file}"
                )
    rgb_sizes = summaries["rgb"].sizes
    if len(rgb_sizes) > 1:
        listed = ", ".join(f"{s} ({n})" for s, n in rgb_sizes.most_common())
        problems.append(f"images have {len(rgb_sizes)} different sizes in {path / 'rgb'}: {listed}")
    return CheckReport(
        root=path,
        tasks=keys,
        views=len(records),
        buildings=len({r.building for r in records}),
        summaries=summaries,
        problems=problems,
    )


def format_report(report: CheckReport) -> str:
    """The check summary as a fixed-width table (one row per domain)."""
    lines = [
        f"{report.root}: {report.views} views in {report.buildings} buildings, "
        f"tasks {report.tasks}",
        f"{'domain':<22}{'files':>7}  {'size':<12}{'dtype':<8}{'raw min':>9}{'raw max':>9}  note",
    ]
    for s in report.summaries.values():
        size = ", ".join(s.sizes) if len(s.sizes) <= 2 else f"{len(s.sizes)} sizes"
        lo = f"{s.minimum:g}" if s.files else "-"
        hi = f"{s.maximum:g}" if s.files else "-"
        note = _flag_note(s.domain)
        share = f"{100.0 * s.flagged / s.total:.1f}% {note}" if note and s.total else ""
        lines.append(f"{s.domain:<22}{s.files:>7}  {size:<12}{s.dtype:<8}{lo:>9}{hi:>9}  {share}")
    lines.append("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return "\n".join(lines)

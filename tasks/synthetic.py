"""Synthetic mini-Taskonomy: seeded, ray-cast rooms with all 11 Taskonomy labels.

The generator renders closed rooms (floor, walls, ceiling) furnished with spheres, boxes and
cylinders of several material families, lit by a point or directional light, and derives every
Taskonomy label from the same ray hits, so that labels agree with each other and with the image
(see :mod:`tasks.synthetic_render` and docs/synthetic.md). Taskonomy's naming carries over:

* a *building* is a scene family (room size, palette, texture set, object classes, light type),
  so splitting by building holds out unseen styles;
* a *point* is an object layout inside the building's room;
* a *view* is a camera pose looking at that layout.

Public API (docs/CONTRACTS.md, "tasks.synthetic"): :func:`render_view` (physical quantities),
:func:`encode_view` (raw Taskonomy encodings), :func:`iter_raw` (a deterministic stream of
views) and :func:`write_dataset` (the Taskonomy folder layout on disk).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rts.tasks.io import atomic_write_text
from rts.tasks.registry import TASKS
from rts.tasks.synthetic_render import SyntheticView, render
from rts.tasks.synthetic_scene import SEG_CLASS_NAMES, sample_camera, sample_layout

__all__ = [
    "DOMAINS",
    "GENERATOR_VERSION",
    "MAX_SIZE",
    "MIN_SIZE",
    "SEG_CLASS_NAMES",
    "VIEWS_PER_POINT",
    "SyntheticView",
    "building_name",
    "encode_view",
    "iter_raw",
    "render_view",
    "view_index",
    "write_dataset",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
"""Bumped whenever the same seed would render different pixels (recorded in synthetic.json)."""

MIN_SIZE, MAX_SIZE = 16, 512
VIEWS_PER_POINT = 4
"""Camera poses rendered per object layout (Taskonomy has several views per point)."""
IMAGES_PER_BUILDING = 16
"""``iter_raw(n, ...)`` spreads ``n`` images over ``max(2, ceil(n / 16))`` buildings."""

DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(["rgb", *(spec.domain for spec in TASKS.values())]))
"""The 11 Taskonomy domains written per view, image first (``rgb`` also serves the autoencoder)."""

DEPTH_UNITS_PER_METRE = 512.0
DEPTH_NO_SURFACE = 65535
_CURV_OFFSET = np.array([123.572, 120.1])
_CURV_SCALE = np.array([31.922, 21.658])
_KEYPOINT2D_RANGE, _EDGE_TEXTURE_RANGE, _EDGE_OCCLUSION_RANGE = 0.005, 0.08, 0.00625


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as int if it is an integer in ``[lo, hi]``; ``ValueError`` naming it otherwise."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return int(value)  # type: ignore[arg-type]


def render_view(building: int, point: int, view: int, size: int, seed: int) -> SyntheticView:
    """Render view ``view`` of point ``point`` of building ``building`` at ``size x size`` px.

    Deterministic: the result depends only on the arguments (no global random state). The
    building fixes the scene family, the point the object layout, the view the camera pose;
    ``size`` changes only the sampling of the same scene.

    Returns:
        A :class:`SyntheticView` with the physical quantities (metres, unit normals, 1/m
        curvatures) and the derived responses in [0, 1].
    """
    seed = _check_int("seed", seed, 0)
    building = _check_int("building", building, 0)
    point = _check_int("point", point, 0)
    view = _check_int("view", view, 0)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    scene = sample_layout(seed, building, point)
    camera = sample_camera(scene, seed, building, point, view)
    return render(scene, camera, size)


def _u16(values: np.ndarray, scale: float) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * (scale * 65535.0)).astype(np.uint16)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _depth(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    units = np.rint(np.where(finite, values, 0.0) * DEPTH_UNITS_PER_METRE)
    return np.where(finite, np.clip(units, 0, DEPTH_NO_SURFACE - 1), DEPTH_NO_SURFACE).astype(
        np.uint16
    )


def encode_view(view: SyntheticView) -> dict[str, np.ndarray]:
    """The raw Taskonomy arrays of ``view``, ``{domain: array}`` (docs/CONTRACTS.md table).

    uint8 ``HxWx3`` for ``rgb``, ``normal``, ``principal_curvature``; uint8 ``HxW`` for
    ``segment_semantic`` (class + 1) and ``reshading``; uint16 ``HxW`` for depths (1/512 m,
    65535 = no surface) and the four responses (scaled into Taskonomy's value ranges).
    """
    valid = np.isfinite(view.edepth)
    curv = np.rint(_CURV_OFFSET + _CURV_SCALE * view.curvature.astype(np.float64))
    curv_raw = np.zeros((*view.seg.shape, 3), dtype=np.uint8)
    curv_raw[..., :2] = np.clip(curv, 0, 255).astype(np.uint8)
    normals = np.where(valid[..., None], view.normals, 0.0)
    raw = {
        "rgb": _u8(view.rgb),
        "segment_semantic": np.where(valid, view.seg + 1, 0).astype(np.uint8),
        "depth_zbuffer": _depth(view.zdepth),
        "depth_euclidean": _depth(view.edepth),
        "normal": _u8((normals + 1.0) / 2.0),
        "keypoints2d": _u16(view.keypoints2d, _KEYPOINT2D_RANGE),
        "keypoints3d": _u16(view.keypoints3d, 1.0),
        "edge_texture": _u16(view.edge_texture, _EDGE_TEXTURE_RANGE),
        "edge_occlusion": _u16(view.edge_occlusion, _EDGE_OCCLUSION_RANGE),
        "principal_curvature": curv_raw,
        "reshading": _u8(view.shading),
    }
    return raw


def building_name(building: int) -> str:
    """Folder name of building ``building``: ``synth-000``, ``synth-001``, …"""
    return f"synth-{building:03d}"


def _plan(n: int) -> list[tuple[int, int]]:
    """``(building, image count)`` for ``n`` images: as even as possible, first buildings first."""
    buildings = max(2, math.ceil(n / IMAGES_PER_BUILDING))
    base, extra = divmod(n, buildings)
    return [(b, base + (1 if b < extra else 0)) for b in range(buildings)]


def view_index(j: int) -> tuple[int, int]:
    """``(point, view)`` of the ``j``-th image of a building (``VIEWS_PER_POINT`` per point)."""
    return divmod(j, VIEWS_PER_POINT)


def iter_raw(n: int, size: int, seed: int) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
    """Yield ``(building, stem, raw)`` for ``n`` views, deterministically for ``(n, size, seed)``.

    ``n`` images are spread over ``max(2, ceil(n / 16))`` buildings named ``synth-000``, …;
    within a building, images are ``point_<p>_view_<v>`` with :data:`VIEWS_PER_POINT` views per
    point. ``raw`` is :func:`encode_view` of :func:`render_view`.
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    seed = _check_int("seed", seed, 0)
    for building, count in _plan(n):
        for j in range(count):
            point, view = view_index(j)
            raw = encode_view(render_view(building, point, view, size, seed))
            yield building_name(building), f"point_{point}_view_{view}", raw


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def write_dataset(
    out: str | os.PathLike[str], n: int, size: int, seed: int, *, progress: bool = False
) -> Path:
    """Write ``n`` synthetic views in Taskonomy's layout under ``out`` and return ``out``.

    Files: ``<out>/<domain>/<building>/point_<p>_view_<v>_domain_<domain>.png`` for the 11
    :data:`DOMAINS`, then ``<out>/synthetic.json`` (n, size, seed, buildings, class names,
    generator version). The JSON is removed first and written last, atomically, so its presence
    means the folder is complete; an interrupted run leaves no JSON.
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    seed = _check_int("seed", seed, 0)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output must be a directory, got a file: {root}")
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "synthetic.json"
    manifest.unlink(missing_ok=True)

    from tqdm import tqdm

    made: set[Path] = set()
    for building, stem, raw in tqdm(
        iter_raw(n, size, seed), total=n, disable=not progress, desc="synthetic", unit="img"
    ):
        for domain, array in raw.items():
            folder = root / domain / building
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            _save_png(folder / f"{stem}_domain_{domain}.png", array)
    info = {
        "generator": "tasks.synthetic",
        "generator_version": GENERATOR_VERSION,
        "n": n,
        "size": size,
        "seed": seed,
        "buildings": {building_name(b): count for b, count in _plan(n)},
        "views_per_point": VIEWS_PER_POINT,
        "domains": list(DOMAINS),
        "segment_classes": list(SEG_CLASS_NAMES),
    }
    atomic_write_text(manifest, json.dumps(info, indent=2) + "\n")
    log.info("wrote %d synthetic views (%d px) to %s", n, size, root)
    return root

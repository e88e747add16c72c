"""Scenes of the synthetic mini-Taskonomy: rooms, objects, materials, lights, cameras, all seeded.

A scene is plain, immutable data (frozen dataclasses of floats and tuples), so that the renderer
(:mod:`tasks.synthetic_render`) is a pure function of ``(scene, camera, size)``. Randomness lives
only in the three samplers, each drawing from its own ``numpy`` generator keyed by the dataset
seed and the Taskonomy-style indices, so any single view can be rendered on its own:

* :func:`sample_building` — the *scene family*: room size, palette, floor/wall textures, which
  object classes occur, the light type. Building-level splits therefore hold out whole styles.
* :func:`sample_layout` — a *point*: the objects (spheres, boxes, cylinders), rug, painting and
  light inside the building's room.
* :func:`sample_camera` — a *view*: a camera pose looking at the layout.

World frame: metres, ``y`` up, the floor at ``y = 0``, the room centred on ``x = z = 0``.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Vec3 = tuple[float, float, float]
TextureKind = Literal["plain", "checker", "stripes", "noise", "grain"]
LightKind = Literal["point", "directional"]

SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder")
FAMILIES: tuple[str, ...] = ("wood", "metal", "fabric", "stone")

SEG_FLOOR, SEG_WALL, SEG_CEILING, SEG_RUG, SEG_PAINTING = 0, 1, 2, 3, 4
SEG_CLASS_NAMES: list[str] = [
    "floor",
    "wall",
    "ceiling",
    "rug",
    "painting",
    *[f"{family} {shape}" for shape in SHAPES for family in FAMILIES],
]
"""The 17 semantic classes (ids 0..16): room surfaces, two decals, then shape × material family."""


def object_class(shape: str, family: str) -> int:
    """Semantic class id of an object of ``shape`` made of material ``family``."""
    return 5 + SHAPES.index(shape) * len(FAMILIES) + FAMILIES.index(family)


# ---------------------------------------------------------------------------------------------
# Scene data.


@dataclass(frozen=True)
class Texture:
    """A procedural solid texture ``colour(p)`` over 3-D points in the surface's local frame.

    Attributes:
        kind: ``plain`` (``color0``), ``checker`` (3-D checkerboard of cell ``scale``),
            ``stripes`` (period ``2 * scale`` along ``axis``), ``noise`` (sum of ``waves``,
            contrast ``gain``), ``grain`` (stripes warped by the noise, like wood).
        scale: metres (checker cell, half stripe period).
        color0, color1: linear RGB in [0, 1] mixed by the pattern.
        axis: unit direction of the stripes.
        offset: shifts the pattern so that cell borders do not fall on planes such as the floor.
        waves: ``(wx, wy, wz, phase)`` of the cosines of ``noise``/``grain`` (angular wave vector
            in rad/m).
        gain: contrast of ``noise`` (large = sharp-edged blotches) or warp of ``grain``.
    """

    kind: TextureKind
    color0: Vec3
    color1: Vec3 = (0.0, 0.0, 0.0)
    scale: float = 1.0
    axis: Vec3 = (1.0, 0.0, 0.0)
    offset: Vec3 = (0.5, 0.5, 0.5)
    waves: tuple[tuple[float, float, float, float], ...] = ()
    gain: float = 1.0


@dataclass(frozen=True)
class Material:
    """Albedo texture plus a Blinn-Phong highlight (``specular`` weight, ``shininess`` power)."""

    texture: Texture
    specular: float = 0.0
    shininess: float = 8.0


@dataclass(frozen=True)
class Sphere:
    """A sphere of ``radius`` at ``center``; curvature (1/r, 1/r) seen from outside."""

    center: Vec3
    radius: float
    material: Material
    seg: int


@dataclass(frozen=True)
class Box:
    """A box of half extents ``half`` at ``center``, turned by ``yaw`` radians about ``y``."""

    center: Vec3
    half: Vec3
    yaw: float
    material: Material
    seg: int


@dataclass(frozen=True)
class Cylinder:
    """A vertical capped cylinder around ``center``: ``radius``, height ``2 * half_height``."""

    center: Vec3
    radius: float
    half_height: float
    material: Material
    seg: int


Primitive = Sphere | Box | Cylinder

ROOM_FACES: tuple[str, ...] = ("floor", "ceiling", "wall x-", "wall x+", "wall z-", "wall z+")
"""Room face ids 0..5 as used by :class:`Decal` and the renderer."""


@dataclass(frozen=True)
class Room:
    """The closed room ``[-w/2, w/2] x [0, h] x [-l/2, l/2]`` with ``size = (w, h, l)``."""

    size: Vec3
    floor: Material
    wall: Material
    ceiling: Material


@dataclass(frozen=True)
class Decal:
    """A textured rectangle painted on a room face (a rug or a painting): texture only, flat.

    ``center`` and ``half`` are in the face's ``(u, v)`` coordinates: floor/ceiling ``(x, z)``,
    walls ``x±`` ``(z, y)``, walls ``z±`` ``(x, y)``.
    """

    face: int
    center: tuple[float, float]
    half: tuple[float, float]
    material: Material
    seg: int


@dataclass(frozen=True)
class Light:
    """A point light at ``vector`` (metres), or a directional light shining along ``vector``.

    Shading is ``ambient + (1 - ambient) * max(0, n·l) * attenuation * visibility`` with
    ``attenuation = 1 / (1 + (distance / falloff)^2)`` for point lights (1 for directional).
    """

    kind: LightKind
    vector: Vec3
    ambient: float
    falloff: float = 6.0


@dataclass(frozen=True)
class Scene:
    """Everything the renderer needs except the camera."""

    room: Room
    objects: tuple[Primitive, ...]
    decals: tuple[Decal, ...]
    light: Light


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: ``rotation`` (row-major 3x3) maps camera to world coordinates.

    Camera frame as in Taskonomy's normals (docs/CONTRACTS.md): x right, y up, z towards the
    viewer, so the camera looks along -z. ``fov`` is the full field of view in radians (the
    images are square, so horizontal = vertical).
    """

    position: Vec3
    rotation: tuple[float, ...]
    fov: float

    def matrix(self) -> np.ndarray:
        """The 3x3 camera-to-world rotation (columns: right, up, backward)."""
        return np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)


@dataclass(frozen=True)
class BuildingStyle:
    """The scene family shared by all points of a building."""

    room: Room
    classes: tuple[int, ...]
    hue: float
    light_kind: LightKind


# ---------------------------------------------------------------------------------------------
# Sampling.

_SALT_BUILDING, _SALT_LAYOUT, _SALT_CAMERA = 0xB111D, 0x1A7007, 0xCA3E8A


def _rng(*key: int) -> np.random.Generator:
    """An independent generator for one (seed, indices...) key; no global state is touched."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _hsv(h: float, s: float, v: float) -> Vec3:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (float(r), float(g), float(b))


def _unit(v: np.ndarray) -> Vec3:
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def _waves(rng: np.random.Generator, scale: float, n: int = 4) -> tuple:
    """Random cosine waves with wavelengths ``scale``, ``scale/2``, ... (an octave noise)."""
    out = []
    for i in range(n):
        direction = rng.normal(size=3)
        k = 2.0 * math.pi / scale * (2.0**i) * rng.uniform(0.8, 1.25)
        w = np.asarray(_unit(direction)) * k
        out.append((float(w[0]), float(w[1]), float(w[2]), float(rng.uniform(0, 2 * math.pi))))
    return tuple(out)


def _offset(rng: np.random.Generator) -> Vec3:
    return tuple(float(x) for x in rng.uniform(0.2, 0.8, size=3))  # type: ignore[return-value]


def _family_material(family: str, hue: float, rng: np.random.Generator) -> Material:
    """A material of ``family`` with colours drawn around the building's ``hue``."""
    if family == "wood":
        h = rng.uniform(0.04, 0.11)
        c0 = _hsv(h, rng.uniform(0.5, 0.75), rng.uniform(0.45, 0.75))
        c1 = _hsv(h, rng.uniform(0.6, 0.85), rng.uniform(0.2, 0.4))
        tex = Texture(
            "grain", c0, c1, scale=rng.uniform(0.03, 0.07), axis=_unit(rng.normal(size=3)),
            offset=_offset(rng), waves=_waves(rng, rng.uniform(0.3, 0.6), 3),
            gain=rng.uniform(0.8, 2.0),
        )  # fmt: skip
        return Material(tex, specular=0.08, shininess=12.0)
    if family == "metal":
        h = hue + rng.uniform(0.4, 0.6)
        c0 = _hsv(h, rng.uniform(0.0, 0.25), rng.uniform(0.6, 0.85))
        c1 = _hsv(h, rng.uniform(0.0, 0.25), rng.uniform(0.4, 0.6))
        tex = Texture(
            "noise", c0, c1, scale=rng.uniform(0.3, 0.8), waves=_waves(rng, 0.5), gain=0.8
        )
        return Material(tex, specular=0.5, shininess=48.0)
    if family == "fabric":
        h = hue + rng.choice([0.0, 0.33, 0.5, 0.67]) + rng.uniform(-0.05, 0.05)
        c0 = _hsv(h, rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.9))
        c1 = _hsv(h + rng.uniform(-0.15, 0.15), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.45))
        kind = "checker" if rng.uniform() < 0.6 else "stripes"
        tex = Texture(
            kind, c0, c1, scale=rng.uniform(0.07, 0.16), axis=_unit(rng.normal(size=3)),
            offset=_offset(rng),
        )  # fmt: skip
        return Material(tex, specular=0.0)
    if family == "stone":
        h = rng.uniform(0.05, 0.15)
        c0 = _hsv(h, rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.85))
        c1 = _hsv(h, rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.45))
        tex = Texture(
            "noise", c0, c1, scale=rng.uniform(0.15, 0.35), waves=_waves(rng, 0.3), gain=4.0
        )
        return Material(tex, specular=0.12, shininess=10.0)
    raise ValueError(f"unknown material family {family!r}; choose from {', '.join(FAMILIES)}")


def _floor_material(hue: float, rng: np.random.Generator) -> Material:
    kind = rng.choice(["tiles", "planks", "stone"])
    if kind == "tiles":
        c0 = _hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.3), rng.uniform(0.65, 0.9))
        c1 = _hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.5))
        tex = Texture("checker", c0, c1, scale=rng.uniform(0.3, 0.6), offset=_offset(rng))
        return Material(tex, specular=0.15, shininess=20.0)
    if kind == "planks":
        h = rng.uniform(0.05, 0.1)
        c0 = _hsv(h, rng.uniform(0.4, 0.7), rng.uniform(0.5, 0.75))
        c1 = _hsv(h, rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.45))
        axis = (1.0, 0.0, 0.0) if rng.uniform() < 0.5 else (0.0, 0.0, 1.0)
        tex = Texture(
            "grain", c0, c1, scale=rng.uniform(0.08, 0.15), axis=axis, offset=_offset(rng),
            waves=_waves(rng, rng.uniform(0.8, 1.5), 3), gain=rng.uniform(0.2, 0.6),
        )  # fmt: skip
        return Material(tex, specular=0.1, shininess=16.0)
    return _family_material("stone", hue, rng)


def _wall_material(hue: float, rng: np.random.Generator) -> Material:
    c0 = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.05, 0.35), rng.uniform(0.7, 0.92))
    c1 = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.1, 0.45), rng.uniform(0.45, 0.7))
    kind = rng.choice(["plain", "stripes", "noise"])
    if kind == "stripes":  # vertical wallpaper stripes: their axis is horizontal
        tex = Texture(
            "stripes", c0, c1, scale=rng.uniform(0.08, 0.25), axis=_unit([1.0, 0.0, 1.0]),
            offset=_offset(rng),
        )  # fmt: skip
    elif kind == "noise":
        tex = Texture(
            "noise", c0, c1, scale=rng.uniform(0.6, 1.2), waves=_waves(rng, 0.8), gain=1.0
        )
    else:
        tex = Texture("plain", c0)
    return Material(tex, specular=0.0)


@functools.lru_cache(maxsize=256)
def sample_building(seed: int, building: int) -> BuildingStyle:
    """The scene family of ``building``: room, palette, the object classes that occur, light."""
    rng = _rng(seed, _SALT_BUILDING, building)
    hue = float(rng.uniform())
    size = (
        float(rng.uniform(4.0, 8.0)),
        float(rng.uniform(2.6, 3.4)),
        float(rng.uniform(4.5, 9.0)),
    )
    ceiling = Material(
        Texture("plain", _hsv(hue, rng.uniform(0.0, 0.1), rng.uniform(0.85, 0.97))), 0.0
    )
    room = Room(size, _floor_material(hue, rng), _wall_material(hue, rng), ceiling)
    all_classes = [object_class(s, f) for s in SHAPES for f in FAMILIES]
    n_classes = int(rng.integers(5, 9))
    classes = tuple(sorted(int(c) for c in rng.choice(all_classes, size=n_classes, replace=False)))
    light_kind: LightKind = "point" if rng.uniform() < 0.75 else "directional"
    return BuildingStyle(room, classes, hue, light_kind)


def _footprint(obj: Primitive) -> tuple[float, float, float]:
    """``(x, z, radius)`` of a circle containing the object's floor footprint."""
    if isinstance(obj, Box):
        return obj.center[0], obj.center[2], math.hypot(obj.half[0], obj.half[2])
    return obj.center[0], obj.center[2], obj.radius


def _make_object(cls: int, x: float, z: float, hue: float, rng: np.random.Generator) -> Primitive:
    shape = SHAPES[(cls - 5) // len(FAMILIES)]
    family = FAMILIES[(cls - 5) % len(FAMILIES)]
    material = _family_material(family, hue, rng)
    if shape == "sphere":
        r = float(rng.uniform(0.25, 0.6))
        return Sphere((x, r, z), r, material, cls)
    if shape == "box":
        half = (
            float(rng.uniform(0.2, 0.6)),
            float(rng.uniform(0.2, 0.7)),
            float(rng.uniform(0.2, 0.6)),
        )
        return Box((x, half[1], z), half, float(rng.uniform(0, math.pi)), material, cls)
    r, hh = float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.2, 0.75))
    return Cylinder((x, hh, z), r, hh, material, cls)


@functools.lru_cache(maxsize=256)
def sample_layout(seed: int, building: int, point: int) -> Scene:
    """The scene of ``point``: the building's room with objects, decals and a light."""
    style = sample_building(seed, building)
    rng = _rng(seed, _SALT_LAYOUT, building, point)
    w, h, l = style.room.size
    n_objects = int(rng.integers(3, 8))
    objects: list[Primitive] = []
    for _ in range(n_objects):
        cls = int(rng.choice(style.classes))
        for _attempt in range(30):
            x, z = rng.uniform(-w / 2 + 0.3, w / 2 - 0.3), rng.uniform(-l / 2 + 0.3, l / 2 - 0.3)
            obj = _make_object(cls, float(x), float(z), style.hue, rng)
            ox, oz, rad = _footprint(obj)
            inside = abs(ox) + rad < w / 2 - 0.05 and abs(oz) + rad < l / 2 - 0.05
            free = all(
                math.hypot(ox - px, oz - pz) > rad + pr + 0.1
                for px, pz, pr in map(_footprint, objects)
            )
            if inside and free:
                objects.append(obj)
                break
    # Sometimes a ball rests on top of a box or cylinder: occlusions at contact, stacked depth.
    spheres = [c for c in style.classes if SHAPES[(c - 5) // len(FAMILIES)] == "sphere"]
    supports = [o for o in objects if not isinstance(o, Sphere)]
    if spheres and supports and rng.uniform() < 0.5:
        base = supports[int(rng.integers(len(supports)))]
        top = base.center[1] + (base.half[1] if isinstance(base, Box) else base.half_height)
        rmax = min(base.half[0], base.half[2]) if isinstance(base, Box) else base.radius
        r = float(rng.uniform(0.12, max(0.13, min(0.35, rmax))))
        cls = int(rng.choice(spheres))
        material = _family_material(FAMILIES[(cls - 5) % len(FAMILIES)], style.hue, rng)
        objects.append(Sphere((base.center[0], top + r, base.center[2]), r, material, cls))
    decals: list[Decal] = []
    if rng.uniform() < 0.5:
        fam = _family_material("fabric", style.hue + 0.5, rng)
        half = (float(rng.uniform(0.6, min(2.0, w / 3))), float(rng.uniform(0.5, min(1.5, l / 3))))
        cu = rng.uniform(-w / 2 + half[0] + 0.2, w / 2 - half[0] - 0.2)
        cv = rng.uniform(-l / 2 + half[1] + 0.2, l / 2 - half[1] - 0.2)
        decals.append(Decal(0, (float(cu), float(cv)), half, fam, SEG_RUG))
    if rng.uniform() < 0.6:
        face = int(rng.integers(2, 6))
        extent = l if face in (2, 3) else w
        half = (float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.25, 0.5)))
        cu = rng.uniform(-extent / 2 + half[0] + 0.2, extent / 2 - half[0] - 0.2)
        cv = rng.uniform(1.3, h - 0.7)
        art = Texture(
            "noise", _hsv(rng.uniform(), 0.8, 0.9), _hsv(rng.uniform(), 0.8, 0.3),
            scale=rng.uniform(0.2, 0.5), waves=_waves(rng, 0.4), gain=3.0,
        )  # fmt: skip
        decals.append(Decal(face, (float(cu), float(cv)), half, Material(art, 0.05), SEG_PAINTING))
    ambient = float(rng.uniform(0.15, 0.3))
    if style.light_kind == "point":
        pos = (rng.uniform(-w / 3, w / 3), h - 0.25, rng.uniform(-l / 3, l / 3))
        light = Light("point", tuple(float(v) for v in pos), ambient, float(rng.uniform(4.0, 8.0)))
    else:
        horiz = rng.normal(size=2)
        direction = _unit([horiz[0], -rng.uniform(0.6, 1.5), horiz[1]])
        light = Light("directional", direction, ambient)
    return Scene(style.room, tuple(objects), tuple(decals), light)  # type: ignore[arg-type]


def _look_rotation(forward: np.ndarray, roll: float) -> tuple[float, ...]:
    """Camera-to-world rotation looking along ``forward`` with world ``y`` up, then ``roll``."""
    f = forward / np.linalg.norm(forward)
    right = np.cross(f, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f)
    c, s = math.cos(roll), math.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    m = np.stack([right, up, -f], axis=1)
    return tuple(float(v) for v in m.ravel())


MIN_CLEARANCE = 0.8
"""Metres kept between the camera and any wall or object footprint (depth stays >= 0.5 m)."""


def sample_camera(scene: Scene, seed: int, building: int, point: int, view: int) -> Camera:
    """A camera pose of ``view``: inside the room, clear of objects, looking at the layout."""
    rng = _rng(seed, _SALT_CAMERA, building, point, view)
    w, _, l = scene.room.size
    feet = [_footprint(o) for o in scene.objects]
    best, best_gap = None, -math.inf
    for _ in range(200):
        x = rng.uniform(-w / 2 + MIN_CLEARANCE, w / 2 - MIN_CLEARANCE)
        z = rng.uniform(-l / 2 + MIN_CLEARANCE, l / 2 - MIN_CLEARANCE)
        gap = min((math.hypot(x - fx, z - fz) - fr for fx, fz, fr in feet), default=math.inf)
        if gap > best_gap:
            best, best_gap = (float(x), float(z)), gap
        if gap >= MIN_CLEARANCE:
            break
    assert best is not None
    position = np.array([best[0], rng.uniform(1.2, 1.7), best[1]])
    if scene.objects and rng.uniform() < 0.85:
        target = np.asarray(scene.objects[int(rng.integers(len(scene.objects)))].center)
        target = target + rng.normal(scale=0.3, size=3)
    else:
        target = np.array(
            [rng.uniform(-w / 2, w / 2), rng.uniform(0.3, 1.5), rng.uniform(-l / 2, l / 2)]
        )
    forward = target - position  # pitch is clamped below, so a target overhead is harmless
    yaw = math.atan2(forward[2], forward[0])
    pitch = math.atan2(forward[1], math.hypot(forward[0], forward[2]))
    pitch = min(max(pitch, math.radians(-40)), math.radians(15))
    direction = np.array(
        [math.cos(pitch) * math.cos(yaw), math.sin(pitch), math.cos(pitch) * math.sin(yaw)]
    )
    rotation = _look_rotation(direction, math.radians(float(rng.uniform(-3, 3))))
    fov = math.radians(float(rng.uniform(50, 70)))
    return Camera(tuple(float(v) for v in position), rotation, fov)  # type: ignore[arg-type]

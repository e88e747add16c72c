"""Geometry of the synthetic mini-Taskonomy ray caster: rays, intersections, analytic surfaces.

All functions are vectorised over rays: an origin ``o`` (``(3,)`` or ``(3, ...)``) and
directions ``d`` (``(3, ...)``, not normalised); ``t`` is the ray parameter, so the hit point is
``o + t d``. With camera rays ``d = R (x, y, -1)`` the hit parameter *is* the z-buffer depth.
Normals and principal curvatures are the analytic ones of each primitive.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from rts.tasks.synthetic_scene import Box, Cylinder, Primitive, Room, Sphere

F32 = np.float32
INF = np.float32(np.inf)


def dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product over the leading axis of two ``(3, ...)`` arrays (faster than ``.sum(0)``)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def rotate(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``m @ v`` for a 3x3 ``m`` and ``(3, ...)`` ``v``, without BLAS (no thread start-up)."""
    m = m.astype(F32)
    return np.stack([m[i, 0] * v[0] + m[i, 1] * v[1] + m[i, 2] * v[2] for i in range(3)])


# ---------------------------------------------------------------------------------------------
# Ray / primitive intersections. ``o`` is the ray origin, ``(3,)`` or ``(3, ...)`` like ``d``;
# ``d`` is ``(3, ...)`` (not normalised). Each returns the nearest ``t > 0`` or ``inf``.


def _sub(o: np.ndarray, c: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    return (o[0] - F32(c[0]), o[1] - F32(c[1]), o[2] - F32(c[2]))


def hit_sphere(s: Sphere, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    ox, oy, oz = _sub(o, s.center)
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = d[0] * ox + d[1] * oy + d[2] * oz
    c = ox * ox + oy * oy + oz * oz - F32(s.radius**2)
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 0), t, INF)


def _box_frame(b: Box) -> tuple[np.float32, np.float32]:
    return F32(math.cos(b.yaw)), F32(math.sin(b.yaw))


def hit_box(b: Box, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    c, s = _box_frame(b)
    ox, oy, oz = _sub(o, b.center)
    lo = (c * ox - s * oz, oy, s * ox + c * oz)
    ld = (c * d[0] - s * d[2], d[1], s * d[0] + c * d[2])
    near, far = None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            inv = F32(1) / ld[k]
            t1 = (F32(-b.half[k]) - lo[k]) * inv
            t2 = (F32(b.half[k]) - lo[k]) * inv
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            near = tmin if near is None else np.maximum(near, tmin)
            far = tmax if far is None else np.minimum(far, tmax)
        return np.where((near <= far) & (near > 0), near, INF)


def hit_cylinder(cy: Cylinder, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    ox, oy, oz = _sub(o, cy.center)
    r2, hh = F32(cy.radius**2), F32(cy.half_height)
    a = d[0] * d[0] + d[2] * d[2]
    b = d[0] * ox + d[2] * oz
    c = ox * ox + oz * oz - r2
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
        t = np.where((disc >= 0) & (ts > 0) & (np.abs(oy + ts * d[1]) <= hh), ts, INF)
        for cap in (hh, -hh):
            tc = (cap - oy) / d[1]
            x, z = ox + tc * d[0], oz + tc * d[2]
            ok = (tc > 0) & (x * x + z * z <= r2)
            t = np.where(ok & (tc < t), tc, t)
    return t


HITS = {Sphere: hit_sphere, Box: hit_box, Cylinder: hit_cylinder}


def hit_room(room: Room, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit point of rays starting inside the room: ``t`` and the face id (see ``ROOM_FACES``)."""
    w, h, l = room.size
    lo, hi = (-w / 2, 0.0, -l / 2), (w / 2, h, l / 2)
    # face ids per axis: (negative side, positive side)
    faces = ((2, 3), (0, 1), (4, 5))
    axis_of = (0, 1, 2)
    best_t, best_face = None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in axis_of:
            pos = d[k] > 0
            bound = np.where(pos, F32(hi[k]), F32(lo[k]))
            tk = (bound - o[k]) / d[k]
            tk = np.where(np.isfinite(tk) & (tk > 0), tk, INF)
            fk = np.where(pos, np.int8(faces[k][1]), np.int8(faces[k][0]))
            if best_t is None:
                best_t, best_face = tk, fk
            else:
                closer = tk < best_t
                best_t = np.where(closer, tk, best_t)
                best_face = np.where(closer, fk, best_face)
    return best_t, best_face


ROOM_NORMALS = np.array(
    [[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], dtype=F32
)
"""Inward normals of the room faces 0..5 (floor, ceiling, x-, x+, z-, z+)."""


def bounds(obj: Primitive) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounding box of a primitive."""
    c = np.asarray(obj.center, dtype=np.float64)
    if isinstance(obj, Sphere):
        e = np.full(3, obj.radius)
    elif isinstance(obj, Box):
        cs, sn = abs(math.cos(obj.yaw)), abs(math.sin(obj.yaw))
        hx, hy, hz = obj.half
        e = np.array([cs * hx + sn * hz, hy, sn * hx + cs * hz])
    else:
        e = np.array([obj.radius, obj.half_height, obj.radius])
    return c - e, c + e


def screen_rect(obj: Primitive, rot: np.ndarray, pos: np.ndarray, f: float, size: int):
    """Pixel rows/cols ``(r0, r1, c0, c1)`` that can see ``obj``, or ``None`` if none can."""
    lo, hi = bounds(obj)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))))  # (8, 3)
    pc = (corners - pos) @ rot  # camera coordinates of the 8 corners
    z = pc[:, 2]
    if np.all(z >= 0):
        return None  # entirely behind the camera: rays (z < 0 side) never reach it
    if np.any(z > -1e-3):
        return 0, size, 0, size
    u = pc[:, 0] / -z * f + size / 2
    v = size / 2 - pc[:, 1] / -z * f
    c0, c1 = max(0, math.floor(u.min()) - 1), min(size, math.ceil(u.max()) + 1)
    r0, r1 = max(0, math.floor(v.min()) - 1), min(size, math.ceil(v.max()) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


# ---------------------------------------------------------------------------------------------
# Surfaces: normals (world), curvatures and texture coordinates at hit points ``p`` ``(3, k)``.


def surface(obj: Primitive, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(normal (3,k), curvature (2,k), local texture coordinates (3,k))`` of ``obj`` at ``p``."""
    c = np.asarray(obj.center, dtype=F32)[:, None]
    q = p - c
    k = p.shape[1]
    curv = np.zeros((2, k), dtype=F32)
    if isinstance(obj, Sphere):
        n = q / F32(obj.radius)
        curv[:] = F32(1.0 / obj.radius)
    elif isinstance(obj, Box):
        cs, sn = _box_frame(obj)
        local = np.stack([cs * q[0] - sn * q[2], q[1], sn * q[0] + cs * q[2]])
        ratio = np.abs(local) / np.asarray(obj.half, dtype=F32)[:, None]
        axis = np.argmax(ratio, axis=0)
        sign = np.sign(local[axis, np.arange(k)]).astype(F32)
        ln = np.zeros((3, k), dtype=F32)
        ln[axis, np.arange(k)] = sign
        n = np.stack([cs * ln[0] + sn * ln[2], ln[1], -sn * ln[0] + cs * ln[2]])
        q = local
    else:
        radial = np.hypot(q[0], q[2])
        on_cap = np.abs(q[1]) / F32(obj.half_height) > radial / F32(obj.radius)
        safe = np.maximum(radial, F32(1e-12))
        n = np.stack(
            [
                np.where(on_cap, F32(0), q[0] / safe),
                np.where(on_cap, np.sign(q[1]).astype(F32), F32(0)),
                np.where(on_cap, F32(0), q[2] / safe),
            ]
        )
        curv[0] = np.where(on_cap, F32(0), F32(1.0 / obj.radius))
    n = n / np.linalg.norm(n, axis=0, keepdims=True)
    return n.astype(F32), curv, q.astype(F32)


def camera_rays(size: int, fov: float) -> tuple[np.ndarray, float]:
    """Camera-frame rays ``(x, y, -1)`` through the pixel centres, ``3 x size x size``; focal px."""
    focal = size / 2 / math.tan(fov / 2)
    coords = ((np.arange(size, dtype=np.float64) + 0.5 - size / 2) / focal).astype(F32)
    rays = np.empty((3, size, size), dtype=F32)
    rays[0] = coords[None, :]
    rays[1] = -coords[:, None]
    rays[2] = -1
    return rays, focal


def bounding_sphere(obj: Primitive) -> tuple[np.ndarray, float]:
    """Centre ``(3,)`` and radius of a sphere containing ``obj`` (that of its bounding box)."""
    lo, hi = bounds(obj)
    return ((lo + hi) / 2).astype(F32), float(np.linalg.norm(hi - lo) / 2)

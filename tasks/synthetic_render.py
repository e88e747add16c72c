"""Ray caster of the synthetic mini-Taskonomy: one scene + camera → the image and all 11 labels.

Everything is vectorised numpy over pixels (loops only over the handful of objects). Every
label comes from the same ray hits, so the labels agree with each other and with the image:

* geometry: the nearest hit ``t`` along the camera ray ``d = (x, y, -1)`` (camera frame) *is*
  the z-buffer depth; euclidean depth is ``t * |d|``; normals and principal curvatures are the
  analytic ones of the primitive hit (sphere ``(1/r, 1/r)``, cylinder side ``(1/r, 0)``, planes
  ``(0, 0)``; positive = convex towards the camera).
* appearance: albedo from procedural solid textures, box-filtered over the pixel footprint (no
  aliasing, same look at every resolution); Lambertian shading ``ambient + (1 - ambient) *
  max(0, n·l) * attenuation * visibility`` with ray-cast shadows (the *reshading* label);
  image ``= albedo * shading + specular``.
* responses: texture edges (Sobel of the image), 2-D keypoints (Shi-Tomasi of the image),
  3-D keypoints (Shi-Tomasi of normals and log depth), occlusion edges (depth discontinuities
  that the local tangent plane does not explain), each in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rts.tasks.synthetic_geometry import (
    F32,
    HITS,
    ROOM_NORMALS,
    bounding_sphere,
    camera_rays,
    dot3,
    hit_room,
    rotate,
    screen_rect,
    surface,
)
from rts.tasks.synthetic_labels import image_responses, keypoints_3d, occlusion_edges
from rts.tasks.synthetic_scene import (
    SEG_CEILING,
    SEG_FLOOR,
    SEG_WALL,
    Camera,
    Material,
    Scene,
    Texture,
)


@dataclass(frozen=True, eq=False)
class SyntheticView:
    """One rendered view: physical quantities and derived responses, all ``HxW[xC]`` numpy.

    Attributes:
        rgb: ``HxWx3`` float32 image in [0, 1].
        albedo: ``HxWx3`` float32 surface colour in [0, 1].
        seg: ``HxW`` int16 semantic class ids in ``0..16`` (``SEG_CLASS_NAMES``).
        zdepth: ``HxW`` float32 metres along the optical axis (``inf`` = no surface).
        edepth: ``HxW`` float32 metres from the camera centre (``inf`` = no surface).
        normals: ``HxWx3`` float32 unit normals, camera frame (x right, y up, z to the viewer).
        curvature: ``HxWx2`` float32 principal curvatures ``κ1 ≥ κ2`` in 1/m.
        shading: ``HxW`` float32 Lambertian shading without albedo in [0, 1] (reshading).
        keypoints2d, keypoints3d, edge_texture, edge_occlusion: ``HxW`` float32 in [0, 1].
        surface: ``HxW`` int16 id of the primitive hit (0 = room, ``i`` = ``scene.objects[i-1]``).
        scene, camera: what was rendered.
    """

    rgb: np.ndarray
    albedo: np.ndarray
    seg: np.ndarray
    zdepth: np.ndarray
    edepth: np.ndarray
    normals: np.ndarray
    curvature: np.ndarray
    shading: np.ndarray
    keypoints2d: np.ndarray
    keypoints3d: np.ndarray
    edge_texture: np.ndarray
    edge_occlusion: np.ndarray
    surface: np.ndarray
    scene: Scene
    camera: Camera

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return self.rgb.shape[1] / 2 / math.tan(self.camera.fov / 2)


# ---------------------------------------------------------------------------------------------
# Textures: box-filtered over the pixel footprint ``w`` (metres) to avoid aliasing.


def _square(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Square wave ``±1`` of period 2 averaged over a box of width ``w`` (closed form)."""
    w = np.maximum(w, F32(1e-3))

    def tri(v):
        return np.abs(v * F32(0.5) - np.floor(v * F32(0.5)) - F32(0.5))

    return np.clip(F32(2) * (tri(x - w / 2) - tri(x + w / 2)) / w, -1, 1)


def _noise(tex: Texture, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sum of cosines with wavelengths halving per octave, each faded over the footprint."""
    total = np.zeros(q.shape[1:], dtype=F32)
    norm = 0.0
    for i, (wx, wy, wz, phase) in enumerate(tex.waves):
        amp = 0.5**i
        k2 = wx * wx + wy * wy + wz * wz
        fade = np.exp(-F32(k2 / 4.0) * w * w)
        total += (
            F32(amp) * fade * np.cos(F32(wx) * q[0] + F32(wy) * q[1] + F32(wz) * q[2] + F32(phase))
        )
        norm += amp
    return total / F32(max(norm, 1e-6))


def _texture(tex: Texture, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Colour ``(3, k)`` of texture ``tex`` at local points ``q (3, k)`` with footprint ``w``."""
    c0 = np.asarray(tex.color0, dtype=F32)[:, None]
    if tex.kind == "plain":
        return np.broadcast_to(c0, q.shape).copy()
    c1 = np.asarray(tex.color1, dtype=F32)[:, None]
    s = F32(tex.scale)
    off = np.asarray(tex.offset, dtype=F32)[:, None]
    if tex.kind == "checker":
        u = q / s + off
        m = F32(0.5) - F32(0.5) * _square(u[0], w / s) * _square(u[1], w / s) * _square(u[2], w / s)
    elif tex.kind in ("stripes", "grain"):
        a = np.asarray(tex.axis, dtype=F32)
        x = (a @ q) / s + off[0, 0]
        if tex.kind == "grain":
            x = x + F32(tex.gain) * _noise(tex, q, w) / s * F32(0.1)
        m = F32(0.5) - F32(0.5) * _square(x, w / s)
    elif tex.kind == "noise":
        m = np.clip(F32(0.5) + F32(0.5 * tex.gain) * _noise(tex, q, w), 0, 1)
    else:
        raise ValueError(f"unknown texture kind {tex.kind!r}")
    return c0 + (c1 - c0) * m[None]


# ---------------------------------------------------------------------------------------------
# The renderer.


def _shadowed(scene: Scene, p: np.ndarray, ldir: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """Bool ``(k,)``: an object blocks the light from points ``p (3, k)`` (unit ``ldir`` to it).

    A cheap bounding-sphere test along each shadow ray selects the few candidate pixels per
    object; the exact intersection runs only on those. A point never shadows itself here
    (that is ``n·l < 0``, already dark).
    """
    light = scene.light
    blocked = np.zeros(p.shape[1], dtype=bool)
    if light.kind == "point":
        lpos = np.asarray(light.vector, dtype=F32)[:, None]
        dist = np.sqrt(dot3(lpos - p, lpos - p))
    p_dot_l, p_dot_p = dot3(p, ldir), dot3(p, p)
    for i, obj in enumerate(scene.objects, start=1):
        c, rho = bounding_sphere(obj)
        c_dot_p = F32(c[0]) * p[0] + F32(c[1]) * p[1] + F32(c[2]) * p[2]
        along = F32(c[0]) * ldir[0] + F32(c[1]) * ldir[1] + F32(c[2]) * ldir[2] - p_dot_l
        perp2 = F32(c @ c) - F32(2) * c_dot_p + p_dot_p - along * along  # |c - p|^2 - along^2
        cand = (perp2 < F32(rho * rho)) & (along > -F32(rho)) & (sid != i)
        if light.kind == "point":
            cand &= along - F32(rho) < dist
        idx = np.flatnonzero(cand)
        if not idx.size:
            continue
        length = dist[idx] if light.kind == "point" else F32(4 * max(scene.room.size))
        t = HITS[type(obj)](obj, p[:, idx], ldir[:, idx] * length)
        blocked[idx[(t > F32(1e-4)) & (t < F32(1 - 1e-4))]] = True
    return blocked


def render(scene: Scene, camera: Camera, size: int) -> SyntheticView:
    """Ray-cast ``scene`` from ``camera`` at ``size x size`` pixels; all labels at once."""
    rays, focal = camera_rays(size, camera.fov)
    rot = camera.matrix()
    pos = np.asarray(camera.position, dtype=np.float64)
    o = pos.astype(F32)
    hw = (size, size)
    d = rotate(rot, rays.reshape(3, -1))  # world-frame rays, (3, N) flat over pixels
    d_img = d.reshape(3, *hw)

    # 1. Visibility: nearest hit per pixel (room everywhere, objects inside their screen box).
    t, face = hit_room(scene.room, o, d)
    sid = np.zeros(t.shape, dtype=np.int16)
    t_img, sid_img = t.reshape(hw), sid.reshape(hw)
    for i, obj in enumerate(scene.objects, start=1):
        rect = screen_rect(obj, rot, pos, focal, size)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        ti = HITS[type(obj)](obj, o, d_img[:, r0:r1, c0:c1])
        tv, sv = t_img[r0:r1, c0:c1], sid_img[r0:r1, c0:c1]
        closer = ti < tv
        tv[closer] = ti[closer]
        sv[closer] = i

    # 2. Surface attributes at the hit points (flat arrays, gathered per surface).
    p = o[:, None] + t * d
    inv_len = F32(1) / np.sqrt(dot3(d, d))
    edepth = t * np.sqrt(dot3(rays, rays)).reshape(-1)
    footprint = edepth / F32(focal)  # metres per pixel at normal incidence
    normal = ROOM_NORMALS[face].T.copy()
    curv = np.zeros((2, t.size), dtype=F32)
    albedo = np.empty((3, t.size), dtype=F32)
    seg = np.empty(t.size, dtype=np.int16)
    spec = np.zeros(t.size, dtype=F32)
    shin = np.ones(t.size, dtype=F32)

    def paint(idx, n, q, material: Material, seg_id):
        cos = np.abs(dot3(n, d[:, idx])) * inv_len[idx]
        w = footprint[idx] / np.sqrt(np.maximum(cos, F32(0.1)))
        albedo[:, idx] = _texture(material.texture, q, w)
        spec[idx] = material.specular
        shin[idx] = material.shininess
        seg[idx] = seg_id

    on_room = sid == 0
    room = scene.room
    for sel, material, seg_id in (
        (on_room & (face == 0), room.floor, SEG_FLOOR),
        (on_room & (face == 1), room.ceiling, SEG_CEILING),
        (on_room & (face >= 2), room.wall, SEG_WALL),
    ):
        idx = np.flatnonzero(sel)
        if idx.size:
            paint(idx, normal[:, idx], p[:, idx], material, seg_id)
    for decal in scene.decals:
        axes = (0, 2) if decal.face <= 1 else ((2, 1) if decal.face <= 3 else (0, 1))
        u = p[axes[0]] - F32(decal.center[0])
        v = p[axes[1]] - F32(decal.center[1])
        sel = on_room & (face == decal.face) & (np.abs(u) <= decal.half[0])
        idx = np.flatnonzero(sel & (np.abs(v) <= decal.half[1]))
        if idx.size:
            paint(idx, normal[:, idx], p[:, idx], decal.material, decal.seg)
    for i, obj in enumerate(scene.objects, start=1):
        idx = np.flatnonzero(sid == i)
        if not idx.size:
            continue
        n, k, q = surface(obj, p[:, idx])
        normal[:, idx] = n
        curv[:, idx] = k
        paint(idx, n, q, obj.material, obj.seg)

    # 3. Lighting: Lambert with ray-cast shadows, plus a Blinn-Phong highlight in the image.
    light = scene.light
    if light.kind == "point":
        to_light = np.asarray(light.vector, dtype=F32)[:, None] - p
        dist = np.sqrt(dot3(to_light, to_light))
        ldir = to_light / dist
        atten = F32(1) / (F32(1) + (dist / F32(light.falloff)) ** 2)
    else:
        ldir = np.repeat(-np.asarray(light.vector, dtype=F32)[:, None], t.size, axis=1)
        atten = np.ones(t.size, dtype=F32)
    ndl = np.maximum(dot3(normal, ldir), 0)
    lit = np.flatnonzero(ndl > 0)
    if scene.objects and lit.size:
        ndl[lit[_shadowed(scene, p[:, lit], ldir[:, lit], sid[lit])]] = 0
    diffuse = ndl * atten
    amb = F32(light.ambient)
    shading = np.clip(amb + (F32(1) - amb) * diffuse, 0, 1)
    half = ldir - d * inv_len
    half /= np.maximum(np.sqrt(dot3(half, half)), F32(1e-6))
    ndh = np.maximum(dot3(normal, half), 0)
    highlight = spec * ndh**shin * np.where(diffuse > 0, atten, F32(0))
    rgb = np.clip(albedo * shading + highlight, 0, 1)

    # 4. Camera-frame geometry and the derived responses.
    ncam = rotate(rot.T, normal)
    ncam /= np.maximum(np.sqrt(dot3(ncam, ncam)), F32(1e-12))

    def hwc(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.reshape(-1, *hw).transpose(1, 2, 0))

    normals, rgb_hwc = hwc(ncam), hwc(rgb)
    zdepth = t.reshape(hw)
    edges, k2d = image_responses(rgb_hwc)
    return SyntheticView(
        rgb=rgb_hwc,
        albedo=hwc(albedo),
        seg=seg.reshape(hw),
        zdepth=zdepth,
        edepth=edepth.reshape(hw),
        normals=normals,
        curvature=hwc(curv),
        shading=shading.reshape(hw),
        keypoints2d=k2d,
        keypoints3d=keypoints_3d(normals, zdepth),
        edge_texture=edges,
        edge_occlusion=occlusion_edges(zdepth, normals, rays, focal),
        surface=sid_img,
        scene=scene,
        camera=camera,
    )

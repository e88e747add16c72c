"""Derived labels of the synthetic mini-Taskonomy: edges and keypoints, each in ``[0, 1]``.

* texture edges: Sobel gradient magnitude of the image, per pixel;
* 2-D keypoints: Shi-Tomasi corner response of the image;
* 3-D keypoints: Shi-Tomasi corner response of the geometry (normals and log depth);
* occlusion edges: depth discontinuities that the surfaces' tangent planes do not explain.

Keypoints are detected on a grid of about :data:`DETECTOR_GRID` cells across the image and
occlusion edges use a pixel step of the same factor, so a label looks the same at every
resolution (the same angular scale); texture edges stay at pixel scale. The normalising
constants were chosen so that typical scenes use the whole range without saturating most pixels
(docs/synthetic.md gives the resulting statistics).
"""

from __future__ import annotations

import numpy as np

from rts.tasks.synthetic_geometry import F32, INF, dot3

EDGE_GAIN = 3.0
"""Texture edge ``r = clip(EDGE_GAIN * |∇I|)``, ``|∇I|`` in intensity per pixel (Sobel / 8)."""
KEYPOINT2D_REF = 7.5e-3
"""2-D keypoints ``r = clip(λ_min / KEYPOINT2D_REF)`` of the image's structure tensor."""
KEYPOINT3D_REF = 3.0e-2
"""3-D keypoints ``r = clip(λ_min / KEYPOINT3D_REF)`` of the normals-and-log-depth tensor."""
DETECTOR_GRID = 64
"""Keypoints are detected on a grid of about 64x64 cells (a fixed angular scale), see below."""
GRAZING_COS = 0.05
"""Occlusion edges trust a tangent plane's extension only when ``|n·d̂|`` is at least this."""
OCCLUSION_LOW, OCCLUSION_HIGH = 0.5, 2.0
"""Occlusion edge ``r = clip((J·f/s - LOW) / (HIGH - LOW))``, ``J`` relative jump (see below)."""


# ---------------------------------------------------------------------------------------------
# Image filters (edge-replicated borders, so the frame itself is no edge).


def _pad(a: np.ndarray) -> np.ndarray:
    """Replicate the border of ``(..., H, W)`` by one pixel (``np.pad(mode="edge")``, faster)."""
    out = np.empty((*a.shape[:-2], a.shape[-2] + 2, a.shape[-1] + 2), dtype=a.dtype)
    out[..., 1:-1, 1:-1] = a
    out[..., 0, 1:-1] = a[..., 0, :]
    out[..., -1, 1:-1] = a[..., -1, :]
    out[..., :, 0] = out[..., :, 1]
    out[..., :, -1] = out[..., :, -2]
    return out


def _sobel(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives per pixel along x (right) and y (down) of ``(..., H, W)``: Sobel / 8."""
    p = _pad(a)
    sx = p[..., 2:] - p[..., :-2]
    gx = (sx[..., :-2, :] + F32(2) * sx[..., 1:-1, :] + sx[..., 2:, :]) * F32(0.125)
    sy = p[..., 2:, :] - p[..., :-2, :]
    gy = (sy[..., :-2] + F32(2) * sy[..., 1:-1] + sy[..., 2:]) * F32(0.125)
    return gx, gy


def _blur(a: np.ndarray) -> np.ndarray:
    """Binomial ``[1, 2, 1] / 4`` blur along both axes."""
    p = _pad(a)
    h = (p[..., :-2] + F32(2) * p[..., 1:-1] + p[..., 2:]) * F32(0.25)
    return (h[..., :-2, :] + F32(2) * h[..., 1:-1, :] + h[..., 2:, :]) * F32(0.25)


def _structure_min_eigen(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Smaller eigenvalue of the (blurred, channel-summed) structure tensor of gradients."""
    jxx = _blur(_blur((gx * gx).sum(0)))
    jyy = _blur(_blur((gy * gy).sum(0)))
    jxy = _blur(_blur((gx * gy).sum(0)))
    half_trace = (jxx + jyy) * F32(0.5)
    root = np.sqrt(((jxx - jyy) * F32(0.5)) ** 2 + jxy * jxy)
    return np.maximum(half_trace - root, 0)


def detector_factor(size: int) -> int:
    """Pixels per keypoint-detector cell at ``size``: ``max(1, round(size / DETECTOR_GRID))``."""
    return max(1, round(size / DETECTOR_GRID))


def _downsample(a: np.ndarray, s: int) -> np.ndarray:
    """Block means of ``s x s`` pixels of ``(C, H, W)`` (edge-padded to a multiple of ``s``)."""
    if s == 1:
        return a
    c, h, w = a.shape
    hp, wp = -(-h // s) * s, -(-w // s) * s
    a = np.pad(a, [(0, 0), (0, hp - h), (0, wp - w)], mode="edge")
    return a.reshape(c, hp // s, s, wp // s, s).mean(axis=(2, 4))


def _upsample(a: np.ndarray, s: int, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear ``HxW`` map of a grid of ``s x s`` cells (pixel centres aligned), cut to ``hw``."""
    if s == 1:
        return a
    out = a
    for axis, n in enumerate(hw):
        x = (np.arange(n) + 0.5) / s - 0.5
        i0 = np.clip(np.floor(x).astype(np.int64), 0, a.shape[axis] - 1)
        i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
        wt = np.clip(x - i0, 0, 1).astype(F32)
        lo, hi = np.take(out, i0, axis=axis), np.take(out, i1, axis=axis)
        wt = wt[:, None] if axis == 0 else wt[None, :]
        out = lo + (hi - lo) * wt
    return out


def _corner_response(channels: np.ndarray, ref: float, pre_blur: int) -> np.ndarray:
    """Shi-Tomasi ``clip(λ_min / ref)`` of ``(C, H, W)`` on the detector grid, back at ``HxW``."""
    s = detector_factor(channels.shape[-1])
    small = _downsample(channels, s)
    for _ in range(pre_blur):
        small = _blur(small)
    gx, gy = _sobel(small)
    r = np.clip(_structure_min_eigen(gx, gy) / F32(ref), 0, 1)
    return _upsample(r, s, channels.shape[-2:]).astype(F32)


def image_responses(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture edges and 2-D keypoints of an ``HxWx3`` image, each ``HxW`` in [0, 1].

    Edges: RMS over RGB of the Sobel gradient magnitude per pixel, times :data:`EDGE_GAIN`,
    clipped (``r`` ≈ the contrast of a step edge). Keypoints: Shi-Tomasi (smaller eigenvalue of
    the structure tensor, channels summed) over :data:`KEYPOINT2D_REF`, clipped, computed on
    the detector grid (:func:`detector_factor`) so the same corners appear at every size.
    """
    chw = np.moveaxis(rgb, -1, 0)
    gx, gy = _sobel(chw)
    edges = np.clip(np.sqrt((gx * gx + gy * gy).mean(0)) * F32(EDGE_GAIN), 0, 1)
    return edges, _corner_response(chw, KEYPOINT2D_REF, pre_blur=0)


def keypoints_3d(normals: np.ndarray, zdepth: np.ndarray) -> np.ndarray:
    """``HxW`` in [0, 1]: Shi-Tomasi response of the geometry (normals and log z-depth).

    Computed like the 2-D keypoints, on the detector grid, after one binomial blur that keeps
    the pixel staircase of slanted fold lines from looking like corners.
    """
    logz = np.log(np.minimum(zdepth, F32(1e4)))
    geometry = np.concatenate([np.moveaxis(normals, -1, 0), logz[None]])
    return _corner_response(geometry, KEYPOINT3D_REF, pre_blur=1)


def occlusion_edges(
    zdepth: np.ndarray, normals: np.ndarray, rays: np.ndarray, focal: float
) -> np.ndarray:
    """``HxW`` in [0, 1]: depth discontinuities that the surfaces' tangent planes do not explain.

    Works in inverse depth ``w = 1 / t``, which is affine in image coordinates on any plane.
    For pixels ``p, q`` a step ``s = detector_factor(W)`` apart, extend the tangent plane of
    each to the other's ray: ``Δp = w_p - ŵ_q(p)`` and ``Δq = ŵ_p(q) - w_q``. If the two
    planes cross between the rays (``Δp·Δq ≤ 0``) the surface can be continuous there: a fold
    (box edge, room corner, contact), no edge. Otherwise the gap is ``J = min(|Δp|, |Δq|) /
    max(w_p, w_q)`` (≈ ``1 - t_near / t_far``). A plane seen nearly edge-on (``|n·d̂| <``
    :data:`GRAZING_COS`, e.g. at the rim of a ball) could explain any jump, so when only one of
    the two faces its ray, ``J`` is the error of that one alone. ``J`` is 0 on any plane and at
    folds, small on smooth curved surfaces and large where one surface occludes another. The
    score ``J * focal / s`` (jump per angle between the two rays) is ramped between
    :data:`OCCLUSION_LOW` and :data:`OCCLUSION_HIGH`; with the step ``s`` the edges are ``2 s``
    pixels wide, the same angular width at every size.

    Args:
        zdepth: ``HxW`` z-depth (``t``; camera-frame points are ``t * rays``).
        normals: ``HxWx3`` camera-frame normals.
        rays: ``3xHxW`` camera-frame rays ``(x, y, -1)``.
        focal: focal length in pixels.
    """
    n = np.moveaxis(normals, -1, 0)
    finite = np.isfinite(zdepth)
    w = F32(1) / np.where(finite, zdepth, F32(1e4))
    n_dot_d = dot3(n, rays)
    n_dot_p = np.minimum(n_dot_d / w, F32(-1e-12))  # n·P, negative on visible surfaces
    facing = -n_dot_d / np.sqrt(dot3(rays, rays)) >= F32(GRAZING_COS)
    step = min(detector_factor(zdepth.shape[-1]), max(1, min(zdepth.shape) - 1))

    def plane_w(sl_p, sl_q):
        """Inverse depth of p's tangent plane along q's ray."""
        return dot3(n[(slice(None), *sl_p)], rays[(slice(None), *sl_q)]) / n_dot_p[sl_p]

    jump = np.zeros(zdepth.shape, dtype=F32)
    every = slice(None)
    for axis in (0, 1):
        head, tail = slice(None, -step), slice(step, None)
        a = (head, every) if axis == 0 else (every, head)
        b = (tail, every) if axis == 0 else (every, tail)
        d_a = w[a] - plane_w(b, a)  # at a's ray: a's surface minus b's plane
        d_b = plane_w(a, b) - w[b]  # at b's ray: a's plane minus b's surface
        near = np.maximum(w[a], w[b])
        err_a, err_b = np.abs(d_b) / near, np.abs(d_a) / near  # a's / b's plane fails
        both = np.where(d_a * d_b <= 0, F32(0), np.minimum(err_a, err_b))
        ok_a, ok_b = facing[a], facing[b]
        j = np.where(ok_a == ok_b, both, np.where(ok_a, err_a, err_b))
        j = np.where(finite[a] & finite[b], j, np.where(finite[a] | finite[b], INF, F32(0)))
        jump[a] = np.maximum(jump[a], j)
        jump[b] = np.maximum(jump[b], j)
    score = jump * F32(focal / step)
    return np.clip((score - F32(OCCLUSION_LOW)) / F32(OCCLUSION_HIGH - OCCLUSION_LOW), 0, 1)

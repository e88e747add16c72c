"""Decode raw Taskonomy label arrays into normalised labels, for two published conventions.

One function, :func:`decode_sample`, turns the raw arrays of one view (``{domain: array}``, as
read from the PNG files or rendered by :mod:`tasks.synthetic`) into the image and the labels of
the requested tasks, resized to the requested resolution. Files and synthetic data go through
the same code, so a written synthetic folder decodes to exactly the labels rendered in memory.

Conventions (``convention=``):

* ``"mtrobust"`` (default): Mao et al.'s ``columbia/MTRobust`` loader, used by the paper's code
  (``yamizi/taskaugment``): most labels in ``[-1, 1]``, depths as ``log(1 + raw) / log(2^16)``,
  occlusion edges blurred with a Gaussian (σ = 4 px at 256 px).
* ``"taskgrouping"``: Standley et al.'s ``tstandley/taskgrouping`` loader: labels standardised
  with per-task dataset statistics.

Invalid pixels are carried inside the labels (``NaN`` in dense labels, :data:`SEG_IGNORE` in
segmentation), see :mod:`tasks.registry`. ``docs/data.md`` has the table of every transform and
where we deliberately differ from the published loaders.

Decoded labels are kept *compact* (uint8 images, uint8 class ids, float16 dense labels) so a
whole data set fits in memory; :func:`expand` converts a batch to the float32/int64 tensors of
the contract, and :func:`hflip` applies the horizontal-flip rule to either form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE, get_task, parse_tasks

log = logging.getLogger(__name__)

Convention = Literal["mtrobust", "taskgrouping"]
CONVENTIONS: tuple[str, ...] = ("mtrobust", "taskgrouping")
DEFAULT_CONVENTION: Convention = "mtrobust"

DEPTH_INVALID_MTROBUST = 64500
"""MTRobust: a depth raw value ``>= 64500`` (of 65535 = no surface) marks the pixel invalid."""

DEPTH_INVALID_TASKGROUPING = 2**13
"""taskgrouping: z-buffer raw ``>= 8192`` (16 m at 1/512 m) marks the pixel invalid."""

EDGE_BLUR_SIGMA_AT_256 = 4.0
"""MTRobust blurs occlusion edges with σ = 4 px at 256 px; we scale σ with the resolution."""

MASK_DOMAIN = "mask"
"""taskgrouping's optional folder of precomputed validity masks (1-bit PNG, nonzero = valid)."""

DOMAIN_ALIASES: dict[str, tuple[str, ...]] = {
    "segment_semantic": ("segment_semantic", "segmentsemantic"),
}
"""Folder / file-suffix names accepted for a domain (MTRobust renames ``segment_semantic``)."""


@dataclass(frozen=True)
class RawFormat:
    """The raw array a domain's PNG holds: ``dtype`` and channels (1 = gray, 3 = RGB)."""

    dtype: Literal["uint8", "uint16", "bool"]
    channels: int


RAW_FORMATS: dict[str, RawFormat] = {
    "rgb": RawFormat("uint8", 3),
    "segment_semantic": RawFormat("uint8", 1),
    "depth_zbuffer": RawFormat("uint16", 1),
    "depth_euclidean": RawFormat("uint16", 1),
    "normal": RawFormat("uint8", 3),
    "keypoints2d": RawFormat("uint16", 1),
    "keypoints3d": RawFormat("uint16", 1),
    "edge_texture": RawFormat("uint16", 1),
    "edge_occlusion": RawFormat("uint16", 1),
    "principal_curvature": RawFormat("uint8", 3),
    "reshading": RawFormat("uint8", 1),
    MASK_DOMAIN: RawFormat("bool", 1),
}
"""Raw encodings of docs/CONTRACTS.md, keyed by canonical domain name."""

# Published constants (peers.md §2, §3), kept here once.
_LOG_DEPTH_NORMALISER = math.log(2.0**16)
_CURVATURE_OFFSET_MTROBUST = np.array([123.572, 120.1], dtype=np.float64)
_CURVATURE_SCALE_MTROBUST = np.array([31.922, 21.658], dtype=np.float64)
_CURVATURE_MEAN_TASKGROUPING = np.array([0.5175, 0.4987], dtype=np.float64)
_CURVATURE_STD_TASKGROUPING = np.array([0.1373, 0.0359], dtype=np.float64)


def check_convention(convention: str) -> Convention:
    """Return ``convention`` if known; otherwise raise ``ValueError`` naming the choices."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    return convention  # type: ignore[return-value]


def canonical_domain(name: str) -> str:
    """Canonical name of a domain folder or suffix (``segmentsemantic`` → ``segment_semantic``)."""
    for domain, aliases in DOMAIN_ALIASES.items():
        if name in aliases:
            return domain
    return name


def domain_aliases(domain: str) -> tuple[str, ...]:
    """Accepted names of ``domain`` on disk, canonical first."""
    return DOMAIN_ALIASES.get(domain, (domain,))


def mask_source(tasks: str, convention: str, *, has_mask_folder: bool = False) -> str | None:
    """The extra raw domain the validity masks of ``tasks`` need, or ``None``.

    MTRobust masks its depth-masked tasks (``D n K E p r``) with the euclidean depth.
    taskgrouping masks every geometric task with one mask: from the z-buffer depth when ``d`` is
    loaded anyway, else from its precomputed ``mask`` folder when present, else from the z-buffer.
    """
    keys = parse_tasks(tasks)
    convention = check_convention(convention)
    if convention == "mtrobust":
        return "depth_euclidean" if any(get_task(k).depth_masked for k in keys) else None
    if not any(_masked_taskgrouping(k) for k in keys):
        return None
    if "d" in keys or not has_mask_folder:
        return "depth_zbuffer"
    return MASK_DOMAIN


def masked_tasks(tasks: str, convention: str) -> str:
    """The keys among ``tasks`` whose validity comes from a depth map / mask, not their own file."""
    keys = parse_tasks(tasks)
    if check_convention(convention) == "mtrobust":
        return "".join(k for k in keys if get_task(k).depth_masked)
    return "".join(k for k in keys if _masked_taskgrouping(k) and k != "d")


def required_domains(tasks: str, convention: str, *, has_mask_folder: bool = False) -> list[str]:
    """Canonical raw domains needed to decode ``tasks``: ``rgb``, the task domains, the mask."""
    keys = parse_tasks(tasks)
    out = ["rgb"]
    for k in keys:
        dom = get_task(k).domain
        if dom not in out:
            out.append(dom)
    extra = mask_source(keys, convention, has_mask_folder=has_mask_folder)
    if extra is not None and extra not in out:
        out.append(extra)
    return out


def coerce_raw(domain: str, array: np.ndarray, where: str = "") -> np.ndarray:
    """Check a raw array against its domain's encoding and bring it to the canonical shape.

    Returns ``HxW`` for gray domains and ``HxWx3`` for RGB ones, in the domain's dtype. Harmless
    variants are accepted (an alpha channel is dropped, a gray ``rgb`` is tiled, an RGB
    ``reshading`` is averaged, PIL's int32 mode ``I`` becomes uint16 when in range); anything
    else raises ``ValueError`` naming ``where`` (the file).
    """
    domain = canonical_domain(domain)
    fmt = RAW_FORMATS.get(domain)
    where = f" in {where}" if where else ""
    if fmt is None:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(RAW_FORMATS)}")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (2, 4):  # gray+alpha or RGBA
        a = a[..., : a.shape[2] - 1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or min(a.shape[:2]) < 1:
        raise ValueError(f"bad raw shape {a.shape} for domain {domain!r}{where}")
    if fmt.dtype == "bool":
        if a.ndim == 3:
            a = a[..., 0]
        return a != 0
    if fmt.dtype == "uint16":
        wide_int = a.dtype != np.uint16 and a.dtype.kind in "iu" and a.dtype.itemsize > 1
        if wide_int and a.min() >= 0 and a.max() <= 65535:  # PIL mode "I" (int32)
            a = a.astype(np.uint16)
        if a.dtype != np.uint16:
            raise ValueError(
                f"domain {domain!r} needs a 16-bit gray PNG (uint16), got dtype {a.dtype}{where}"
            )
    elif a.dtype != np.uint8:
        raise ValueError(
            f"domain {domain!r} needs an 8-bit PNG (uint8), got dtype {a.dtype}{where}"
        )
    if fmt.channels == 1 and a.ndim == 3:
        if domain != "reshading":
            raise ValueError(f"domain {domain!r} needs a 1-channel PNG, got 3 channels{where}")
        a = np.rint(a.mean(axis=2)).astype(np.uint8)
    if fmt.channels == 3 and a.ndim == 2:
        if domain != "rgb":
            raise ValueError(f"domain {domain!r} needs a 3-channel RGB PNG, got gray{where}")
        a = np.repeat(a[..., None], 3, axis=2)
    return a


def get_raw(raw: Mapping[str, np.ndarray], domain: str, why: str = "") -> np.ndarray:
    """The raw array of ``domain`` (any alias) in ``raw``; ``ValueError`` when absent."""
    for name in domain_aliases(domain):
        if name in raw:
            return coerce_raw(domain, raw[name], why)
    raise ValueError(
        f"raw domain {domain!r} missing{f' ({why})' if why else ''}; have {', '.join(sorted(raw))}"
    )


# ---------------------------------------------------------------------------------------------
# Per-task decoding at the native resolution: raw array -> float values [C, H, W] (no NaN yet).


def _masked_taskgrouping(key: str) -> bool:
    """taskgrouping masks d, n, E (its 'e'), r, p (its 'c'); we extend that to D and K."""
    return key in "dDnKEpr"


def _to_minus1_1(v: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Linear map ``[lo, hi] → [-1, 1]`` (MTRobust ``rescale_image``; no clipping here)."""
    return (v - lo) / (hi - lo) * 2.0 - 1.0


def _chw(v: np.ndarray) -> np.ndarray:
    """HxW → 1xHxW, HxWxC → CxHxW, as float32."""
    v = v[None] if v.ndim == 2 else np.moveaxis(v, 2, 0)
    return np.ascontiguousarray(v, dtype=np.float32)


def _u16(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float64) / 65535.0


def _u8(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float64) / 255.0


def _log_depth(raw: np.ndarray) -> np.ndarray:
    return np.log1p(raw.astype(np.float64)) / _LOG_DEPTH_NORMALISER


def _std(mean: float, std: float):
    return lambda raw: (raw.astype(np.float64) - mean) / std


_DECODERS: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "mtrobust": {
        "d": _log_depth,
        "D": _log_depth,
        "n": lambda raw: _to_minus1_1(_u8(raw)),
        "k": lambda raw: _to_minus1_1(np.clip(_u16(raw), 0, 0.005), 0, 0.005),
        "K": lambda raw: _to_minus1_1(_u16(raw)),
        "e": lambda raw: _to_minus1_1(np.clip(_u16(raw), 0, 0.08), 0, 0.08),
        "E": lambda raw: _to_minus1_1(_u16(raw), 0, 0.00625),  # no clip; blurred later
        "p": lambda raw: (raw[..., :2] - _CURVATURE_OFFSET_MTROBUST) / _CURVATURE_SCALE_MTROBUST,
        "r": lambda raw: _to_minus1_1(_u8(raw)),
    },
    "taskgrouping": {
        "d": _std(1500.0, 1000.0),
        "D": _std(1500.0, 1000.0),  # taskgrouping has no euclidean depth: its z-buffer rule
        "n": lambda raw: (_u8(raw) - 0.5) * 2.0,
        "k": _std(50.0, 100.0),
        "K": lambda raw: _to_minus1_1(_u16(raw)),  # taskgrouping has no keypoints3d: MTRobust's
        "e": _std(718.0, 1070.0),
        "E": _std(56.0248, 239.1265),
        "p": lambda raw: (
            (_u8(raw[..., :2]) - _CURVATURE_MEAN_TASKGROUPING) / _CURVATURE_STD_TASKGROUPING
        ),
        "r": lambda raw: (_u8(raw) - 0.4962) / 0.2846,
    },
}
"""Per-convention decoders of the dense tasks: canonical raw array → float64 HxW or HxWxC."""


def decode_values(key: str, raw: np.ndarray, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """Decode one dense task's raw array (canonical shape) to float32 ``[C, H, W]``.

    No validity mask and no blur here (see :func:`decode_sample`). Formulas: docs/data.md.
    """
    decoders = _DECODERS[check_convention(convention)]
    if key not in decoders:
        get_task(key)
        raise ValueError(
            f"task {key!r} has no dense label file to decode; choose from {''.join(decoders)}"
        )
    return _chw(decoders[key](raw))


def decode_segmentation(raw: np.ndarray, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """Raw segmentation (0 = unlabelled, ``c + 1`` = class ``c``) → uint8 class ids, 255 = ignore.

    MTRobust: class ``raw - 1`` (it merges unlabelled into class 0; we mark it ignore instead).
    taskgrouping: class ``raw`` (its cross-entropy ignores 0). Ids outside ``[0, 18)`` → ignore.
    """
    convention = check_convention(convention)
    cls = raw.astype(np.int16) - (1 if convention == "mtrobust" else 0)
    bad = (raw == 0) | (cls < 0) | (cls >= SEG_CLASSES)
    return np.where(bad, SEG_IGNORE, cls).astype(np.uint8)


def validity(
    key: str, raw: Mapping[str, np.ndarray], convention: str = DEFAULT_CONVENTION
) -> np.ndarray | None:
    """Boolean ``HxW`` validity of task ``key`` at its mask's resolution; ``None`` = all valid."""
    convention = check_convention(convention)
    spec = get_task(key)
    why = f"validity mask of task {key!r}"
    if convention == "mtrobust":
        if key == "d":
            return get_raw(raw, "depth_zbuffer", why) < DEPTH_INVALID_MTROBUST
        if spec.depth_masked:
            return get_raw(raw, "depth_euclidean", why) < DEPTH_INVALID_MTROBUST
        return None
    if not _masked_taskgrouping(key):
        return None
    if any(name in raw for name in domain_aliases("depth_zbuffer")):
        return get_raw(raw, "depth_zbuffer", why) < DEPTH_INVALID_TASKGROUPING
    return get_raw(raw, MASK_DOMAIN, why)


# ---------------------------------------------------------------------------------------------
# Resizing.


def _size_hw(size: int | tuple[int, int] | None, native: tuple[int, int]) -> tuple[int, int]:
    """Output ``(H, W)``: an int means square, ``None`` keeps the native size."""
    if size is None:
        return native
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def resize_image(img: np.ndarray | Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``HxWx3`` (numpy) or ``[3, H, W]`` → uint8 ``[3, *size]``, antialiased bilinear."""
    if isinstance(img, np.ndarray):
        img = np.ascontiguousarray(img)
        t = torch.from_numpy(img if img.flags.writeable else img.copy())
    else:
        t = img
    if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    if tuple(t.shape[-2:]) == tuple(size):
        return t.contiguous()
    out = F.interpolate(
        t[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_nearest(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize (pixel centres, like PIL) of ``[..., H, W]`` of any dtype."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    lead = t.shape[:-2]
    flat = t.reshape(1, -1, *t.shape[-2:])
    dtype = flat.dtype
    work = flat.float() if dtype in (torch.bool, torch.uint8, torch.int64) else flat
    out = F.interpolate(work, size=size, mode="nearest-exact")
    return out.to(dtype).reshape(*lead, *size)


def resize_dense(values: Tensor, valid: Tensor | None, size: tuple[int, int]) -> Tensor:
    """Resize float ``[C, H, W]`` values to ``size`` from valid pixels only; ``NaN`` where invalid.

    The values are averaged with antialiased bilinear weights over *valid* source pixels only
    (normalised convolution), so invalid pixels (e.g. depth 65535 = no surface) do not bleed
    into valid ones; validity itself is resized by nearest neighbour and applied as ``NaN``.
    """
    return _apply_validity(_fill(values, valid, size), valid, size)


def _fill(values: Tensor, valid: Tensor | None, size: tuple[int, int]) -> Tensor:
    """Resized values, finite everywhere: valid-weighted where any valid pixel contributes."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    if valid is None:
        return _bilinear(values, size)
    if valid.shape != values.shape[-2:]:
        valid = resize_nearest(valid, tuple(values.shape[-2:]))
    w = valid.to(values.dtype)[None]
    num, den = _bilinear(values * w, size), _bilinear(w, size)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), _bilinear(values, size))


def _apply_validity(values: Tensor, valid: Tensor | None, size: tuple[int, int]) -> Tensor:
    """``values`` (already at ``size``) with ``NaN`` where the nearest-resized mask is False."""
    if valid is None:
        return values
    valid_out = resize_nearest(valid, size)
    return torch.where(valid_out[None], values, torch.full((), float("nan"), dtype=values.dtype))


def _bilinear(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize of float ``[C, H, W]`` (an area-like filter when shrinking)."""
    out = F.interpolate(t[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def edge_blur_sigma(pixels: int) -> float:
    """σ of MTRobust's occlusion-edge blur at a resolution: 4 px at 256 px, proportional."""
    return EDGE_BLUR_SIGMA_AT_256 * pixels / 256.0


def _blur(values: Tensor, sigma: tuple[float, float]) -> Tensor:
    """MTRobust's ``scipy.ndimage.gaussian_filter`` (reflect, truncate 4) per channel."""
    from scipy.ndimage import gaussian_filter

    arr = values.double().numpy()
    out = np.stack([gaussian_filter(c, sigma=sigma, mode="reflect", truncate=4.0) for c in arr])
    return torch.from_numpy(out.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# The one decode used for files and synthetic data.


def decode_sample(
    raw: Mapping[str, np.ndarray],
    tasks: str,
    *,
    size: int | tuple[int, int] | None,
    convention: str = DEFAULT_CONVENTION,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Decode one view's raw arrays to the compact image and labels of ``tasks``.

    Args:
        raw: ``{domain: array}`` in the raw encodings of docs/CONTRACTS.md (folder aliases such
            as ``segmentsemantic`` accepted); must hold ``rgb``, the tasks' domains and the mask
            source of :func:`mask_source`.
        tasks: task keys (``"sdn"``).
        size: output ``(H, W)``, an int for a square, or ``None`` for the native size.
        convention: ``"mtrobust"`` or ``"taskgrouping"``.

    Returns:
        ``(image uint8 [3, H, W], {key: label})`` with dense labels float16 ``[C, H, W]`` (``NaN``
        = invalid) and segmentation uint8 ``[H, W]`` (255 = unlabelled). ``A`` is not stored: it
        is the image, produced by :func:`expand`. Images are resized with antialiased bilinear
        interpolation, class ids and masks with nearest neighbour, dense labels with
        :func:`resize_dense`; MTRobust's occlusion-edge blur runs at the output resolution with
        σ = 4 · H / 256.
    """
    keys = parse_tasks(tasks)
    convention = check_convention(convention)
    rgb = get_raw(raw, "rgb", "the input image")
    out_hw = _size_hw(size, rgb.shape[:2])
    image = resize_image(rgb, out_hw)
    labels: dict[str, Tensor] = {}
    for k in keys:
        spec = get_task(k)
        if k == "A":
            continue
        arr = get_raw(raw, spec.domain, f"label of task {k!r}")
        if spec.is_segmentation:
            cls = torch.from_numpy(decode_segmentation(arr, convention))
            labels[k] = resize_nearest(cls, out_hw).contiguous()
            continue
        values = torch.from_numpy(decode_values(k, arr, convention))
        valid = validity(k, raw, convention)
        valid_t = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid))
        if k == "E" and convention == "mtrobust":
            sigma = (edge_blur_sigma(out_hw[0]), edge_blur_sigma(out_hw[1]))
            dense = _apply_validity(_blur(_fill(values, valid_t, out_hw), sigma), valid_t, out_hw)
        else:
            dense = resize_dense(values, valid_t, out_hw)
        labels[k] = dense.to(torch.float16).contiguous()
    return image, labels


# ---------------------------------------------------------------------------------------------
# Batches: compact → contract tensors, and the flip rule.


def expand(
    images: Tensor, labels: Mapping[str, Tensor], tasks: str, convention: str = DEFAULT_CONVENTION
) -> tuple[Tensor, dict[str, Tensor]]:
    """Compact batch → ``(x float32 [N, 3, H, W] in [0, 1], {key: label})`` of the contract.

    Dense labels become float32 (``NaN`` kept), segmentation int64, and ``A`` is the image in
    the convention's range (MTRobust ``[-1, 1]``, taskgrouping ``[0, 1]``).
    """
    keys = parse_tasks(tasks)
    convention = check_convention(convention)
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    y: dict[str, Tensor] = {}
    for k in keys:
        if k == "A":
            y[k] = x * 2.0 - 1.0 if convention == "mtrobust" else x.clone()
        elif get_task(k).is_segmentation:
            y[k] = labels[k].long()
        else:
            y[k] = labels[k].float()
    return x, y


def hflip(
    x: Tensor, y: Mapping[str, Tensor], which: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mirror a batch left-right: the image and every label; negate the normals' x component.

    Works on compact and expanded batches (``[N, ..., H, W]``). ``which`` (bool ``[N]``) selects
    the samples to flip; ``None`` flips all. The inputs are never modified (they come back
    as they are when no sample is flipped).
    The rule comes from the registry (``TaskSpec.flip_negate_channel``): surface normals are in
    the camera frame, so mirroring the image turns ``n_x`` into ``-n_x``; every other label
    (curvatures included) is a scalar field that is simply mirrored.
    """
    if which is None:
        which = torch.ones(x.shape[0], dtype=torch.bool)
    which = which.to(device=x.device, dtype=torch.bool)
    if not bool(which.any()):
        return x, dict(y)
    x_out = _flip_where(x, which)
    y_out: dict[str, Tensor] = {}
    for k, v in y.items():
        flipped = _flip_where(v, which)  # always a new tensor: safe to edit in place
        channel = get_task(k).flip_negate_channel
        if channel is not None and v.dim() == 4:
            sign = 1.0 - 2.0 * which.to(device=v.device, dtype=v.dtype)
            flipped[:, channel] *= sign.view(-1, 1, 1)
        y_out[k] = flipped
    return x_out, y_out


def _flip_where(t: Tensor, which: Tensor) -> Tensor:
    """``t`` with the samples in ``which`` mirrored along the last axis (a new tensor)."""
    flipped = t.flip(-1)
    if bool(which.all()):
        return flipped
    return torch.where(which.to(t.device).view(-1, *([1] * (t.dim() - 1))), flipped, t)

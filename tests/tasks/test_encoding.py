"""Label decoding: hand-computed values per task and convention, masks, resizing, the flip rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rts.tasks.encoding import (
    coerce_raw,
    decode_sample,
    decode_segmentation,
    decode_values,
    edge_blur_sigma,
    expand,
    hflip,
    mask_source,
    required_domains,
    resize_dense,
    resize_image,
    validity,
)
from rts.tasks.registry import TASK_KEYS

H, W = 24, 40  # non-square on purpose


def u16(*values):
    return np.array([values], dtype=np.uint16)


def u8(*values):
    return np.array([values], dtype=np.uint8)


def rgb8(*triples):
    return np.array([triples], dtype=np.uint8)


def one_view(rng: np.random.Generator, h: int = H, w: int = W) -> dict[str, np.ndarray]:
    """Raw arrays of every domain in the contract's encodings."""
    return {
        "rgb": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "segment_semantic": rng.integers(0, 18, (h, w), dtype=np.uint8),
        "depth_zbuffer": rng.integers(0, 65536, (h, w), dtype=np.uint16),
        "depth_euclidean": rng.integers(0, 65536, (h, w), dtype=np.uint16),
        "normal": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "keypoints2d": rng.integers(0, 400, (h, w), dtype=np.uint16),
        "keypoints3d": rng.integers(0, 65536, (h, w), dtype=np.uint16),
        "edge_texture": rng.integers(0, 6000, (h, w), dtype=np.uint16),
        "edge_occlusion": rng.integers(0, 500, (h, w), dtype=np.uint16),
        "principal_curvature": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "reshading": rng.integers(0, 256, (h, w), dtype=np.uint8),
    }


# --- hand-computed decodes (published formulas, peers.md §2 and §3) ---------------------------

MTROBUST_CASES = [
    # key, raw, expected per pixel
    ("d", u16(0, 511, 65535), [0.0, 9 / 16, 1.0]),  # log(1 + 511) / log(2^16) = 9 / 16
    ("D", u16(65535, 255), [1.0, 0.5]),  # log(256) / log(65536) = 1/2
    ("k", u16(0, 400, 65535), [-1.0, 1.0, 1.0]),  # clipped to [0, 0.005 * 65535 = 327.7]
    ("K", u16(0, 65535), [-1.0, 1.0]),
    ("e", u16(0, 6000), [-1.0, 1.0]),  # clipped at 0.08 * 65535 = 5242.8
    ("r", u8(0, 51, 255), [-1.0, -0.6, 1.0]),
]

TASKGROUPING_CASES = [
    ("d", u16(1500, 2500, 500), [0.0, 1.0, -1.0]),  # (v - 1500) / 1000
    ("D", u16(3500), [2.0]),
    ("k", u16(50, 150), [0.0, 1.0]),  # (v - 50) / 100
    ("e", u16(718, 1788), [0.0, 1.0]),  # (v - 718) / 1070
    ("E", u16(300), [(300 - 56.0248) / 239.1265]),
    ("r", u8(255), [(1 - 0.4962) / 0.2846]),
    ("K", u16(0, 65535), [-1.0, 1.0]),  # not in taskgrouping: MTRobust's rule
]


@pytest.mark.parametrize(("key", "raw", "expected"), MTROBUST_CASES)
def test_mtrobust_scalar_decodes(key, raw, expected):
    got = decode_values(key, raw, "mtrobust")
    assert got.dtype == np.float32 and got.shape == (1, 1, len(expected))
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("key", "raw", "expected"), TASKGROUPING_CASES)
def test_taskgrouping_scalar_decodes(key, raw, expected):
    np.testing.assert_allclose(decode_values(key, raw, "taskgrouping")[0, 0], expected, rtol=1e-6)


def test_occlusion_edges_are_not_clipped_by_mtrobust():
    # [0, 0.00625] -> [-1, 1] without clipping: 65535 raw is 1 / 0.00625 * 2 - 1 = 319.
    np.testing.assert_allclose(decode_values("E", u16(0, 65535), "mtrobust")[0, 0], [-1, 319])


def test_normals_both_conventions_map_to_minus1_1_per_channel():
    raw = rgb8((0, 255, 51))
    for convention in ("mtrobust", "taskgrouping"):
        got = decode_values("n", raw, convention)
        assert got.shape == (3, 1, 1)
        np.testing.assert_allclose(got[:, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)


def test_curvature_uses_the_first_two_channels():
    raw = rgb8((155, 142, 99))
    mt = decode_values("p", raw, "mtrobust")[:, 0, 0]
    np.testing.assert_allclose(mt, [(155 - 123.572) / 31.922, (142 - 120.1) / 21.658], rtol=1e-6)
    tg = decode_values("p", raw, "taskgrouping")[:, 0, 0]
    want = [(155 / 255 - 0.5175) / 0.1373, (142 / 255 - 0.4987) / 0.0359]
    np.testing.assert_allclose(tg, want, rtol=1e-5)


def test_segmentation_ids_and_ignore():
    raw = u8(0, 1, 17, 18, 200)
    assert decode_segmentation(raw, "mtrobust")[0].tolist() == [255, 0, 16, 17, 255]
    assert decode_segmentation(raw, "taskgrouping")[0].tolist() == [255, 1, 17, 255, 255]


# --- validity -----------------------------------------------------------------------------------


def test_mtrobust_validity_sources():
    raw = {"depth_zbuffer": u16(64499, 64500), "depth_euclidean": u16(65535, 10)}
    assert validity("d", raw, "mtrobust")[0].tolist() == [True, False]  # its own depth
    for key in "DnKEpr":  # the euclidean depth
        assert validity(key, raw, "mtrobust")[0].tolist() == [False, True], key
    for key in "skeA":
        assert validity(key, raw, "mtrobust") is None


def test_taskgrouping_validity_from_zbuffer_or_mask_file():
    raw = {"depth_zbuffer": u16(8191, 8192)}
    for key in "dDnKEpr":
        assert validity(key, raw, "taskgrouping")[0].tolist() == [True, False], key
    assert validity("k", raw, "taskgrouping") is None
    assert validity("n", {"mask": np.array([[0, 1]], np.uint8)}, "taskgrouping")[0].tolist() == [
        False,
        True,
    ]


def test_required_domains_include_the_mask_source_only_when_needed():
    assert required_domains("sd", "mtrobust") == ["rgb", "segment_semantic", "depth_zbuffer"]
    assert required_domains("n", "mtrobust") == ["rgb", "normal", "depth_euclidean"]
    assert required_domains("A", "mtrobust") == ["rgb"]
    assert mask_source("n", "taskgrouping") == "depth_zbuffer"
    assert mask_source("n", "taskgrouping", has_mask_folder=True) == "mask"
    assert mask_source("dn", "taskgrouping", has_mask_folder=True) == "depth_zbuffer"
    assert mask_source("ke", "taskgrouping") is None


# --- decode_sample --------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["mtrobust", "taskgrouping"])
def test_decode_sample_shapes_dtypes_and_nan_where_invalid(convention):
    raw = one_view(np.random.default_rng(0))
    image, labels = decode_sample(raw, TASK_KEYS, size=None, convention=convention)
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert torch.equal(image, torch.from_numpy(raw["rgb"]).permute(2, 0, 1))
    assert "A" not in labels  # the autoencoder label is the image itself
    assert labels["s"].dtype == torch.uint8 and labels["s"].shape == (H, W)
    channels = {"d": 1, "D": 1, "n": 3, "k": 1, "K": 1, "e": 1, "E": 1, "p": 2, "r": 1}
    for key, c in channels.items():
        assert labels[key].dtype == torch.float16 and labels[key].shape == (c, H, W), key
    threshold = 64500 if convention == "mtrobust" else 8192
    source = "depth_euclidean" if convention == "mtrobust" else "depth_zbuffer"
    invalid = torch.from_numpy(raw[source] >= threshold)
    assert torch.equal(torch.isnan(labels["n"]), invalid.expand(3, H, W))
    own = torch.from_numpy(raw["depth_zbuffer"] >= threshold)
    assert torch.equal(torch.isnan(labels["d"][0]), own)
    assert not torch.isnan(labels["k"]).any()
    # Dense values equal the per-task decode (float16 storage: ~3 significant digits).
    want = torch.from_numpy(decode_values("r", raw["reshading"], convention))
    got = labels["r"].float()
    ok = ~torch.isnan(got)
    torch.testing.assert_close(got[ok], want[ok], rtol=1e-3, atol=1e-3)


def test_expand_gives_contract_dtypes_and_autoencoder_ranges():
    raw = one_view(np.random.default_rng(1))
    for convention, lo in (("mtrobust", -1.0), ("taskgrouping", 0.0)):
        image, labels = decode_sample(raw, "sdA", size=None, convention=convention)
        x, y = expand(image[None], {k: v[None] for k, v in labels.items()}, "sdA", convention)
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert y["s"].dtype == torch.int64 and y["d"].dtype == torch.float32
        torch.testing.assert_close(y["A"], x * (1 - lo) + lo)


def test_missing_mask_source_is_a_one_line_error():
    raw = one_view(np.random.default_rng(2))
    del raw["depth_euclidean"]
    with pytest.raises(ValueError, match=r"depth_euclidean.*validity mask of task 'n'") as err:
        decode_sample(raw, "n", size=None)
    assert "\n" not in str(err.value)


def test_segmentsemantic_alias_is_accepted():
    raw = one_view(np.random.default_rng(3))
    raw["segmentsemantic"] = raw.pop("segment_semantic")
    _, labels = decode_sample(raw, "s", size=None)
    assert labels["s"].shape == (H, W)


# --- resizing ------------------------------------------------------------------------------------


def test_resize_to_square_and_rectangular_sizes():
    raw = one_view(np.random.default_rng(4))
    for size, hw in ((16, (16, 16)), ((12, 20), (12, 20)), ((30, 18), (30, 18))):
        image, labels = decode_sample(raw, "sdnp", size=size)
        assert image.shape == (3, *hw)
        assert labels["s"].shape == hw and labels["n"].shape == (3, *hw)


def test_image_resize_is_antialiased():
    # A 1-pixel checkerboard shrunk 4x must average to mid grey (plain bilinear would alias).
    checker = ((np.indices((H * 2, W * 2)).sum(0) % 2) * 255).astype(np.uint8)
    out = resize_image(np.repeat(checker[..., None], 3, axis=2), (H // 2, W // 2))
    assert out.dtype == torch.uint8
    assert (out.float() - 127.5).abs().max() <= 3


def test_segmentation_resize_is_nearest():
    raw = one_view(np.random.default_rng(5))
    raw["segment_semantic"][:] = 3
    raw["segment_semantic"][:, : W // 2] = 9
    _, labels = decode_sample(raw, "s", size=(H // 2, W // 4))
    assert set(labels["s"].unique().tolist()) == {2, 8}  # only input ids, never blends
    assert labels["s"][:, :4].eq(8).all() and labels["s"][:, 6:].eq(2).all()


def test_dense_resize_does_not_bleed_invalid_pixels():
    values = torch.full((1, H, W), 0.25)
    values[:, :, W // 2 :] = 1.0  # what MTRobust's log depth gives at 65535 = no surface
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, W // 2 :] = False
    out = resize_dense(values, valid, (H // 4, W // 4))
    finite = out[~torch.isnan(out)]
    assert finite.numel() > 0 and torch.all(finite == 0.25)  # no 1.0 mixed into valid pixels
    assert torch.isnan(out[0, :, W // 8 :]).all() and not torch.isnan(out[0, :, : W // 8]).any()
    # A plain bilinear resize of the same values would have mixed them at the border:
    plain = torch.nn.functional.interpolate(
        values[None], (H // 4, W // 4), mode="bilinear", antialias=True
    )[0]
    assert plain[0, 0, W // 8 - 1] > 0.26


def _second_moment(profile: np.ndarray) -> float:
    w = profile - profile.min()
    x = np.arange(len(w))
    mean = (w * x).sum() / w.sum()
    return float((w * (x - mean) ** 2).sum() / w.sum())


@pytest.mark.parametrize("size", [64, 128])
def test_occlusion_edge_blur_sigma_scales_with_resolution(size):
    raw = one_view(np.random.default_rng(6), size, size)
    raw["edge_occlusion"][:] = 0
    raw["edge_occlusion"][:, size // 2] = 400  # a vertical line
    raw["depth_euclidean"][:] = 1000  # all valid (MTRobust's mask source)
    raw["depth_zbuffer"][:] = 1000  # all valid (taskgrouping's)
    _, mt = decode_sample(raw, "E", size=None, convention="mtrobust")
    sigma = 4.0 * size / 256  # 4 px at 256 px
    assert edge_blur_sigma(size) == sigma
    profile = mt["E"][0, size // 3].double().numpy()
    assert _second_moment(profile) == pytest.approx(sigma**2, rel=0.03)
    _, tg = decode_sample(raw, "E", size=None, convention="taskgrouping")
    row = tg["E"][0, size // 3].float()
    assert (row != row.min()).sum() == 1  # taskgrouping does not blur


# --- flip ----------------------------------------------------------------------------------------


def test_hflip_mirrors_everything_and_negates_normal_x():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, H, W, generator=gen)
    y = {
        "n": torch.rand(3, 3, H, W, generator=gen) * 2 - 1,
        "d": torch.rand(3, 1, H, W, generator=gen),
        "p": torch.rand(3, 2, H, W, generator=gen),
        "s": torch.randint(0, 18, (3, H, W), generator=gen),
    }
    y["d"][0, 0, 0, 0] = float("nan")
    x_copy, y_copy = x.clone(), {k: v.clone() for k, v in y.items()}
    which = torch.tensor([True, False, True])
    fx, fy = hflip(x, y, which)
    assert torch.equal(x, x_copy)  # inputs untouched
    for k in y:
        torch.testing.assert_close(y[k], y_copy[k], equal_nan=True, rtol=0, atol=0)
    assert torch.equal(fx[0], x[0].flip(-1)) and torch.equal(fx[1], x[1])
    assert torch.equal(fy["n"][0, 0], -y["n"][0, 0].flip(-1))
    assert torch.equal(fy["n"][0, 1:], y["n"][0, 1:].flip(-1))
    assert torch.equal(fy["n"][1], y["n"][1])
    assert torch.equal(fy["p"][2], y["p"][2].flip(-1))  # curvatures are mirrored, not negated
    assert torch.equal(fy["s"][2], y["s"][2].flip(-1))
    assert torch.isnan(fy["d"][0, 0, 0, -1])  # invalid pixels travel with the flip
    # Flipping twice is the identity.
    bx, by = hflip(fx, fy, which)
    assert torch.equal(bx, x) and torch.equal(by["n"], y["n"]) and torch.equal(by["s"], y["s"])


def test_hflip_of_compact_labels_matches_flip_of_expanded():
    raw = one_view(np.random.default_rng(7))
    image, labels = decode_sample(raw, "nsA", size=None)
    batch = image[None], {k: v[None] for k, v in labels.items()}
    x1, y1 = expand(*hflip(*batch), "nsA")
    x2, y2 = hflip(*expand(*batch, "nsA"))
    assert torch.equal(x1, x2)
    for k in "ns":
        torch.testing.assert_close(y1[k], y2[k], equal_nan=True)


# --- errors --------------------------------------------------------------------------------------


def test_wrong_raw_encodings_name_the_source():
    with pytest.raises(ValueError, match=r"16-bit.*in /x/d\.png"):
        coerce_raw("depth_zbuffer", np.zeros((2, 2), np.uint8), "/x/d.png")
    with pytest.raises(ValueError, match="3-channel"):
        coerce_raw("normal", np.zeros((2, 2), np.uint8), "n.png")
    with pytest.raises(ValueError, match="unknown convention 'foo'; choose from mtrobust, task"):
        decode_values("d", u16(1), "foo")
    with pytest.raises(ValueError, match="no dense label"):
        decode_values("s", u8(1), "mtrobust")


def test_accepted_raw_variants():
    as_int32 = np.array([[0, 65535]], dtype=np.int32)  # PIL mode "I"
    assert coerce_raw("depth_zbuffer", as_int32).dtype == np.uint16
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert coerce_raw("rgb", rgba).shape == (2, 2, 3)
    assert coerce_raw("rgb", np.zeros((2, 2), np.uint8)).shape == (2, 2, 3)
    shading = np.dstack([np.full((2, 2), 10, np.uint8)] * 3)
    assert coerce_raw("reshading", shading).tolist() == [[10, 10], [10, 10]]
    with pytest.raises(ValueError, match="uint16"):
        coerce_raw("depth_zbuffer", np.array([[70000]], np.int32))
    assert math.isclose(float(decode_values("d", u16(65535))[0, 0, 0]), 1.0)

"""Taskonomy folders (each layout, both conventions), splits, errors, in-memory batches."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rts.tasks.data import DataSpec, TaskDataset, load_data
from rts.tasks.taskonomy import (
    check_folder,
    load_record,
    read_png,
    scan_folder,
    split_by_building,
    split_names,
)

H, W = 24, 40  # native size of the test files: non-square on purpose

DOMAINS = (
    "rgb",
    "segment_semantic",
    "depth_zbuffer",
    "depth_euclidean",
    "normal",
    "keypoints2d",
    "keypoints3d",
    "edge_texture",
    "edge_occlusion",
    "principal_curvature",
    "reshading",
)


def raw_view(rng: np.random.Generator, index: int) -> dict[str, np.ndarray]:
    """One view in the contract's raw encodings, with known invalid blocks.

    The left quarter has no surface (both depths 65535); otherwise depth_zbuffer is a constant
    ``1000 + index`` (so z-buffer labels are known by hand) and depth_euclidean random but valid.
    """
    depth_z = np.full((H, W), 1000 + index, np.uint16)
    depth_e = rng.integers(100, 60000, (H, W), dtype=np.uint16)
    depth_z[:, : W // 4] = 65535
    depth_e[:, : W // 4] = 65535
    seg = rng.integers(1, 18, (H, W), dtype=np.uint8)
    seg[:2] = 0  # unlabelled rows
    return {
        "rgb": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "segment_semantic": seg,
        "depth_zbuffer": depth_z,
        "depth_euclidean": depth_e,
        "normal": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "keypoints2d": rng.integers(0, 330, (H, W), dtype=np.uint16),
        "keypoints3d": rng.integers(0, 65536, (H, W), dtype=np.uint16),
        "edge_texture": rng.integers(0, 5000, (H, W), dtype=np.uint16),
        "edge_occlusion": rng.integers(0, 400, (H, W), dtype=np.uint16),
        "principal_curvature": np.dstack(
            [rng.integers(0, 256, (H, W, 2), dtype=np.uint8), np.zeros((H, W), np.uint8)]
        ),
        "reshading": rng.integers(0, 256, (H, W), dtype=np.uint8),
    }


def write_taskonomy(
    root: Path,
    buildings: dict[str, list[tuple[int, int]]] | None = None,
    *,
    naming: str = "domain",
    seg_folder: str = "segment_semantic",
    flat: bool = False,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Write a small Taskonomy folder with numpy + Pillow; return ``{name: raw arrays}``.

    Args:
        naming: ``"domain"`` (``point_0_view_0_domain_<domain>.png``) or ``"plain"``
            (``point_0_view_0.png``, as taskgrouping's path replacement allows).
        seg_folder: ``segment_semantic`` or MTRobust's ``segmentsemantic`` (folder and suffix).
        flat: no building level (``rgb/point_...png``); the root's name is the building.
    """
    buildings = buildings or {"b1": [(0, 0), (0, 1), (1, 0)], "b2": [(0, 0), (2, 0)]}
    rng = np.random.default_rng(seed)
    out = {}
    for b, views in buildings.items():
        for p, v in views:
            raw = raw_view(rng, len(out))
            name = f"{root.name if flat else b}/point_{p}_view_{v}"
            out[name] = raw
            for domain, array in raw.items():
                folder_name = seg_folder if domain == "segment_semantic" else domain
                folder = root / folder_name if flat else root / folder_name / b
                folder.mkdir(parents=True, exist_ok=True)
                suffix = f"_domain_{folder_name}" if naming == "domain" else ""
                Image.fromarray(array).save(folder / f"point_{p}_view_{v}{suffix}.png")
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("taskonomy")
    return root, write_taskonomy(root)


def _d_expected(raw: dict[str, np.ndarray], convention: str) -> np.ndarray:
    """z-buffer depth label by hand: MTRobust log(1 + v) / log(2^16), taskgrouping (v-1500)/1000."""
    v = raw["depth_zbuffer"].astype(np.float64)
    if convention == "mtrobust":
        return np.where(v < 64500, np.log(1 + v) / math.log(65536), np.nan)
    return np.where(v < 8192, (v - 1500) / 1000, np.nan)


# --- layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("naming", "seg_folder", "flat"),
    [
        ("domain", "segment_semantic", False),  # Taskonomy / MTRobust
        ("domain", "segmentsemantic", False),  # MTRobust's renamed segmentation folder
        ("plain", "segment_semantic", False),  # taskgrouping-style names, no _domain_ suffix
        ("domain", "segment_semantic", True),  # flat sample folder
    ],
)
@pytest.mark.parametrize("convention", ["mtrobust", "taskgrouping"])
def test_each_layout_reads_back_the_written_values(tmp_path, naming, seg_folder, flat, convention):
    root = tmp_path / "data"
    written = write_taskonomy(root, naming=naming, seg_folder=seg_folder, flat=flat)
    records = scan_folder(root, "sdn", convention)
    assert [r.name for r in records] == sorted(written)
    for record in records:
        raw = written[record.name]
        image, labels = load_record(record, "sdn", size=None, convention=convention)
        assert torch.equal(image, torch.from_numpy(raw["rgb"]).permute(2, 0, 1))
        offset = 1 if convention == "mtrobust" else 0
        seg = raw["segment_semantic"].astype(int) - offset
        seg[raw["segment_semantic"] == 0] = 255
        assert labels["s"].numpy().tolist() == seg.tolist()
        np.testing.assert_allclose(
            labels["d"][0].float().numpy(), _d_expected(raw, convention), rtol=1e-3
        )
        n_expected = raw["normal"].transpose(2, 0, 1) / 255.0 * 2 - 1
        n_expected[:, :, : W // 4] = np.nan  # depth says: no surface
        np.testing.assert_allclose(labels["n"].float().numpy(), n_expected, rtol=1e-3, atol=1e-3)


def test_a_folder_mixing_both_namings_per_building(tmp_path):
    root = tmp_path / "mixed"
    write_taskonomy(root, {"b1": [(0, 0)]}, naming="domain")
    write_taskonomy(root, {"b2": [(0, 0)]}, naming="plain", seed=1)
    assert [r.name for r in scan_folder(root, "dk")] == ["b1/point_0_view_0", "b2/point_0_view_0"]


def test_png_modes_16_bit_and_8_bit(folder):
    root, _ = folder
    assert (
        read_png(
            root / "depth_zbuffer/b1/point_0_view_0_domain_depth_zbuffer.png", "depth_zbuffer"
        ).dtype
        == np.uint16
    )
    assert read_png(root / "normal/b1/point_0_view_0_domain_normal.png", "normal").shape == (
        H,
        W,
        3,
    )


# --- load_data, batches ----------------------------------------------------------------------


def test_load_data_resizes_and_masks(folder):
    root, written = folder
    spec = DataSpec(source=str(root), size=16, val_fraction=0.5)
    train, val = load_data(spec, "sdDnkKeEprA")
    assert len(train) + len(val) == len(written) and len(train) and len(val)
    assert not set(train.buildings) & set(val.buildings)
    x, y = next(train.batches(len(train)))
    n = len(train)
    assert x.shape == (n, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    shapes = {"s": (n, 16, 16), "d": (n, 1, 16, 16), "n": (n, 3, 16, 16), "p": (n, 2, 16, 16)}
    for k, shape in shapes.items():
        assert y[k].shape == shape, k
    assert y["s"].dtype == torch.int64 and y["d"].dtype == torch.float32
    assert set(y) == set("sdDnkKeEprA")
    # The left quarter (no surface) is NaN for depth-masked tasks, the rest valid.
    for k in "dDnKEpr":
        assert torch.isnan(y[k][..., :3]).all() and not torch.isnan(y[k][..., 5:]).any(), k
    for k in "ke":
        assert not torch.isnan(y[k]).any()
    torch.testing.assert_close(y["A"], x * 2 - 1)
    # Constant depth stays constant after resizing: values by hand.
    for i, name in enumerate(train.names):
        want = math.log(1 + 1000 + list(written).index(name)) / math.log(65536)
        valid = y["d"][i][~torch.isnan(y["d"][i])]
        torch.testing.assert_close(valid, torch.full_like(valid, want), rtol=1e-3, atol=0)


def test_getitem_equals_batch_rows_and_cache_off_equals_on(folder):
    root, _ = folder
    cached, _ = load_data(DataSpec(source=str(root), size=16, val_fraction=0), "sdnA", workers=3)
    inline, _ = load_data(DataSpec(source=str(root), size=16, val_fraction=0), "sdnA", workers=1)
    lazy, _ = load_data(DataSpec(source=str(root), size=16, val_fraction=0, cache=False), "sdnA")
    assert cached.cached and not lazy.cached and cached.nbytes > 0 and lazy.nbytes == 0
    assert cached.names == lazy.names
    xa, ya = next(cached.batches(100))
    for other in (lazy, inline):  # threads, inline decoding and cache=False agree bit for bit
        xb, yb = next(other.batches(100))
        assert torch.equal(xa, xb)
        for k in ya:
            torch.testing.assert_close(ya[k], yb[k], equal_nan=True, rtol=0, atol=0)
    x1, y1 = cached[1]
    assert torch.equal(x1, xa[1])
    torch.testing.assert_close(y1["n"], ya["n"][1], equal_nan=True)
    x_last, _ = cached[-1]
    assert torch.equal(x_last, xa[-1])
    with pytest.raises(IndexError):
        cached[len(cached)]


def test_n_caps_a_folder_evenly_over_the_sorted_views(folder, caplog):
    root, written = folder
    with caplog.at_level("WARNING", logger="rts.tasks.data"):
        data, _ = load_data(DataSpec(source=str(root), size=8, n=3, val_fraction=0), "d")
    names = sorted(written)  # b1: 3 views, b2: 2 views
    assert data.names == [names[0], names[1], names[3]]  # indices 0, 5//3, 10//3
    assert data.buildings == ["b1", "b2"]
    assert "reading 3 of the 5 views" in caplog.text


def _dataset(folder, tasks="sdn") -> TaskDataset:
    root, _ = folder
    data, _ = load_data(DataSpec(source=str(root), size=16, val_fraction=0), tasks)
    return data


def test_batches_cover_each_sample_once_and_drop_last(folder):
    data = _dataset(folder)
    sizes = [len(x) for x, _ in data.batches(2)]
    assert sizes == [2, 2, 1]
    assert [len(x) for x, _ in data.batches(2, drop_last=True)] == [2, 2]
    xs = torch.cat([x for x, _ in data.batches(2, shuffle=True)])
    x_all, _ = next(data.batches(10))
    assert sorted(xs.sum(dim=(1, 2, 3)).tolist()) == sorted(x_all.sum(dim=(1, 2, 3)).tolist())
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(data.batches(0))


def test_shuffle_and_flip_are_deterministic_in_the_generator(folder):
    data = _dataset(folder)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return [b for b in data.batches(2, shuffle=True, flip=True, generator=g)]

    a, b, c = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_flip_mirrors_samples_and_negates_normal_x(folder):
    data = _dataset(folder)
    x0, y0 = next(data.batches(len(data)))
    for seed in range(20):  # p = 1/2 per sample: find a seed that flips some but not all
        g = torch.Generator().manual_seed(seed)
        x1, y1 = next(data.batches(len(data), flip=True, generator=g))
        flipped = [not torch.equal(x1[i], x0[i]) for i in range(len(data))]
        if any(flipped) and not all(flipped):
            break
    assert any(flipped) and not all(flipped)
    for i, f in enumerate(flipped):
        if not f:
            continue
        assert torch.equal(x1[i], x0[i].flip(-1))
        assert torch.equal(y1["s"][i], y0["s"][i].flip(-1))
        torch.testing.assert_close(y1["n"][i, 0], -y0["n"][i, 0].flip(-1), equal_nan=True)
        torch.testing.assert_close(y1["n"][i, 1:], y0["n"][i, 1:].flip(-1), equal_nan=True)
        torch.testing.assert_close(y1["d"][i], y0["d"][i].flip(-1), equal_nan=True)


def test_batches_do_not_share_memory_with_the_cache(folder):
    data = _dataset(folder)
    x, y = next(data.batches(2))
    x.zero_()
    y["d"].fill_(7)
    x2, y2 = next(data.batches(2))
    assert x2.abs().sum() > 0 and not (y2["d"] == 7).any()


# --- splits ------------------------------------------------------------------------------------


def test_split_is_deterministic_order_free_and_nonempty():
    names = [f"building{i:02d}" for i in range(10)]
    train, val = split_names(names, 0.2)
    assert len(val) == 2 and train | val == set(names) and not train & val
    assert split_names(list(reversed(names)), 0.2) == (train, val)
    assert split_names(names[:2], 0.01) == split_names(names[1::-1], 0.01)
    t2, v2 = split_names(names[:2], 0.01)
    assert len(t2) == 1 and len(v2) == 1  # at least one each with >= 2 buildings
    t3, v3 = split_names(names[:3], 0.99)
    assert len(t3) == 1 and len(v3) == 2
    assert split_names(names, 0.0) == (set(names), set())
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1"):
        split_names(names, 1)


def test_split_by_building_keeps_buildings_whole_and_falls_back_to_points():
    items = [("a", 0), ("a", 1), ("b", 0), ("c", 5), ("c", 6)]
    train, val = split_by_building(items, 0.34)
    assert sorted(train + val) == list(range(5))
    val_b = {items[i][0] for i in val}
    assert len(val_b) == 1 and not val_b & {items[i][0] for i in train}
    one = [("a", 0), ("a", 0), ("a", 1), ("a", 2)]
    train, val = split_by_building(one, 0.3)
    assert val and train and not {one[i][1] for i in val} & {one[i][1] for i in train}


def test_split_does_not_depend_on_file_system_order(tmp_path):
    # Same buildings created in opposite orders: same split.
    splits = []
    for order in (["b1", "b2", "b3", "b4"], ["b4", "b3", "b2", "b1"]):
        root = tmp_path / "".join(order)
        write_taskonomy(root, {b: [(0, 0)] for b in order})
        train, val = load_data(DataSpec(source=str(root), size=8, val_fraction=0.25), "d")
        splits.append((train.buildings, val.buildings))
    assert splits[0] == splits[1] and len(splits[0][1]) == 1


# --- errors -----------------------------------------------------------------------------------


def test_missing_label_file_names_the_file(tmp_path):
    root = tmp_path / "x"
    write_taskonomy(root)
    victim = root / "depth_zbuffer/b1/point_0_view_1_domain_depth_zbuffer.png"
    victim.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_data(DataSpec(source=str(root), size=8), "sd")
    assert str(err.value) == f"missing label file for task 'd': {victim}"
    load_data(DataSpec(source=str(root), size=8), "sk")  # other tasks still load


def test_missing_file_is_named_in_the_folder_own_naming(tmp_path):
    root = tmp_path / "x"
    write_taskonomy(root, {"b1": [(0, 0), (3, 1)]}, seg_folder="segmentsemantic")
    victim = root / "segmentsemantic/b1/point_3_view_1_domain_segmentsemantic.png"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=f"for task 's': {victim}$"):
        scan_folder(root, "s")


def test_only_requested_folders_are_required(tmp_path):
    root = tmp_path / "x"
    write_taskonomy(root)
    for domain in ("normal", "depth_euclidean", "reshading"):
        for p in sorted((root / domain).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / domain).rmdir()
    train, _ = load_data(DataSpec(source=str(root), size=8), "sdk")
    assert train.tasks == "sdk"
    with pytest.raises(
        FileNotFoundError, match=f"missing label folder for task 'n': {root}/normal"
    ):
        load_data(DataSpec(source=str(root), size=8), "n")
    # Keypoints3d is depth-masked: MTRobust needs depth_euclidean for it; taskgrouping does not.
    with pytest.raises(FileNotFoundError, match=r"depth_euclidean folder \(validity mask of task"):
        load_data(DataSpec(source=str(root), size=8), "K")
    load_data(DataSpec(source=str(root), size=8, convention="taskgrouping"), "K")


def test_unreadable_and_wrong_encoding_files_name_the_file(tmp_path):
    root = tmp_path / "x"
    write_taskonomy(root)
    bad = root / "normal/b2/point_2_view_0_domain_normal.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=f"cannot read {bad}"):
        load_data(DataSpec(source=str(root), size=8), "n")
    eight_bit = root / "keypoints2d/b1/point_0_view_0_domain_keypoints2d.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(eight_bit)
    with pytest.raises(ValueError, match=f"16-bit.*{eight_bit}"):
        load_data(DataSpec(source=str(root), size=8, cache=True), "k")


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        load_data(DataSpec(source=str(tmp_path / "nope")), "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no 'rgb' folder"):
        load_data(DataSpec(source=str(tmp_path / "empty")), "d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, r"size must be in \[8, 4096\] pixels, got size=0"),
        ({"n": 0}, "n must be a positive number of images, got n=0"),
        ({"convention": "mao"}, "unknown convention 'mao'; choose from mtrobust, taskgrouping"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got val_fraction=1.0"),
        ({"size": 64.0}, "size must be an integer, got size=64.0"),
        ({"source": ""}, "source must be 'synthetic' or a folder path"),
    ],
)
def test_dataspec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)


def test_dataspec_is_primitives_only(tmp_path):
    from dataclasses import asdict

    spec = DataSpec(source=tmp_path)  # a Path is stored as its string
    assert isinstance(spec.source, str) and not spec.is_synthetic
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in asdict(spec).values())
    assert DataSpec().is_synthetic


# --- check ---------------------------------------------------------------------------------------


def test_check_lists_every_problem(tmp_path):
    root = tmp_path / "x"
    write_taskonomy(root)
    assert check_folder(root).ok
    (root / "normal/b1/point_0_view_0_domain_normal.png").unlink()
    Image.fromarray(np.full((H, W), 40, np.uint8)).save(
        root / "segment_semantic/b2/point_0_view_0_domain_segment_semantic.png"
    )
    Image.fromarray(np.zeros((H + 1, W), np.uint16)).save(
        root / "depth_zbuffer/b1/point_1_view_0_domain_depth_zbuffer.png"
    )
    report = check_folder(root, "sdn")
    text = "\n".join(report.problems)
    assert len(report.problems) == 3, text
    assert "missing label file for task 'n'" in text
    assert "segmentation id 40 out of range 0..17" in text
    assert "size 40x25 differs from its image's 40x24" in text


# --- synthetic ---------------------------------------------------------------------------------


def test_synthetic_in_memory_equals_written_folder(tmp_path):
    synthetic = pytest.importorskip("rts.tasks.synthetic")
    out = synthetic.write_dataset(tmp_path / "synth", 6, 32, 5)
    for convention in ("mtrobust", "taskgrouping"):
        mem = load_data(DataSpec(size=32, n=6, seed=5, convention=convention), "sdDnkKeEprA")
        disk = load_data(
            DataSpec(source=os.fspath(out), size=32, convention=convention), "sdDnkKeEprA"
        )
        for a, b in zip(mem, disk, strict=True):
            assert a.names == b.names and len(a) > 0
            xa, ya = next(a.batches(100))
            xb, yb = next(b.batches(100))
            assert torch.equal(xa, xb)
            for k in ya:
                torch.testing.assert_close(ya[k], yb[k], equal_nan=True, rtol=0, atol=0)


def test_synthetic_is_deterministic_in_its_seed():
    pytest.importorskip("rts.tasks.synthetic")
    a, _ = load_data(DataSpec(size=16, n=4, seed=1, val_fraction=0), "dn")
    b, _ = load_data(DataSpec(size=16, n=4, seed=1, val_fraction=0), "dn")
    c, _ = load_data(DataSpec(size=16, n=4, seed=2, val_fraction=0), "dn")
    xa, xb, xc = (next(d.batches(4))[0] for d in (a, b, c))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    assert len(a.buildings) >= 2 or len(a) == 4


def test_uncached_folder_batches_are_the_same_with_loader_workers(folder):
    """``cache=False`` decodes every batch in DataLoader processes: the same batches, in the
    same order and with the same flips, as decoding inline."""
    root, _ = folder
    spec = DataSpec(source=str(root), size=16, val_fraction=0, cache=False)
    inline, _ = load_data(spec, "sdnA", workers=0)
    loaded, _ = load_data(spec, "sdnA", workers=2)
    assert inline.names == loaded.names
    epochs = []
    for data in (inline, loaded):
        gen = torch.Generator().manual_seed(3)
        epochs.append(list(data.batches(2, shuffle=True, generator=gen, flip=True)))
    assert len(epochs[0]) == len(epochs[1]) == 3  # 5 views, batches of 2
    for (xa, ya), (xb, yb) in zip(*epochs, strict=True):
        assert torch.equal(xa, xb)
        assert ya.keys() == yb.keys()
        for k in ya:
            torch.testing.assert_close(ya[k], yb[k], equal_nan=True, rtol=0, atol=0)
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        load_data(spec, "sdnA", workers=-1)

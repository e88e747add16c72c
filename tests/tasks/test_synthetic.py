"""Synthetic mini-Taskonomy: geometry against analytic oracles, encodings, files, determinism."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from rts.tasks import synthetic
from rts.tasks.registry import TASKS
from rts.tasks.synthetic import (
    DOMAINS,
    SEG_CLASS_NAMES,
    encode_view,
    iter_raw,
    render_view,
    write_dataset,
)
from rts.tasks.synthetic_labels import EDGE_GAIN, image_responses
from rts.tasks.synthetic_render import render
from rts.tasks.synthetic_scene import (
    Box,
    Camera,
    Cylinder,
    Light,
    Material,
    Room,
    Scene,
    Sphere,
    Texture,
    object_class,
)

SIZE = 49  # odd: the centre pixel's ray is the optical axis
FOV = math.radians(60)
PLAIN = Material(Texture("plain", (0.6, 0.6, 0.6)))
CAMERA = Camera((0.0, 1.5, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), FOV)  # looks along world -z
SPHERE = Sphere((0.0, 1.5, -1.0), 0.5, PLAIN, object_class("sphere", "metal"))
BOX = Box((1.5, 0.5, -2.0), (0.5, 0.5, 0.5), 0.6, PLAIN, object_class("box", "wood"))
CYL = Cylinder((-1.6, 0.6, -1.5), 0.4, 0.6, PLAIN, object_class("cylinder", "stone"))
RESPONSES = ("keypoints2d", "keypoints3d", "edge_texture", "edge_occlusion")
LIGHT = Light("point", (1.5, 3.5, -1.0), ambient=0.2, falloff=6.0)


def _scene(*objects) -> Scene:
    return Scene(Room((10.0, 4.0, 10.0), PLAIN, PLAIN, PLAIN), tuple(objects), (), LIGHT)


def _pinhole(size: int, fov: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray components ``x, y`` (with ``z = -1``) per pixel, in float64."""
    f = size / 2 / math.tan(fov / 2)
    c = (np.arange(size) + 0.5 - size / 2) / f
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(-c[:, None], (size, size))


def _ray_sphere(o, d, c, r) -> np.ndarray:
    """Nearest positive hit of rays ``o + t d`` (``d`` ``(..., 3)``) with a sphere, else inf."""
    oc = np.asarray(o, float) - np.asarray(c, float)
    a = (d * d).sum(-1)
    b = (d * oc).sum(-1)
    disc = b * b - a * ((oc * oc).sum(-1) - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


@pytest.fixture(scope="module")
def analytic_view():
    return render(_scene(SPHERE, BOX, CYL), CAMERA, SIZE)


@pytest.fixture(scope="module")
def views():
    return [
        render_view(b, p, v, 48, seed=3) for b, p, v in [(0, 0, 0), (1, 0, 1), (2, 1, 2), (3, 2, 3)]
    ]


# --------------------------------------------------------------------------------------------
# Geometry against hand-computed values.


def test_depth_of_a_sphere_matches_ray_sphere_intersection(analytic_view):
    v = analytic_view
    c = SIZE // 2
    assert v.zdepth[c, c] == pytest.approx(3.0 - 0.5, abs=1e-5)  # camera z=2, centre z=-1
    x, y = _pinhole(SIZE, FOV)
    d = np.stack([x, y, -np.ones_like(x)], axis=-1)  # identity rotation: world = camera frame
    t = _ray_sphere(CAMERA.position, d, SPHERE.center, SPHERE.radius)
    on = v.surface == 1
    assert on.sum() > 50
    np.testing.assert_allclose(v.zdepth[on], t[on], rtol=1e-5)
    assert np.all(np.isinf(t[v.surface == 0]) | (t[v.surface == 0] > v.zdepth[v.surface == 0]))


def test_zdepth_below_euclidean_and_equal_on_axis(analytic_view, views):
    for v in [analytic_view, *views]:
        assert np.all(v.zdepth <= v.edepth)
        assert np.all((v.zdepth > 0.5) & (v.edepth < 20))  # closed room, clearance kept
    v = analytic_view
    c = SIZE // 2
    assert v.edepth[c, c] == v.zdepth[c, c]
    x, y = _pinhole(SIZE, FOV)
    np.testing.assert_allclose(v.edepth / v.zdepth, np.sqrt(1 + x * x + y * y), rtol=1e-6)


def test_normals_are_unit_and_face_the_camera(analytic_view, views):
    for v in [analytic_view, *views]:
        size = v.zdepth.shape[0]
        np.testing.assert_allclose(np.linalg.norm(v.normals, axis=-1), 1.0, atol=1e-5)
        x, y = _pinhole(size, v.camera.fov)
        facing = v.normals[..., 0] * x + v.normals[..., 1] * y - v.normals[..., 2]
        assert np.all(facing < 0)
    c = SIZE // 2
    np.testing.assert_allclose(analytic_view.normals[c, c], [0, 0, 1], atol=1e-6)


def test_principal_curvatures_are_analytic(analytic_view):
    v = analytic_view
    sphere, box, cyl = (v.surface == i for i in (1, 2, 3))
    np.testing.assert_allclose(v.curvature[sphere], 1 / SPHERE.radius, rtol=1e-6)
    np.testing.assert_array_equal(v.curvature[box], 0)
    np.testing.assert_array_equal(v.curvature[v.surface == 0], 0)  # room seen from inside: flat
    side = cyl & (np.abs(v.normals[..., 1]) < 0.5)
    cap = cyl & (v.normals[..., 1] > 0.5)
    assert side.sum() > 10 and cap.sum() > 0
    np.testing.assert_allclose(v.curvature[side][:, 0], 1 / CYL.radius, rtol=1e-6)
    np.testing.assert_array_equal(v.curvature[side][:, 1], 0)
    np.testing.assert_array_equal(v.curvature[cap], 0)
    assert np.all(v.curvature[..., 0] >= v.curvature[..., 1])


def test_segmentation_classes(analytic_view, views):
    assert len(SEG_CLASS_NAMES) == 17 and len(set(SEG_CLASS_NAMES)) == 17
    v = analytic_view
    assert set(np.unique(v.seg[v.surface == 1])) == {SPHERE.seg}
    assert set(np.unique(v.seg[v.surface == 3])) == {CYL.seg}
    assert set(np.unique(v.seg[v.surface == 0])) == {0, 1, 2}  # floor, wall, ceiling
    for v in views:
        assert v.seg.min() >= 0 and v.seg.max() < len(SEG_CLASS_NAMES)


# --------------------------------------------------------------------------------------------
# Shading, image, derived responses.


def test_shading_is_lambert_with_ray_cast_shadows():
    """Floor: ambient + (1 - ambient) n·l / (1 + (dist/falloff)^2); ambient in the ball's shadow."""
    v = render(_scene(SPHERE), CAMERA, SIZE)
    x, y = _pinhole(SIZE, FOV)
    floor = v.seg == 0
    p = np.stack([x, y, -np.ones_like(x)], -1) * v.zdepth[..., None] + CAMERA.position
    to_light = np.asarray(LIGHT.vector) - p
    dist = np.linalg.norm(to_light, axis=-1)
    ndl = to_light[..., 1] / dist  # the floor's normal is (0, 1, 0)
    light_to_p = -to_light  # segment light → p, parameter in (0, 1)
    blocked = _ray_sphere(LIGHT.vector, light_to_p, SPHERE.center, SPHERE.radius) < 1
    lit = LIGHT.ambient + (1 - LIGHT.ambient) * ndl / (1 + (dist / LIGHT.falloff) ** 2)
    expected = np.where(blocked, LIGHT.ambient, lit)
    assert blocked[floor].sum() > 10  # the ball's shadow is in view
    assert (np.abs(v.shading - expected)[floor] < 1e-4).mean() > 0.99  # all but the penumbra px
    assert v.shading.min() >= LIGHT.ambient - 1e-6 and v.shading.max() <= 1
    np.testing.assert_allclose(v.rgb, v.albedo * v.shading[..., None], atol=1e-6)  # no specular


def test_occlusion_edges_follow_depth_jumps(analytic_view, views):
    v = analytic_view
    ball = v.surface == 1  # floats in front of the wall: a jump all around its outline
    outline = ball & binary_dilation(~ball) | ~ball & binary_dilation(ball)
    assert v.edge_occlusion[outline].min() > 0.99
    far = ~binary_dilation(v.surface > 0, iterations=3)
    assert v.edge_occlusion[far].max() < 1e-6  # flat walls, floor and their folds: no edge
    for v in views:  # random scenes: a large relative jump between neighbours is an edge
        z, e = v.zdepth, v.edge_occlusion
        for za, zb, ea, eb in [
            (z[:, :-1], z[:, 1:], e[:, :-1], e[:, 1:]),
            (z[:-1], z[1:], e[:-1], e[1:]),
        ]:
            big = np.abs(za - zb) / np.minimum(za, zb) > 0.5
            assert np.all(ea[big] > 0.9) and np.all(eb[big] > 0.9)
        assert e.mean() < 0.3


def test_texture_edges_and_keypoints_of_known_images():
    img = np.full((48, 48, 3), 0.2, np.float32)
    img[:, 24:] = 0.7  # a vertical step of contrast 0.5
    e, k = image_responses(img)
    np.testing.assert_allclose(e[:, 23:25], EDGE_GAIN * 0.25, rtol=1e-5)  # Sobel/8 = c/2
    assert e[:, :22].max() == 0 and e[:, 26:].max() == 0
    assert k.max() < 1e-6  # a straight edge has no corner
    img = np.full((48, 48, 3), 0.2, np.float32)
    img[12:30, 16:40] = 0.8  # a bright rectangle: four corners
    e, k = image_responses(img)
    for r, c in [(12, 16), (12, 40), (30, 16), (30, 40)]:
        assert k[r - 2 : r + 2, c - 2 : c + 2].max() > 0.9
    assert k[21, 28] == 0 and k[12, 28] < 0.05  # inside; middle of an edge


def test_keypoints3d_at_box_corners_not_on_flat_walls(analytic_view):
    v = analytic_view
    hx, hy, hz = BOX.half
    cs, sn = math.cos(BOX.yaw), math.sin(BOX.yaw)
    f = SIZE / 2 / math.tan(FOV / 2)
    found = 0
    for lx in (-hx, hx):
        for ly in (-hy, hy):
            for lz in (-hz, hz):
                pw = np.add(BOX.center, [cs * lx + sn * lz, ly, -sn * lx + cs * lz])
                pc = pw - CAMERA.position
                u, w = pc[0] / -pc[2] * f + SIZE / 2, SIZE / 2 - pc[1] / -pc[2] * f
                i, j = int(w), int(u)
                if 2 <= i < SIZE - 2 and 2 <= j < SIZE - 2 and ly > 0:
                    visible = abs(v.zdepth[i, j] + pc[2]) < 0.1 * -pc[2]
                    if visible:  # top corners in view
                        found += 1
                        assert v.keypoints3d[i - 2 : i + 3, j - 2 : j + 3].max() > 0.5
    assert found >= 2
    same = np.ones_like(v.seg, bool)
    for di in range(-3, 4):
        for dj in range(-3, 4):
            shifted = np.roll(v.normals, (di, dj), axis=(0, 1))
            same &= np.all(shifted == v.normals, axis=-1)
    flat = same & ~binary_dilation(v.surface > 0, iterations=6)
    flat[:4], flat[-4:], flat[:, :4], flat[:, -4:] = False, False, False, False
    assert flat.sum() > 200
    assert v.keypoints3d[flat].max() < 0.05


def test_response_ranges_are_informative(views):
    for v in views:
        for name in ("rgb", "shading", *RESPONSES):
            a = getattr(v, name)
            assert a.min() >= 0 and a.max() <= 1, name
    for name in RESPONSES:
        mean = np.mean([getattr(v, name).mean() for v in views])
        saturated = np.mean([(getattr(v, name) > 0.99).mean() for v in views])
        assert 0.01 < mean < 0.4 and saturated < 0.3, name


def test_mtrobust_decoding_gives_sensible_ranges(views):
    encoding = pytest.importorskip("rts.tasks.encoding")
    raws = [encode_view(v) for v in views]
    for key in "dDnkKeEpr":
        vals = np.concatenate(
            [
                encoding.decode_sample(r, key, size=None)[1][key].float().numpy().ravel()
                for r in raws
            ]
        )
        assert np.isfinite(vals).all(), key  # closed rooms: every pixel valid
        assert vals.std() > 0.01, key
        if key in "kKeE":  # in [-1, 1] and neither all "no response" nor all saturated
            assert vals.min() >= -1 and vals.max() <= 1 + 1e-3, key
            assert (vals > -0.9).mean() > 0.01 and (vals > 0.9).mean() < 0.3, key


# --------------------------------------------------------------------------------------------
# Encoding, files, determinism.


def test_encode_view_formats_and_values(analytic_view):
    raw = encode_view(analytic_view)
    assert tuple(raw) == DOMAINS and len(DOMAINS) == 11
    assert set(DOMAINS) == {spec.domain for spec in TASKS.values()}
    c = SIZE // 2
    assert raw["depth_zbuffer"].dtype == np.uint16 and raw["depth_zbuffer"][c, c] == 1280
    np.testing.assert_array_equal(raw["normal"][c, c], [128, 128, 255])
    np.testing.assert_array_equal(raw["principal_curvature"][c, c], [187, 163, 0])  # κ = 2
    assert raw["segment_semantic"][c, c] == SPHERE.seg + 1
    for dom in ("depth_euclidean", "keypoints2d", "keypoints3d", "edge_texture", "edge_occlusion"):
        assert raw[dom].dtype == np.uint16 and raw[dom].shape == (SIZE, SIZE)
    assert raw["edge_occlusion"].max() == round(0.00625 * 65535)
    assert raw["rgb"].shape == (SIZE, SIZE, 3) and raw["reshading"].dtype == np.uint8


def test_same_seed_same_views_other_seed_different():
    a = list(iter_raw(3, 24, seed=7))
    b = list(iter_raw(3, 24, seed=7))
    c = list(iter_raw(3, 24, seed=8))
    assert [(bld, s) for bld, s, _ in a] == [(bld, s) for bld, s, _ in b]
    for (_, _, ra), (_, _, rb), (_, _, rc) in zip(a, b, c, strict=True):
        for dom in DOMAINS:
            np.testing.assert_array_equal(ra[dom], rb[dom])
        assert not np.array_equal(ra["rgb"], rc["rgb"])


def test_buildings_points_views():
    plan = [(bld, stem) for bld, stem, _ in iter_raw(5, 16, seed=0)]
    assert plan == [
        ("synth-000", "point_0_view_0"),
        ("synth-000", "point_0_view_1"),
        ("synth-000", "point_0_view_2"),
        ("synth-001", "point_0_view_0"),
        ("synth-001", "point_0_view_1"),
    ]
    assert synthetic._plan(40) == [(0, 14), (1, 13), (2, 13)]
    v0, v1 = render_view(0, 0, 0, 16, 0), render_view(0, 0, 1, 16, 0)
    assert v0.scene == v1.scene and v0.camera != v1.camera  # a point is a layout, views are poses
    assert render_view(0, 1, 0, 16, 0).scene.room == v0.scene.room  # a building is a room style
    assert render_view(1, 0, 0, 16, 0).scene.room != v0.scene.room


def test_write_dataset_layout_roundtrip_and_determinism(tmp_path, capsys):
    out = write_dataset(tmp_path / "a", 3, 24, seed=1, progress=True)
    assert "synthetic" in capsys.readouterr().err  # the tqdm bar
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    expected = sorted(
        f"{dom}/{bld}/{stem}_domain_{dom}.png"
        for bld, stem in [
            ("synth-000", "point_0_view_0"),
            ("synth-000", "point_0_view_1"),
            ("synth-001", "point_0_view_0"),
        ]
        for dom in DOMAINS
    )
    assert files == expected
    name = re.compile(r"([a-z_0-9]+)/synth-\d{3}/point_\d+_view_\d+_domain_([a-z_0-9]+)\.png")
    assert all((m := name.fullmatch(f)) and m[1] == m[2] for f in files)
    info = json.loads((out / "synthetic.json").read_text())
    assert info["n"] == 3 and info["size"] == 24 and info["seed"] == 1
    assert info["buildings"] == {"synth-000": 2, "synth-001": 1}
    assert info["segment_classes"] == SEG_CLASS_NAMES and info["generator_version"]
    from rts.tasks.taskonomy import read_png

    for bld, stem, raw in iter_raw(3, 24, seed=1):
        for dom in DOMAINS:
            # through the loader: Pillow < 10 gives 16-bit PNGs to numpy as int32
            back = read_png(out / dom / bld / f"{stem}_domain_{dom}.png", dom)
            assert back.dtype == raw[dom].dtype, dom
            np.testing.assert_array_equal(back, raw[dom])
    again = write_dataset(tmp_path / "b", 3, 24, seed=1)
    for f in files:
        assert (out / f).read_bytes() == (again / f).read_bytes()


def test_interrupted_write_leaves_no_manifest(tmp_path, monkeypatch):
    out = write_dataset(tmp_path, 2, 16, seed=0)
    assert (out / "synthetic.json").exists()
    calls = []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) > 5:
            raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path, 2, 16, seed=0)
    assert not (tmp_path / "synthetic.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 15}, "size must be an integer in \\[16, 512\\], got size=15"),
        ({"size": 513}, "size=513"),
        ({"size": 32.0}, "size=32.0"),
        ({"seed": -1}, "seed must be an integer >= 0, got seed=-1"),
        ({"n": 0}, "n must be an integer >= 1, got n=0"),
        ({"seed": True}, "seed=True"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(kwargs, match, tmp_path):
    args = {"n": 2, "size": 16, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match) as err:
        next(iter_raw(**args))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        write_dataset(tmp_path, **args)
    if "n" not in kwargs:
        with pytest.raises(ValueError, match=match):
            render_view(0, 0, 0, args["size"], args["seed"])

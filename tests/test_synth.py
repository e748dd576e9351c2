"""Tests of the synthetic data engine `dalib.synth` (renderer, scenes, styles, sensor simulation)."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalib.imagestats import median_stats, real_reference_images
from dalib.synth.engine import generate, iter_generate, render_scenes
from dalib.synth.scenes import MATERIALS, SCENE_KINDS, STYLES, Scene
from dalib.synth.sensor import simulate_sensor
from dalib.synth.style import photo_params

PLAIN, GLASS, MIRROR, THIN, SKY = range(5)
H, W = 40, 48


def _cam_dirs(s: Scene, h, w):
    """Independent float64 reference of the camera rays: world directions with camera-frame z = 1."""
    fx, fy, cx, cy = s.intrinsics(h, w)
    v, u = np.mgrid[0:h, 0:w] + 0.5
    xc, yc = (u - cx) / fx, -(v - cy) / fy
    R = np.asarray(s.cam_rot, float)
    return xc[..., None] * R[:, 0] + yc[..., None] * R[:, 1] + R[:, 2]


def _front_scene(**kw):
    s = Scene(**kw)
    s.look((0.0, 0.0, 0.0), 0.0)
    s.set_fov(60)
    return s


# ----------------------------------------------------------------------------------------------
# API, determinism, shards
# ----------------------------------------------------------------------------------------------
def test_constants():
    assert MATERIALS == ("plain", "glass", "mirror", "thin", "sky")
    assert SCENE_KINDS == ("indoor", "outdoor") and STYLES == ("clean", "photo")


@pytest.mark.parametrize("kind,style", [("indoor", "clean"), ("outdoor", "photo")])
def test_deterministic_and_shardable(kind, style):
    a = generate(kind, 4, seed=11, height=H, width=W, style=style)
    b = generate(kind, 4, seed=11, height=H, width=W, style=style)
    p1 = generate(kind, 2, seed=11, height=H, width=W, style=style, start_index=0)
    p2 = generate(kind, 2, seed=11, height=H, width=W, style=style, start_index=2)
    single = generate(kind, 1, seed=11, height=H, width=W, style=style, start_index=3)
    for key in ("image", "depth", "mask", "material", "apparent_depth"):
        assert np.array_equal(a[key], b[key]), key
        assert np.array_equal(a[key], np.concatenate([p1[key], p2[key]])), key
        assert np.array_equal(a[key][3:], single[key]), key
    assert a["meta"] == p1["meta"] + p2["meta"]
    json.dumps(a["meta"])  # JSON-serialisable
    assert [m["index"] for m in a["meta"]] == [0, 1, 2, 3]
    other = generate(kind, 2, seed=12, height=H, width=W, style=style)
    assert not np.array_equal(other["depth"], a["depth"][:2])


@settings(max_examples=5, deadline=None)
@given(start=st.integers(0, 1000), cuts=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       kind=st.sampled_from(SCENE_KINDS))
def test_any_sharding_gives_the_same_samples(start, cuts, kind):
    n = sum(cuts)
    whole = generate(kind, n, seed=3, height=16, width=24, start_index=start)
    parts, i = [], start
    for c in cuts:
        parts.append(generate(kind, c, seed=3, height=16, width=24, start_index=i))
        i += c
    for key in ("image", "depth", "material", "apparent_depth"):
        assert np.array_equal(whole[key], np.concatenate([p[key] for p in parts]))


@pytest.mark.parametrize("style", STYLES)
def test_streaming_chunks_and_worker_processes_give_the_same_samples(style):
    ref = generate("outdoor", 5, seed=9, height=24, width=32, style=style)
    chunks = list(iter_generate("outdoor", 5, seed=9, height=24, width=32, style=style, chunk=2))
    assert [len(c["meta"]) for c in chunks] == [2, 2, 1]
    par = list(iter_generate("outdoor", 5, seed=9, height=24, width=32, style=style, chunk=2, workers=2))
    for key in ("image", "depth", "material", "apparent_depth"):
        assert np.array_equal(ref[key], np.concatenate([c[key] for c in chunks]))
        assert np.array_equal(ref[key], np.concatenate([c[key] for c in par]))
    empty = generate("indoor", 0, seed=0, height=8, width=8)
    assert empty["image"].shape == (0, 8, 8, 3) and empty["meta"] == []


def test_output_types_and_shapes():
    out = generate("outdoor", 3, seed=0, height=H, width=W)
    assert out["image"].shape == (3, H, W, 3) and out["image"].dtype == np.uint8
    for key, dt in (("depth", np.float32), ("apparent_depth", np.float32), ("mask", bool), ("material", np.uint8)):
        assert out[key].shape == (3, H, W) and out[key].dtype == dt, key
    assert len(out["meta"]) == 3
    m = out["meta"][0]
    for key in ("kind", "style", "seed", "index", "fx", "fy", "cx", "cy", "cam_pos", "cam_rot", "light_dir"):
        assert key in m
    assert np.isfinite(out["depth"]).all() and (out["depth"] >= 0).all()


@pytest.mark.parametrize("bad,match", [(dict(kind="space"), "kind"), (dict(style="anime"), "style"),
                                       (dict(n=-1), "n must"), (dict(height=0), "height"),
                                       (dict(start_index=-2), "start_index")])
def test_bad_arguments(bad, match):
    args = dict(kind="indoor", n=1, seed=0, height=8, width=8, style="clean", start_index=0)
    args.update(bad)
    kind, n = args.pop("kind"), args.pop("n")
    with pytest.raises(ValueError, match=match):
        generate(kind, n, **args)


# ----------------------------------------------------------------------------------------------
# depth correctness against analytic cases
# ----------------------------------------------------------------------------------------------
def test_fronto_parallel_plane_exact_depth():
    s = _front_scene()
    s.add_quad((0.0, 0.0, 5.0), 100.0, 100.0)  # plane z = 5 filling the view
    out = render_scenes([s], H, W)
    assert (out["material"] == PLAIN).all() and out["mask"].all()
    np.testing.assert_allclose(out["depth"], 5.0, rtol=1e-6)


def test_ground_plane_depth_matches_formula():
    s = Scene()
    s.look((0.0, 1.6, 0.0), 0.3, -0.35, 0.05)
    s.set_fov(75)
    s.ground(tex=(0, 0, 0))
    out = render_scenes([s], H, W)
    d = _cam_dirs(s, H, W)
    # ray-plane: o_y + t d_y = 0 -> t = -o_y / d_y; t is the planar depth because d has camera z = 1
    below = d[..., 1] < -1e-3
    t = np.where(below, -1.6 / np.where(below, d[..., 1], -1), 0.0)
    t[t > s.max_depth] = 0.0
    np.testing.assert_allclose(out["depth"][0], t, rtol=1e-4, atol=1e-5)
    assert ((out["material"][0] == SKY) == (t == 0)).all()


def test_sphere_depth_matches_ray_sphere_intersection():
    c, r = np.array([0.4, -0.3, 4.0]), 1.1
    s = _front_scene()
    s.add_sphere(tuple(c), r)
    out = render_scenes([s], H, W)
    d = _cam_dirs(s, H, W)
    # |o + t d - c|^2 = r^2 with o = 0: (d.d) t^2 - 2 (d.c) t + |c|^2 - r^2 = 0
    a, b, cc = (d * d).sum(-1), -(d * c).sum(-1), (c * c).sum() - r * r
    disc = b * b - a * cc
    hit = disc >= 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / a, 0.0)
    safe = np.abs(disc) > 1e-3 * a  # ignore pixels grazing the silhouette
    assert (out["mask"][0] == hit)[safe].all()
    np.testing.assert_allclose(out["depth"][0][safe & hit], t[safe & hit], rtol=1e-4)
    assert hit.sum() > 100 and (out["material"][~out["mask"]] == SKY).all()


def test_room_box_and_cylinder_depths():
    s = _front_scene()
    s.room(-6, 6, -3.0, 4.0, -1, 7)
    s.add_box((0.0, 0.0, 3.0), (1.0, 1.0, 1.0), yaw=0.0)  # front face at z = 2.5
    s.add_cylinder((-1.5, -1.5, 4.0), 0.3, 3.0)  # nearest point of the side at z = 3.7 (on its axis line)
    out = render_scenes([s], 41, 41)
    assert out["mask"].all()
    assert out["depth"][0, 20, 20] == pytest.approx(2.5, rel=1e-6)
    assert out["depth"][0, 8, 32] == pytest.approx(7.0, rel=1e-5)  # far wall at z = 7
    fx, _, cx, cy = s.intrinsics(41, 41)
    u = int(round(cx - 1.5 * fx / 3.7 - 0.5))  # column through the cylinder axis at depth 3.7
    col = out["depth"][0, int(cy), u]
    assert col == pytest.approx(3.7, abs=0.02)


# ----------------------------------------------------------------------------------------------
# materials, sky, glass, mirror, shadows
# ----------------------------------------------------------------------------------------------
def test_sky_is_invalid_and_materials_as_designed():
    out = generate("outdoor", 8, seed=1, height=H, width=W)
    sky = out["material"] == SKY
    assert sky.any(axis=(1, 2)).all()  # every street shows some sky
    assert (sky == (out["depth"] == 0)).all() and (sky == ~out["mask"]).all()
    assert (out["apparent_depth"][sky] == 0).all()
    assert (out["material"] == THIN).any()  # poles / wires / fences
    ind = generate("indoor", 8, seed=1, height=H, width=W)
    assert not (ind["material"] == SKY).any() and ind["mask"].all()  # rooms are closed
    assert (ind["material"] == THIN).any()  # chair / table legs, lamp poles
    both = np.concatenate([out["material"].ravel(), ind["material"].ravel()])
    assert both.max() < len(MATERIALS)
    plainish = (ind["material"] == PLAIN) | (ind["material"] == THIN)
    assert (ind["apparent_depth"][plainish] == ind["depth"][plainish]).all()


def test_glass_and_mirror_appear_in_generated_scenes():
    out = generate("indoor", 16, seed=2, height=32, width=32)
    mats = set(np.unique(out["material"]).tolist())
    assert {GLASS, MIRROR} <= mats


def _pane_scene(material):
    s = _front_scene()
    s.add_quad((0.0, 0.0, 6.0), 50.0, 50.0, tex=3, albedo=(0.8, 0.5, 0.3))  # wall at z = 6
    s.add_quad((0.0, 0.0, -2.0), 50.0, 50.0, tex=4, albedo=(0.2, 0.6, 0.9))  # wall behind the camera
    s.add_quad((0.0, 0.0, 2.0), 1.0, 1.0, material=material, albedo=(0.9, 0.9, 0.9))  # pane at z = 2
    return s


def test_glass_label_is_surface_and_apparent_is_background():
    out = render_scenes([_pane_scene("glass")], H, W)
    g = out["material"][0] == GLASS
    assert 30 < g.sum() < H * W / 2
    np.testing.assert_allclose(out["depth"][0][g], 2.0, rtol=1e-6)
    np.testing.assert_allclose(out["apparent_depth"][0][g], 6.0, rtol=1e-6)
    np.testing.assert_allclose(out["apparent_depth"][0][~g], out["depth"][0][~g])
    # see-through: the pane keeps the background's colour, only slightly tinted
    s = _pane_scene("glass")
    s.prims.pop()
    bare = render_scenes([s], H, W)["image"][0].astype(float)
    diff = np.abs(out["image"][0].astype(float) - bare)[g].mean()
    assert 0.5 < diff < 40


def test_mirror_label_is_surface_and_apparent_is_reflected_path():
    out = render_scenes([_pane_scene("mirror")], H, W)
    m = out["material"][0] == MIRROR
    assert m.sum() > 30
    np.testing.assert_allclose(out["depth"][0][m], 2.0, rtol=1e-6)
    # 2 m to the mirror, then 4 m back to the wall at z = -2: the virtual point lies at planar depth 2 + 4 = 6
    np.testing.assert_allclose(out["apparent_depth"][0][m], 6.0, rtol=1e-4)
    # the mirror shows the bluish wall behind the camera, not the orange wall in front
    img = out["image"][0].astype(float)
    assert img[m][:, 2].mean() > img[m][:, 0].mean() + 20
    assert img[~m][:, 0].mean() > img[~m][:, 2].mean() + 20


def test_cast_shadow_darkens_the_ground():
    s = Scene(light_dir=(0.0, 1.0, 0.0), ambient_rgb=(0.2, 0.2, 0.2), light_rgb=(0.8, 0.8, 0.8))
    s.look((0.0, 4.0, -4.0), 0.0, -0.6)
    s.set_fov(60)
    s.ground(tex=(0, 0, 0), albedo=((0.6, 0.6, 0.6), (0.6, 0.6, 0.6), (0.6, 0.6, 0.6)))
    s.add_sphere((0.0, 1.5, 2.0), 0.6)  # floating sphere, sun straight above: shadow disc under it
    out = render_scenes([s], 64, 64)
    pts = _cam_dirs(s, 64, 64) * out["depth"][0][..., None] + np.array(s.cam_pos)
    ground = (out["material"][0] == PLAIN) & (np.abs(pts[..., 1]) < 1e-3)
    under = ground & (np.hypot(pts[..., 0], pts[..., 2] - 2.0) < 0.5)
    away = ground & (np.hypot(pts[..., 0], pts[..., 2] - 2.0) > 0.8)
    assert under.sum() > 10 and away.sum() > 10
    lum = out["image"][0].astype(float).mean(-1)
    assert lum[under].mean() < 0.75 * lum[away].mean()


# ----------------------------------------------------------------------------------------------
# styles
# ----------------------------------------------------------------------------------------------
def _hf_energy(img):
    g = img.astype(float).mean(-1)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return np.median(np.abs(lap), axis=(1, 2))


def test_photo_style_differs_from_clean():
    clean = generate("indoor", 6, seed=5, height=64, width=64, style="clean")
    photo = generate("indoor", 6, seed=5, height=64, width=64, style="photo")
    # sensor noise + JPEG raise the typical (median) high-frequency energy
    assert np.median(_hf_energy(photo["image"])) > 1.5 * np.median(_hf_energy(clean["image"]))
    # white balance: per-image channel means disagree more with each other
    def cast(img):
        m = img.reshape(len(img), -1, 3).astype(float).mean(1)
        return np.abs(m[:, 0] - m[:, 2]) / m.mean(1)
    assert cast(photo["image"]).mean() > cast(clean["image"]).mean()
    assert photo["meta"][0]["style"] == "photo" and "camera_pipeline" in photo["meta"][0]


def test_photo_style_params_are_applied_per_sample():
    s = _front_scene()
    s.add_quad((0.0, 0.0, 5.0), 100.0, 100.0, tex=1, albedo=(0.5, 0.5, 0.5))
    p = photo_params(np.random.default_rng(0))
    dark = dict(p, exposure=0.3, wb=[1.0, 1.0, 1.0])
    bright = dict(p, exposure=1.5, wb=[1.0, 1.0, 1.0])
    out = render_scenes([s, s], H, W, style="photo", style_params=[dark, bright])
    assert out["image"][0].mean() + 30 < out["image"][1].mean()


def test_photo_style_matches_real_photographs_in_brightness_contrast_and_noise():
    # calibration of photo_params: medians over 64 photo images at 128 px against the real reference photos
    real = median_stats(real_reference_images(128))
    photo = median_stats(np.concatenate([generate(k, 32, seed=123, height=128, width=128, style="photo")["image"]
                                         for k in SCENE_KINDS]))
    for name, tol in (("brightness", 0.2), ("contrast", 0.2), ("noise", 0.5)):
        assert abs(photo[name] / real[name] - 1) <= tol, (name, photo[name], real[name])


def test_auto_exposure_brings_dark_and_bright_scenes_to_the_same_level():
    dim, lit = _front_scene(light_rgb=(0.15, 0.15, 0.15), ambient_rgb=(0.06, 0.06, 0.06)), _front_scene()
    for s in (dim, lit):
        s.add_quad((0.0, 0.0, 5.0), 100.0, 100.0, tex=1, albedo=(0.5, 0.5, 0.5))
    p = dict(photo_params(np.random.default_rng(0)), exposure=1.0, wb=[1.0, 1.0, 1.0], shot=1e-6, read=1e-8)
    out = render_scenes([dim, lit], H, W, style="photo", style_params=[p, p])
    clean = render_scenes([dim, lit], H, W, style="clean")
    assert clean["image"][0].mean() + 30 < clean["image"][1].mean()  # very different light...
    assert abs(float(out["image"][0].mean()) - float(out["image"][1].mean())) < 3  # ...the same exposure


# ----------------------------------------------------------------------------------------------
# sensor simulation
# ----------------------------------------------------------------------------------------------
def _plane(z, h=64, w=64):
    return np.full((h, w), z, np.float32), np.zeros((h, w), np.uint8)


def test_stereo_noise_grows_quadratically_with_depth():
    rng = np.random.default_rng(0)
    zs = np.array([2.0, 4.0, 8.0, 16.0])
    stds = []
    for z in zs:
        d, m = _plane(z, 128, 128)
        lab = simulate_sensor(d, m, "stereo", rng)
        ok = lab > 0
        assert ok.mean() > 0.8  # the left band x < d(x) has no match in the right view
        stds.append((lab[ok] - z).std())
    slope = np.polyfit(np.log(zs), np.log(stds), 1)[0]
    assert 1.6 < slope < 2.4, (stds, slope)


def test_stereo_glass_reports_background_and_occlusions_leave_holes():
    out = render_scenes([_pane_scene("glass")], 64, 64)
    rng = np.random.default_rng(1)
    lab = simulate_sensor(out["depth"][0], out["material"][0], "stereo", rng, apparent_depth=out["apparent_depth"][0],
                          sigma_disp=0.0, fatten_px=0, hole_prob=0.0)
    g = (out["material"][0] == GLASS) & (lab > 0)
    assert g.sum() > 20
    np.testing.assert_allclose(lab[g], 6.0, rtol=1e-5)  # the matcher sees through the glass
    # an opaque box in front of a wall hides a band to its left in the right camera's view
    s = _front_scene()
    s.add_quad((0.0, 0.0, 8.0), 100.0, 100.0)
    s.add_box((0.0, 0.0, 1.5), (0.4, 0.4, 0.1))
    o = render_scenes([s], 64, 64)
    lab = simulate_sensor(o["depth"][0], o["material"][0], "stereo", rng, sigma_disp=0.0, fatten_px=0, hole_prob=0.0)
    near = o["depth"][0] < 2
    cols = np.where(near.any(0))[0]
    row = np.where(near.any(1))[0][len(np.where(near.any(1))[0]) // 2]
    left_band = lab[row, max(cols[0] - 5, 0):cols[0]]
    assert (left_band == 0).all()  # occluded in the right view
    assert (lab[row, cols[-1] + 2:cols[-1] + 8] > 0).all()  # right side stays visible
    assert (lab[near] > 0).mean() > 0.9


def test_stereo_fattening_moves_foreground_depth_onto_background():
    d = np.full((32, 64), 10.0, np.float32)
    d[:, 32:] = 2.0
    m = np.zeros_like(d, np.uint8)
    lab = simulate_sensor(d, m, "stereo", np.random.default_rng(0), sigma_disp=0.0, hole_prob=0.0, fatten_px=2)
    band = lab[:, 30:32]
    assert ((band > 0) & (band < 3)).mean() > 0.5  # background pixels next to the edge take the near depth


def test_rgbd_range_and_holes_on_glass_and_mirror():
    rng = np.random.default_rng(0)
    for z, expect in ((0.3, False), (3.0, True), (12.0, False)):
        d, m = _plane(z)
        lab = simulate_sensor(d, m, "rgbd", rng)
        assert ((lab > 0).mean() > 0.9) == expect, z
        if expect:
            assert np.abs(lab[lab > 0] - z).max() < 0.1
            assert len(np.unique(lab[:4, :4])) == 1  # measured at 1/4 resolution, upsampled
    for mat in ("glass", "mirror"):
        out = render_scenes([_pane_scene(mat)], 64, 64)
        lab = simulate_sensor(out["depth"], out["material"], "rgbd", rng, apparent_depth=out["apparent_depth"])
        special = out["material"] == (GLASS if mat == "glass" else MIRROR)
        assert special.sum() > 30 and (lab[special] == 0).all()
        assert (lab[~special] > 0).mean() > 0.5


def test_rgbd_dark_surfaces_are_holes():
    d, m = _plane(3.0)
    img = np.full(d.shape + (3,), 200, np.uint8)
    img[:, :32] = 5
    lab = simulate_sensor(d, m, "rgbd", np.random.default_rng(0), image=img)
    assert (lab[:, :28] > 0).mean() < 0.3 and (lab[:, 36:] > 0).mean() > 0.9


def test_lidar_sparse_scan_lines_and_range():
    rng = np.random.default_rng(0)
    d, m = _plane(20.0, 128, 96)
    lab = simulate_sensor(d, m, "lidar", rng, beams=16)
    rows = np.where((lab > 0).any(1))[0]
    assert len(rows) == 16
    assert (lab > 0).mean() < 16 / 128 and (lab > 0).mean() > 0.8 * 16 / 128
    assert np.abs(lab[lab > 0] - 20).max() < 0.2
    far, _ = _plane(150.0, 128, 96)
    assert (simulate_sensor(far, m, "lidar", rng, max_range=120.0) == 0).all()
    # batched input: each image gets its own scan pattern, shape preserved
    lab3 = simulate_sensor(np.stack([d] * 3), np.stack([m] * 3), "lidar", rng)
    assert lab3.shape == (3, 128, 96) and lab3.dtype == np.float32


def test_sensor_argument_errors():
    d, m = _plane(3.0)
    with pytest.raises(ValueError, match="kind"):
        simulate_sensor(d, m, "sonar", np.random.default_rng(0))
    with pytest.raises(ValueError, match="material"):
        simulate_sensor(d, m[:10], "stereo", np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        simulate_sensor(d, m, "lidar", 0)


def test_sensor_labels_on_generated_scenes_have_expected_holes():
    out = generate("outdoor", 4, seed=3, height=48, width=64)
    rng = np.random.default_rng(0)
    st = simulate_sensor(out["depth"], out["material"], "stereo", rng, apparent_depth=out["apparent_depth"],
                         image=out["image"])
    assert st.shape == out["depth"].shape
    assert (st[out["material"] == SKY] == 0).all()
    assert 0.2 < (st > 0).mean() < out["mask"].mean()
    assert math.isfinite(float(st.max()))

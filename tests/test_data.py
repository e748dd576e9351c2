"""Tests for dalib.data: manifest schema, unit conversions, sources (generator/hf/local/bundled), resumable builds.

Everything runs offline on tiny fixtures written to tmp_path.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dalib.data.cli import main
from dalib.data.depth_files import convert_depth, ray_to_planar, read_depth_file
from dalib.data.generated import build_status, split_dir
from dalib.data.schema import DataSourceError, ManifestError, list_manifests, read_manifest, validate_dir
from dalib.data.serve import build, load, open_dataset
from dalib.synth.engine import generate

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {
    "synth-indoor", "synth-outdoor", "synth-photo", "synth-stereo", "synth-lidar", "synth-rgbd",
    "middlebury-motorcycle", "skimage-photos",
    "blendedmvs", "hypersim", "irs", "tartanair", "vkitti2", "diml", "hrwsi", "megadepth",
    "sa-1b", "open-images", "bdd100k", "google-landmarks", "imagenet-21k", "lsun", "objects365", "places365",
    "kitti", "nyu-d", "sintel", "eth3d", "diode", "da-2k", "commoncatalog-cc-by",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DALIB_DATA", str(tmp_path / "dalib-data"))
    monkeypatch.delenv("DALIB_MANIFESTS", raising=False)


def _manifest_dir(tmp_path, *manifests) -> Path:
    """A manifest folder holding copies of shipped manifests plus the given dicts; becomes the default."""
    d = tmp_path / "manifests"
    d.mkdir(exist_ok=True)
    for m in manifests:
        (d / f"{m['name']}.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return d


def _shipped(name) -> dict:
    return yaml.safe_load((REPO / "data_manifests" / f"{name}.yaml").read_text())


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------
def test_every_shipped_manifest_validates():
    results = validate_dir(REPO / "data_manifests")
    assert {Path(f).stem for f in results} == SHIPPED
    assert {f: e for f, e in results.items() if e} == {}
    mans = {m["name"]: m for m in list_manifests()}
    assert mans["synth-photo"]["splits"]["train"]["role"] == "unlabelled"
    assert mans["synth-photo"]["splits"]["test"]["role"] == "eval"
    assert mans["vkitti2"]["depth"]["units"] == "cm" and mans["kitti"]["depth"]["scale"] == 1 / 256
    assert mans["hypersim"]["depth"]["kind"] == "ray" and mans["hypersim"]["depth"]["focal_px"] == 886.81
    for m in mans.values():  # checksums recorded wherever files are fixed
        if m["source"]["type"] == "bundled":
            assert all(len(v) == 64 for v in m["source"]["sha256"].values())


BAD = [
    (lambda m: m.pop("license"), "field 'license': missing"),
    (lambda m: m.update(role="teacher"), "field 'role': expected one of synthetic-labelled"),
    (lambda m: m["depth"].update(units="inch"), "field 'depth.units': expected one of m | cm | mm | px"),
    (lambda m: m["source"].update(type="ftp"), "field 'source.type'"),
    (lambda m: m.update(licence="MIT"), "field 'licence': unknown field"),
    (lambda m: m["splits"]["train"].pop("seed"), "field 'splits.train.seed': missing"),
    (lambda m: m["depth"].update(kind="ray"), "field 'depth.focal_px': missing"),
    (lambda m: m["source"].update(height="big"), "field 'source.height': expected integer"),
]


@pytest.mark.parametrize("mutate,expected", BAD)
def test_bad_manifest_names_file_and_field(tmp_path, mutate, expected):
    m = _shipped("synth-indoor")
    mutate(m)
    path = tmp_path / "synth-indoor.yaml"
    path.write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert str(path) in str(e.value) and expected in str(e.value), str(e.value)


def test_name_must_match_file(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(_shipped("synth-indoor")))
    assert any("field 'name'" in e for e in validate_dir(tmp_path)[str(path)])


def test_cli_validate_bad_dir(tmp_path, capsys):
    good = _shipped("kitti")
    bad = _shipped("vkitti2")
    bad["depth"]["units"] = "furlong"
    d = _manifest_dir(tmp_path, good, bad)
    assert main(["validate", str(d)]) == 1
    err = capsys.readouterr().err
    assert str(d / "vkitti2.yaml") in err and "depth.units" in err and "kitti.yaml" not in err.replace("vkitti2.yaml", "")
    # through the real entry point, as a user runs it
    r = subprocess.run([sys.executable, "-m", "dalib", "data", "validate", str(d)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode != 0 and "vkitti2.yaml" in r.stderr and "depth.units" in r.stderr
    assert main(["validate", str(REPO / "data_manifests")]) == 0


# --------------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------------
def test_convert_depth_units():
    kitti = _shipped("kitti")["depth"]
    raw = np.array([[0, 256, 2560], [65535, 512, 0]], np.uint16)
    depth, disp = convert_depth(raw, kitti)
    assert disp is None and depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0, 1, 10], [65535 / 256, 2, 0]])
    vk = _shipped("vkitti2")["depth"]
    depth, _ = convert_depth(np.array([[100, 8000, 8001, 65535]], np.uint16), vk)
    np.testing.assert_allclose(depth, [[1.0, 80.0, 0.0, 0.0]])  # > 80 m cap and sky invalid
    depth, _ = convert_depth(np.array([[np.nan, np.inf, -1.0, 2.5]]), {"kind": "planar", "units": "mm"})
    np.testing.assert_allclose(depth, [[0, 0, 0, 0.0025]])


def test_ray_to_planar_recovers_a_fronto_parallel_plane():
    # a plane at z = 3 m seen by a 1024x768 camera (f = 886.81 px): ray distance grows off-centre
    h, w, f, z = 24, 32, 886.81, 3.0
    spec = _shipped("hypersim")["depth"]
    # independent construction: pixel centres in 3D, distance to the camera centre
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    pts = np.stack([(xs - w / 2) * z / f, (ys - h / 2) * z / f, np.full((h, w), z)], -1)
    ray = np.linalg.norm(pts, axis=-1)
    assert ray.max() > z * 1.00005  # the test is not vacuous
    depth, _ = convert_depth(ray, spec)
    np.testing.assert_allclose(depth, z, rtol=1e-6)
    # full Hypersim frame: the difference matters at the border
    ray = np.full((768, 1024), 10.0)
    planar = ray_to_planar(ray, f)
    corner = 10.0 * f / np.sqrt(511.5**2 + 383.5**2 + f**2)
    assert planar[0, 0] == pytest.approx(corner) and planar[0, 0] < 8.8


def test_depth_file_readers(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    with open(tmp_path / "d.dpt", "wb") as f:  # Sintel: tag, width, height, rows
        np.array([202021.25], np.float32).tofile(f)
        np.array([4, 3], np.int32).tofile(f)
        arr.tofile(f)
    np.testing.assert_array_equal(read_depth_file(tmp_path / "d.dpt"), arr)
    with open(tmp_path / "d.pfm", "wb") as f:  # PFM: bottom row first, negative scale = little endian
        f.write(b"Pf\n4 3\n-1.0\n")
        np.flipud(arr).astype("<f4").tofile(f)
    np.testing.assert_array_equal(read_depth_file(tmp_path / "d.pfm"), arr)
    np.savez(tmp_path / "d.npz", depth=arr)
    np.testing.assert_array_equal(read_depth_file(tmp_path / "d.npz", "depth"), arr)
    _png(tmp_path / "d.png", np.array([[0, 1000], [65535, 7]], np.uint16))
    np.testing.assert_array_equal(read_depth_file(tmp_path / "d.png"), [[0, 1000], [65535, 7]])
    with pytest.raises(DataSourceError, match="unsupported depth file type"):
        read_depth_file(tmp_path / "d.exr")


def test_disparity_to_depth_middlebury():
    spec = _shipped("middlebury-motorcycle")["depth"]
    raw = np.array([[100.0, np.inf, 0.0, np.nan]])
    depth, disp = convert_depth(raw, spec)
    assert depth[0, 0] == pytest.approx(0.193001 * 994.978 / (100.0 + 31.086), rel=1e-6)
    np.testing.assert_array_equal(depth[0, 1:], 0)
    np.testing.assert_allclose(disp, [[100.0, 0, 0, 0]])


# --------------------------------------------------------------------------------------------------
# Local, hf and bundled sources
# --------------------------------------------------------------------------------------------------
def _png(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_local_kitti_layout_divides_by_256(tmp_path):
    root = tmp_path / "kitti"
    rng = np.random.default_rng(0)
    drive = "2011_09_26_drive_0001_sync"
    gts = {}
    for frame in ("0000000005", "0000000006"):
        _png(root / f"raw/2011_09_26/{drive}/image_02/data/{frame}.png", rng.integers(0, 255, (6, 8, 3), np.uint8))
        gt = rng.integers(0, 40 * 256, (6, 8)).astype(np.uint16)
        gt[0, :3] = 0
        _png(root / f"data_depth_annotated/val/{drive}/proj_depth/groundtruth/image_02/{frame}.png", gt)
        gts[frame] = gt
    _png(root / f"raw/2011_09_26/{drive}/image_02/data/0000000007.png", np.zeros((6, 8, 3), np.uint8))  # no GT
    ds = load("kitti", "test", root=root).with_format("numpy")
    assert len(ds) == 2 and set(ds.column_names) >= {"image", "depth", "mask"}
    for i, frame in enumerate(sorted(gts)):
        row = ds[i]
        assert row["image"].shape == (6, 8, 3) and row["depth"].dtype == np.float32 and row["mask"].dtype == bool
        np.testing.assert_allclose(row["depth"], gts[frame] / 256.0, rtol=1e-6)
        np.testing.assert_array_equal(row["mask"], gts[frame] > 0)


def test_local_vkitti2_centimetres_via_env_var(tmp_path, monkeypatch):
    root = tmp_path / "vk"
    depth_cm = np.array([[150, 8000], [9000, 65535]], np.uint16)
    for frame in ("00000", "00001"):
        _png(root / f"Scene01/clone/frames/rgb/Camera_0/rgb_{frame}.jpg", np.full((2, 2, 3), 120, np.uint8))
        _png(root / f"Scene01/clone/frames/depth/Camera_0/depth_{frame}.png", depth_cm)
    monkeypatch.setenv("DALIB_ROOT_VKITTI2", str(root))
    ds = load("vkitti2", "train").with_format("numpy")
    assert len(ds) == 2
    np.testing.assert_allclose(ds[0]["depth"], [[1.5, 80.0], [0.0, 0.0]])
    np.testing.assert_array_equal(ds[1]["mask"], [[True, True], [False, False]])


def test_local_hypersim_like_ray_depth_is_made_planar(tmp_path, monkeypatch):
    m = _shipped("hypersim")
    m["source"]["layout"].update(depth="*/images/scene_cam_*_geometry_hdf5/frame.*.depth_meters.npy", depth_key=None)
    monkeypatch.setenv("DALIB_MANIFESTS", str(_manifest_dir(tmp_path, m)))
    root = tmp_path / "hs"
    h, w, f, z = 12, 16, 886.81, 2.0
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    ray = z * np.sqrt((xs - w / 2) ** 2 + (ys - h / 2) ** 2 + f**2) / f
    ray[0, 0] = np.nan
    _png(root / "ai_001_001/images/scene_cam_00_final_preview/frame.0000.color.jpg", np.zeros((h, w, 3), np.uint8))
    (root / "ai_001_001/images/scene_cam_00_geometry_hdf5").mkdir(parents=True)
    np.save(root / "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.npy", ray.astype(np.float32))
    row = load("hypersim", "train", root=root).with_format("numpy")[0]
    assert row["depth"][0, 0] == 0 and not row["mask"][0, 0]
    np.testing.assert_allclose(row["depth"][1:, 1:], z, rtol=1e-5)


def test_local_unlabelled_images_only(tmp_path):
    root = tmp_path / "sa1b"
    _png(root / "sa_000000/sa_1.jpg", np.full((5, 7, 3), 10, np.uint8))
    _png(root / "sa_000001/sa_2.jpg", np.full((3, 4, 3), 20, np.uint8))
    _png(root / "sa_000001/sa_3.png", np.full((3, 4), 20, np.uint8))  # not matched by the layout glob
    ds = load("sa-1b", "train", root=root)
    assert len(ds) == 2 and set(ds.column_names) == {"image", "path"}
    assert ds[1]["image"].size == (4, 3) and ds[1]["path"] == "sa_000001/sa_2.jpg"


def test_local_missing_copy_error(tmp_path):
    with pytest.raises(DataSourceError) as e:
        load("kitti", "test")
    msg = str(e.value)
    assert "'kitti'" in msg and "kitti.yaml" in msg and "root=" in msg and "DALIB_ROOT_KITTI" in msg


def _hf_manifest(**over):
    m = {"name": "tiny-hf", "role": "eval", "description": "tiny hub-style dataset", "license": None, "citation": None,
         "size": 3, "splits": {"test": {"size": None, "hub_split": "validation"}},
         "source": {"type": "hf", "hub_id": "example-org/tiny-depth", "revision": None},
         "depth": {"kind": "planar", "units": "cm", "valid_range": [0.1, 50.0]},
         "columns": {"image": "rgb", "depth": "depth_cm"}}
    m.update(over)
    return m


def test_hf_source_local_copy_maps_columns_and_units(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("DALIB_MANIFESTS", str(_manifest_dir(tmp_path, _hf_manifest())))
    imgs = [np.full((4, 5, 3), i * 40, np.uint8) for i in range(3)]
    depths = [np.full((4, 5), 100.0 * (i + 1), np.float32) for i in range(3)]
    depths[2][0, 0] = 9000.0  # 90 m > valid range
    feats = datasets.Features({"rgb": datasets.Image(), "depth_cm": datasets.Array2D((4, 5), "float32"),
                               "id": datasets.Value("int32")})
    dd = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(
        {"rgb": imgs, "depth_cm": depths, "id": [0, 1, 2]}, features=feats)})
    dd.save_to_disk(str(tmp_path / "copy"))
    ds = load("tiny-hf", "test", root=tmp_path / "copy").with_format("numpy")
    assert set(ds.column_names) == {"image", "depth", "mask", "id"}
    np.testing.assert_allclose(ds[1]["depth"], 2.0)
    assert ds[2]["depth"][0, 0] == 0 and not ds[2]["mask"][0, 0] and ds[2]["mask"].sum() == 19
    np.testing.assert_array_equal(ds[2]["image"], imgs[2])
    # a wrong column mapping names the manifest field and the columns that exist
    monkeypatch.setenv("DALIB_MANIFESTS", str(_manifest_dir(tmp_path, _hf_manifest(columns={"image": "rgb", "depth": "z"}))))
    with pytest.raises(DataSourceError, match=r"columns\.depth.*'z'"):
        load("tiny-hf", "test", root=tmp_path / "copy")


def test_hf_source_single_split_copy_with_our_column_names(tmp_path, monkeypatch):
    import datasets

    man = _hf_manifest(columns=None)
    del man["columns"]
    monkeypatch.setenv("DALIB_MANIFESTS", str(_manifest_dir(tmp_path, man)))
    depth = [np.array([[100.0, 0.0, 250.0]], np.float32), np.array([[300.0, 400.0]], np.float32)]  # varying sizes
    ds = datasets.Dataset.from_dict({"image": [np.zeros((1, 3, 3), np.uint8), np.zeros((1, 2, 3), np.uint8)],
                                     "depth": depth, "mask": [np.array([[1, 1, 0]], bool), np.array([[1, 1]], bool)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "depth": datasets.List(datasets.List(datasets.Value("float32"))),
                                                                "mask": datasets.List(datasets.List(datasets.Value("bool")))}))
    ds.save_to_disk(str(tmp_path / "copy" / "validation"))
    out = load("tiny-hf", "test", root=tmp_path / "copy").with_format("numpy")
    np.testing.assert_allclose(out[0]["depth"], [[1.0, 0.0, 0.0]])  # source mask applied, 0 stays invalid
    np.testing.assert_array_equal(out[0]["mask"], [[True, False, False]])
    np.testing.assert_allclose(out[1]["depth"], [[3.0, 4.0]])
    ds.remove_columns(["depth"]).save_to_disk(str(tmp_path / "nodepth" / "validation"))
    with pytest.raises(DataSourceError, match=r"no depth column.*columns\.depth"):
        load("tiny-hf", "test", root=tmp_path / "nodepth")


def test_hf_source_offline_error_says_how_to_provide_a_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("DALIB_MANIFESTS", str(_manifest_dir(tmp_path, _hf_manifest())))
    with pytest.raises(DataSourceError) as e:
        load("tiny-hf", "test")
    msg = str(e.value)
    assert "'tiny-hf'" in msg and "tiny-hf.yaml" in msg and "offline" in msg and "example-org/tiny-depth" in msg
    assert "root=" in msg and "DALIB_ROOT_TINY_HF" in msg and "save_to_disk" in msg


def test_bundled_middlebury_and_photos():
    ds = load("middlebury-motorcycle", "test").with_format("numpy")
    row = ds[0]
    assert row["image"].shape == (500, 741, 3) and row["image_right"].shape == (500, 741, 3)
    from skimage.data import stereo_motorcycle

    disp = stereo_motorcycle()[2]
    valid = np.isfinite(disp) & (disp > 0)
    np.testing.assert_array_equal(row["mask"], valid)
    np.testing.assert_allclose(row["depth"][valid], 0.193001 * 994.978 / (disp[valid] + 31.086), rtol=1e-5)
    assert 0.5 < np.median(row["depth"][valid]) < 5  # a motorcycle a few metres away
    photos = load("skimage-photos", "train")
    assert len(photos) == 9 and "depth" not in photos.column_names
    assert all(im.mode == "RGB" for im in photos["image"])


# --------------------------------------------------------------------------------------------------
# Generator sources: build, load, resume
# --------------------------------------------------------------------------------------------------
def _fake_generate(calls):
    def generate(kind, n, *, seed, height, width, style="clean", start_index=0, device="cpu"):
        calls.append((kind, start_index, n))
        idx = np.arange(start_index, start_index + n)
        base = (seed * 1000 + idx + (kind == "outdoor") * 500).astype(np.float32)
        depth = np.broadcast_to(1.0 + base[:, None, None] / 100, (n, height, width)).copy()
        depth[:, 0, 0] = 0
        return {"image": np.broadcast_to((idx % 255).astype(np.uint8)[:, None, None, None], (n, height, width, 3)).copy(),
                "depth": depth, "mask": depth > 0, "material": np.full((n, height, width), 3, np.uint8),
                "apparent_depth": depth, "meta": [{"i": int(i), "kind": kind} for i in idx]}
    return generate


@pytest.fixture
def fake_synth(monkeypatch):
    from dalib.data import generated

    calls = []
    monkeypatch.setattr(generated, "generate", _fake_generate(calls))
    monkeypatch.setattr(generated, "simulate_sensor",
                        lambda depth, material, kind, rng, **kw: np.where(depth > 2, 0, depth) * 1.01)
    return calls


def test_build_and_load_round_trip(tmp_path, fake_synth):
    out = build("synth-indoor", "train", 6, root=tmp_path, height=32, width=40, shard_size=4)
    assert out == tmp_path / "synth-indoor" / "32x40" / "train"
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000", "shard-00001"]
    index = json.loads((out / "index.json").read_text())
    assert index["n"] == 6 and [e["rows"] for e in index["shards"].values()] == [4, 2]
    ds = load("synth-indoor", "train", root=tmp_path, height=32, width=40).with_format("numpy")
    assert len(ds) == 6
    b = ds[:6]
    assert b["image"].shape == (6, 32, 40, 3) and b["image"].dtype == np.uint8
    assert b["depth"].shape == (6, 32, 40) and b["depth"].dtype == np.float32
    assert b["mask"].dtype == bool and b["material"].shape == (6, 32, 40)
    np.testing.assert_allclose(b["depth"][:, 5, 5], 1 + np.arange(6) / 100)  # seed 0: metres from index
    np.testing.assert_array_equal(b["mask"], b["depth"] > 0)
    assert list(b["index"]) == list(range(6)) and json.loads(ds[3]["meta"])["i"] == 3
    # a smaller request is served from what is there; a larger one extends the build
    calls_before = len(fake_synth)
    assert len(load("synth-indoor", "train", root=tmp_path, n=3, height=32, width=40)) == 3
    assert len(fake_synth) == calls_before


def test_interrupted_build_resumes_and_damaged_shard_is_rebuilt(tmp_path, fake_synth, monkeypatch):
    args = dict(root=tmp_path, height=16, width=20, shard_size=2)
    from dalib.data import generated

    real_write = generated._write_shard
    written = []

    def dying_write(params, start, count, dest, **kw):
        if written:
            raise KeyboardInterrupt("killed after the first shard")
        written.append(start)
        return real_write(params, start, count, dest, **kw)

    monkeypatch.setattr(generated, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build("synth-outdoor", "test", 6, **args)
    monkeypatch.setattr(generated, "_write_shard", real_write)
    out = split_dir("synth-outdoor", "test", root=tmp_path, height=16, width=20)
    index = json.loads((out / "index.json").read_text())
    assert index["n"] is None and list(index["shards"]) == ["shard-00000"]
    assert not build_status("synth-outdoor", "test", root=tmp_path, height=16, width=20)["ok"]
    fake_synth.clear()
    build("synth-outdoor", "test", 6, **args)
    assert sorted(start for _, start, _ in fake_synth) == [2, 4]  # resumed: shard 0 not regenerated
    reference = load("synth-outdoor", "test", root=tmp_path, height=16, width=20).with_format("numpy")[:6]

    # damage: flip bytes in shard 1 (same size: only the checksum sees it), delete shard 2, leave a temp dir
    arrow = next((out / "shard-00001").glob("*.arrow"))
    blob = bytearray(arrow.read_bytes())
    blob[-200:-100] = bytes(100)
    arrow.write_bytes(bytes(blob))
    (out / ".shard-00003.tmp-1").mkdir()
    mtime0 = next((out / "shard-00000").glob("*.arrow")).stat().st_mtime_ns
    fake_synth.clear()
    build("synth-outdoor", "test", 6, **args)
    assert [start for _, start, _ in fake_synth] == [2]
    shutil.rmtree(out / "shard-00002")
    assert not build_status("synth-outdoor", "test", root=tmp_path, height=16, width=20)["ok"]
    fake_synth.clear()
    again = load("synth-outdoor", "test", root=tmp_path, height=16, width=20).with_format("numpy")[:6]
    assert [start for _, start, _ in fake_synth] == [4]  # load notices the missing shard and rebuilds it
    assert next((out / "shard-00000").glob("*.arrow")).stat().st_mtime_ns == mtime0
    assert not list(out.glob(".shard-*"))
    for k in ("depth", "mask", "material", "image", "index"):
        np.testing.assert_array_equal(again[k], reference[k])


@pytest.mark.parametrize("where", ["middle", "start"])
def test_load_never_serves_a_shard_whose_bytes_changed(tmp_path, fake_synth, monkeypatch, where):
    """Same size, other bytes: a new process's first load checks every shard's sha256 and rebuilds it."""
    args = dict(root=tmp_path, height=16, width=20)
    reference = load("synth-indoor", "train", n=40, **args).with_format("numpy")[:40]
    out = Path(build_status("synth-indoor", "train", **args)["dir"])
    arrow = next((out / "shard-00000").glob("*.arrow"))
    blob = bytearray(arrow.read_bytes())
    at = len(blob) // 2 if where == "middle" else 0
    n_bytes = min(4096, len(blob) // 4) if where == "middle" else 64
    blob[at:at + n_bytes] = np.random.default_rng(1).bytes(n_bytes)
    arrow.write_bytes(bytes(blob))
    assert build_status("synth-indoor", "train", **args)["ok"]  # sizes alone do not see it
    from dalib import shards

    monkeypatch.setattr(shards, "_VERIFIED", set())  # as in a new process
    fake_synth.clear()
    again = load("synth-indoor", "train", n=40, **args).with_format("numpy")[:40]
    assert [start for _, start, _ in fake_synth] == [0, 32]  # the damaged shard was regenerated (in chunks of 32)
    for k in ("depth", "mask", "image", "index"):
        np.testing.assert_array_equal(again[k], reference[k])
    fake_synth.clear()
    load("synth-indoor", "train", n=40, **args)  # verified once per process: no second hashing or rebuild
    assert fake_synth == []


def test_sensor_variant_and_heldout_photo_split(tmp_path, fake_synth):
    ds = load("synth-stereo", "train", root=tmp_path, n=4, height=8, width=10).with_format("numpy")[:4]
    assert ds["depth_exact"].dtype == np.float32 and ds["depth"].shape == (4, 8, 10)
    np.testing.assert_array_equal(ds["mask"], ds["depth"] > 0)
    assert not np.array_equal(ds["depth"], ds["depth_exact"])
    assert list(ds["kind"]) == ["indoor", "outdoor", "indoor", "outdoor"]  # interleaved kinds
    photo = load("synth-photo", "train", root=tmp_path, n=3, height=8, width=10)
    assert not set(photo.column_names) & {"depth", "mask", "material"}
    held = load("synth-photo", "train", root=tmp_path, n=3, height=8, width=10, with_heldout=True)
    assert {"heldout_depth", "heldout_mask"} <= set(held.column_names)
    test = load("synth-photo", "test", root=tmp_path, n=2, height=8, width=10)
    assert "depth" in test.column_names


def test_cli_build_and_list(tmp_path, fake_synth, capsys):
    assert main(["build", "synth-indoor", "--split", "test", "-n", "3", "--height", "8", "--width", "8",
                   "--root", str(tmp_path)]) == 0
    assert build_status("synth-indoor", "test", root=tmp_path, height=8, width=8) == {
        "dir": str(tmp_path / "synth-indoor" / "8x8" / "test"), "n": 3, "shards": 1, "ok": True}
    assert main(["list"]) == 0
    assert "synth-photo" in capsys.readouterr().out
    assert main(["build", "nope", "--split", "train"]) == 1


def test_real_generator_round_trip(tmp_path):
    ds = load("synth-indoor", "train", root=tmp_path, n=6, height=32, width=40).with_format("numpy")[:6]
    assert ds["image"].shape == (6, 32, 40, 3) and ds["depth"].dtype == np.float32
    assert np.isfinite(ds["depth"]).all() and (ds["depth"] >= 0).all() and 0.05 < ds["depth"].max() < 1000
    np.testing.assert_array_equal(ds["mask"], ds["depth"] > 0)
    assert ds["material"].max() < 5
    direct = generate("indoor", 2, seed=0, height=32, width=40, start_index=4)
    np.testing.assert_array_equal(ds["depth"][4:], direct["depth"])  # shards = independent index ranges
    st = load("synth-stereo", "test", root=tmp_path, n=2, height=32, width=40).with_format("numpy")[:2]
    assert st["depth"].dtype == np.float32 and (st["depth"] >= 0).all() and "depth_exact" in st


def test_hdf5_depth_as_hypersim_stores_it(tmp_path):
    """Hypersim's depth_meters files are HDF5 with one dataset named 'dataset' (ray distance, NaN invalid)."""
    import h5py

    ray = np.full((6, 8), 3.0, dtype=np.float16)
    ray[0, 0] = np.nan
    path = tmp_path / "frame.0000.depth_meters.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=ray)
    raw = read_depth_file(path, key="dataset")
    assert raw.shape == (6, 8) and np.isnan(raw[0, 0]) and raw[1, 1] == 3.0


def test_open_dataset_resolves_every_way_of_naming_a_dataset(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"x": [1, 2, 3]})
    assert open_dataset(ds)["x"] == [1, 2, 3]
    assert open_dataset(ds, n=2)["x"] == [1, 2]
    dd = datasets.DatasetDict(train=ds)
    assert len(open_dataset(dd, "train")) == 3
    with pytest.raises(ValueError, match=r"arg: the DatasetDict holds splits \['train'\].*'test'"):
        open_dataset(dd, "test", what="arg")
    dd.save_to_disk(str(tmp_path / "dd"))
    assert open_dataset(tmp_path / "dd", "train", n=1)["x"] == [1]
    with pytest.raises(ValueError, match="needs a split"):
        open_dataset("synth-indoor")
    with pytest.raises(ValueError, match="has no rows"):
        open_dataset(ds.select([]))
    with pytest.raises(TypeError, match="expected a datasets.Dataset"):
        open_dataset(42)


def test_a_recalibrated_style_rebuilds_older_builds_on_load(tmp_path, fake_synth, monkeypatch):
    import dalib.synth.style as style

    args = dict(root=tmp_path, height=16, width=20)
    load("synth-photo", "test", n=3, **args)
    out = split_dir("synth-photo", "test", **args)
    before = json.loads((out / "index.json").read_text())["params"]
    fake_synth.clear()
    load("synth-photo", "test", n=3, **args)
    assert fake_synth == []  # same engine: served from disk
    monkeypatch.setitem(style.STYLE_VERSIONS, "photo", style.STYLE_VERSIONS["photo"] + 1)
    load("synth-photo", "test", n=3, **args)
    after = json.loads((out / "index.json").read_text())["params"]
    assert fake_synth and after["style_version"] == before.get("style_version", 1) + 1
    fake_synth.clear()
    load("synth-indoor", "test", n=2, **args)  # a clean-style build is unaffected by the photo version
    monkeypatch.setitem(style.STYLE_VERSIONS, "photo", 99)
    fake_synth.clear()
    load("synth-indoor", "test", n=2, **args)
    assert fake_synth == []


@pytest.mark.parametrize("height", [0, -5, 2.5])
def test_build_rejects_a_size_that_is_not_a_positive_integer(tmp_path, capsys, height):
    from dalib.data.cli import main

    with pytest.raises(ValueError, match=rf"synth-indoor.*height must be a positive integer.*{height!r}"):
        build("synth-indoor", "train", 2, root=tmp_path, height=height)
    if isinstance(height, int):  # a bad setting: exit 2, named
        with pytest.raises(SystemExit) as e:
            main(["build", "synth-indoor", "--split", "train", "-n", "2", "--root", str(tmp_path),
                  "--height", str(height)])
        assert e.value.code == 2 and f"argument --height: expected a positive integer, got '{height}'" in \
            capsys.readouterr().err
    assert not any(tmp_path.rglob("*x*")), "a size folder was created for an invalid size"


# --------------------------------------------------------------------------------------------------
# Bad inputs: one clear error each
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["-1", "0"])
def test_cli_build_rejects_a_shard_size_below_one(tmp_path, cli_error, size):
    root = tmp_path / "data"
    line = cli_error(2, "dalib", "data", "build", "synth-indoor", "--split", "train", "-n", "8", "--height", "8",
                     "--width", "8", "--shard-size", size, "--root", root)
    assert f"argument --shard-size: expected a positive integer, got '{size}'" in line
    assert not root.exists()
    with pytest.raises(ValueError, match=rf"synth-indoor.*shard_size must be a positive integer number of rows, "
                                         rf"got {size}"):
        build("synth-indoor", "train", 8, root=root, height=8, width=8, shard_size=int(size))
    assert not root.exists()


@pytest.mark.parametrize("kind", ["a-file", "read-only"])
def test_cli_build_names_dalib_data_that_cannot_hold_datasets(tmp_path, cli_error, read_only_dir, kind):
    target = read_only_dir if kind == "read-only" else tmp_path / "a-file"
    if kind == "a-file":
        target.write_text("not a folder")
    line = cli_error(2, "dalib", "data", "build", "synth-indoor", "--split", "train", "-n", "2", "--height", "8",
                     "--width", "8", env={"DALIB_DATA": str(target)})
    assert line.startswith(f"error: DALIB_DATA={target}: cannot write {target}/synth-indoor"), line
    assert "set DALIB_DATA" in line

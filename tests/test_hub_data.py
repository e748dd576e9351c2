"""Hub datasets (dalib.data.hub_sources) per shipped manifest, on fixtures in each dataset's documented schema
(tests/hub_fixtures.py) in a cache laid out as huggingface_hub writes it. Offline throughout."""
from __future__ import annotations

import io

import numpy as np
import pytest
import yaml
from PIL import Image

import dalib.data.hub_sources
import hub_fixtures as fx
from dalib.data.schema import DataSourceError, validate_manifest
from dalib.data.serve import load

REPO = fx.REPO


def _mutated(tmp_path, monkeypatch, name, change) -> dict:
    """A manifest folder holding the shipped manifest `name` with `change(m)` applied; becomes the default."""
    m = fx.manifest(name)
    change(m)
    d = tmp_path / "manifests"
    d.mkdir(exist_ok=True)
    (d / f"{name}.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    monkeypatch.setenv("DALIB_MANIFESTS", str(d))
    return m


# ----------------------------------------------------------------------------------------------------- NYU-D
def test_nyu_rows_are_the_h5_files_in_metres(hub_cache):
    fx.write_nyu(hub_cache)
    ds = load("nyu-d", "test", n=3).with_format("numpy")
    assert len(ds) == 3 and set(ds.column_names) == {"image", "path", "depth", "mask"}
    for k in range(3):
        rgb, depth = fx.nyu_sample(k)
        row = ds[k]
        np.testing.assert_array_equal(row["image"], rgb.transpose(1, 2, 0))  # (3, H, W) -> (H, W, 3)
        np.testing.assert_allclose(row["depth"], depth, rtol=1e-6)  # metres: a changed unit or scale fails here
        assert not row["mask"][:4, :4].any() and row["mask"][4:, 4:].all()
    assert ds[2]["path"].startswith("data/val-000001.tar:")


def test_nyu_reads_the_second_tar_only_when_n_needs_it(hub_cache):
    first, second = fx.write_nyu(hub_cache)
    second.unlink()
    assert len(load("nyu-d", "test", n=2)) == 2  # the first tar holds two images
    with pytest.raises(DataSourceError) as e:
        load("nyu-d", "test", n=3)
    msg = str(e.value)
    assert "nyu-d.yaml" in msg and "data/val-000001.tar" in msg and "offline" in msg
    assert "hf download sayakpaul/nyu_depth_v2 data/val-000001.tar --repo-type dataset --revision a918863" in msg


def test_nyu_with_a_renamed_column_fails_naming_it(hub_cache, tmp_path, monkeypatch):
    fx.write_nyu(hub_cache)
    _mutated(tmp_path, monkeypatch, "nyu-d", lambda m: m["columns"].update(depth="depth_map"))
    with pytest.raises(DataSourceError, match=r"has no dataset columns.depth='depth_map'; it holds \['depth', 'rgb'\]"):
        load("nyu-d", "test", n=1)


def test_nyu_in_another_unit_gives_other_numbers(hub_cache, tmp_path, monkeypatch):
    fx.write_nyu(hub_cache)
    _mutated(tmp_path, monkeypatch, "nyu-d", lambda m: m["depth"].update(units="mm", valid_range=None))
    depth = load("nyu-d", "test", n=1).with_format("numpy")[0]["depth"]
    np.testing.assert_allclose(depth, fx.nyu_sample(0)[1] / 1000, rtol=1e-6)  # what the first test rules out


# ----------------------------------------------------------------------------------------------------- DA-2K
def test_da2k_rows_carry_the_annotated_pairs(hub_cache):
    fx.write_da2k(hub_cache)
    ds = load("da-2k", "test").with_format("numpy")
    ann = fx.da2k_annotations()
    assert list(ds["path"]) == list(ann) and list(ds["scene"]) == ["indoor", "outdoor", "aerial"]
    row = ds[1]
    assert row["image"].shape == (40, 60, 3)
    np.testing.assert_array_equal(row["point1"], [[5 + j, 10 + j] for j in range(fx.DA2K_PAIRS)])
    np.testing.assert_array_equal(row["point2"], [[30 - j, 50 - j] for j in range(fx.DA2K_PAIRS)])
    assert list(row["closer"]) == [1] * fx.DA2K_PAIRS  # "point1" -> 1


def test_da2k_bad_annotations_are_named(hub_cache, tmp_path, monkeypatch):
    path = fx.write_da2k(hub_cache)
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("DA-2K/annotations.json", '{"images/indoor/00.jpg": [{"point1": [1, 2], "closer_point": "p1"}]}')
        z.writestr("DA-2K/images/indoor/00.jpg", b"")
    with pytest.raises(DataSourceError, match=r"da-2k.*image 'images/indoor/00.jpg' pair 0: expected point1"):
        load("da-2k", "test")


# ------------------------------------------------------------------------------------------ the photo pool
def test_pool_from_the_cache_serves_only_images(hub_cache):
    fx.write_pool(hub_cache, n=6)
    ds = load("commoncatalog-cc-by", "train", n=5)
    assert len(ds) == 5 and ds.column_names == ["image", "path"]
    assert ds[0]["image"].size == (60, 40) and ds[4]["path"].endswith(".parquet#4")


def test_pool_images_are_shrunk_to_the_manifest_short_side(hub_cache, tmp_path, monkeypatch):
    fx.write_pool(hub_cache, n=2)
    _mutated(tmp_path, monkeypatch, "commoncatalog-cc-by", lambda m: m["source"].update(resize_short_side=20))
    im = load("commoncatalog-cc-by", "train", n=1)[0]["image"]
    assert im.size == (30, 20) and im.format == "JPEG"


def test_pool_streams_the_rows_it_needs_when_not_cached(tmp_path, monkeypatch, hub_cache):
    path = fx.write_pool(tmp_path / "elsewhere", n=6)  # on the "hub", not in the cache
    monkeypatch.delenv("HF_HUB_OFFLINE")
    opened = []

    def remote(repo_id, filename, revision, repo_type):
        opened.append((repo_id, filename, revision, repo_type))
        return open(path, "rb")

    monkeypatch.setattr(dalib.data.hub_sources, "open_remote", remote)
    assert len(load("commoncatalog-cc-by", "train", n=3)) == 3
    src = fx.manifest("commoncatalog-cc-by")["source"]
    assert opened == [(src["hub_id"], src["files"]["train"][0], src["revision"], "dataset")]


def test_pool_offline_and_not_cached_says_how_to_fetch_it(hub_cache):
    with pytest.raises(DataSourceError, match=r"commoncatalog-cc-by.yaml.*cannot be streamed offline.*hf download "
                                              r"common-canvas/commoncatalog-cc-by 5/least_dim_range"):
        load("commoncatalog-cc-by", "train", n=2)


def test_pool_with_a_renamed_image_column_fails_naming_the_columns(hub_cache, tmp_path, monkeypatch):
    fx.write_pool(hub_cache, n=2)
    _mutated(tmp_path, monkeypatch, "commoncatalog-cc-by", lambda m: m["columns"].update(image="image"))
    with pytest.raises(DataSourceError, match=r"no column columns.image='image'; its columns are \['jpg', "):
        load("commoncatalog-cc-by", "train", n=1)


# --------------------------------------------------------------------- a parquet benchmark (the generic path)
def test_parquet_depth_png_in_millimetres_becomes_metres(hub_cache, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rev = "f" * 40
    folder = fx.snapshot(hub_cache, "example-org/tiny-depth", rev)
    mm = np.array([[0, 1500], [2500, 9000]], np.uint16)
    png = io.BytesIO()
    Image.fromarray(mm).save(png, format="PNG")
    rgb = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb, format="PNG")
    pq.write_table(pa.table({"image": [{"bytes": rgb.getvalue(), "path": None}],
                             "depth_png": [{"bytes": png.getvalue(), "path": None}]}), folder / "test.parquet")
    m = {"name": "tiny-depth", "role": "eval", "description": "x", "license": None, "citation": None, "size": 1,
         "splits": {"test": {"size": None}}, "columns": {"depth": "depth_png"},
         "source": {"type": "hub", "hub_id": "example-org/tiny-depth", "revision": rev, "format": "parquet",
                    "files": {"test": ["test.parquet"]}, "card": "https://example.org", "verified": "fixture"},
         "depth": {"kind": "planar", "units": "mm", "invalid": [0], "valid_range": [0.001, 8.0]}}
    assert validate_manifest(m) == []
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "tiny-depth.yaml").write_text(yaml.safe_dump(m))
    monkeypatch.setenv("DALIB_MANIFESTS", str(d))
    row = load("tiny-depth", "test").with_format("numpy")[0]
    np.testing.assert_allclose(row["depth"], [[0, 1.5], [2.5, 0]])  # 9 m is beyond valid_range
    np.testing.assert_array_equal(row["mask"], [[False, True], [True, False]])


# --------------------------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("change, expected", [
    (lambda s: s.update(revision="main"), "field 'source.revision': expected a full 40-hex commit hash"),
    (lambda s: s.update(format="zip"), "field 'source.format': expected one of parquet | h5-tar | da2k-zip"),
    (lambda s: s.update(files={"train": ["x"]}), "field 'source.files.train': no such split"),
    (lambda s: s.update(files={"test": []}), "field 'source.files.test': expected a non-empty list"),
    (lambda s: s.pop("card"), "field 'source.card': missing"),
])
def test_hub_manifest_errors_name_the_field(change, expected):
    m = fx.manifest("nyu-d")
    change(m["source"])
    assert any(expected in e for e in validate_manifest(m)), validate_manifest(m)

"""dalib.pseudo_label: labels equal the model's own inference, sharding, resume, damaged shards, CLI, errors."""
import io
import json
import os
import re
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import dalib.pseudo_label.labelling as labelling
import dalib.pseudo_label.pool as pool_module
from dalib.model import DepthAnything
from dalib.runfiles import REPO_ROOT
from dalib.data.serve import load
from dalib.pseudo_label.cli import main
from dalib.pseudo_label.labelling import pseudo_label
from dalib.pseudo_label.pool import load_pseudo_labels, load_pseudo_pool, status
from dalib.pseudo_label.sources import parse_shard, shards_of
from dalib.pseudo_label.store import write_label_shard

INPUT = 42  # network input: shorter side 42 px (3 patches), enough to exercise the aspect-keeping resize


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def teacher():
    """A tiny vitt with random weights and a positive output bias (a non-trivial disparity map)."""
    torch.manual_seed(0)
    m = DepthAnything("vitt")
    with torch.no_grad():
        m.depth_head.scratch.output_conv2[2].bias.fill_(0.05)
    return m.eval()


@pytest.fixture(scope="module")
def teacher_dir(teacher, tmp_path_factory):
    return teacher.save_pretrained(tmp_path_factory.mktemp("teacher"))


def png(a: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.fixture(scope="module")
def photos():
    """Seven smooth RGB images of three sizes (two network sizes), interleaved, with an `index` column."""
    rng = np.random.default_rng(0)
    sizes = [(56, 70), (70, 56), (56, 70), (48, 48), (56, 70), (70, 56), (48, 48)]
    imgs = []
    for h, w in sizes:
        yy, xx = np.mgrid[0:h, 0:w] / 10.0
        a = np.stack([np.sin(xx * rng.uniform(0.5, 2)), np.cos(yy * rng.uniform(0.5, 2)), np.sin(xx + yy)], -1)
        imgs.append(png((a * 100 + 128 + rng.normal(0, 10, a.shape)).clip(0, 255).astype(np.uint8)))
    return datasets.Dataset.from_dict({"image": imgs, "index": list(range(100, 107))},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "index": datasets.Value("int64")}))


def run(teacher, src, out, **kw):
    base = dict(input_size=INPUT, batch_size=2, shard_size=3, num_workers=0, progress=False)
    return pseudo_label(teacher, src, out, **{**base, **kw})


def labels_of(out):
    ds = load_pseudo_labels(out).with_format("numpy")
    return list(ds["source_row"]), [np.asarray(d) for d in ds["disparity"]]


@pytest.fixture(scope="module")
def clean(teacher, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "pl"
    res = run(teacher, photos, out)
    return out, res


def test_labels_equal_infer_batch(teacher, photos, clean):
    out, res = clean
    assert res["images"] == 7 and res["complete"] and res["images_per_s"] > 0 and res["shards"] == 3
    ds = load_pseudo_labels(out)
    assert ds.column_names == ["image", "source_row", "index", "disparity"]
    assert list(ds["index"]) == list(range(100, 107)) and list(ds["source_row"]) == list(range(7))
    pil = [photos[i]["image"] for i in range(len(photos))]
    ref = teacher.infer_batch(pil, INPUT, batch_size=2)
    got = ds.with_format("numpy")
    for i in range(7):
        d = np.asarray(got[i]["disparity"])
        assert d.dtype == np.float32 and d.shape == ref[i].shape == np.asarray(pil[i]).shape[:2]
        np.testing.assert_allclose(d, ref[i], rtol=1e-5, atol=1e-6)
        assert d.min() >= 0 and d.std() > 0  # raw teacher output: not normalised to [0, 1]
        assert ds[i]["image"].tobytes() == pil[i].tobytes()  # images copied as they are
    assert not teacher.training
    index = json.loads((out / "index.json").read_text())
    assert index["rows"] == 7 and index["shard_size"] == 3 and index["input_size"] == INPUT
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock-0-of-1", "index.json", "shard-00000", "shard-00000.json", "shard-00001", "shard-00001.json", "shard-00002",
        "shard-00002.json"]


def test_synth_photo_with_heldout_and_workers(teacher, tmp_path):

    src = load("synth-photo", "train", n=4, height=56, width=70, root=tmp_path / "data", with_heldout=True)
    teacher.train()  # the training flag is restored afterwards, labels are computed in eval mode
    res = run(teacher, src, tmp_path / "pl", keep_columns=["heldout_depth", "kind"], num_workers=1, batch_size=4)
    assert teacher.training
    teacher.eval()
    assert res["images"] == 4
    ds = load_pseudo_labels(tmp_path / "pl").with_format("numpy")
    assert ds.column_names == ["image", "source_row", "heldout_depth", "kind", "disparity"]
    np.testing.assert_array_equal(ds["heldout_depth"], src.with_format("numpy")["heldout_depth"])
    ref = teacher.infer_batch([src[i]["image"] for i in range(4)], INPUT, batch_size=4)
    for i in range(4):
        np.testing.assert_allclose(ds[i]["disparity"], ref[i], rtol=1e-5, atol=1e-6)


def test_shards_together_equal_unsharded(teacher, photos, clean, tmp_path):
    out = tmp_path / "pl"
    assert shards_of(1, 3, 8) == [1, 4, 7]
    run(teacher, photos, out, shard="2/3")
    run(teacher, photos, out, shard=(0, 3))
    with pytest.raises(FileNotFoundError, match=r"shards 1 of 0-2 \(rows 3-5\)"):
        load_pseudo_labels(out)
    assert status(out)["missing"] == [1]
    res = run(teacher, photos, out, shard="1/3")
    assert res["complete"] and res["images"] == 3
    rows, labels = labels_of(out)
    rows0, labels0 = labels_of(clean[0])
    assert rows == rows0 == list(range(7))
    for a, b in zip(labels, labels0):
        np.testing.assert_array_equal(a, b)


def test_interrupted_run_resumes(teacher, photos, clean, tmp_path, monkeypatch):
    out = tmp_path / "pl"
    written = []
    real = write_label_shard

    def flaky(out_, k, *a, **kw):
        if written:
            raise RuntimeError("disk full")
        written.append(k)
        return real(out_, k, *a, **kw)

    monkeypatch.setattr(labelling, "write_label_shard", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        run(teacher, photos, out)
    assert written == [0] and status(out)["complete"] == [0]
    (out / ".shard-00001.tmp-12345").mkdir()  # leftover of a write that was killed mid-way
    (out / ".shard-00001.tmp-12345" / "data.arrow").write_bytes(b"partial")
    (out / "shard-00002").mkdir()  # a folder renamed in place but never recorded: not trusted
    written.clear()

    def counting(out_, k, *a, **kw):
        written.append(k)
        return real(out_, k, *a, **kw)

    monkeypatch.setattr(labelling, "write_label_shard", counting)
    res = run(teacher, photos, out)
    assert written == [1, 2] and res["images"] == 4 and res["skipped"] == 3
    assert not list(out.glob(".shard-*"))
    rows, labels = labels_of(out)
    rows0, labels0 = labels_of(clean[0])
    assert rows == rows0
    for a, b in zip(labels, labels0):
        np.testing.assert_array_equal(a, b)
    written.clear()
    assert run(teacher, photos, out)["images"] == 0 and written == []  # complete: nothing to do


def test_damaged_shard_detected_and_rebuilt(teacher, photos, clean, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "pl"
    shutil.copytree(clean[0], out)
    arrow = sorted((out / "shard-00001").glob("*.arrow"))[0]
    data = bytearray(arrow.read_bytes())
    data[-200:-100] = bytes(100)  # same size, different bytes: only the checksum sees it
    arrow.write_bytes(bytes(data))
    assert status(out)["complete"] == [0, 1, 2]  # the size check passes
    with pytest.raises(FileNotFoundError, match=r"shards 1 of 0-2 \(rows 3-5\)"):
        load_pseudo_labels(out, verify=True)
    written = []
    real = write_label_shard
    monkeypatch.setattr(labelling, "write_label_shard", lambda o, k, *a, **kw: written.append(k) or real(o, k, *a, **kw))
    res = run(teacher, photos, out)
    assert written == [1] and res["images"] == 3
    rows, labels = labels_of(out)
    for a, b in zip(labels, labels_of(clean[0])[1]):
        np.testing.assert_array_equal(a, b)
    (out / "shard-00002" / "state.json").unlink()  # a missing file
    with pytest.raises(FileNotFoundError, match=r"shards 2 of 0-2 \(rows 6\)"):
        load_pseudo_labels(out)


def test_cli_and_torchrun_env(teacher_dir, photos, clean, tmp_path):
    src = tmp_path / "src"
    photos.save_to_disk(str(src))
    out = tmp_path / "pl"
    args = ["--teacher", str(teacher_dir), "--source", str(src), "--out", str(out), "--input-size", str(INPUT),
            "--batch-size", "2", "--shard-size", "3", "--device", "cpu", "--quiet"]
    assert main(args + ["--shard", "0/2", "--num-workers", "0"]) == 0
    assert status(out)["complete"] == [0, 2]
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    code = "import sys, torch; torch.set_num_threads(1); from dalib.pseudo_label.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.run([sys.executable, "-c", code, *args, "--num-workers", "1"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "shard 1/2: labelled 3 images" in p.stdout and "images/s" in p.stdout
    rows, labels = labels_of(out)
    for a, b in zip(labels, labels_of(clean[0])[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_clear_errors(teacher, photos, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="teacher: .*nope.safetensors"):
        pseudo_label(tmp_path / "nope.safetensors", photos, tmp_path / "a", progress=False)
    no_image = datasets.Dataset.from_dict({"picture": [1, 2]})
    with pytest.raises(ValueError, match=r"no 'image' column \(columns: \['picture'\]\)"):
        run(teacher, no_image, tmp_path / "b")
    with pytest.raises(ValueError, match="keep_columns: source has no column 'depth'"):
        run(teacher, photos, tmp_path / "c", keep_columns=["depth"])
    for bad in ("3/2", "1-2", "0/0", "a/b"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(SystemExit) as e:
        main(["--teacher", "t", "--source", "s", "--out", "o", "--shard", "4/4"])
    assert e.value.code == 2 and "--shard" in capsys.readouterr().err
    assert main(["--teacher", str(tmp_path / "missing"), "--source", "s", "--out", str(tmp_path / "d")]) == 1
    assert "teacher: " in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="index.json: missing"):
        load_pseudo_labels(tmp_path / "empty")
    out = tmp_path / "e"
    run(teacher, photos.select(range(2)), out)
    with pytest.raises(ValueError, match="another job.*input_size"):
        run(teacher, photos.select(range(2)), out, input_size=56)
    assert run(teacher, photos.select(range(2)), out, input_size=56, overwrite=True)["images"] == 2


def test_exif_rotated_jpeg_labelled_as_datasets_decodes_it(teacher, tmp_path):
    """A JPEG stored 20x30 with EXIF orientation 6 is served 30x20 by datasets: the label follows."""
    im = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    src = datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}]},
                                     features=datasets.Features({"image": datasets.Image()}))
    run(teacher, src, tmp_path / "pl")
    row = load_pseudo_labels(tmp_path / "pl").with_format("numpy")[0]
    assert row["image"].shape[:2] == row["disparity"].shape == (30, 20)
    np.testing.assert_allclose(row["disparity"], teacher.infer_batch([src[0]["image"]], INPUT)[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# load_pseudo_pool: several folders -> one (image, disparity) dataset for the student
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_folders(teacher, photos, clean, tmp_path_factory):
    """The 7-photo folder (kept `index`) and a second folder of 3 other-sized images with a `path` column,
    labelled with keep_columns=["path"] (different kept columns, different image sizes)."""
    rng = np.random.default_rng(5)
    imgs = [png(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 60), (60, 40), (42, 42)]]
    other = datasets.Dataset.from_dict(
        {"image": imgs, "path": ["data/a.png", "data/motorcycle_left.png", "data/c.png"]},
        features=datasets.Features({"image": datasets.Image(), "path": datasets.Value("string")}))
    out = tmp_path_factory.mktemp("other") / "pl"
    run(teacher, other, out, keep_columns=["path"])
    return clean[0], out


def test_load_pseudo_pool_concatenates_folders(two_folders):
    a, b = two_folders
    pool = load_pseudo_pool([a, b])
    assert pool.column_names == ["image", "disparity"] and len(pool) == 10
    assert isinstance(pool.features["image"], datasets.Image)
    assert pool.features["disparity"] == datasets.List(datasets.List(datasets.Value("float32")))
    per_folder = [load_pseudo_labels(d).with_format("numpy") for d in (a, b)]
    ref_disp = [np.asarray(d) for ds in per_folder for d in ds["disparity"]]
    ref_img = [load_pseudo_labels(d)[i]["image"] for d in (a, b) for i in range(len(load_pseudo_labels(d)))]
    got = pool.with_format("numpy")
    for i in range(10):
        d = np.asarray(got[i]["disparity"])
        assert d.dtype == np.float32 and d.shape == ref_disp[i].shape == got[i]["image"].shape[:2]
        np.testing.assert_array_equal(d, ref_disp[i])
        assert pool[i]["image"].tobytes() == ref_img[i].tobytes()
    assert {d.shape for d in ref_disp[7:]} == {(40, 60), (60, 40), (42, 42)}  # sizes differ between folders
    for d in (a, b):  # reading the pool leaves the shards intact (no cache files written next to them)
        assert status(d)["missing"] == []
        load_pseudo_labels(d, verify=True)
    single = load_pseudo_pool(b)  # one folder, as a plain path
    assert single.column_names == ["image", "disparity"] and len(single) == 3


def test_load_pseudo_pool_exclude_paths(two_folders):
    a, b = two_folders
    pool = load_pseudo_pool([a, b], exclude_paths=["motorcycle_left.png"])
    assert len(pool) == 9
    ref = load_pseudo_labels(b).with_format("numpy")
    np.testing.assert_array_equal(np.asarray(pool.with_format("numpy")[7]["disparity"]), ref[0]["disparity"])
    np.testing.assert_array_equal(np.asarray(pool.with_format("numpy")[8]["disparity"]), ref[2]["disparity"])
    assert len(load_pseudo_pool([b], exclude_paths=["data/c.png", "data/a.png"])) == 1


def test_load_pseudo_pool_errors(two_folders, tmp_path, monkeypatch):
    a, b = two_folders
    with pytest.raises(ValueError, match="no folders"):
        load_pseudo_pool([])
    with pytest.raises(FileNotFoundError, match="index.json"):
        load_pseudo_pool([a, tmp_path / "nothing"])
    real = load_pseudo_labels
    monkeypatch.setattr(pool_module, "load_pseudo_labels",
                        lambda d, **kw: real(d, **kw).remove_columns(["disparity"]) if str(d) == str(b) else real(d, **kw))
    with pytest.raises(ValueError, match=re.escape(str(b)) + r".*no column.*'disparity'"):
        load_pseudo_pool([a, b])


@pytest.mark.slow
def test_launch_pseudo_label_under_torchrun_matches_one_process(tmp_path, monkeypatch):
    """nproc=2: an in-memory source is saved, two gloo-free CPU processes label their shards, and the labels
    equal those of one in-process run."""
    import datasets as hf
    import numpy as np
    import torch

    from dalib.model import DepthAnything
    from dalib.pseudo_label.labelling import launch_pseudo_label
    from dalib.pseudo_label.pool import load_pseudo_labels

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.manual_seed(0)
    model = DepthAnything("vitt").eval()
    model.save_pretrained(tmp_path / "teacher")
    rng = np.random.default_rng(0)
    src = hf.Dataset.from_dict({"image": [rng.integers(0, 255, (30, 44, 3), dtype=np.uint8) for _ in range(6)]},
                               features=hf.Features({"image": hf.Image()}))
    one = launch_pseudo_label(model, src, tmp_path / "one", input_size=28, batch_size=2, shard_size=2, progress=False)
    two = launch_pseudo_label(tmp_path / "teacher", src, tmp_path / "two", nproc=2, input_size=28, batch_size=2,
                              shard_size=2)
    assert one["images"] == two["images"] == 6 and two["complete"] and two["shards"] == 3
    a, b = load_pseudo_labels(tmp_path / "one").with_format("numpy"), load_pseudo_labels(tmp_path / "two").with_format("numpy")
    for x, y in zip(a["disparity"], b["disparity"]):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    again = launch_pseudo_label(tmp_path / "teacher", src, tmp_path / "two", nproc=2, input_size=28, batch_size=2)
    assert again["images"] == 0 and again["complete"]
    monkeypatch.setenv("DALIB_ONNX_CACHE", str(tmp_path / "onnx"))
    ort = launch_pseudo_label(tmp_path / "teacher", src, tmp_path / "ort", nproc=2, input_size=28, batch_size=2,
                              shard_size=2, backend="onnxruntime", num_workers=0)
    assert ort["images"] == 6 and ort["complete"]
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # exported once, by the launcher
    c = load_pseudo_labels(tmp_path / "ort").with_format("numpy")
    for x, y in zip(a["disparity"], c["disparity"]):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="teacher as a path"):
        launch_pseudo_label(model, src, tmp_path / "three", nproc=2)


# ----------------------------------------------------------------------------------------------------
# Bad inputs: one clear error each
# ----------------------------------------------------------------------------------------------------
def test_load_pseudo_pool_never_serves_a_shard_overwritten_in_place(teacher, photos, clean, tmp_path):
    """4 KB of a label file overwritten mid-file with NaN/inf, same size: the sha256 (checked once per process)
    sees it; the error names the shard and what to do, and labelling again re-labels just that shard."""
    import shutil

    out = tmp_path / "pl"
    shutil.copytree(clean[0], out)
    arrow = sorted((out / "shard-00001").glob("*.arrow"))[0]
    blob = bytearray(arrow.read_bytes())
    at = len(blob) // 2 - 2048
    blob[at:at + 4096] = np.array([np.nan, np.inf, -np.inf, 7.0], np.float32).tobytes() * 256
    arrow.write_bytes(bytes(blob))
    with pytest.raises(FileNotFoundError, match=r"damaged.*shard-00001 \(rows 3-5\); run dalib.pseudo_label again "
                                                r".*re-labels damaged shards.*or delete"):
        load_pseudo_pool(out)
    assert run(teacher, photos, out)["images"] == 3  # only the damaged shard
    for a, b in zip(load_pseudo_pool(out).with_format("numpy")["disparity"],
                    load_pseudo_pool(clean[0]).with_format("numpy")["disparity"]):
        np.testing.assert_array_equal(a, b)


def test_two_identical_labellers_at_once_never_undo_each_other(teacher_dir, tmp_path):
    """Started together on one folder: neither fails nor deletes the other's shards; the second waits for the first
    and then finds its shards done."""
    rng = np.random.default_rng(3)
    n = 40
    imgs = [png(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]
    src = tmp_path / "src"
    datasets.Dataset.from_dict({"image": imgs}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(
        str(src))
    out = tmp_path / "pl"
    args = ["--teacher", teacher_dir, "--source", src, "--out", out, "--input-size", INPUT, "--batch-size", "2",
            "--shard-size", "1", "--device", "cpu", "--num-workers", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    procs = [subprocess.Popen([sys.executable, "-m", "dalib.pseudo_label", *map(str, args)], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    labelled = sorted(int(re.search(r"labelled (\d+) images", stdout).group(1)) for stdout, _ in results)
    assert labelled == [0, n]  # one labelled everything, the other found it done
    assert len(load_pseudo_labels(out, verify=True)) == n
    assert not list(out.glob(".shard-*"))  # no temporary folder left behind

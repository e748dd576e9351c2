"""dalib.export: ONNX export with dynamic batch/height/width, parity of ONNX Runtime with PyTorch, metadata,
the onnxruntime backend of predict and pseudo-labelling, clear errors for bad inputs, atomic writes.

One vitt with random weights is exported once for the module (the export itself takes most of the time)."""
from __future__ import annotations

import io
import os

import datasets
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from dalib import export as X
from dalib import model as M
from dalib import predict as P
from dalib.__main__ import main as dalib_main
from dalib.images import IMAGENET_MEAN, IMAGENET_STD, preprocess_batch
from dalib.pos_embed import interpolate_pos_encoding, interpolate_pos_encoding_traceable
from dalib.pseudo_label.labelling import pseudo_label
from dalib.pseudo_label.pool import load_pseudo_labels


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random vitt checkpoint and its export, made the way `predict --backend onnxruntime` makes it (cached)."""
    torch.manual_seed(0)
    model = M.DepthAnything("vitt").eval()
    with torch.no_grad():  # a positive output bias: a disparity map with a range (relative errors make sense)
        model.depth_head.scratch.output_conv2[2].bias.fill_(0.05)
    root = tmp_path_factory.mktemp("export")
    ckpt = model.save_pretrained(root / "ckpt")
    mp = pytest.MonkeyPatch()
    mp.setenv("DALIB_ONNX_CACHE", str(root / "cache"))
    path = X.onnx_for(ckpt)
    yield {"model": model, "ckpt": ckpt, "onnx": path, "cache": root / "cache",
           "runner": X.OnnxDepthAnything(path, threads=1)}
    mp.undo()


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------------- the graph
@pytest.mark.parametrize("hw", [(518, 518), (266, 350), (364, 476)])
def test_onnxruntime_matches_pytorch(exported, hw):
    """fp32 ONNX Runtime within 1e-4 relative of fp32 PyTorch; 518^2 is the training grid (table unchanged)."""
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0]))
    with torch.no_grad():
        ref = exported["model"](x).numpy()
    out = exported["runner"](x).numpy()
    assert out.shape == ref.shape == (1, *hw)
    assert ref.max() > 0
    assert rel_err(out, ref) < 1e-4


def test_dynamic_batch_height_width(exported):
    graph = onnx.load(str(exported["onnx"]), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # batch, H, W symbolic; 3 channels fixed
    g = torch.Generator().manual_seed(3)
    for shape in [(3, 3, 14, 28), (2, 3, 84, 126), (1, 3, 140, 42)]:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = exported["model"](x).numpy()
        out = exported["runner"](x).numpy()
        assert out.shape == (shape[0], *shape[2:])
        assert rel_err(out, ref) < 1e-4, shape


def test_traceable_position_interpolation_equals_eager():
    """The in-graph interpolation (symbolic grid) against the official bicubic one, incl. the unchanged table."""
    pos = torch.randn(1, 37 * 37 + 1, 16, generator=torch.Generator().manual_seed(0))
    for gh, gw in [(37, 37), (19, 25), (26, 34), (37, 50), (1, 2), (37, 36)]:
        ref = interpolate_pos_encoding(pos, gh, gw)
        out = interpolate_pos_encoding_traceable(pos, gh, gw)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=5e-5)
    assert torch.equal(interpolate_pos_encoding_traceable(pos, 37, 37), pos)


def test_metadata(exported):
    meta = exported["runner"].metadata
    assert meta["format"] == X.ONNX_FORMAT
    assert (meta["encoder"], meta["version"], meta["patch_size"]) == ("vitt", "v2", "14")
    assert np.allclose(eval(meta["input_mean"]), IMAGENET_MEAN) and np.allclose(eval(meta["input_std"]), IMAGENET_STD)
    assert meta["source_sha256"] == X.checkpoint_sha256(exported["ckpt"]) and len(meta["source_sha256"]) == 64
    assert meta["weights_sha256"] == X.weights_sha256(exported["model"])
    other = M.DepthAnything("vitt")
    assert X.weights_sha256(other) != meta["weights_sha256"]


# ----------------------------------------------------------------------------- backends
def test_preprocess_batch_equals_per_image_reference():
    import cv2

    rng = np.random.default_rng(0)
    imgs = [rng.random((48, 64, 3), dtype=np.float32), rng.random((50, 64, 3), dtype=np.float32),
            rng.random((48, 64, 3)).astype(np.float64)]
    x = preprocess_batch(imgs, (42, 56))
    assert x.shape == (3, 3, 42, 56) and x.dtype == np.float32 and x.flags.c_contiguous
    for i, im in enumerate(imgs):
        ref = (cv2.resize(im, (56, 42), interpolation=cv2.INTER_CUBIC) - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
        np.testing.assert_allclose(x[i], ref.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_infer_batch_backends_agree(exported):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (61, 80, 3), dtype=np.uint8),
            rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)]
    ref = exported["model"].infer_batch(imgs, 56, batch_size=2)
    out = exported["runner"].infer_batch(imgs, 56, batch_size=2)
    for a, b, im in zip(out, ref, imgs):
        assert a.shape == b.shape == im.shape[:2]
        assert rel_err(a, b) < 1e-4
    assert rel_err(exported["runner"].infer_image(imgs[2], 56), ref[2]) < 1e-4


def test_runtime_input_size_not_multiple_of_14(exported):
    with pytest.raises(ValueError, match=r"100x140.*multiples of 14"):
        exported["runner"](np.zeros((1, 3, 100, 140), np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(3, 28, 28\)"):
        exported["runner"](np.zeros((3, 28, 28), np.float32))


def test_predict_cli_both_backends(exported, tmp_path, capsys):
    img = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    cached = {p: p.stat().st_mtime_ns for p in exported["cache"].glob("*.onnx")}
    outs = {}
    for name, weights, backend in [("torch", exported["ckpt"], "torch"), ("fly", exported["ckpt"], "onnxruntime"),
                                   ("file", exported["onnx"], "onnxruntime")]:
        rc = P.main([str(tmp_path / "a.png"), "--weights", str(weights), "--backend", backend, "--input-size", "42",
                     "--out", str(tmp_path / name), "--npy", "--threads", "1"])
        assert rc == 0
        outs[name] = np.load(tmp_path / name / "a.npy")
    assert {p: p.stat().st_mtime_ns for p in exported["cache"].glob("*.onnx")} == cached  # the export was reused
    assert rel_err(outs["fly"], outs["torch"]) < 1e-4 and rel_err(outs["file"], outs["torch"]) < 1e-4
    rc = P.main([str(tmp_path / "a.png"), "--weights", str(exported["onnx"]), "--backend", "torch",
                 "--out", str(tmp_path / "x")])
    assert rc == 2 and "onnxruntime" in capsys.readouterr().err


def test_pseudo_label_onnxruntime_backend(exported, tmp_path):
    rng = np.random.default_rng(4)
    pngs = []
    for h, w in [(48, 64), (64, 48), (48, 64)]:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    src = datasets.Dataset.from_dict({"image": pngs}, features=datasets.Features({"image": datasets.Image()}))
    kw = dict(input_size=42, batch_size=2, num_workers=0, progress=False, backend="onnxruntime")
    res = pseudo_label(exported["onnx"], src, tmp_path / "from_onnx", **kw)
    assert res["complete"] and res["images"] == 3
    res = pseudo_label(exported["ckpt"], src, tmp_path / "from_ckpt", **kw)  # cached export of the checkpoint
    assert res["complete"] and res["images"] == 3
    ref = exported["model"].infer_batch([src[i]["image"] for i in range(3)], 42)
    for folder in ("from_onnx", "from_ckpt"):
        ds = load_pseudo_labels(tmp_path / folder).with_format("numpy")
        for d, r in zip(ds["disparity"], ref):
            assert rel_err(np.asarray(d), r) < 1e-4
    with pytest.raises(ValueError, match="backend"):
        pseudo_label(exported["onnx"], src, tmp_path / "bad", backend="tensorrt")


# ----------------------------------------------------------------------------- bad inputs
def test_export_cli_bad_inputs(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    rc = dalib_main(["export", str(tmp_path / "missing.pth"), "--onnx", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pth" in err and "no such checkpoint" in err
    junk = tmp_path / "notes.pth"
    junk.write_text("these are not weights")
    rc = dalib_main(["export", str(junk), "--onnx", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "notes.pth" in err and "weights" in err
    wrong = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(2, 2)}, str(wrong))
    rc = dalib_main(["export", str(wrong), "--onnx", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "other.safetensors" in err and "key layout" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    model = M.DepthAnything("vitt")
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    rc = dalib_main(["export", str(ckpt), "--onnx", str(blocker / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker / "m.onnx") in err and "cannot write" in err
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        X.export_onnx(model, tmp_path)
    with pytest.raises(TypeError, match="DepthAnything"):
        X.export_onnx(torch.nn.Linear(2, 2), tmp_path / "lin.onnx")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        X.OnnxDepthAnything(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="notes.pth.*not a loadable ONNX"):
        X.OnnxDepthAnything(junk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ckpt", "notes.pth", "other.safetensors"]


def test_onnx_without_dalib_metadata_is_rejected(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["image"], ["disparity"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("disparity", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="plain.onnx.*not a Depth Anything export"):
        X.OnnxDepthAnything(tmp_path / "plain.onnx")


def test_save_atomic_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old model")

    def broken(tmp):
        tmp.write_bytes(b"half a mod")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        X.save_atomic(broken, target)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file or folder left

    def big(tmp):  # a model with external weights: both files land, under the final names
        tmp.write_bytes(b"graph")
        (tmp.parent / (tmp.name + ".data")).write_bytes(b"weights")

    X.save_atomic(big, target)
    assert target.read_bytes() == b"graph" and (tmp_path / "m.onnx.data").read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]

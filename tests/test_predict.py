"""`python -m dalib predict`: real and broken inputs, output files, weight formats, exit codes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dalib import model as M
from dalib import predict as P
from dalib.images import pil_to_rgb, read_image

SIZE = ["--input-size", "56"]  # tiny network input: these tests check files and formats, not depth quality


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    m = M.DepthAnything("vitt")
    with torch.no_grad():  # an output bias that keeps the map above the final ReLU, so it has a range
        m.depth_head.scratch.output_conv2[2].bias.fill_(1.0)
    d = tmp_path_factory.mktemp("w") / "vitt"
    m.save_pretrained(d)
    return d


def gradient_rgb(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(gradient_rgb(40, 60)).save(d / "rgb.jpg")
    Image.fromarray(gradient_rgb(30, 45)[..., 0]).save(d / "gray.png")
    rgba = np.concatenate([gradient_rgb(33, 47), np.full((33, 47, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    g16 = (np.linspace(0, 65535, 36 * 50).reshape(36, 50)).astype(np.uint16)
    Image.fromarray(g16).save(d / "deep16.png")
    # EXIF orientation 6 (rotate 90 CW on display): stored 40 wide x 20 high, shown 20 wide x 40 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gradient_rgb(20, 40)).save(d / "rotated.jpg", exif=exif)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_pil_to_rgb_modes():
    g16 = Image.fromarray(np.array([[0, 65535]], np.uint16))
    a = pil_to_rgb(g16)
    assert a.shape == (1, 2, 3) and a.dtype == np.float32 and a[0, 1, 0] == 1.0 and a[0, 0, 0] == 0.0
    rgba = Image.fromarray(np.zeros((2, 3, 4), np.uint8) + 7, "RGBA")
    assert pil_to_rgb(rgba).shape == (2, 3, 3)
    pal = Image.fromarray(np.zeros((4, 4), np.uint8)).convert("P")
    assert pil_to_rgb(pal).shape == (4, 4, 3)
    f = Image.fromarray(np.array([[1.0, 3.0]], np.float32), "F")
    np.testing.assert_allclose(pil_to_rgb(f)[0, :, 0], [0.0, 1.0])


def test_read_image_exif_large_and_corrupt(images, tmp_path):
    assert read_image(images / "rotated.jpg").shape == (40, 20, 3)  # EXIF rotation applied
    big = tmp_path / "big.png"
    Image.fromarray(gradient_rgb(300, 600)).save(big)
    assert read_image(big, max_size=120).shape == (60, 120, 3)
    with pytest.raises(ValueError, match="corrupt.png"):
        read_image(images / "corrupt.png")


def test_disparity_to_uint16():
    d = np.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_array_equal(P.disparity_to_uint16(d), [[0, 16384], [32768, 65535]])
    assert P.disparity_to_uint16(np.ones((2, 2))).max() == 0


def test_cli_folder_with_bad_files(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = P.main([str(images), "--weights", str(weights), "--out", str(out), "--npy", "--device", "cpu", *SIZE])
    err = capsys.readouterr().err
    assert rc == 1  # one file failed
    assert "corrupt.png" in err and "cannot read image" in err
    expect = {"rgb": (40, 60), "gray": (30, 45), "rgba": (33, 47), "deep16": (36, 50), "rotated": (40, 20)}
    for stem, hw in expect.items():
        disp16 = np.array(Image.open(out / f"{stem}_disp16.png"))
        assert disp16.shape == hw and disp16.dtype in (np.uint16, np.int32), stem
        assert disp16.min() == 0 and disp16.max() == 65535, stem  # normalised per image
        color = np.array(Image.open(out / f"{stem}_color.png"))
        assert color.shape == (*hw, 3) and color.dtype == np.uint8, stem
        raw = np.load(out / f"{stem}.npy")
        assert raw.shape == hw and raw.dtype == np.float32 and (raw >= 0).all(), stem
        # the 16-bit map is the raw map normalised
        norm = (raw - raw.min()) / (raw.max() - raw.min())
        np.testing.assert_allclose(disp16 / 65535.0, norm, atol=1.0 / 65535 + 1e-6)
    assert not (out / "corrupt_disp16.png").exists() and not (out / "notes_disp16.png").exists()


def test_cli_matches_infer_image(weights, images, tmp_path):
    out = tmp_path / "o"
    rc = P.main([str(images / "rgb.jpg"), "--weights", str(weights), "--out", str(out), "--npy", *SIZE])
    assert rc == 0
    ref = M.DepthAnything.from_pretrained(weights).infer_image(images / "rgb.jpg", 56)
    np.testing.assert_allclose(np.load(out / "rgb.npy"), ref, rtol=1e-5, atol=1e-6)


def test_cli_official_pth_and_missing_inputs(weights, images, tmp_path, capsys):
    pth = tmp_path / "depth_anything_v2_vitt.pth"
    torch.save(M.DepthAnything.from_pretrained(weights).state_dict(), pth)
    out = tmp_path / "o"
    rc = P.main([str(images / "gray.png"), str(tmp_path / "missing.jpg"), "--weights", str(pth),
                 "--out", str(out), *SIZE])
    assert rc == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert (out / "gray_disp16.png").exists()


def test_cli_bad_weights(images, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    rc = P.main([str(images / "rgb.jpg"), "--weights", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "bad.pth" in capsys.readouterr().err


def test_cli_out_that_is_a_file_fails_before_any_image_is_read(weights, images, tmp_path, capsys, monkeypatch):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    reads = []
    monkeypatch.setattr(P, "read_image", lambda *a, **k: reads.append(a) or np.zeros((4, 4, 3), np.uint8))
    for out in (target, target / "sub"):
        rc = P.main([str(images), "--weights", str(weights), "--out", str(out)])
        assert rc == 2 and f"--out {out}: not a folder" in capsys.readouterr().err
    assert reads == [] and target.read_text() == "keep me"


def test_multi_frame_image_warns_and_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (10, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with pytest.warns(UserWarning, match=r"anim\.gif: 3 frames .*using the first"):
        rgb = read_image(path)
    assert rgb.shape == (8, 10, 3) and abs(int(rgb.mean()) - 10) <= 2


def test_cli_wrong_encoder(weights, images, tmp_path, capsys):
    rc = P.main([str(images / "rgb.jpg"), "--weights", str(weights), "--encoder", "vits", "--out", str(tmp_path)])
    assert rc == 2 and "vitt" in capsys.readouterr().err


def test_module_entry_point(weights, images, tmp_path):
    """`python -m dalib predict` end to end in a subprocess (the dispatch in dalib/__main__.py)."""
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "dalib", "predict", str(images / "rgba.png"), "--weights", str(weights),
                        "--out", str(out), *SIZE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "rgba_color.png").exists() and (out / "rgba_disp16.png").exists()


# ============================================================================ bad inputs: one clear error each
def test_cli_weights_folder_whose_config_is_not_an_object(weights, images, tmp_path, cli_error):
    bad = tmp_path / "weights"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((weights / "model.safetensors").read_bytes())
    (bad / "config.json").write_text("[]")
    line = cli_error(2, "dalib", "predict", images / "rgb.jpg", "--weights", bad, *SIZE, "--out", tmp_path / "o")
    assert str(bad / "config.json") in line and "JSON list" in line

"""dalib.transforms: joint geometry of image, label and mask; nearest labels; seeded augmentation."""
import numpy as np
import pytest
import torch
from PIL import Image

from dalib.images import IMAGENET_MEAN, IMAGENET_STD
from dalib.transforms import (
    JointTransform,
    finalize_target,
    normalize_image,
    resize_shorter_side,
    row_to_sample,
    sample_generator,
    sample_seed,
)


def _column_sample(h=56, w=56):
    """Asymmetric pattern: every modality encodes the column index, so a flip of one shows in the others."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0] = (cols * 4).to(torch.uint8)  # red ramps left -> right
    depth = 1.0 + cols  # metres grow to the right
    mask = cols < 10  # only the left 10 columns valid
    return {"image": image, "target": depth.clone(), "mask": mask.clone(), "kind": "depth"}


def _unnormalize(x):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round()


@pytest.mark.parametrize("crop", [14, 56, 70, 518])
def test_output_is_crop_square_multiple_of_14(crop):
    rng = np.random.default_rng(0)
    row = {"image": rng.integers(0, 255, (37, 91, 3), dtype=np.uint8),
           "depth": rng.uniform(1, 5, (37, 91)).astype(np.float32)}
    out = JointTransform(crop)(row_to_sample(row), sample_generator(0, 1))
    assert out["image"].shape == (3, crop, crop) and out["image"].dtype == torch.uint8  # normalised on the device
    x = normalize_image(out["image"])
    assert x.dtype == torch.float32 and torch.allclose(_unnormalize(x), out["image"].float(), atol=1e-3)
    assert out["target"].shape == (crop, crop) and out["mask"].shape == (crop, crop)
    assert out["mask"].dtype == torch.bool
    for bad in (50, 0, -14):
        with pytest.raises(ValueError, match="multiple of 14"):
            JointTransform(bad)


def test_resize_keeps_aspect_and_covers_crop():
    assert resize_shorter_side(64, 80, 56) == (56, 70)
    assert resize_shorter_side(480, 640, 518) == (518, 691)
    assert resize_shorter_side(30, 20, 56) == (84, 56)  # upsampling too
    tf = JointTransform(56, scale=(1.0, 1.5))
    for i in range(20):
        p = tf.params(64, 80, sample_generator(3, i))
        h, w = p["size"]
        assert min(h, w) >= 56 and abs(w / h - 80 / 64) < 0.03
        assert 0 <= p["top"] <= h - 56 and 0 <= p["left"] <= w - 56


def test_flip_moves_image_depth_and_mask_together():
    s = _column_sample()
    flipped = JointTransform(56, hflip=1.0).geometric(s["image"], s["target"], s["mask"],
                                                      {"size": (56, 56), "top": 0, "left": 0, "flip": True})
    img, tgt, msk = flipped
    assert torch.equal(img, s["image"].flip(-1))
    assert torch.equal(tgt, s["target"].flip(-1))
    assert torch.equal(msk, s["mask"].flip(-1))
    # through the full transform (flip p=1): the valid pixels are on the right, red and disparity agree
    out = JointTransform(56, hflip=1.0)(_column_sample(), sample_generator(0, 0))
    assert out["mask"][:, -10:].all() and not out["mask"][:, :-10].any()
    red = out["image"][0].float()
    assert torch.equal(red[0], (torch.arange(56).flip(0) * 4).float())
    # nearest valid pixel (smallest depth, column 0 -> rightmost after the flip) has disparity 1
    assert out["target"][0, -1] == 1.0 and out["target"][0, -10] == 0.0
    no_flip = JointTransform(56, hflip=0.0)(_column_sample(), sample_generator(0, 0))
    assert no_flip["mask"][:, :10].all() and no_flip["target"][0, 0] == 1.0


def test_random_crop_keeps_pixels_aligned():
    """Every output pixel keeps the (image, depth, mask) triple of one input pixel, for random draws."""
    h, w = 70, 98  # no resize: shorter side equals the crop, so only crop and flip act
    code = torch.arange(h * w).reshape(h, w)
    image = torch.stack([(code % 251).to(torch.uint8), (code // 251).to(torch.uint8), torch.zeros(h, w, dtype=torch.uint8)])
    depth = 1.0 + code.float()
    mask = (code % 3) != 0
    tf = JointTransform(70)
    seen_flip = set()
    for i in range(8):
        p = tf.params(h, w, sample_generator(5, i))
        img, tgt, msk = tf.geometric(image, depth, mask, p)
        seen_flip.add(p["flip"])
        code_from_image = img[0].long() + 251 * img[1].long()
        assert torch.equal(code_from_image.float() + 1.0, tgt)
        assert torch.equal(msk, (code_from_image % 3) != 0)
    assert seen_flip == {True, False}


def test_depth_and_mask_resampled_nearest():
    rng = np.random.default_rng(1)
    values = np.array([0.0, 1.5, 2.0, 7.25, 40.0], np.float32)
    depth = values[rng.integers(0, 5, (45, 61))]
    image = rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)
    s = row_to_sample({"image": image, "depth": depth})
    for scale in [(1.0, 1.0), (1.3, 2.0)]:
        tf = JointTransform(28, scale=scale)  # downsample and upsample
        for i in range(5):
            img, tgt, msk = tf.geometric(s["image"], s["target"], s["mask"], tf.params(45, 61, sample_generator(2, i)))
            assert set(np.unique(tgt.numpy())) <= set(values.tolist())  # no blended depth
            assert torch.equal(msk, tgt > 0)  # invalid (depth 0) pixels stay invalid, valid stay valid


def test_same_seed_and_index_same_output():
    rng = np.random.default_rng(2)
    row = {"image": rng.integers(0, 255, (64, 80, 3), dtype=np.uint8),
           "depth": rng.uniform(1, 5, (64, 80)).astype(np.float32)}
    tf = JointTransform(42, scale=(1.0, 1.4))
    a = tf(row_to_sample(row), sample_generator(7, 0, 3, 11))
    b = tf(row_to_sample(row), sample_generator(7, 0, 3, 11))
    for k in a:
        assert torch.equal(a[k], b[k])
    others = [tf(row_to_sample(row), sample_generator(7, 0, 3, j))["image"] for j in range(12, 16)]
    assert any(not torch.equal(a["image"], o) for o in others)
    # the global RNG plays no part
    torch.manual_seed(123)
    c = tf(row_to_sample(row), sample_generator(7, 0, 3, 11))
    assert torch.equal(a["image"], c["image"])
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3) != sample_seed(1, 2, 4)


def test_row_to_sample_depth_disparity_and_errors():
    img = Image.fromarray(np.full((4, 5, 3), 200, np.uint8))
    depth = np.array([[1, 2, 0, 4, 5]] * 4, np.float32)
    depth[0, 0] = np.nan
    s = row_to_sample({"image": img, "depth": depth, "mask": np.ones((4, 5), bool)})
    assert s["kind"] == "depth" and s["image"].shape == (3, 4, 5) and s["image"].dtype == torch.uint8
    assert not s["mask"][0, 0] and not s["mask"][1, 2] and s["mask"][1, 0]
    assert torch.isfinite(s["target"]).all()
    disp, valid = finalize_target(s["target"], s["mask"], s["kind"])
    assert disp[1, 0] == 1.0 and disp[1, 4] == 0.0 and disp[1, 2] == 0.0  # nearest 1, farthest 0, invalid 0
    assert disp[1, 1] == pytest.approx((1 / 2 - 1 / 5) / (1 - 1 / 5))
    # an already-relative disparity column (pseudo-labels): 0 is a valid value, just renormalised
    p = row_to_sample({"image": np.zeros((4, 5, 3), np.uint8), "disparity": np.linspace(0, 2, 20).reshape(4, 5)})
    assert p["kind"] == "disparity" and p["mask"].all()
    d, _ = finalize_target(p["target"], p["mask"], p["kind"])
    assert d.max() == 1.0 and d.min() == 0.0
    with pytest.raises(KeyError, match="'depth'"):
        row_to_sample({"image": img, "disparity": depth}, target="depth")
    with pytest.raises(KeyError, match="label"):
        row_to_sample({"image": img})
    with pytest.raises(ValueError, match="shape"):
        row_to_sample({"image": img, "depth": np.ones((3, 5), np.float32)})


def test_normalize_image_imagenet():
    x = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    y = normalize_image(x)
    expect = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(y[:, 0, 0], expect)

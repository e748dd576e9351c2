"""Tests of `dalib.imagestats`: brightness, contrast, Immerkaer noise, sharpness, real reference images."""
import numpy as np
import pytest
from scipy.signal import convolve2d

from dalib.imagestats import REAL_PHOTOS, STATS, image_stats, median_stats, real_reference_images


def _gray(y: np.ndarray) -> np.ndarray:
    """float luma image (H, W) -> uint8 RGB with R = G = B (so luma = the value)."""
    g = np.clip(np.round(y), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, -1)


def _smooth(h=256, w=256):
    v, u = np.mgrid[0:h, 0:w].astype(float)
    return 128 + 0.1 * (u - w / 2) + 40 * np.sin(2 * np.pi * u / 150) * np.cos(2 * np.pi * v / 170)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
@pytest.mark.parametrize("base", ["flat", "smooth"])
def test_immerkaer_recovers_known_gaussian_noise(sigma, base):
    rng = np.random.default_rng(int(sigma))
    clean = np.full((256, 256), 128.0) if base == "flat" else _smooth()
    imgs = np.stack([_gray(clean + rng.normal(0, sigma, clean.shape)) for _ in range(2)])
    est = image_stats(imgs)["noise"]
    # uint8 rounding adds variance 1/12
    np.testing.assert_allclose(est, np.sqrt(sigma ** 2 + 1 / 12), rtol=0.1)


def test_immerkaer_sees_no_noise_in_a_smooth_image():
    assert image_stats(_gray(_smooth())[None])["noise"][0] < 0.5  # rounding to uint8 only


def test_noise_matches_an_independent_convolution():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 31, 45, 3), dtype=np.uint8)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    for i in range(2):
        y = img[i].astype(float) @ [0.299, 0.587, 0.114]
        conv = convolve2d(y, kernel, mode="valid")
        want = np.sqrt(np.pi / 2) / (6 * (45 - 2) * (31 - 2)) * np.abs(conv).sum()
        assert image_stats(img)["noise"][i] == pytest.approx(want, rel=1e-12)


def test_brightness_and_contrast_by_hand():
    img = np.zeros((1, 4, 6, 3), np.uint8)
    img[0, :, :3] = (255, 0, 0)  # luma 0.299 * 255
    img[0, :, 3:] = (0, 0, 255)  # luma 0.114 * 255
    a, b = 0.299 * 255, 0.114 * 255
    s = image_stats(img)
    assert s["brightness"][0] == pytest.approx((a + b) / 2)
    assert s["contrast"][0] == pytest.approx(abs(a - b) / 2)  # RMS contrast of a two-level image


def test_sharpness_of_a_ramp_is_its_slope():
    v, u = np.mgrid[0:20, 0:30].astype(float)
    assert image_stats(_gray(3 * u + 2 * v)[None])["sharpness"][0] == pytest.approx(np.hypot(3, 2))
    assert image_stats(_gray(np.full((20, 30), 77.0))[None])["sharpness"][0] == 0


def test_shapes_lists_and_medians():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    s = image_stats(imgs)
    assert set(s) == set(STATS) and all(v.shape == (5,) and v.dtype == np.float64 for v in s.values())
    from_list = image_stats(list(imgs))
    assert all(np.array_equal(s[k], from_list[k]) for k in STATS)
    mixed = image_stats([imgs[0], imgs[1, :9, :7]])  # sizes may differ in a list
    alone = image_stats(imgs[1:2, :9, :7])
    assert mixed["noise"][0] == s["noise"][0] and mixed["noise"][1] == alone["noise"][0]
    med = median_stats(imgs)
    assert med == median_stats(s) and med["contrast"] == float(np.median(s["contrast"]))


@pytest.mark.parametrize("bad", [
    np.zeros((2, 8, 8, 3), np.float32),  # wrong dtype
    np.zeros((8, 8, 3), np.uint8),  # one image without the batch axis
    np.zeros((2, 8, 8), np.uint8),  # no channel axis
    np.zeros((2, 8, 8, 4), np.uint8),  # RGBA
    np.zeros((2, 2, 8, 3), np.uint8),  # too small for the 3x3 kernel
    np.zeros((0, 8, 8, 3), np.uint8),  # empty batch
    [],  # empty list
    [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)],  # a grey item in a list
])
def test_bad_images_raise_naming_the_argument_and_shape(bad):
    with pytest.raises(ValueError, match=r"images must be .*\(N, H, W, 3\)"):
        image_stats(bad)


def test_real_reference_images():
    real = real_reference_images(64)
    assert real.shape == (len(REAL_PHOTOS), 64, 64, 3) and real.dtype == np.uint8
    real[0] = 0  # a copy: the cached images stay intact
    assert real_reference_images(64)[0].any()
    med = median_stats(real_reference_images(128))
    assert 60 < med["brightness"] < 200 and med["contrast"] > 20  # real photographs, not blank frames
    with pytest.raises(ValueError, match="size"):
        real_reference_images(0)

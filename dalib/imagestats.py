"""Per-image statistics for comparing image domains: brightness, contrast, noise, sharpness
(notebook 00_depth_data, section 5).

    from dalib.imagestats import image_stats, median_stats, real_reference_images
    real = median_stats(real_reference_images(128))     # {"brightness": ..., "contrast": ..., ...}

All statistics are computed on the luma Y = 0.299 R' + 0.587 G' + 0.114 B' (Rec. 601 weights on the
gamma-encoded 8-bit values, 0-255), so they are in grey levels:

brightness  mean of Y
contrast    RMS contrast, the standard deviation of Y within the image
noise       Immerkaer's (1996) noise sigma: the 3x3 kernel N = [[1,-2,1],[-2,4,-2],[1,-2,1]] (the difference
            of two Laplacians) cancels image structure up to second order, so what is left is noise:
            sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum over interior pixels |Y * N|
sharpness   mean gradient magnitude, mean sqrt(gx^2 + gy^2) with central differences
            gx = (Y[x+1] - Y[x-1]) / 2, over interior pixels, in grey levels per pixel (blur lowers it,
            noise raises it)
"""
from __future__ import annotations

import functools

import numpy as np
import skimage.data
from PIL import Image

STATS = ("brightness", "contrast", "noise", "sharpness")
#: scikit-image's bundled RGB photographs of real scenes (offline); the Middlebury left view is added from
#: `skimage.data.stereo_motorcycle`. Left out: grayscale images (camera, brick, grass, gravel, ...), drawings
#: and synthetic images (logo, chessboard, color), and non-scene imaging (hubble_deep_field: a telescope
#: exposure of black sky; retina: a fundus camera; ihc: a microscope).
REAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601


def _luma(images) -> list[np.ndarray]:
    """uint8 RGB (N, H, W, 3) or a list of (H, W, 3) -> list of float64 luma batches (n, H, W), one per shape."""
    expected = "a uint8 array of shape (N, H, W, 3) or a list of uint8 arrays of shape (H, W, 3), H, W >= 3"
    if isinstance(images, (list, tuple)):
        arrs = [np.asarray(a) for a in images]
        if not arrs:
            raise ValueError(f"images must be {expected}, got an empty list")
        for a in arrs:
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3 or min(a.shape[:2]) < 3:
                raise ValueError(f"images must be {expected}, got a list item of dtype {a.dtype}, shape {a.shape}")
        if len({a.shape for a in arrs}) == 1:
            arrs = [np.stack(arrs)]
        else:
            arrs = [a[None] for a in arrs]
    else:
        a = np.asarray(images)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or min(a.shape[1:3]) < 3 or len(a) == 0:
            raise ValueError(f"images must be {expected}, got dtype {a.dtype}, shape {a.shape}")
        arrs = [a]
    return [a.astype(np.float64) @ _LUMA for a in arrs]


def _stats_of_luma(y: np.ndarray) -> dict:
    """Statistics of a luma batch y (n, H, W) float64 in 0-255 -> {name: (n,) float64}."""
    n, H, W = y.shape
    c = y[:, 1:-1, 1:-1]
    # Immerkaer: Y * N with N = [[1,-2,1],[-2,4,-2],[1,-2,1]], evaluated at the interior pixels
    conv = (y[:, :-2, :-2] + y[:, :-2, 2:] + y[:, 2:, :-2] + y[:, 2:, 2:]
            - 2 * (y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:]) + 4 * c)
    # sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |Y * N|
    noise = np.sqrt(np.pi / 2) / (6 * (W - 2) * (H - 2)) * np.abs(conv).sum(axis=(1, 2))
    gx = (y[:, 1:-1, 2:] - y[:, 1:-1, :-2]) / 2  # central differences
    gy = (y[:, 2:, 1:-1] - y[:, :-2, 1:-1]) / 2
    return {"brightness": y.mean(axis=(1, 2)),  # mean Y
            "contrast": y.std(axis=(1, 2)),  # RMS contrast: sqrt(mean (Y - mean Y)^2)
            "noise": noise,
            "sharpness": np.sqrt(gx * gx + gy * gy).mean(axis=(1, 2))}  # mean |grad Y|


def image_stats(images) -> dict:
    """Per-image brightness, contrast, noise sigma (Immerkaer) and sharpness, in grey levels (see the module
    doc). images: uint8 RGB (N, H, W, 3) or a list of (H, W, 3) arrays (sizes may differ).
    Returns {name: float64 array (N,)} for the names in STATS. Notebook 00_depth_data."""
    parts = [_stats_of_luma(y) for y in _luma(images)]
    return {k: np.concatenate([p[k] for p in parts]) for k in STATS}


def median_stats(images) -> dict:
    """Median over a set of images of each statistic of `image_stats` -> {name: float}.
    Accepts the images themselves or an `image_stats` result. Notebook 00_depth_data."""
    stats = images if isinstance(images, dict) else image_stats(images)
    return {k: float(np.median(stats[k])) for k in STATS}


@functools.lru_cache(maxsize=4)
def _reference(size: int) -> np.ndarray:
    out = []
    for name in REAL_PHOTOS:
        img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
        img = np.ascontiguousarray(img[..., :3])
        h, w = img.shape[:2]
        s = min(h, w)  # centre square, then an antialiased (Lanczos) resize: same as shorter side -> size + crop
        top, left = (h - s) // 2, (w - s) // 2
        square = Image.fromarray(img[top:top + s, left:left + s])
        out.append(np.asarray(square.resize((size, size), Image.Resampling.LANCZOS)))
    return np.stack(out)


def real_reference_images(size: int = 128) -> np.ndarray:
    """The offline real photographs REAL_PHOTOS (scikit-image's RGB scene photos + the Middlebury Motorcycle
    left view), centre-cropped square and resized to size x size with a Lanczos filter.
    Returns uint8 (len(REAL_PHOTOS), size, size, 3). Notebook 00_depth_data."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 3:
        raise ValueError(f"size must be an integer >= 3 (pixels), got {size!r}")
    return _reference(int(size)).copy()

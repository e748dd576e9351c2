"""Images in, network input out: reading and converting images, network sizing, preprocessing, and the
inference recipe shared by every backend (notebooks 04_teacher_training and 08_deployment).

    rgb = read_image("photo.jpg")                       # HxWx3 RGB numpy (EXIF applied, alpha dropped)
    h, w = network_size(*rgb.shape[:2], 518)            # official aspect-keeping size, multiples of PATCH
    x = preprocess_batch([to_rgb_float(rgb)], (h, w))   # (1,3,h,w) float32, ImageNet-normalised
    disps = infer_images(run, [rgb])                    # any network run: (B,3,h,w) -> (B,h,w)

The bottom of the model side: `dalib.model` (the network) and `dalib.weights` build on this module.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14  # DINOv2 patch size in pixels
MAX_PIXELS = 1 << 30  # PIL's decompression-bomb limit raised to 1 Gpx for large photos and panoramas


# ============================================================================ reading and converting
def pil_to_rgb(img) -> np.ndarray:
    """PIL image of any mode -> HxWx3 numpy RGB (uint8, or float32 in [0, 1] for 16/32-bit and float modes).

    EXIF orientation is applied; alpha is dropped (as cv2.imread in the official code does);
    grayscale is repeated to three channels.
    """

    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if a.max(initial=0) <= 65535 else float(a.max())
        a = np.clip(a / top, 0, 1).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img).astype(np.float64)
        finite = np.isfinite(a)
        lo, hi = (a[finite].min(), a[finite].max()) if finite.any() else (0.0, 1.0)
        a = np.where(finite, (a - lo) / max(hi - lo, 1e-12), 0).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB").convert("RGB")
    return np.asarray(img)


def read_image(path, max_size: int = 0) -> np.ndarray:
    """Image file -> HxWx3 RGB numpy (see `pil_to_rgb`); longer side capped at max_size (0 = no cap).

    Raises ValueError naming the file when it cannot be decoded. A file of several frames gives its first,
    with a warning naming the file.
    """

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
    try:
        with Image.open(path) as img:
            if max_size and max(img.size) > 2 * max_size and img.format == "JPEG":
                img.draft("RGB", (max_size, max_size))  # decode JPEG at 1/2..1/8 scale: fast for huge files
            frames = getattr(img, "n_frames", 1)
            if frames > 1:  # animated GIF/WebP/APNG, multi-page TIFF: one depth map per file, from frame 1
                warnings.warn(f"{path}: {frames} frames (animation or pages); using the first", stacklevel=2)
            img.load()
            rgb = pil_to_rgb(img)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"{path}: empty image ({w}x{h})")
    if max_size and max(h, w) > max_size:
        s = max_size / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return rgb


def as_rgb_array(image) -> np.ndarray:
    """Path, PIL image or array (HxW, HxWx1/3/4) -> HxWx3 numpy RGB, dtype kept (PIL via `pil_to_rgb`).

    Alpha is dropped and grayscale repeated to three channels; any other shape, or no pixels, raises ValueError.
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(image, (np.ndarray, torch.Tensor)):  # PIL
        image = pil_to_rgb(image)
    a = np.asarray(image)
    shape = a.shape
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image HxW, HxWx3 or HxWx4, got shape {shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"empty image: shape {shape} has no pixels")
    return a[..., :3] if a.shape[2] >= 3 else np.repeat(a, 3, axis=2)


def to_rgb_float(image) -> np.ndarray:
    """Path, PIL image or numpy (HxW, HxWx3/4; uint8, uint16 or float in [0, 1]) -> HxWx3 float32 RGB in [0, 1].

    A float image with NaN or infinite values raises ValueError with the count of such pixels (one would turn
    the whole prediction into NaN)."""
    a = as_rgb_array(image)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(a.dtype)
    if scale is None:
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=2).sum())
            raise ValueError(f"image has {bad} pixel(s) with NaN or infinite values (of {a.shape[0] * a.shape[1]}, "
                             f"shape {a.shape}); replace them (e.g. np.nan_to_num) before inference")
        return out
    out = a.astype(np.float32)
    out /= scale  # in place: the same values as `a / scale`, without a second fresh array (20x faster at 640x480)
    return out


# ============================================================================ sizing and preprocessing
def network_size(h: int, w: int, input_size: int = 518) -> tuple[int, int]:
    """Official `Resize(keep_aspect_ratio, ensure_multiple_of=14, resize_method='lower_bound')` output (h, w).

    scale = max(input_size / h, input_size / w); each side -> round(scale * side / 14) * 14, or ceil
    when rounding would drop below input_size.
    """
    scale = max(input_size / h, input_size / w)

    def fit(x: float) -> int:
        y = int(np.round(x / PATCH) * PATCH)
        return int(np.ceil(x / PATCH) * PATCH) if y < input_size else y

    return fit(scale * h), fit(scale * w)


def preprocess_batch(rgbs: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """HxWx3 float RGB images in [0, 1] -> (B, 3, h, w) float32: bicubic resize to `size` (cv2.INTER_CUBIC, as
    the official code) and ImageNet normalisation. The one preprocessing of every inference path (both
    backends of `infer_images`, pseudo-labelling). Each image is resized by one cv2 call straight into the
    batch array (stacking images as channels of one call is slower in cv2 and rounds differently); the
    normalisation and the layout change run once over the whole batch."""

    h, w = size
    out = np.empty((len(rgbs), h, w, 3), np.float32)
    for i, rgb in enumerate(rgbs):
        if rgb.dtype == np.float32:
            cv2.resize(rgb, (w, h), dst=out[i], interpolation=cv2.INTER_CUBIC)
        else:
            out[i] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)
    out -= np.asarray(IMAGENET_MEAN, np.float32)
    out /= np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def preprocess(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 float RGB in [0, 1] -> (3, h, w) float32: `preprocess_batch` of one image."""
    return preprocess_batch([rgb], size)[0]


# ============================================================================ inference recipe
def infer_images(run, images: Sequence, input_size: int = 518, *, batch_size: int = 8) -> list[np.ndarray]:
    """The official inference recipe around any network: images -> list of (H_i, W_i) float32 disparities.

    run: (B, 3, h, w) float32 CPU tensor -> (B, h, w) disparity tensor (any device): `DepthAnything.infer_batch`
    passes the PyTorch model, `dalib.export.OnnxDepthAnything` an onnxruntime session. Each image is resized
    keeping its aspect ratio (`network_size`), images of one network size are batched (`preprocess_batch`),
    and each prediction is resized bilinearly back to its image's size (one call per original size).
    """
    rgbs = [to_rgb_float(im) for im in images]
    sizes = [network_size(r.shape[0], r.shape[1], input_size) for r in rgbs]
    results: list[np.ndarray | None] = [None] * len(rgbs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(s, []).append(i)
    for (h, w), members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            disp = run(torch.from_numpy(preprocess_batch([rgbs[i] for i in chunk], (h, w)))).float()
            by_size: dict[tuple[int, int], list[int]] = {}
            for j, i in enumerate(chunk):
                by_size.setdefault(tuple(rgbs[i].shape[:2]), []).append(j)
            for (H, W), js in by_size.items():
                out = F.interpolate(disp[js][:, None], (H, W), mode="bilinear", align_corners=True)[:, 0].cpu()
                for k, j in enumerate(js):
                    results[chunk[j]] = out[k].numpy()
    return results  # type: ignore[return-value]

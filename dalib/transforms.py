"""Joint geometric transforms of an image and its depth / disparity label (notebooks 04 and 06).

Training crops must move image, label and validity mask together: the same resize, the same crop
window, the same flip. The image is resampled bicubic with antialiasing; the label and the mask are
resampled with nearest neighbour, so an invalid pixel (depth 0, sky) never blends into its valid
neighbours and no depth value appears that was not measured.

    from dalib.transforms import JointTransform, row_to_sample, sample_generator
    tf = JointTransform(crop=518)                        # resize (shorter side >= crop), crop, flip p=0.5
    g = sample_generator(seed, source, epoch, index)    # augmentation RNG = pure function of these keys
    out = tf(row_to_sample(ds[i]), g)                   # {"image" (3,518,518) uint8, "target" (518,518)
                                                        #  disparity in [0,1], "mask"}
    x = normalize_image(out["image"].to(device))        # ImageNet-normalised float32, on the device

Because the random numbers come from a generator seeded by (seed, source, epoch, sample index) and not
from a global RNG, the crop of a sample is the same in any DataLoader worker, in any process of a
distributed run, and after a restart: the precondition for an exact resume.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from dalib.disparity import depth_to_disparity, normalize_disparity, valid_depth_mask
from dalib.images import IMAGENET_MEAN, IMAGENET_STD, PATCH, as_rgb_array

TARGET_KINDS = ("auto", "depth", "disparity")


# ----------------------------------------------------------------------------- randomness
def sample_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure, well-mixed function of integer keys (e.g. seed, source, epoch, index)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded by `sample_seed(*keys)`: the only RNG the transforms draw from."""
    return torch.Generator().manual_seed(sample_seed(*keys))


# ----------------------------------------------------------------------------- datasets row -> tensors
def _as_tensor_2d(x: Any, name: str, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(np.asarray(x)).to(dtype)
    if t.dim() != 2:
        raise ValueError(f"column {name!r}: expected an (H, W) array, got shape {tuple(t.shape)}")
    return t


def image_to_uint8(image: Any) -> Tensor:
    """PIL image or array (HxW, HxWx3/4; uint8, or float in [0, 1]) -> (3, H, W) uint8 tensor."""
    try:
        a = as_rgb_array(image)
    except ValueError as e:
        raise ValueError(f"column 'image': {e}") from None
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.rint(a * 255.0), 0, 255)
        a = a.astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def row_to_sample(row: Mapping[str, Any], target: str = "auto") -> dict:
    """One `datasets` row -> {"image" (3,H,W) uint8, "target" (H,W) float32, "mask" (H,W) bool, "kind"}.

    target="depth": metric `depth` (metres, 0/NaN/inf invalid), mask = `mask` column (if any) & valid depth.
    target="disparity": an already-relative `disparity` column (pseudo-labels), mask = `mask` column if
    present, else finite pixels. target="auto": `depth` when the row has one, else `disparity`.
    The conversion to normalised disparity happens after cropping (`finalize_target`).
    """
    if target not in TARGET_KINDS:
        raise ValueError(f"target must be one of {TARGET_KINDS}, got {target!r}")
    if "image" not in row:
        raise KeyError(f"row has no 'image' column (columns: {sorted(row)})")
    if target == "auto":
        target = "depth" if row.get("depth") is not None else "disparity"
    if row.get(target) is None:
        raise KeyError(f"row has no {target!r} column (columns: {sorted(row)}); "
                       "training needs metric 'depth' or a relative 'disparity' label")
    image = image_to_uint8(row["image"])
    t = _as_tensor_2d(row[target], target, torch.float32)
    if tuple(t.shape) != tuple(image.shape[1:]):
        raise ValueError(f"column {target!r} has shape {tuple(t.shape)}, image is {tuple(image.shape[1:])}")
    mask = _as_tensor_2d(row["mask"], "mask", torch.bool) if row.get("mask") is not None else None
    if mask is not None and mask.shape != t.shape:
        raise ValueError(f"column 'mask' has shape {tuple(mask.shape)}, expected {tuple(t.shape)}")
    if target == "depth":
        valid = valid_depth_mask(t, mask)
    else:
        valid = torch.isfinite(t) & (t >= 0)
        if mask is not None:
            valid &= mask
    t = torch.where(valid, t, torch.zeros_like(t))  # no NaN/inf travels through resampling
    return {"image": image, "target": t, "mask": valid, "kind": target}


def finalize_target(target: Tensor, mask: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """Label after cropping -> (normalised disparity (..., H, W) in [0, 1], valid mask).

    depth: d = 1/t on valid pixels (`depth_to_disparity`), then per-image [0, 1] (`normalize_disparity`);
    disparity: per-image [0, 1] directly. Invalid pixels are 0 and False in the mask.
    """
    if kind == "depth":
        disp = depth_to_disparity(target, mask)
        mask = mask & (disp > 0)
    elif kind == "disparity":
        disp = target
    else:
        raise ValueError(f"kind must be 'depth' or 'disparity', got {kind!r}")
    return normalize_disparity(disp, mask), mask


def imagenet_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """ImageNet mean and std as (3, 1, 1) tensors of x's dtype and device (broadcast over (..., 3, H, W))."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize_image(image: Tensor) -> Tensor:
    """(..., 3, H, W) uint8 -> float32 ImageNet-normalised ((x / 255 - mean) / std)."""
    x = image.to(torch.float32) / 255.0
    mean, std = imagenet_stats(x)
    return (x - mean) / std


def denormalize_image(x: Tensor) -> Tensor:
    """Inverse of the normalisation: (..., 3, H, W) ImageNet-normalised -> RGB in [0, 1] (clamped)."""
    mean, std = imagenet_stats(x)
    return (x * std + mean).clamp(0, 1)


# ----------------------------------------------------------------------------- geometry
def resize_shorter_side(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(h, w) scaled by one factor so the shorter side is `shorter` (both sides >= shorter)."""
    s = shorter / min(height, width)
    return max(shorter, round(height * s)), max(shorter, round(width * s))


class JointTransform:
    """Resize keeping aspect (shorter side >= crop), crop crop x crop, horizontal flip.

    crop: output side in pixels, a multiple of 14 (the ViT patch). scale: range of the shorter side
    relative to crop before cropping ((1, 1) = the official "lower bound" resize; (1, 1.5) adds zoom).
    hflip: flip probability. train=False: no randomness (centre crop, no flip), for evaluation.
    Image: bicubic, antialiased. Label and mask: nearest (NEAREST_EXACT), so no value is invented.
    Call with a sample from `row_to_sample` and a generator from `sample_generator`.
    """

    def __init__(self, crop: int, *, scale: tuple[float, float] = (1.0, 1.0), hflip: float = 0.5, train: bool = True):
        if crop <= 0 or crop % PATCH:
            raise ValueError(f"crop must be a positive multiple of {PATCH}, got {crop}")
        if not (1.0 <= scale[0] <= scale[1]):
            raise ValueError(f"scale must satisfy 1 <= min <= max, got {scale}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability, got {hflip}")
        self.crop, self.scale, self.hflip, self.train = int(crop), tuple(scale), float(hflip), train

    def params(self, height: int, width: int, g: torch.Generator | None) -> dict:
        """The random draw for one sample: resized size, crop corner, flip (uses g in a fixed order)."""
        c = self.crop
        u = torch.rand(3, generator=g).tolist() if self.train else [0.0, 0.5, 1.0]
        lo, hi = self.scale
        shorter = math.ceil(c * (lo + (hi - lo) * u[0]))
        h, w = resize_shorter_side(height, width, shorter)
        if self.train:
            top = int(torch.randint(0, h - c + 1, (1,), generator=g))
            left = int(torch.randint(0, w - c + 1, (1,), generator=g))
        else:
            top, left = (h - c) // 2, (w - c) // 2
        return {"size": (h, w), "top": top, "left": left, "flip": u[2] < self.hflip}

    def geometric(self, image: Tensor, target: Tensor, mask: Tensor, p: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Apply one draw to image (3,H,W), target (H,W), mask (H,W) -> the crop x crop versions."""
        img = tv_tensors.Image(image)
        tgt = tv_tensors.Mask(target[None])
        msk = tv_tensors.Mask(mask[None].to(torch.uint8))
        if p["size"] != tuple(image.shape[-2:]):
            img = TF.resize(img, list(p["size"]), interpolation=InterpolationMode.BICUBIC, antialias=True)
            tgt = TF.resize(tgt, list(p["size"]), interpolation=InterpolationMode.NEAREST_EXACT)
            msk = TF.resize(msk, list(p["size"]), interpolation=InterpolationMode.NEAREST_EXACT)
        c = self.crop
        img, tgt, msk = (TF.crop(x, p["top"], p["left"], c, c) for x in (img, tgt, msk))
        if p["flip"]:
            img, tgt, msk = (TF.horizontal_flip(x) for x in (img, tgt, msk))
        return img.as_subclass(Tensor), tgt.as_subclass(Tensor)[0], msk.as_subclass(Tensor)[0].to(torch.bool)

    def __call__(self, sample: dict, g: torch.Generator | None = None) -> dict:
        """sample from `row_to_sample` -> {"image" (3,c,c) uint8, "target" (c,c) disparity in [0,1], "mask" (c,c)
        bool}. The image stays uint8 (a quarter of float32's bytes between DataLoader workers and the loop); the
        loop normalises it on its device (`normalize_image`, `dalib.train.plan.batch_to_device`)."""
        H, W = sample["image"].shape[-2:]
        p = self.params(H, W, g)
        img, tgt, msk = self.geometric(sample["image"], sample["target"], sample["mask"], p)
        tgt, msk = finalize_target(tgt, msk, sample["kind"])
        return {"image": img, "target": tgt, "mask": msk}

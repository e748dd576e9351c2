"""Depth <-> disparity and per-image normalisation (notebook 01_disparity_transform).

Depth Anything predicts *relative inverse depth*: targets are disparity d = 1/t, normalised per
image to [0, 1], with sky / infinite depth at disparity 0. Shapes: depth, disparity and masks are
(B, H, W) (any leading shape works: the last two dims are the image); masks are bool.
"""
from __future__ import annotations

import torch
from torch import Tensor


def valid_depth_mask(depth: Tensor, valid: Tensor | None = None) -> Tensor:
    """Pixels that carry a usable depth: finite and > 0, and True in `valid` when given."""
    ok = torch.isfinite(depth) & (depth > 0)
    if valid is not None:
        if valid.shape != depth.shape:
            raise ValueError(f"valid mask has shape {tuple(valid.shape)}, expected the depth's {tuple(depth.shape)}")
        ok = ok & valid.to(torch.bool)
    return ok


def depth_to_disparity(depth: Tensor, valid: Tensor | None = None) -> Tensor:
    """d = 1 / t on valid pixels, 0 elsewhere (NaN, inf, <= 0, or False in `valid`).

    depth (..., H, W) in any unit; the result is in 1/unit. Notebook 01.
    """
    ok = valid_depth_mask(depth, valid)
    safe = torch.where(ok, depth, torch.ones_like(depth))  # no 1/0 even where masked out
    return torch.where(ok, 1.0 / safe, torch.zeros_like(depth))


def disparity_to_depth(disp: Tensor, valid: Tensor | None = None) -> Tensor:
    """t = 1 / d on valid pixels (finite, > 0), 0 elsewhere. The inverse of `depth_to_disparity`."""
    return depth_to_disparity(disp, valid)


def masked_min_max(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image min and max over valid pixels, shape (..., 1, 1); +inf / -inf for empty images."""
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.where(valid, x, inf).amin(dim=(-2, -1), keepdim=True)
    hi = torch.where(valid, x, -inf).amax(dim=(-2, -1), keepdim=True)
    return lo, hi


def normalize_disparity(disp: Tensor, valid: Tensor) -> Tensor:
    """Per image, affine map of valid pixels to [0, 1]: largest disparity (nearest) -> 1, smallest -> 0.

    d_n = (d - min_V d) / (max_V d - min_V d); invalid pixels are 0; an image whose valid pixels
    are all equal (or that has none) maps to 0 without NaN. Notebook 01.
    """
    valid = valid.to(torch.bool) & torch.isfinite(disp)
    lo, hi = masked_min_max(disp, valid)
    span = hi - lo
    ok = valid & (span > 0)  # span is -inf (empty) or 0 (constant) for images that map to 0
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    safe_lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
    safe_disp = torch.where(valid, disp, torch.zeros_like(disp))
    return torch.where(ok, (safe_disp - safe_lo) / safe_span, torch.zeros_like(disp))

"""DINOv2 position embeddings at another token grid (notebook 04_teacher_training).

The encoder was pre-trained at 518 x 518 pixels (37 x 37 patches); any other input size needs its table of
position embeddings resampled to the new grid, exactly as the official code does (bicubic with a +0.1 offset),
both in eager PyTorch and, for the ONNX export with dynamic height and width (`dalib.export`), in a form that
torch.export traces for any grid size.

    t = tokens + interpolate_pos_encoding(vit.pos_embed, H // PATCH, W // PATCH)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def interpolate_pos_encoding(pos_embed: Tensor, grid_h: int, grid_w: int, offset: float = 0.1) -> Tensor:
    """Resample DINOv2 position embeddings (1, 1+N, C) to a grid_h x grid_w token grid, as the official code.

    Official `DinoVisionTransformer.interpolate_pos_encoding` (interpolate_offset=0.1, no antialias):
    bicubic with scale_factor = ((h0 + 0.1) / sqrt(N), (w0 + 0.1) / sqrt(N)), computed in float32. With
    `scale_factor` the sampling positions are src = (dst + 0.5) / s - 0.5, which differs slightly from
    `size=` (used by timm and transformers), so outputs at non-518 sizes differ by ~1% otherwise.
    At the training grid (square, N tokens) the table is returned unchanged.
    Under torch.export with a symbolic grid (ONNX export with dynamic height and width, `dalib.export`)
    the same resampling runs as `cubic_resample_matrix` products, which trace for any grid size.
    """
    if isinstance(grid_h, torch.SymInt) or isinstance(grid_w, torch.SymInt):
        return interpolate_pos_encoding_traceable(pos_embed, grid_h, grid_w, offset)
    n = pos_embed.shape[1] - 1
    if grid_h * grid_w == n and grid_h == grid_w:
        return pos_embed
    dim = pos_embed.shape[-1]
    sqrt_n = math.sqrt(n)
    side = int(sqrt_n)
    patch = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(
        patch,
        scale_factor=((grid_h + offset) / sqrt_n, (grid_w + offset) / sqrt_n),
        mode="bicubic",
        antialias=False,
    )
    if patch.shape[-2:] != (grid_h, grid_w):  # the +0.1 offset guarantees floor(s * side) == grid
        raise RuntimeError(f"pos-embed interpolation gave {tuple(patch.shape[-2:])}, expected {(grid_h, grid_w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos_embed[:, :1].float(), patch), dim=1).to(pos_embed.dtype)


def cubic_resample_matrix(out_size, in_size: int, scale: float) -> Tensor:
    """(out_size, in_size) float32 weights of PyTorch's bicubic resize with `scale_factor=scale` along one axis.

    As `upsample_bicubic2d` (align_corners=False, A = -0.75, border pixels repeated): output pixel d
    samples src = (d + 0.5) / scale - 0.5 and mixes the inputs floor(src) - 1 .. floor(src) + 2 with the
    cubic-convolution weights of t = src - floor(src). `out_size` may be symbolic (torch.export): only
    tensor arithmetic on `arange(out_size)`, no Python branch on it.
    """
    a = -0.75
    inv = torch.tensor(1.0 / scale, dtype=torch.float32)  # PyTorch: float(1.0 / scale_double)
    src = (torch.arange(out_size, dtype=torch.float32) + 0.5) * inv - 0.5
    base = torch.floor(src)
    t = src - base
    u = 1.0 - t
    weights = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,  # cubic_convolution2(t + 1)
               ((a + 2) * t - (a + 3)) * t * t + 1,                          # cubic_convolution1(t)
               ((a + 2) * u - (a + 3)) * u * u + 1,                          # cubic_convolution1(1 - t)
               ((a * (u + 1) - 5 * a) * (u + 1) + 8 * a) * (u + 1) - 4 * a)  # cubic_convolution2(2 - t)
    cols = torch.arange(in_size, dtype=torch.float32)
    m = torch.zeros(())
    for k, w in enumerate(weights):
        idx = torch.clamp(base + (k - 1), 0, in_size - 1)
        m = m + w[:, None] * (idx[:, None] == cols[None, :]).to(torch.float32)
    return m


def interpolate_pos_encoding_traceable(pos_embed: Tensor, grid_h, grid_w, offset: float = 0.1) -> Tensor:
    """`interpolate_pos_encoding` for symbolic grid sizes (torch.export, ONNX): the bicubic resize as
    M_h @ table @ M_w^T with `cubic_resample_matrix`, the scale factors computed from the grid in the graph,
    and the unchanged table at the square training grid chosen in the graph (identity matrices). Equal to
    the eager function up to float32 rounding (~1e-7; the sums run in another order)."""
    n = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    sqrt_n = math.sqrt(n)
    side = int(sqrt_n)
    rows, cols = torch.arange(grid_h), torch.arange(grid_w)
    same = (rows[-1] == side - 1) & (cols[-1] == side - 1)  # official: h * w == N and h == w
    eye_h = (rows[:, None] == torch.arange(side)[None, :]).to(torch.float32)
    eye_w = (cols[:, None] == torch.arange(side)[None, :]).to(torch.float32)
    m_h = torch.where(same, eye_h, cubic_resample_matrix(grid_h, side, (grid_h + offset) / sqrt_n))
    m_w = torch.where(same, eye_w, cubic_resample_matrix(grid_w, side, (grid_w + offset) / sqrt_n))
    table = pos_embed[0, 1:].float().reshape(side, side, dim)
    patch = torch.einsum("hi,ijc,wj->hwc", m_h, table, m_w).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos_embed[:, :1].float(), patch), dim=1).to(pos_embed.dtype)

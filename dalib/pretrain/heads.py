"""What sits on top of the encoder during pretraining only: DINO's projection head and MAE's light decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from dalib.images import PATCH


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DINOHead(nn.Module):
    """DINO/iBOT projection head (DINOv2 `DINOHead`): tokens (n, C) -> logits (n, K) in [-1, 1].

    logits = <z / |z|, w_k / |w_k|>, z = MLP(x) (3 layers, GELU, to the bottleneck): the cosine between the
    bottleneck feature and K prototypes, each a row of `prototypes` normalised to unit length (weight
    normalisation with its gain fixed at 1, as DINOv2's `norm_last_layer`).
    """

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        self.apply(_init_linear)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


def patchify(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, N, 14*14*3) pixels of each 14-px patch, patches in row-major order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // PATCH) * (w // PATCH), PATCH * PATCH * c)


class MAEDecoder(nn.Module):
    """MAE's light decoder (He et al. 2021): encoder tokens of the visible patches -> pixels of every patch.

    forward(tokens (B, 1+K, C) CLS first, keep (B, K) patch indices, grid (h, w)) -> (B, h*w, 14*14*3):
    embed to `dim`, put the visible tokens at their places among mask tokens, add fixed 2-D sin-cos
    position embeddings, `depth` transformer blocks (timm), LayerNorm, linear to the patch's pixels.
    """

    def __init__(self, enc_dim: int, dim: int = 128, depth: int = 2, heads: int = 4):
        super().__init__()

        self.dim = dim
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, PATCH * PATCH * 3)
        self.apply(_init_linear)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, keep: Tensor, grid: tuple[int, int]) -> Tensor:
        x = self.embed(tokens)
        b, n = x.shape[0], grid[0] * grid[1]
        full = self.mask_token.expand(b, n, self.dim).to(x.dtype)
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.dim), x[:, 1:])
        pos = build_sincos2d_pos_embed(list(grid), self.dim).to(x.dtype)  # (h*w, dim), fixed as MAE's
        x = torch.cat((x[:, :1], full + pos), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]

"""Depth Anything = DINOv2 ViT encoder (timm) + DPT head (notebook 04_teacher_training).

    from dalib.model import DepthAnything
    model = DepthAnything("vits", version="v2")          # random init; see `pretrained_encoder`
    disp = model(x)                                       # x (B,3,H,W) ImageNet-normalised -> (B,H,W)
    disp = model.infer_image("photo.jpg")                 # official preprocessing, numpy (H,W)

The module tree keeps the official Depth-Anything-V2 names (`pretrained.*` for the encoder,
`depth_head.*` for the DPT head), so `state_dict()` keys equal those of the released checkpoints and
`model.load_state_dict(torch.load("depth_anything_v2_vits.pth", weights_only=True))` works strictly.
`from_hf_state_dict` / `to_hf_state_dict` translate to and from `transformers`'
`DepthAnythingForDepthEstimation`. Our own checkpoints are safetensors + JSON (`save_pretrained`).

Sizes are defined once in `CONFIGS`: vitt (a CPU-sized member of this course), vits, vitb, vitl, vitg.
"""
from __future__ import annotations

import functools
import json
import math
import os
import warnings
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalib.distributed import resolve_device  # noqa: F401  (re-exported: dalib.model.resolve_device)
from dalib.images import PATCH, infer_images
from dalib.images import (IMAGENET_MEAN, IMAGENET_STD, as_rgb_array, network_size, preprocess,  # noqa: F401
                          preprocess_batch, to_rgb_float)  # re-exported: they lived here before dalib.images

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "dalib.DepthAnything"


# ============================================================================ sizes
@dataclass(frozen=True)
class ModelConfig:
    """One model size: the DINOv2 encoder and its DPT head (official Depth-Anything-V2 values)."""

    name: str  # short name used everywhere: vitt, vits, vitb, vitl, vitg
    timm_name: str  # timm architecture the encoder is built from (overridden by the fields below)
    embed_dim: int  # token width C of the ViT
    depth: int  # number of transformer blocks
    num_heads: int  # attention heads
    features: int  # DPT fusion width F (scratch.layer*_rn output channels)
    out_channels: tuple[int, int, int, int]  # DPT `projects[i]` output channels
    layers: tuple[int, int, int, int]  # V2: 0-based blocks fed to the head (V1: the last four)
    ffn: str = "mlp"  # "mlp" (GELU MLP) or "swiglu" (vitg)
    img_size: int = 518  # pre-training resolution: pos_embed holds (518/14)^2 = 37x37 patches + CLS
    dinov2_hub: str = ""  # official DINOv2 checkpoint name (dl.fbaipublicfiles.com/dinov2/<name>/<name>_pretrain.pth)

    @property
    def num_patches(self) -> int:
        return (self.img_size // PATCH) ** 2

    def block_indices(self, version: str = "v2") -> tuple[int, ...]:
        """Blocks whose outputs feed the DPT head: V2 the listed ones, V1 the last four."""
        if version == "v2":
            return tuple(self.layers)
        if version == "v1":
            return tuple(range(self.depth - 4, self.depth))
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")


CONFIGS: dict[str, ModelConfig] = {
    # ViT-Ti/14: not released by DINOv2; the course's CPU-sized member (random init or distilled).
    "vitt": ModelConfig("vitt", "vit_small_patch14_dinov2", 192, 12, 3, 32, (24, 48, 96, 192), (2, 5, 8, 11)),
    "vits": ModelConfig("vits", "vit_small_patch14_dinov2", 384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11),
                        dinov2_hub="dinov2_vits14"),
    "vitb": ModelConfig("vitb", "vit_base_patch14_dinov2", 768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11),
                        dinov2_hub="dinov2_vitb14"),
    "vitl": ModelConfig("vitl", "vit_large_patch14_dinov2", 1024, 24, 16, 256, (256, 512, 1024, 1024),
                        (4, 11, 17, 23), dinov2_hub="dinov2_vitl14"),
    "vitg": ModelConfig("vitg", "vit_giant_patch14_dinov2", 1536, 40, 24, 384, (1536, 1536, 1536, 1536),
                        (9, 19, 29, 39), ffn="swiglu", dinov2_hub="dinov2_vitg14"),
}


def get_config(encoder: str | ModelConfig) -> ModelConfig:
    if isinstance(encoder, ModelConfig):
        return encoder
    if encoder not in CONFIGS:
        raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[encoder]


# ============================================================================ encoder helpers
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


def _build_encoder(cfg: ModelConfig) -> nn.Module:
    """timm DINOv2 ViT with the official layout (patch 14, LayerScale init 1.0, 518 pos-embed, no head)."""
    import timm

    kw = dict(pretrained=False, img_size=cfg.img_size, num_classes=0, init_values=1.0,
              embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads)
    vit = timm.create_model(cfg.timm_name, **kw)
    # DINOv2's masked-image-modelling token: unused for depth, kept so official checkpoints load strictly.
    vit.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
    return vit


# ============================================================================ DPT head (official names)
INIT_OUTPUT_BIAS = 1.0  # bias of the head's last conv at random init (relative disparity is shift-free)


class ResidualConvUnit(nn.Module):
    """out = x + conv2(relu(conv1(relu(x)))) (official `ResidualConvUnit`, bn=False)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + x


class FeatureFusionBlock(nn.Module):
    """out = out_conv(up(resConfUnit2(x0 + resConfUnit1(x1)))) (official `FeatureFusionBlock`).

    `up` is bilinear with align_corners=True to `size` (the next skip's size), or x2 when size is None.
    """

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, 1, 0, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x0: Tensor, x1: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        out = x0 if x1 is None else x0 + self.resConfUnit1(x1)
        out = self.resConfUnit2(out)
        if size is None:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(out)


class _Scratch(nn.Module):
    """Container with the official `scratch.*` names: layer{1..4}_rn, refinenet{1..4}, output_conv{1,2}."""

    def __init__(self, out_channels: Sequence[int], features: int):
        super().__init__()
        for i, c in enumerate(out_channels, 1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FeatureFusionBlock(features))
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 1, 1, 1, 0), nn.ReLU()
        )


class DPTHead(nn.Module):
    """DPT decoder (official `DPTHead`, use_clstoken=False, use_bn=False).

    Four token maps (B, N, C) -> `projects[i]` 1x1 conv -> `resize_layers[i]` (x4, x2, x1, x1/2 of the
    token grid) -> `scratch.layer{i}_rn` 3x3 conv to F -> fusion refinenet4 -> 3 -> 2 -> 1 ->
    output_conv1 -> bilinear to (14 ph, 14 pw) -> output_conv2 -> (B, 1, 14 ph, 14 pw), >= 0.
    """

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int]):
        super().__init__()
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, 1, 1, 0) for c in out_channels])
        c = out_channels
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4, padding=0),
            nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2, padding=0),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = _Scratch(out_channels, features)
        # Random init keeps the output alive. The last conv's pre-activation is its bias plus a term ~100x
        # smaller (the features reaching it are ~0.03 at init), so PyTorch's default bias, uniform in
        # +-1/sqrt(32), decides alone whether the final ReLU passes: for half the seeds it is negative and
        # the untrained model outputs 0 at (nearly) every pixel, with zero gradient, and never learns.
        # A positive bias starts every pixel in the ReLU's linear part. Loaded weights replace it.
        nn.init.constant_(self.scratch.output_conv2[2].bias, INIT_OUTPUT_BIAS)

    def forward(self, feats: Sequence[Tensor], ph: int, pw: int) -> Tensor:
        maps = []
        for i, x in enumerate(feats):  # (B, N, C) -> (B, C, ph, pw)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], ph, pw)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(m) for i, m in zip(range(1, 5), maps))
        # refinenet4 has no skip input: its resConfUnit1 exists in the checkpoints but is unused.
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        out = s.output_conv1(p1)
        out = F.interpolate(out, (ph * PATCH, pw * PATCH), mode="bilinear", align_corners=True)
        return s.output_conv2(out)


# ============================================================================ the model
class DepthAnything(nn.Module):
    """Depth Anything V1/V2: DINOv2 encoder `pretrained` + DPT head `depth_head` (notebook 04_teacher_training).

    encoder: a key of `CONFIGS`; version: "v2" (listed intermediate blocks) or "v1" (last four blocks);
    pretrained_encoder: None (random init), a path to DINOv2 weights, or True to take the official /
    timm DINOv2 weights from the local caches (never downloads; see `load_encoder_weights`).
    """

    def __init__(self, encoder: str = "vits", version: str = "v2", pretrained_encoder=None):
        super().__init__()
        self.cfg = get_config(encoder)
        self.encoder = self.cfg.name
        self.version = version
        self.intermediate_layer_idx = self.cfg.block_indices(version)
        self.grad_checkpointing = False  # recompute blocks in backward to save memory (training at 518)
        self.pretrained = _build_encoder(self.cfg)
        self.depth_head = DPTHead(self.cfg.embed_dim, self.cfg.features, self.cfg.out_channels)
        if pretrained_encoder is not None and pretrained_encoder is not False:
            load_encoder_weights(self, pretrained_encoder)

    # ---------------------------------------------------------------- encoder
    def _embed(self, x: Tensor) -> Tensor:
        """(B,3,H,W) -> tokens (B, 1+N, C): patch embedding, CLS token, interpolated position embedding."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B,3,H,W), got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % PATCH or W % PATCH:
            raise ValueError(f"image height and width must be multiples of {PATCH}, got {H}x{W}")
        vit = self.pretrained
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, C), N = (H/14)(W/14)
        t = vit.patch_embed.norm(t)
        cls = vit.cls_token.expand(t.shape[0], -1, -1).to(t.dtype)
        t = torch.cat((cls, t), dim=1)
        return t + interpolate_pos_encoding(vit.pos_embed, H // PATCH, W // PATCH).to(t.dtype)

    def _run_blocks(self, t: Tensor, keep: Iterable[int], upto: int) -> list[Tensor]:
        """Run blocks 0..upto and return the raw outputs of the blocks listed in `keep`."""
        keep = set(keep)
        outs = []
        for i, blk in enumerate(self.pretrained.blocks[: upto + 1]):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                t = torch.utils.checkpoint.checkpoint(blk, t, use_reentrant=False)
            else:
                t = blk(t)
            if i in keep:
                outs.append(t)
        return outs

    def get_intermediate_layers(self, x: Tensor, final: bool = False) -> tuple[list[Tensor], Tensor | None]:
        """Head features: final-LayerNorm'd patch tokens (B, N, C) of `intermediate_layer_idx`, CLS dropped.

        With final=True also the last block's normalised patch tokens (B, N, C) (else None).
        """
        idx = list(self.intermediate_layer_idx)
        last = self.cfg.depth - 1
        keep = idx + [last] if final else idx
        outs = self._run_blocks(self._embed(x), keep, last if final else max(idx))
        norm = self.pretrained.norm
        by_idx = dict(zip(sorted(set(keep)), outs))
        feats = [norm(by_idx[i])[:, 1:] for i in idx]
        tokens = None
        if final:
            tokens = feats[idx.index(last)] if last in idx else norm(by_idx[last])[:, 1:]
        return feats, tokens

    def encode_patch_tokens(self, x: Tensor) -> Tensor:
        """Encoder only: (B,3,H,W) -> final patch tokens (B, N, C) after the final LayerNorm, CLS dropped."""
        last = self.cfg.depth - 1
        (t,) = self._run_blocks(self._embed(x), [last], last)
        return self.pretrained.norm(t)[:, 1:]

    # ---------------------------------------------------------------- full model
    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B,3,H,W) ImageNet-normalised, H, W multiples of 14 -> (B,H,W) relative disparity >= 0.

        return_features=True gives `forward_features`' (disparity, patch tokens) through `forward`, which
        is what DistributedDataParallel wraps (its gradient synchronisation only follows `forward`).
        """
        if return_features:
            return self.forward_features(x)
        feats, _ = self.get_intermediate_layers(x)
        return self._decode(feats, x)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) -> (disparity (B,H,W), final patch tokens (B, N, C)) for the feature-alignment loss."""
        feats, tokens = self.get_intermediate_layers(x, final=True)
        return self._decode(feats, x), tokens

    def _decode(self, feats: list[Tensor], x: Tensor) -> Tensor:
        ph, pw = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        return F.relu(self.depth_head(feats, ph, pw)).squeeze(1)  # official: depth = F.relu(depth)

    # ---------------------------------------------------------------- inference (official preprocessing)
    @torch.no_grad()
    def infer_image(self, image, input_size: int = 518, *, amp: bool = False) -> np.ndarray:
        """One image (path, PIL image, or RGB numpy HxW[x3|4]) -> (H, W) float32 relative disparity.

        As the official `infer_image`: resize keeping aspect ratio (shorter side >= input_size, both
        multiples of 14, bicubic), normalise, predict, resize bilinearly back to the input size.
        amp=True runs under bfloat16 autocast on CUDA.
        """
        return self.infer_batch([image], input_size, batch_size=1, amp=amp)[0]

    @torch.inference_mode()
    def infer_batch(self, images: Sequence, input_size: int = 518, *, batch_size: int = 8,
                    amp: bool = False) -> list[np.ndarray]:
        """Many images -> list of (H_i, W_i) float32 disparities; images of equal network size share a batch
        (`infer_images`; the onnxruntime backend, `dalib.export.OnnxDepthAnything`, runs the same recipe)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        use_amp = amp and device.type == "cuda"

        def run(x: Tensor) -> Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                return self(x.to(device)).float()

        try:
            return infer_images(run, images, input_size, batch_size=batch_size)
        finally:
            self.train(was_training)

    # ---------------------------------------------------------------- our checkpoints
    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write `model.safetensors` (official key names) + `config.json` (encoder, version, extra) atomically."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = d / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": FORMAT})
        os.replace(tmp, d / WEIGHTS_FILE)
        cfg = {"format": FORMAT, "encoder": self.encoder, "version": self.version, "config": asdict(self.cfg)}
        if extra:
            cfg["extra"] = extra
        tmp = d / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2))
        os.replace(tmp, d / CONFIG_FILE)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "DepthAnything":
        """Load a directory written by `save_pretrained` (strict)."""
        d = Path(directory)
        cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing; a dalib checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: not a dalib checkpoint (format={cfg.get('format')!r}, expected {FORMAT!r})")
        enc = cfg["encoder"]
        if enc not in CONFIGS and "config" in cfg:  # a custom size saved with its full description
            c = cfg["config"]
            enc = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
        model = cls(enc, version=cfg.get("version", "v2"))
        _load_strict(model, read_safetensors(w_path), str(w_path))
        return model.to(map_location)


# ============================================================================ weight conversion
def _load_strict(model: nn.Module, sd: dict, source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k}: got {tuple(sd[k].shape)}, expected {tuple(own[k].shape)}"
           for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        msg = [f"{source}: weights do not match DepthAnything({model.encoder!r})"]
        if missing:
            msg.append(f"  missing {len(missing)} keys, e.g. {missing[:5]}")
        if unexpected:
            msg.append(f"  unexpected {len(unexpected)} keys, e.g. {unexpected[:5]}")
        if bad:
            msg.append(f"  shape mismatch: {bad[:5]}")
        raise ValueError("\n".join(msg))
    model.load_state_dict(sd, strict=True)


def _official_to_ours(sd: dict) -> dict:
    """Official names -> module names; identical except the SwiGLU MLP of vitg (w12/w3 -> timm fc1/fc2)."""
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        out[k] = v
    return out


def infer_encoder(sd: dict) -> str:
    """Name of the CONFIGS entry whose encoder width and depth match a state dict (official or HF names)."""
    pos = sd.get("pretrained.pos_embed", sd.get("backbone.embeddings.position_embeddings"))
    if pos is None:
        raise ValueError("cannot infer the encoder size: no 'pretrained.pos_embed' or "
                         "'backbone.embeddings.position_embeddings' in the weights")
    pat = re.compile(r"^(?:pretrained\.blocks|backbone\.encoder\.layer)\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := pat.match(k))), default=-1)
    for name, cfg in CONFIGS.items():
        if cfg.embed_dim == pos.shape[-1] and cfg.depth == depth:
            return name
    raise ValueError(f"no CONFIGS entry has embed_dim={pos.shape[-1]} and depth={depth}")


def from_official_state_dict(sd: dict, encoder: str | None = None, version: str = "v2") -> DepthAnything:
    """Official Depth Anything checkpoint (`torch.load(..., weights_only=True)`) -> DepthAnything, strict."""
    sd = _official_to_ours(sd)
    model = DepthAnything(encoder or infer_encoder(sd), version=version)
    _load_strict(model, sd, "official state dict")
    return model


# transformers' DepthAnythingForDepthEstimation names. HF fusion_stage.layers.{0,1,2,3} = refinenet{4,3,2,1}.
_HEAD_TO_HF = [
    (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]
_BLOCK_TO_HF = {  # official suffix inside blocks.N -> (new HF, legacy HF hub) suffix inside encoder.layer.N
    "norm1": ("norm1", "norm1"),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "ls1.gamma": ("layer_scale1.lambda1", "layer_scale1.lambda1"),
    "norm2": ("norm2", "norm2"),
    "ls2.gamma": ("layer_scale2.lambda1", "layer_scale2.lambda1"),
    "mlp.fc2": ("mlp.fc2", "mlp.fc2"),
}
_EMBED_TO_HF = {
    "pretrained.cls_token": "backbone.embeddings.cls_token",
    "pretrained.mask_token": "backbone.embeddings.mask_token",
    "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
    "pretrained.patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
    "pretrained.patch_embed.proj.bias": "backbone.embeddings.patch_embeddings.projection.bias",
    "pretrained.norm.weight": "backbone.layernorm.weight",
    "pretrained.norm.bias": "backbone.layernorm.bias",
}


def _head_key_to_hf(k: str) -> str:
    m = re.match(r"depth_head\.scratch\.layer(\d)_rn\.(.*)", k)
    if m:
        return f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"
    m = re.match(r"depth_head\.scratch\.refinenet(\d)\.(.*)", k)
    if m:
        rest = m.group(2).replace("out_conv", "projection")
        rest = rest.replace("resConfUnit1", "residual_layer1").replace("resConfUnit2", "residual_layer2")
        rest = rest.replace("conv1", "convolution1").replace("conv2", "convolution2")
        return f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"
    for pat, rep in _HEAD_TO_HF:
        if re.match(pat, k):
            return re.sub(pat, rep, k)
    raise KeyError(f"no transformers name for {k!r}")


def to_hf_state_dict(model: DepthAnything, legacy: bool = False) -> dict[str, Tensor]:
    """Our weights -> `transformers` DepthAnythingForDepthEstimation names.

    legacy=False: the module names of transformers >= 5 (`attention.q_proj`, ...), loadable with
    `hf_model.load_state_dict`. legacy=True: the names in the hub checkpoints and transformers 4
    (`attention.attention.query`, `mlp.weights_in`, ...). qkv is split into query/key/value.
    """
    swiglu = model.cfg.ffn == "swiglu"
    out: dict[str, Tensor] = {}
    which = 1 if legacy else 0
    for k, v in model.state_dict().items():
        if k in _EMBED_TO_HF:
            out[_EMBED_TO_HF[k]] = v
            continue
        m = re.match(r"pretrained\.blocks\.(\d+)\.(.*)\.(weight|bias|gamma)$", k)
        if m:
            n, mod, kind = m.groups()
            pre = f"backbone.encoder.layer.{n}."
            if mod == "attn.qkv":
                names = ("attention.attention.query", "attention.attention.key", "attention.attention.value") \
                    if legacy else ("attention.q_proj", "attention.k_proj", "attention.v_proj")
                for name, part in zip(names, v.chunk(3, dim=0)):  # qkv rows = [q; k; v]
                    out[f"{pre}{name}.{kind}"] = part
            elif mod == "mlp.fc1" and swiglu:
                if legacy:
                    out[f"{pre}mlp.weights_in.{kind}"] = v
                else:  # official SwiGLU: x1, x2 = w12(x).chunk(2); silu(x1) * x2 -> gate = x1, up = x2
                    gate, up = v.chunk(2, dim=0)
                    out[f"{pre}mlp.gate_proj.{kind}"], out[f"{pre}mlp.up_proj.{kind}"] = gate, up
            elif mod == "mlp.fc2" and swiglu:
                out[f"{pre}mlp.{'weights_out' if legacy else 'down_proj'}.{kind}"] = v
            elif mod == "mlp.fc1":
                out[f"{pre}mlp.fc1.{kind}"] = v
            else:
                base = f"{mod}.gamma" if kind == "gamma" else mod
                if base not in _BLOCK_TO_HF:
                    raise KeyError(f"no transformers name for {k!r}")
                hf = _BLOCK_TO_HF[base][which]
                out[pre + hf if kind == "gamma" else f"{pre}{hf}.{kind}"] = v
            continue
        out[_head_key_to_hf(k)] = v
    return out


def _hf_to_official(sd: dict) -> dict:
    """transformers DepthAnything names (new or legacy) -> our module names."""
    sd = dict(sd)
    out: dict[str, Tensor] = {}
    inv_embed = {v: k for k, v in _EMBED_TO_HF.items()}
    inv_block = {}
    for ours, hf in _BLOCK_TO_HF.items():
        for name in hf:
            inv_block[name] = ours
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    glu: dict[tuple[str, str], dict[str, Tensor]] = {}
    for k, v in sd.items():
        if k in inv_embed:
            out[inv_embed[k]] = v
            continue
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.(.*)\.(weight|bias|lambda1)$", k)
        if m:
            n, mod, kind = m.groups()
            pre = f"pretrained.blocks.{n}."
            qm = re.match(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)$", mod)
            if qm:
                part = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}[qm.group(1)]
                qkv.setdefault((n, kind), {})[part] = v
            elif mod in ("mlp.gate_proj", "mlp.up_proj"):
                glu.setdefault((n, kind), {})[mod] = v
            elif mod == "mlp.weights_in":
                out[f"{pre}mlp.fc1.{kind}"] = v
            elif mod in ("mlp.weights_out", "mlp.down_proj"):
                out[f"{pre}mlp.fc2.{kind}"] = v
            elif mod == "mlp.fc1":
                out[f"{pre}mlp.fc1.{kind}"] = v
            elif kind == "lambda1":
                out[pre + inv_block[f"{mod}.lambda1"]] = v
            elif mod in inv_block:
                out[f"{pre}{inv_block[mod]}.{kind}"] = v
            else:
                raise KeyError(f"unknown transformers key {k!r}")
            continue
        out[k] = v  # head keys: translated below
    for (n, kind), parts in qkv.items():
        if set(parts) != {0, 1, 2}:
            raise KeyError(f"layer {n}: attention {kind} needs query, key and value; got parts {sorted(parts)}")
        out[f"pretrained.blocks.{n}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    for (n, kind), parts in glu.items():
        out[f"pretrained.blocks.{n}.mlp.fc1.{kind}"] = torch.cat([parts["mlp.gate_proj"], parts["mlp.up_proj"]], 0)
    return out


def from_hf_state_dict(sd: dict, encoder: str | None = None, version: str = "v2") -> DepthAnything:
    """transformers DepthAnythingForDepthEstimation weights (new or legacy names) -> DepthAnything, strict.

    HF out_indices are 1-based over [embeddings, block 0, ...]: V2-S/B [3,6,9,12] = our blocks [2,5,8,11].
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    enc = encoder or infer_encoder(sd)
    model = DepthAnything(enc, version=version)
    hf_head = {_head_key_to_hf(k): k for k in model.state_dict() if k.startswith("depth_head.")}
    conv = _hf_to_official({k: v for k, v in sd.items() if k.startswith("backbone.")})
    for k, v in sd.items():
        if k.startswith("backbone."):
            continue
        if k not in hf_head:
            raise KeyError(f"unknown transformers key {k!r} for DepthAnything({enc!r})")
        conv[hf_head[k]] = v
    _load_strict(model, conv, "transformers state dict")
    return model


def hf_config(encoder: str, version: str = "v2") -> dict:
    """kwargs for `transformers.DepthAnythingConfig(**hf_config(...))` describing the same network."""
    cfg = get_config(encoder)
    backbone = dict(model_type="dinov2", hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                    num_attention_heads=cfg.num_heads, image_size=cfg.img_size, patch_size=PATCH,
                    layerscale_value=1.0, use_swiglu_ffn=cfg.ffn == "swiglu", mlp_ratio=4,
                    out_indices=[i + 1 for i in cfg.block_indices(version)], reshape_hidden_states=False,
                    apply_layernorm=True)
    return dict(backbone_config=backbone, reassemble_hidden_size=cfg.embed_dim, patch_size=PATCH,
                neck_hidden_sizes=list(cfg.out_channels), fusion_hidden_size=cfg.features,
                reassemble_factors=[4, 2, 1, 0.5], head_hidden_size=32, depth_estimation_type="relative")


# ============================================================================ loading any checkpoint
_WEIGHT_FORMATS = ("expected a safetensors file, or a PyTorch state dict saved with torch.save "
                   "(.pth/.pt/.bin, read with weights_only=True: tensors only, never arbitrary objects)")


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """A .safetensors file -> {name: tensor}; a file that is not one raises ValueError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:  # its message names neither the file nor what a weights file should be
        raise ValueError(f"{path}: not a readable safetensors weights file ({e}); {_WEIGHT_FORMATS}") from None


def _torch_load_weights(path: Path):
    """torch.load(weights_only=True), with an error for files that are not tensors-only checkpoints.

    torch's own error for such a file suggests `weights_only=False`, i.e. running the file's pickled code;
    this message does not, and names the file instead."""
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError,
            IndexError, TypeError, AttributeError) as e:  # text or other bytes trip the unpickler anywhere
        raise ValueError(f"{path}: not a readable weights file: torch.load(weights_only=True) rejected it "
                         f"({type(e).__name__}): it is not a PyTorch checkpoint, or it holds objects other than "
                         f"tensors, which are never unpickled; {_WEIGHT_FORMATS}") from None


def _read_state_dict(path: Path) -> dict:
    """A .safetensors or torch pickle (.pth/.pt/.bin) file -> flat state dict (never unpickles objects)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    sd = _torch_load_weights(path)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return sd


def load_weights(path: str | os.PathLike, encoder: str | None = None, version: str | None = None) -> DepthAnything:
    """Any Depth Anything weights -> DepthAnything. Detects the format from the keys.

    path: a dalib `save_pretrained` directory; an official `.pth`; an HF-format `.safetensors`/`.bin` or
    an HF model directory (config.json + model.safetensors). encoder: checked against the weights
    (inferred when None). version: "v1"/"v2" (HF directories carry it in config.json; default v2).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such weights file or directory")
    hf_out_indices = None
    if p.is_dir():
        cfg_path = p / CONFIG_FILE
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        if cfg.get("format") == FORMAT:
            model = DepthAnything.from_pretrained(p)
            if encoder and encoder != model.encoder:
                raise ValueError(f"{p}: holds a {model.encoder!r} model, but encoder={encoder!r} was asked for")
            return model
        files = [p / n for n in (WEIGHTS_FILE, "pytorch_model.bin") if (p / n).is_file()]
        if not files:
            raise FileNotFoundError(f"{p}: no {CONFIG_FILE} of a dalib checkpoint and no model.safetensors")
        hf_out_indices = (cfg.get("backbone_config") or {}).get("out_indices")
        p = files[0]
    sd = _read_state_dict(p)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    official = any(k.startswith("pretrained.") for k in sd)
    if not official and not any(k.startswith("backbone.") for k in sd):
        raise ValueError(f"{p}: unknown key layout (first keys {list(sd)[:3]}); expected official "
                         "'pretrained.*'/'depth_head.*' or transformers 'backbone.*'/'neck.*'/'head.*'")
    try:
        found = infer_encoder(sd)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if encoder and encoder != found:
        raise ValueError(f"{p}: weights are for {found!r} (embed dim / depth), but encoder={encoder!r} was asked for")
    hf_version = None
    if hf_out_indices:  # 1-based block numbers in the HF config tell V1 (last four) from V2
        for v in ("v2", "v1"):
            if [i + 1 for i in CONFIGS[found].block_indices(v)] == list(hf_out_indices):
                hf_version = v
        if hf_version is None:
            raise ValueError(f"{p.parent}/{CONFIG_FILE}: out_indices {hf_out_indices} match neither V1 nor V2 "
                             f"of {found!r}")
    try:
        if official:
            return from_official_state_dict(sd, found, version or "v2")
        return from_hf_state_dict(sd, found, version or hf_version or "v2")
    except (KeyError, ValueError) as e:
        raise ValueError(f"{p}: {e}") from None


# ============================================================================ DINOv2 encoder weights
def _weights_dir() -> Path:
    return Path(os.environ.get("DALIB_WEIGHTS_DIR", Path.home() / ".cache" / "dalib"))


def find_encoder_weights(encoder) -> Path:
    """Local DINOv2 weights of a size (name or ModelConfig), offline only: $DALIB_WEIGHTS_DIR (default
    ~/.cache/dalib)/`<dinov2_hub>_pretrain.pth`, then the local Hugging Face cache of timm's
    `<timm_name>.lvd142m`. Raises FileNotFoundError saying where to put the file."""
    cfg = get_config(encoder)
    if not cfg.dinov2_hub:
        raise FileNotFoundError(f"no released DINOv2 weights exist for {cfg.name!r}; "
                                "use pretrained_encoder=None (random init) or a file you trained")
    local = _weights_dir() / f"{cfg.dinov2_hub}_pretrain.pth"
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(f"timm/{cfg.timm_name}.lvd142m", "model.safetensors", local_files_only=True))
    except Exception:
        pass
    url = f"https://dl.fbaipublicfiles.com/dinov2/{cfg.dinov2_hub}/{cfg.dinov2_hub}_pretrain.pth"
    raise FileNotFoundError(
        f"DINOv2 weights for {cfg.name!r} not found offline. Download {url} and put it at {local} "
        f"(or set DALIB_WEIGHTS_DIR), pass pretrained_encoder='/path/to/file', or place "
        f"timm/{cfg.timm_name}.lvd142m in the Hugging Face cache.")


def resolve_pretrained_encoder(choice, encoder):
    """`pretrained_encoder` with "auto" resolved: the local DINOv2 file (str) when there is one, else None
    (random init) with a RuntimeWarning; any other value is returned as is. Notebooks 04 and 06."""
    if choice != "auto":
        return choice
    try:
        return str(find_encoder_weights(encoder))
    except FileNotFoundError as e:
        warnings.warn(f"pretrained_encoder='auto': no local DINOv2 weights ({e}); the encoder starts from "
                      "random weights, for which an encoder lr near 1e-4 suits better than 5e-6",
                      RuntimeWarning, stacklevel=2)
        return None


def load_encoder_weights(model: DepthAnything, source=True) -> None:
    """Initialise `model.pretrained` from DINOv2 weights, offline only.

    source: a file (official `dinov2_vits14_pretrain.pth`, a timm `.safetensors`, or a full Depth
    Anything checkpoint whose `pretrained.*` part is used), or True to look in
    $DALIB_WEIGHTS_DIR (default ~/.cache/dalib) for `<dinov2_hub>_pretrain.pth` and then in the local
    Hugging Face cache for `timm/<timm_name>.lvd142m`. Raises FileNotFoundError saying where to put it.
    """
    if source is True or source == "auto":
        path = find_encoder_weights(model.cfg)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: DINOv2 encoder weights not found")
    cfg = model.cfg
    sd = _official_to_ours(_read_state_dict(path))
    if any(k.startswith("pretrained.") for k in sd):
        sd = {k[len("pretrained."):]: v for k, v in sd.items() if k.startswith("pretrained.")}
    own = model.pretrained.state_dict()
    sd.setdefault("mask_token", own["mask_token"])  # timm checkpoints have no mask_token
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(("head", "fc_norm"))}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{path}: not DINOv2 {cfg.name} encoder weights: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {bad[:5]}")
    model.pretrained.load_state_dict(sd, strict=True)


# ============================================================================ preprocessing
def cpu_has_native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, from /proc/cpuinfo)? Without
    it bf16 autocast on the CPU emulates the format and is slower than fp32. `DALIB_CPU_BF16=0/1` overrides
    the detection (e.g. to compare both in `benchmarks/bench_train.py`)."""
    forced = os.environ.get("DALIB_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpuinfo_has_bf16()


@functools.lru_cache(maxsize=1)
def _cpuinfo_has_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no detection, fp32
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def bf16_autocast_supported(device) -> bool:
    """Whether bf16 autocast pays off on `device`: CUDA with bf16 support, or a CPU with native bf16
    (`cpu_has_native_bf16`); False elsewhere (fp32). Training (dalib.train) uses it for TrainConfig.amp."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def export_onnx(model: DepthAnything, path: str | os.PathLike, **kw) -> Path:
    """Write `model` as ONNX (dynamic batch, height, width; metadata; atomic): `dalib.export.export_onnx`."""
    from dalib.export import export_onnx as _export  # lazily: dalib.export builds on this module

    return _export(model, path, **kw)


def count_parameters(encoder: str, version: str = "v2") -> int:
    """Parameter count of DepthAnything(encoder), built on the meta device (no memory, fast)."""
    with torch.device("meta"):
        m = DepthAnything(encoder, version)
    return sum(p.numel() for p in m.parameters())

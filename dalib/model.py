"""Depth Anything = DINOv2 ViT encoder (timm) + DPT head (notebook 04_teacher_training).

    from dalib.model import DepthAnything
    model = DepthAnything("vits", version="v2")          # random init (dalib.weights fills it from checkpoints)
    disp = model(x)                                       # x (B,3,H,W) ImageNet-normalised -> (B,H,W)
    disp = model.infer_image("photo.jpg")                 # official preprocessing, numpy (H,W)

The module tree keeps the official Depth-Anything-V2 names (`pretrained.*` for the encoder,
`depth_head.*` for the DPT head), so `state_dict()` keys equal those of the released checkpoints and
`model.load_state_dict(torch.load("depth_anything_v2_vits.pth", weights_only=True))` works strictly.
Our own checkpoints are safetensors + JSON (`save_pretrained` / `from_pretrained`); official, `transformers`
and DINOv2 weights are converted and loaded by `dalib.weights`, which builds on this module. Images and
preprocessing: `dalib.images`.

Sizes are defined once in `CONFIGS`: vitt (a CPU-sized member of this course), vits, vitb, vitl, vitg.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dalib.images import PATCH, infer_images
from dalib.pos_embed import interpolate_pos_encoding
from dalib.runfiles import give_default_mode, read_json_object

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "dalib.DepthAnything"


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
def _build_encoder(cfg: ModelConfig) -> nn.Module:
    """timm DINOv2 ViT with the official layout (patch 14, LayerScale init 1.0, 518 pos-embed, no head)."""

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

    # The output stage (bilinear upsampling, output_conv2) runs in float32 under bf16 autocast (see `forward`);
    # False runs it in bf16 like the rest, only to reproduce that effect (studies/bf16_precision.py).
    float32_output = True

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
        if not (self.float32_output and torch.is_autocast_enabled(out.device.type)):
            out = F.interpolate(out, (ph * PATCH, pw * PATCH), mode="bilinear", align_corners=True)
            return s.output_conv2(out)
        # Under bf16 autocast the full-resolution output stage still runs in float32. bf16 keeps 8 significant
        # bits, and the output is a small relief on a large offset (the +1 bias), so in bf16 it is a staircase
        # (~1,000 distinct values in an 84 x 84 map instead of ~5,000) and the gradient-matching loss fits the
        # steps: clean AbsRel 0.255 against 0.223 in float32 (studies/bf16_precision.py, README "bf16").
        with torch.autocast(out.device.type, enabled=False):
            out = F.interpolate(out.float(), (ph * PATCH, pw * PATCH), mode="bilinear", align_corners=True)
            return s.output_conv2(out)


# ============================================================================ the model
@contextlib.contextmanager
def evaluating(model):
    """Eval mode inside the block; afterwards each submodule is back in its own mode. Switches only the
    modules in training mode (`model.eval()` / `model.train()` visit every one of the ~3,000 modules: 12 ms of
    a 73 ms `vitt` `infer_image`). Objects without modules (an onnxruntime model) pass through."""
    modules = model.modules() if isinstance(model, nn.Module) else ()
    training = [m for m in modules if m.training]
    for m in training:
        m.training = False
    try:
        yield model
    finally:
        for m in training:
            m.training = True


class DepthAnything(nn.Module):
    """Depth Anything V1/V2: DINOv2 encoder `pretrained` + DPT head `depth_head` (notebook 04_teacher_training).

    encoder: a key of `CONFIGS`; version: "v2" (listed intermediate blocks) or "v1" (last four blocks). Built with
    random weights; `dalib.weights` fills them from DINOv2, official or transformers checkpoints (`build_model`,
    `load_weights`), `from_pretrained` from this library's own checkpoints.
    """

    def __init__(self, encoder: str = "vits", version: str = "v2"):
        super().__init__()
        self.cfg = get_config(encoder)
        self.encoder = self.cfg.name
        self.version = version
        self.intermediate_layer_idx = self.cfg.block_indices(version)
        self.grad_checkpointing = False  # recompute blocks in backward to save memory (training at 518)
        self.pretrained = _build_encoder(self.cfg)
        self.depth_head = DPTHead(self.cfg.embed_dim, self.cfg.features, self.cfg.out_channels)

    # ---------------------------------------------------------------- encoder
    def _embed(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """(B,3,H,W) -> tokens (B, 1+N, C): patch embedding, CLS token, interpolated position embedding.

        masks: optional (B, N) bool; patches marked True are replaced by `pretrained.mask_token` before the
        position embedding is added (DINOv2's masked-token input, used by `dalib.pretrain`)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B,3,H,W), got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % PATCH or W % PATCH:
            raise ValueError(f"image height and width must be multiples of {PATCH}, got {H}x{W}")
        vit = self.pretrained
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, C), N = (H/14)(W/14)
        t = vit.patch_embed.norm(t)
        if masks is not None:
            t = torch.where(masks.unsqueeze(-1), vit.mask_token.to(t.dtype).unsqueeze(0), t)
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

    def encode_tokens(self, x: Tensor, masks: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        """Encoder only: (B,3,H,W) -> final-LayerNorm'd tokens (B, 1+N, C), CLS first (`dalib.pretrain`).

        masks: optional (B, N) bool, patches replaced by the mask token (iBOT); keep: optional (B, K) long,
        indices of the only patches that enter the blocks (MAE), giving (B, 1+K, C)."""
        t = self._embed(x, masks)
        if keep is not None:
            idx = keep.unsqueeze(-1).expand(-1, -1, t.shape[-1])
            t = torch.cat((t[:, :1], torch.gather(t[:, 1:], 1, idx)), dim=1)
        last = self.cfg.depth - 1
        (t,) = self._run_blocks(t, [last], last)
        return self.pretrained.norm(t)

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
        device = next(self.parameters()).device
        use_amp = amp and device.type == "cuda"

        def run(x: Tensor) -> Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                return self(x.to(device)).float()

        with evaluating(self):
            return infer_images(run, images, input_size, batch_size=batch_size)

    # ---------------------------------------------------------------- our checkpoints
    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write `model.safetensors` (official key names) + `config.json` (encoder, version, extra) atomically."""

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = d / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
        give_default_mode(tmp)  # safetensors writes 0o600; the config beside it gets the usual mode
        os.replace(tmp, d / WEIGHTS_FILE)
        cfg = {"format": CHECKPOINT_FORMAT, "encoder": self.encoder, "version": self.version, "config": asdict(self.cfg)}
        if extra:
            cfg["extra"] = extra
        tmp = d / (MODEL_CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2))
        os.replace(tmp, d / MODEL_CONFIG_FILE)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "DepthAnything":
        """Load a directory written by `save_pretrained` (strict)."""
        d = Path(directory)
        cfg_path, w_path = d / MODEL_CONFIG_FILE, d / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing; a dalib checkpoint directory holds {MODEL_CONFIG_FILE} and {WEIGHTS_FILE}")
        cfg = read_json_object(cfg_path)
        if cfg.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{cfg_path}: not a dalib checkpoint (format={cfg.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        enc = cfg["encoder"]
        if enc not in CONFIGS and "config" in cfg:  # a custom size saved with its full description
            c = cfg["config"]
            enc = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
        model = cls(enc, version=cfg.get("version", "v2"))
        load_state_dict_strict(model, read_safetensors(w_path), str(w_path))
        return model.to(map_location)


# ============================================================================ reading weights
WEIGHT_FORMATS = ("expected a safetensors file, or a PyTorch state dict saved with torch.save "
                  "(.pth/.pt/.bin, read with weights_only=True: tensors only, never arbitrary objects)")


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """A .safetensors file -> {name: tensor}; a file that is not one raises ValueError naming it."""

    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:  # its message names neither the file nor what a weights file should be
        raise ValueError(f"{path}: not a readable safetensors weights file ({e}); {WEIGHT_FORMATS}") from None


def load_state_dict_strict(model: nn.Module, sd: dict, source: str) -> None:
    """`model.load_state_dict(sd, strict=True)` with a ValueError naming `source` and the keys that differ."""
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


def count_parameters(encoder: str, version: str = "v2") -> int:
    """Parameter count of DepthAnything(encoder), built on the meta device (no memory, fast)."""
    with torch.device("meta"):
        m = DepthAnything(encoder, version)
    return sum(p.numel() for p in m.parameters())

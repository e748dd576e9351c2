"""What a pretraining run depends on: `PretrainConfig` (a comment per field), its checks, and configs from
mappings (the command line, a run's config.json)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from dalib.images import PATCH
from dalib.model import CONFIGS

OBJECTIVES = ("dino", "mae")
CENTERINGS = ("sinkhorn", "center")
MASK_SHAPES = ("block", "random")


@dataclass
class PretrainConfig:
    """Everything a self-supervised pretraining run of the encoder depends on; written into out_dir/config.json.

    Fractions of the run (`warmup`, `teacher_temp_warmup`, `freeze_last_layer`, `colour_warmup`) are of `steps`.
    """

    # ---- objective
    objective: str = "dino"  # "dino" (DINOv2: DINO on CLS + iBOT on masked patches + KoLeo) or "mae" (the control)
    encoder: str = "vitt"  # key of dalib.model.CONFIGS; the encoder is DepthAnything(encoder).pretrained
    # ---- data (no labels are read)
    sources: list = field(default_factory=lambda: ["synth-indoor:pretrain", "synth-outdoor:pretrain",
                                                   "synth-photo:pretrain", "skimage-photos:train"])  # NAME:SPLIT
    source_n: list = field(default_factory=lambda: [0])  # images used per source (0: the whole split); one or one each
    image_size: int = 128  # render size of generator sources; other images are resized to this shorter side
    data_root: str | None = None  # dataset cache (None: $DALIB_DATA or <repo>/data)
    # ---- views (multi-crop; sizes are multiples of the 14 px patch)
    global_crop: int = 84  # side of the 2 global crops, px (downstream trains on 84 px crops of 128 px renders)
    local_crop: int = 42  # side of the local crops, px (3 x 3 patches)
    n_local: int = 6  # local crops per image, seen by the student only (DINOv2: 8)
    global_scale: tuple = (0.32, 1.0)  # area fraction of the image a global crop covers (DINOv2: 0.32-1)
    local_scale: tuple = (0.05, 0.32)  # area fraction of a local crop (DINOv2: 0.05-0.32)
    # colour changes are milder than DINOv2's and ramped in (`views.colour_level`): at DINOv2's strength from the
    # first step, and with the teacher temperature warming to 0.07, vitt's DINO loss stayed at ln K (uniform teacher)
    jitter: tuple = (0.2, 0.2, 0.1, 0.0)  # ColorJitter brightness, contrast, saturation, hue (DINOv2: .4, .4, .2, .1)
    jitter_p: float = 0.8  # probability of colour jitter per view
    gray_p: float = 0.1  # probability of grayscale per view (DINOv2: 0.2)
    blur_sigma: tuple = (0.1, 1.0)  # Gaussian blur sigma range, px (DINOv2's 0.1-2 at 224 px, scaled to 84 px)
    blur_p: tuple = (1.0, 0.1, 0.5)  # blur probability: global crop 1, global crop 2, local crops (DINOv2)
    solarize_p: float = 0.1  # solarisation probability of global crop 2 (DINOv2: 0.2)
    colour_warmup: float = 0.2  # fraction of the steps over which the jitter/grey/solarise odds rise from 0
    # ---- DINO head and losses
    head_hidden: int = 1024  # hidden width of the 3-layer MLP head (DINOv2: 2048 for ViT-S and up; vitt is 192 wide)
    head_bottleneck: int = 256  # bottleneck width before the prototypes (DINOv2: 256)
    prototypes: int = 1024  # weight-normalised prototypes K; K / (2 batch_size) = 32 as DINOv2 (65,536 / 2,048)
    student_temp: float = 0.1  # student softmax temperature
    teacher_temp: tuple = (0.04, 0.04)  # teacher temperature, linear from the first to the second (DINOv2: 0.04-0.07)
    teacher_temp_warmup: float = 0.3  # fraction of the steps the teacher temperature warms up over (DINOv2: 30%)
    centering: str = "sinkhorn"  # teacher targets: "sinkhorn" (Sinkhorn-Knopp, 3 iterations) or "center" (EMA centre)
    center_momentum: float = 0.9  # EMA momentum of the centre for centering="center"
    dino_weight: float = 1.0  # weight of the DINO loss on CLS tokens
    ibot_weight: float = 1.0  # weight of the iBOT loss on masked patch tokens (0: off)
    mask_prob: float = 0.5  # fraction of global crops whose patches are masked for the student
    mask_ratio: tuple = (0.1, 0.5)  # fraction of patches masked in a masked crop, uniform in this range
    mask_shape: str = "block"  # "block" (rectangles, as BEiT/DINOv2) or "random" patches
    koleo_weight: float = 0.1  # weight of the KoLeo regulariser on the student's CLS features (0: off)
    momentum: tuple = (0.99, 1.0)  # EMA teacher momentum, cosine from the first to the second (DINOv2: 0.992)
    freeze_last_layer: float = 0.01  # fraction of the steps the prototypes stay frozen (DINOv2: the first epoch)
    # ---- MAE (objective="mae")
    mae_mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
    decoder_dim: int = 128  # width of the light decoder
    decoder_depth: int = 2  # transformer blocks of the decoder
    decoder_heads: int = 4  # attention heads of the decoder
    # ---- optimisation (AdamW)
    batch_size: int = 16  # images per step (each gives 2 global + n_local views)
    steps: int = 1000  # optimiser steps; the schedules span them
    lr: float = 1e-3  # peak learning rate, reached after `warmup`
    min_lr: float = 1e-6  # final learning rate of the cosine decay
    warmup: float = 0.1  # fraction of the steps of linear lr warm-up
    weight_decay: tuple = (0.04, 0.4)  # weight decay, cosine from the first to the second value (DINOv2)
    layer_decay: float = 0.9  # layer-wise lr decay: block i gets lr * decay^(depth - i), patch embed decay^(depth+1)
    patch_embed_lr_mult: float = 0.2  # extra lr factor of the patch embedding (DINOv2: 0.2)
    grad_clip: float = 3.0  # max global gradient norm of the student (0: no clipping)
    betas: tuple = (0.9, 0.999)  # AdamW betas
    # ---- run
    seed: int = 0  # seeds initialisation, data order, views and masks
    threads: int = 1  # torch intra-op threads (0: torch's default)
    log_every: int = 10  # JSON line in pretrain_log.jsonl every N steps (and at the end)
    checkpoint_every: int = 100  # checkpoint every N steps (and at the end and at stop_at; 0: only then)
    keep_checkpoints: int = 2  # checkpoints kept on disk
    stop_at: int = 0  # stop (with a checkpoint) after this step without finishing; a later run resumes (0: off)
    resume: bool = True  # continue from out_dir/checkpoints/latest.json when there is one
    out_dir: str = "runs/pretrain"  # run folder: config.json, pretrain_log.jsonl, checkpoints/

    def source_list(self) -> list[tuple[str, str, int]]:
        """[(name, split, n)] of `sources`, `source_n` broadcast (n = 0: the whole split)."""
        ns = list(self.source_n) if isinstance(self.source_n, (list, tuple)) else [self.source_n]
        if len(ns) == 1:
            ns = ns * len(self.sources)
        if len(ns) != len(self.sources):
            raise ValueError(f"PretrainConfig.source_n has {len(ns)} entries, expected 1 or {len(self.sources)}")
        out = []
        for s, n in zip(self.sources, ns):
            name, _, split = str(s).partition(":")
            if not name or not split:
                raise ValueError(f"PretrainConfig.sources entry {s!r}: expected NAME:SPLIT, e.g. synth-indoor:pretrain")
            out.append((name, split, int(n)))
        return out

    def validate(self) -> None:
        """Raise ValueError naming the field for settings a run cannot use."""

        _choice("objective", self.objective, OBJECTIVES)
        _choice("centering", self.centering, CENTERINGS)
        _choice("mask_shape", self.mask_shape, MASK_SHAPES)
        _choice("encoder", self.encoder, tuple(CONFIGS))
        for name in ("global_crop", "local_crop"):
            v = getattr(self, name)
            if v <= 0 or v % PATCH:
                raise ValueError(f"PretrainConfig.{name}={v}; expected a positive multiple of {PATCH}")
        for name in ("batch_size", "steps", "prototypes", "head_hidden", "head_bottleneck", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name}={getattr(self, name)}; expected >= 1")
        if self.batch_size < 2:
            raise ValueError("PretrainConfig.batch_size must be >= 2 (KoLeo and Sinkhorn-Knopp work across a batch)")
        for name in ("lr", "student_temp"):
            _positive(name, getattr(self, name))
        for name in ("jitter_p", "gray_p", "solarize_p", "mask_prob", "warmup", "teacher_temp_warmup",
                     "freeze_last_layer", "layer_decay", "center_momentum", "colour_warmup"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ValueError(f"PretrainConfig.{name}={v!r}; expected a number in [0, 1]")
        if not 0 < self.mae_mask_ratio < 1:
            raise ValueError(f"PretrainConfig.mae_mask_ratio={self.mae_mask_ratio}; expected in (0, 1)")
        for name in ("global_scale", "local_scale", "mask_ratio", "teacher_temp", "momentum", "weight_decay"):
            v = getattr(self, name)
            if len(v) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v) or v[0] > v[1]:
                raise ValueError(f"PretrainConfig.{name}={v!r}; expected two finite numbers (low, high)")
        if self.stop_at < 0 or self.log_every < 1 or self.checkpoint_every < 0:
            raise ValueError("PretrainConfig: stop_at and checkpoint_every must be >= 0, log_every >= 1")
        self.source_list()

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"PretrainConfig.{name}={value!r}; expected one of {list(allowed)}")


def _positive(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"PretrainConfig.{name}={value!r}; expected a finite number > 0")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


# fields whose values change what a run computes: a resumed run must have the same ones
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(PretrainConfig)
                   if f.name not in ("threads", "log_every", "checkpoint_every", "keep_checkpoints", "stop_at",
                                     "resume", "out_dir", "data_root"))


def config_from_mapping(values: dict, where: str) -> PretrainConfig:
    """PretrainConfig from {field: value} (flags, config.json); unknown fields are a ValueError naming `where`;
    lists become tuples where the field's default is a tuple."""
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown PretrainConfig fields {unknown}; known: {sorted(fields)}")
    out = {}
    for k, v in values.items():
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else None
        out[k] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return PretrainConfig(**out)

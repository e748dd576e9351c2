"""What a training run depends on: `TrainConfig` (a comment per field), its checks, the split of a batch
over sources and processes (`per_batch`), and configs from YAML files or mappings (notebooks 04 and 06)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dalib.images import PATCH
from dalib.model import CONFIGS
from dalib.runfiles import read_yaml

FLOAT32_MAX = float(np.finfo(np.float32).max)  # parameters and learning rates live in float32
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}

@dataclass
class TrainConfig:
    """Everything a training run depends on; written resolved into `out_dir/config.json`.

    Per-source fields (splits, ratios, targets, trims, loss_weights) hold one value per entry of
    `datasets`, or a single value used for all of them.
    """

    # ---- model
    encoder: str = "vitt"  # key of dalib.model.CONFIGS: vitt (CPU-sized), vits, vitb, vitl, vitg
    version: str = "v2"  # "v2": DPT fed by intermediate blocks; "v1": by the last four blocks
    pretrained_encoder: str | None = None  # None: random init; a DINOv2 weights file; "auto": local caches
    grad_checkpointing: bool = False  # recompute ViT blocks in backward (saves memory at 518 px)
    # ---- data
    datasets: list = field(default_factory=lambda: ["synth-indoor"])  # dalib.data names, saved-dataset folders, or datasets.Dataset objects
    splits: list = field(default_factory=lambda: ["train"])  # split per dataset (names only)
    ratios: list = field(default_factory=lambda: [1])  # images per batch in proportion, e.g. [1, 2] = labelled:unlabelled 1:2
    targets: list = field(default_factory=lambda: ["auto"])  # "depth" (metric, -> 1/depth), "disparity" (relative, pseudo-labels), "auto"
    data_root: str | None = None  # root for dalib.data.serve.load (None: $DALIB_DATA or <repo>/data)
    data_n: int | None = None  # use only the first n rows of each named dataset (None: all)
    crop: int = 518  # training crop side in pixels, a multiple of 14 (official: 518)
    scale: tuple = (1.0, 1.0)  # shorter side before cropping, relative to crop (1, 1) = official resize
    hflip: float = 0.5  # horizontal flip probability
    # ---- optimisation
    batch_size: int = 8  # global batch (all ranks together; V2 teacher 64, students 192)
    steps: int = 1000  # optimiser steps (V2 teacher 160K, students 480K)
    lr_encoder: float = 5e-6  # encoder lr (V2: 5e-6 at full scale, pretrained; use ~1e-4 from scratch on CPU)
    decoder_lr_mult: float = 10.0  # decoder lr = lr_encoder * this (official: 10x)
    warmup_steps: int = 0  # linear warmup over this many steps (0: none, as official fine-tuning; from scratch ~5%)
    poly_power: float = 0.9  # after warmup lr *= (1 - t)^power, t from 0 to 1 over the remaining steps
    weight_decay: float = 0.01  # AdamW decoupled weight decay (official fine-tuning: 0.01)
    betas: tuple = (0.9, 0.999)  # AdamW betas
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    # ---- loss
    align: str = "median"  # "median" (V1 Eq. 3, median/MAD) or "lstsq" (MiDaS least squares, squared error)
    gm_weight: float = 2.0  # weight of gradient matching (V2: L = ssi + 2 gm)
    gm_ramp_steps: int = 0  # gm weight grows linearly from 0 to gm_weight over these steps (0: full from the start, as V2)
    gm_scales: int = 4  # gradient-matching scales (strides 1, 2, 4, 8)
    trims: list = field(default_factory=lambda: [0.0])  # per source: drop the largest-loss fraction of pixels (0.1 for pseudo-labels)
    loss_weights: list = field(default_factory=lambda: [1.0])  # per source: weight of its loss in the total
    reduction: str = "image"  # loss reduction: "image" (mean over images; exact under DDP) or "batch" (over pixels)
    # ---- run
    seed: int = 0  # seeds model init, data order and augmentation
    device: str = "auto"  # "auto" (cuda:LOCAL_RANK if available, else cpu), "cpu", "cuda", "cuda:1"
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs repeat exactly without it)
    threads: int = 0  # torch intra-op threads per process (0: torch's default)
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    prefetch: int = 2  # batches prefetched per worker
    checkpoint_every: int = 500  # save a checkpoint every N steps (and always at the end; 0: only at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk (older ones deleted)
    log_every: int = 10  # write a JSON line to train_log.jsonl every N steps (and at the end)
    resume: bool = True  # continue from out_dir/checkpoints/latest.json when it exists
    progress: bool = True  # show a tqdm bar (rank 0)
    out_dir: str = "runs/train"  # run folder: config.json, train_log.jsonl, checkpoints/

    def sources(self) -> list[dict]:
        """Per-source settings with single values broadcast: [{dataset, split, ratio, target, trim, weight}]."""
        n = len(self.datasets)
        if n == 0:
            raise ValueError("TrainConfig.datasets is empty; give at least one dataset")

        def per(name: str) -> list:
            v = getattr(self, name)
            v = list(v) if isinstance(v, (list, tuple)) else [v]
            if len(v) == 1:
                return v * n
            if len(v) != n:
                raise ValueError(f"TrainConfig.{name} has {len(v)} entries, expected 1 or one per dataset ({n})")
            return v

        return [dict(dataset=d, split=s, ratio=int(r), target=t, trim=float(tr), weight=float(w))
                for d, s, r, t, tr, w in zip(self.datasets, per("splits"), per("ratios"), per("targets"),
                                             per("trims"), per("loss_weights"))]

    def validate(self, world_size: int = 1) -> None:
        """Raise ValueError naming the field for settings the loop cannot run with."""

        if self.encoder not in CONFIGS:
            raise ValueError(f"TrainConfig.encoder={self.encoder!r}; expected one of {sorted(CONFIGS)}")
        if self.version not in ("v1", "v2"):
            raise ValueError(f"TrainConfig.version={self.version!r}; expected 'v1' or 'v2'")
        if self.crop <= 0 or self.crop % PATCH:
            raise ValueError(f"TrainConfig.crop={self.crop}; expected a positive multiple of {PATCH}")
        for name in ("batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}; expected >= 1")
        positive = ("lr_encoder", "decoder_lr_mult")
        non_negative = ("poly_power", "weight_decay", "grad_clip", "gm_weight")
        for name in positive + non_negative:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if name in positive else v >= 0)
            if not ok:
                raise ValueError(f"TrainConfig.{name}={v!r}; expected a finite number {'> 0' if name in positive else '>= 0'}")
        self._check_types()
        if self.lr_encoder * self.decoder_lr_mult > FLOAT32_MAX:
            raise ValueError(f"TrainConfig.lr_encoder * decoder_lr_mult = {self.lr_encoder * self.decoder_lr_mult:g} "
                             f"overflows float32 (max {FLOAT32_MAX:.4g})")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas={self.betas!r}; expected two numbers in [0, 1)")
        if self.align not in ("median", "lstsq"):
            raise ValueError(f"TrainConfig.align={self.align!r}; expected 'median' or 'lstsq'")
        if self.reduction not in ("image", "batch"):
            raise ValueError(f"TrainConfig.reduction={self.reduction!r}; expected 'image' or 'batch'")
        if self.gm_ramp_steps < 0:
            raise ValueError(f"TrainConfig.gm_ramp_steps={self.gm_ramp_steps}; expected >= 0")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps}; expected 0 <= warmup_steps < steps={self.steps}")
        if self.batch_size % world_size:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size} is not divisible by the {world_size} processes")
        for s in self.sources():
            if s["ratio"] < 1:
                raise ValueError(f"TrainConfig.ratios: {s['ratio']} for {describe_source(s['dataset'])}; expected >= 1")
            if not 0 <= s["trim"] < 1:
                raise ValueError(f"TrainConfig.trims: {s['trim']} for {describe_source(s['dataset'])}; expected in [0, 1)")
            if not (math.isfinite(s["weight"]) and s["weight"] >= 0):
                raise ValueError(f"TrainConfig.loss_weights: {s['weight']} for {describe_source(s['dataset'])}; expected a finite number >= 0")
            if s["target"] not in ("auto", "depth", "disparity"):
                raise ValueError(f"TrainConfig.targets: {s['target']!r}; expected 'auto', 'depth' or 'disparity'")
        per_batch(self, world_size)

    def _check_types(self) -> None:
        """Booleans are True/False (a string such as "treu" is not); numbers of float fields fit in float32."""
        for f in dataclasses.fields(self):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = getattr(self, f.name)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"TrainConfig.{f.name}={value!r}; expected true or false")
            elif isinstance(default, float) or (isinstance(default, (list, tuple)) and default
                                                and isinstance(default[0], float)):
                for v in value if isinstance(value, (list, tuple)) else [value]:
                    if isinstance(v, (int, float)) and math.isfinite(v) and abs(v) > FLOAT32_MAX:
                        raise ValueError(f"TrainConfig.{f.name}={value!r}; {v:g} overflows float32 "
                                         f"(max {FLOAT32_MAX:.4g})")

    def to_dict(self) -> dict:
        """JSON-able view: dataset objects are replaced by a description."""
        d = dataclasses.asdict(self) if all(isinstance(x, (str, os.PathLike)) for x in self.datasets) else {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["datasets"] = [describe_source(x) for x in self.datasets]
        return json.loads(json.dumps(d, default=str))


def per_batch(cfg: TrainConfig, world_size: int = 1) -> list[int]:
    """Images per global batch from each source: batch_size split by `ratios` (exact, divisible by ranks)."""
    src = cfg.sources()
    total = sum(s["ratio"] for s in src)
    counts = []
    for s in src:
        k, rem = divmod(cfg.batch_size * s["ratio"], total)
        if rem or k == 0:
            raise ValueError(f"TrainConfig.batch_size={cfg.batch_size} cannot be split by ratios "
                             f"{[x['ratio'] for x in src]} into whole, non-zero counts per source")
        if k % world_size:
            raise ValueError(f"{describe_source(s['dataset'])} gets {k} images per batch, not divisible by "
                             f"{world_size} processes; change TrainConfig.batch_size or ratios")
        counts.append(k)
    return counts


def describe_source(d: Any) -> str:
    """A TrainConfig.datasets entry for messages and config.json: its name or path, or rows and columns."""
    if isinstance(d, (str, os.PathLike)):
        return str(d)
    return f"<{type(d).__name__} rows={len(d)} columns={getattr(d, 'column_names', '?')}>"


def read_config_file(path) -> dict:
    """A YAML (or JSON) mapping from `path`; FileNotFoundError or ValueError naming the file when it is missing,
    does not parse or is not a mapping."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    loaded = read_yaml(path) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got a YAML {type(loaded).__name__}")
    return loaded


def config_from_mapping(values: dict, where: str) -> TrainConfig:
    """TrainConfig from a {field: value} mapping (a YAML file, flags); unknown fields are a ValueError
    naming `where`; a single value of a per-source field becomes a one-entry list."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown TrainConfig fields {unknown}; known: {sorted(fields)}")
    values = dict(values)
    for name in ("datasets", "splits", "ratios", "targets", "trims", "loss_weights"):
        if name in values and not isinstance(values[name], (list, tuple)):
            values[name] = [values[name]]
    return TrainConfig(**values)


# the parameters of a training chapter (notebooks 04 and 06) that are TrainConfig fields of the same name
CHAPTER_FIELDS = ("encoder", "grad_checkpointing", "crop", "batch_size", "steps", "lr_encoder", "decoder_lr_mult",
                  "warmup_steps", "gm_ramp_steps", "align", "seed", "num_workers", "log_every", "checkpoint_every")


def chapter_config(parameters: dict, **fields) -> TrainConfig:
    """The TrainConfig of a chapter's training run (notebooks 04 and 06): from the chapter's `parameters` cell the
    values of CHAPTER_FIELDS and `num_threads` (as `threads`), no progress bar, resume on; then `fields` (datasets,
    out_dir, the resolved pretrained_encoder, per-source settings). Both chapters build every model this way."""
    values = {name: parameters[name] for name in CHAPTER_FIELDS if name in parameters}
    values.update(threads=parameters.get("num_threads", 0), progress=False, resume=True)
    values.update(fields)
    return TrainConfig(**values)

"""One training loop for the Depth Anything teacher and student (notebooks 04_teacher_training, 06_student_training).

    python -m dalib.train --config configs/train.yaml                       # a YAML of TrainConfig fields
    python -m dalib.train --datasets synth-indoor --crop 112 --steps 200 --out-dir runs/t
    torchrun --nproc_per_node 2 -m dalib.train --datasets synth-indoor ...  # DDP (NCCL on GPUs, gloo on CPU)
    >>> from dalib.train import TrainConfig, train
    >>> result = train(TrainConfig(datasets=[my_hf_dataset], crop=70, steps=6))

What one step does (V2 recipe, REFERENCE "Training recipe"):
    batch   B images mixed from the sources by `ratios` (V1 student: labelled:unlabelled = 1:2), each
            resized keeping aspect, randomly cropped to crop x crop (a multiple of 14) and flipped; targets
            are normalised disparity (metric depth -> 1/depth -> per-image [0, 1]; pseudo-labels as is)
    loss    per source i:  L_i = ssi(pred, d; align, trim_i) + gm_weight * gm(pred, d)   (V2: 1:2)
            total = sum_i loss_weight_i * L_i  (+ extra terms from hooks, e.g. feature alignment)
    update  AdamW, encoder lr and a 10x decoder lr, linear warmup then poly decay (1 - t)^0.9,
            gradient clipping, bf16 autocast on CUDA and on CPUs with native bf16 (fp32 elsewhere);
            a non-finite loss or gradient stops the run (FloatingPointError), the last checkpoint intact

Exact resume: the data of step s is a pure function of (seed, s): each source walks through its own
seeded permutation of rows, and each sample's crop/flip comes from a generator seeded by (seed,
source, epoch, row). A checkpoint therefore needs only the model, optimiser, scheduler, RNG states
and the step. Checkpoints are folders `out_dir/checkpoints/step-XXXXXXXX/` (model.safetensors +
config.json from `save_pretrained`, train_state.pt), built under a temporary name and renamed into
place, then published in `checkpoints/latest.json`: a kill at any moment leaves the last published
checkpoint intact, and re-running the same command continues from it.

Distributed runs: the global batch is split evenly across ranks, every source's share too, so rank r
sees images r*B/W .. of the same global batch a single process would see. Loss reduction: with
reduction="image" both terms are means over images (SSI: of each image's mean residual; gradient
matching: of each image's sum over scales of S_k / C_k), so the average of the ranks' losses (what DDP's
gradient averaging computes) equals the single-process loss of the global batch, holes and sky included.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from dalib.distributed import dist_env, report_result, resolve_device, run_torchrun
from dalib.runfiles import atomic_write_bytes, atomic_write_json, environment_info
from dalib.transforms import JointTransform, row_to_sample, sample_generator

STATE_FILE = "train_state.pt"
LATEST_FILE = "latest.json"
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"  # train()'s return value, written by rank 0 when a run ends
STATE_FORMAT = 1


# ============================================================================ configuration
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
    data_root: str | None = None  # root for dalib.data.load (None: $DALIB_DATA or <repo>/data)
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
        from dalib.model import CONFIGS, PATCH

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
                raise ValueError(f"TrainConfig.ratios: {s['ratio']} for {_describe(s['dataset'])}; expected >= 1")
            if not 0 <= s["trim"] < 1:
                raise ValueError(f"TrainConfig.trims: {s['trim']} for {_describe(s['dataset'])}; expected in [0, 1)")
            if not (math.isfinite(s["weight"]) and s["weight"] >= 0):
                raise ValueError(f"TrainConfig.loss_weights: {s['weight']} for {_describe(s['dataset'])}; expected a finite number >= 0")
            if s["target"] not in ("auto", "depth", "disparity"):
                raise ValueError(f"TrainConfig.targets: {s['target']!r}; expected 'auto', 'depth' or 'disparity'")
        per_batch(self, world_size)

    def to_dict(self) -> dict:
        """JSON-able view: dataset objects are replaced by a description."""
        d = dataclasses.asdict(self) if all(isinstance(x, (str, os.PathLike)) for x in self.datasets) else {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["datasets"] = [_describe(x) for x in self.datasets]
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
            raise ValueError(f"{_describe(s['dataset'])} gets {k} images per batch, not divisible by "
                             f"{world_size} processes; change TrainConfig.batch_size or ratios")
        counts.append(k)
    return counts


def _describe(d: Any) -> str:
    if isinstance(d, (str, os.PathLike)):
        return str(d)
    return f"<{type(d).__name__} rows={len(d)} columns={getattr(d, 'column_names', '?')}>"


# ============================================================================ data
def open_dataset(spec: Any, split: str, *, root: str | None = None, n: int | None = None):
    """A source of TrainConfig.datasets -> `datasets.Dataset` formatted as numpy.

    spec: a `datasets.Dataset` (used as is), a folder written by `Dataset.save_to_disk`, or a dalib.data
    dataset name (loaded with `dalib.data.load(name, split, root=root, n=n)`).
    """
    from dalib import data

    ds = data.open_dataset(spec, split, root=root, n=n, what=f"TrainConfig.datasets entry {_describe(spec)}")
    if "image" not in ds.column_names or not ({"depth", "disparity"} & set(ds.column_names)):
        raise ValueError(f"dataset {_describe(spec)} (split {split!r}) has columns {ds.column_names}; training "
                         "needs 'image' and a label column 'depth' (metres) or 'disparity' (relative)")
    return ds.with_format("numpy")


class BatchPlan(torch.utils.data.Dataset):
    """Map-style dataset whose item s is this rank's share of the global batch of step s (collated).

    Pure function of (seed, step, rank): source i contributes counts[i] images per global batch, read
    in the order of its own permutation per epoch; rank r takes the r-th equal slice of each source's
    share. Item: {"image" (b,3,c,c) float, "target" (b,c,c), "mask" (b,c,c) bool, "source" (b,) long,
    "row" (b,) long}. Used with DataLoader(batch_size=None, sampler=range(start, steps)).
    """

    def __init__(self, sources: Sequence, counts: Sequence[int], targets: Sequence[str], transform: JointTransform,
                 seed: int, rank: int = 0, world_size: int = 1):
        self.sources, self.counts, self.targets = list(sources), list(counts), list(targets)
        self.transform, self.seed, self.rank, self.world = transform, int(seed), rank, world_size
        self._perm: dict[tuple[int, int], Tensor] = {}

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, src: int, epoch: int) -> Tensor:
        key = (src, epoch)
        if key not in self._perm:
            if len(self._perm) > 8:
                self._perm.clear()
            self._perm[key] = torch.randperm(len(self.sources[src]), generator=sample_generator(self.seed, 1, src, epoch))
        return self._perm[key]

    def rows(self, step: int) -> list[tuple[int, int, int]]:
        """(source, epoch, row) of each image of this rank's share of step `step`, in batch order."""
        out = []
        for i, k in enumerate(self.counts):
            share = k // self.world
            n = len(self.sources[i])
            for j in range(self.rank * share, (self.rank + 1) * share):
                pos = step * k + j  # position in source i's endless stream
                epoch, p = divmod(pos, n)
                out.append((i, epoch, int(self._permutation(i, epoch)[p])))
        return out

    def __getitem__(self, step: int) -> dict:
        plan = self.rows(int(step))
        samples = []
        for i in range(len(self.sources)):
            mine = [(e, r) for s, e, r in plan if s == i]
            if not mine:
                continue
            cols = self.sources[i][[r for _, r in mine]]  # one batched read per source (faster than rows)
            for j, (epoch, row) in enumerate(mine):
                s = row_to_sample({c: v[j] for c, v in cols.items()}, self.targets[i])
                samples.append(self.transform(s, sample_generator(self.seed, 2, i, epoch, row)))
        batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "target", "mask")}
        batch["source"] = torch.tensor([s for s, _, _ in plan], dtype=torch.long)
        batch["row"] = torch.tensor([r for _, _, r in plan], dtype=torch.long)
        return batch


def _worker_init(_):
    torch.set_num_threads(1)


# ============================================================================ hooks (student recipe plugs in here)
class TrainHooks:
    """Extension points of the loop; the defaults train the teacher. Notebook 06 subclasses this for the
    student: perturb/CutMix inputs in `transform_batch`, return features from `forward` and add a
    feature-alignment term in `extra_losses`.
    """

    def setup(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        """Called once after the model is built (e.g. build a frozen encoder on `device`)."""

    def transform_batch(self, batch: dict, step: int) -> dict:
        """The batch on the device before the forward pass (input perturbations, CutMix). Keep the
        order of the images: the loss finds each source's images by position."""
        return batch

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Model outputs; must hold "pred" (b,H,W) disparity. `model` may be DDP-wrapped: call it as
        `model(x)` so gradients are synchronised (DDP only wraps `forward`)."""
        return {"pred": model(batch["image"])}

    def loss_mask(self, batch: dict, outputs: dict) -> Tensor:
        """Pixels that enter the depth loss (b,H,W) bool."""
        return batch["mask"]

    def depth_loss(self, pred: Tensor, batch: dict, mask: Tensor, sources: list[dict], cfg: TrainConfig,
                   shares: Sequence[int]) -> dict[str, Tensor]:
        """The depth loss terms {"ssi", "gm", "total", ...}; default `compute_loss`. The student's CutMix
        splits a mixed image into its two regions here, each against its own pseudo-label."""
        return compute_loss(pred, batch, mask, sources, cfg, shares)

    def extra_losses(self, model: nn.Module, batch: dict, outputs: dict, step: int) -> dict[str, Tensor]:
        """Additional weighted scalar terms added to the total, e.g. {"feat": w * feature_alignment_loss(...)}."""
        return {}


# ============================================================================ optimisation
def lr_factor(step: int, steps: int, warmup: int = 0, power: float = 0.9) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warmup, then (1 - t)^power."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return max(0.0, 1.0 - t) ** power


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with two groups: encoder (`model.pretrained`, lr_encoder) and decoder (`model.depth_head`,
    lr_encoder * decoder_lr_mult); LambdaLR with `lr_factor` (warmup, poly decay)."""
    enc = [p for p in model.pretrained.parameters() if p.requires_grad]
    dec = [p for p in model.depth_head.parameters() if p.requires_grad]
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    if len(enc) + len(dec) != n_all:
        raise RuntimeError(f"model has {n_all} trainable tensors, but encoder + decoder groups cover {len(enc) + len(dec)}")
    opt = torch.optim.AdamW(
        [{"params": enc, "lr": cfg.lr_encoder, "name": "encoder"},
         {"params": dec, "lr": cfg.lr_encoder * cfg.decoder_lr_mult, "name": "decoder"}],
        betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    steps, warmup, power = cfg.steps, cfg.warmup_steps, cfg.poly_power
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, power))
    return opt, sched


def freeze_unused(model: nn.Module, device: torch.device) -> list[str]:
    """Set requires_grad=False on parameters the forward pass never uses; returns their names.

    DINOv2's `mask_token` and the DPT's `refinenet4.resConfUnit1` exist only so official checkpoints
    load; they get no gradient, so AdamW never changes them either way. Excluding them up front lets
    DistributedDataParallel run without the per-step unused-parameter search.
    """
    from dalib.model import PATCH

    x = torch.zeros(1, 3, 2 * PATCH, 2 * PATCH, device=device)
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    return unused


def compute_loss(pred: Tensor, batch: dict, mask: Tensor, sources: list[dict], cfg: TrainConfig,
                 shares: Sequence[int] | None = None) -> dict[str, Tensor]:
    """Per-source `depth_loss`, weighted sum -> {"ssi", "gm", "total"} (+ "src<i>" with several sources).

    pred, batch["target"], mask: (b, H, W). shares: images of each source in this batch, in batch
    order (the plan puts source 0 first, then source 1, ...); None = one source. Contiguous slices,
    so no device synchronisation is needed to find the groups. An optional batch["weight"] (b,) makes
    each source's loss a weighted mean over its entries (CutMix regions, notebook 06).
    """
    from dalib.losses import depth_loss

    pred = pred.float()
    shares = list(shares) if shares is not None else [pred.shape[0]]
    if len(shares) != len(sources) or sum(shares) != pred.shape[0]:
        raise ValueError(f"shares {shares} do not describe a batch of {pred.shape[0]} images from {len(sources)} sources")
    out: dict[str, Tensor] = {}
    ssi = gm = total = pred.new_zeros(())
    start = 0
    for i, (s, k) in enumerate(zip(sources, shares)):
        sl = slice(start, start + k)
        start += k
        w = batch["weight"][sl] if batch.get("weight") is not None else None
        terms = depth_loss(pred[sl], batch["target"][sl], mask[sl], align=cfg.align, trim=s["trim"],
                           gm_weight=cfg.gm_weight, scales=cfg.gm_scales, reduction=cfg.reduction, weights=w)
        w = s["weight"]
        ssi, gm, total = ssi + w * terms["ssi"], gm + w * terms["gm"], total + w * terms["total"]
        if len(sources) > 1:
            out[f"src{i}"] = terms["total"]
    out.update(ssi=ssi, gm=gm, total=total)
    return out


# ============================================================================ checkpoints
def _rng_state() -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                    "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    v, internal, gauss = st["python"]
    random.setstate((v, tuple(internal), gauss))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def _fsync_dir_files(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(out_dir: str | os.PathLike, step: int, model: nn.Module, optimizer, scheduler,
                    *, extra: dict | None = None, keep: int = 2) -> Path:
    """Write `out_dir/checkpoints/step-XXXXXXXX/` atomically and publish it in `checkpoints/latest.json`.

    The folder is written as `.step-XXXXXXXX.tmp` (model via `save_pretrained`, train_state.pt with the
    optimiser, scheduler, step and RNG states; only tensors and plain containers, so it loads with
    weights_only=True), fsynced, renamed into place, then the pointer is replaced atomically.
    """
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp, final = root / f".{name}.tmp", root / name
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, extra={"step": step, **(extra or {})})
    state = {"format": STATE_FORMAT, "step": step, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": _rng_state(), "data": {"step": step}}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(tmp / STATE_FILE, buf.getvalue())
    _fsync_dir_files(tmp)
    if final.exists():  # a re-run that reached the same step again
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_json(root / LATEST_FILE, {"step": step, "dir": name})
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The published checkpoint folder of a run (from checkpoints/latest.json), or None."""
    root = Path(out_dir) / "checkpoints"
    ptr = root / LATEST_FILE
    if not ptr.is_file():
        return None
    info = json.loads(ptr.read_text())
    d = root / info["dir"]
    if not (d / STATE_FILE).is_file():
        raise FileNotFoundError(f"{ptr} points to {d}, which has no {STATE_FILE}")
    return d


def load_train_state(ckpt: str | os.PathLike) -> dict:
    """train_state.pt of a checkpoint folder, loaded with weights_only=True on the CPU."""
    return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=True)


def _clean_partial(out_dir: Path) -> None:
    root = out_dir / "checkpoints"
    for p in root.glob(".step-*.tmp") if root.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    return resolve_device(cfg.device, local_rank=local_rank, mps=False, what="TrainConfig.device")


# ============================================================================ the loop
def _check_resume(saved: dict, cfg: TrainConfig) -> None:
    keys = ("encoder", "version", "datasets", "splits", "ratios", "targets", "crop", "scale", "hflip", "batch_size",
            "steps", "lr_encoder", "decoder_lr_mult", "warmup_steps", "poly_power", "seed", "align", "gm_weight", "gm_ramp_steps",
            "trims", "loss_weights", "data_n")
    now = cfg.to_dict()
    for k in keys:
        if k in saved and saved[k] != now[k]:
            raise ValueError(f"cannot resume {cfg.out_dir}: TrainConfig.{k} was {saved[k]!r} when the checkpoint "
                             f"was written and is {now[k]!r} now; use the same value, another out_dir, or resume=False")


def _append_log(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_log(out_dir: str | os.PathLike) -> list[dict]:
    """The JSON lines of a run's train_log.jsonl (one dict per logged step). Notebooks 04 and 06."""
    path = Path(out_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_seconds(log: list[dict]) -> float:
    """Wall time spent training, from `read_log` records: `elapsed_s` restarts at 0 in each resumed
    segment of a run, so the segments are added up."""
    total, last = 0.0, 0.0
    for rec in log:
        if rec["elapsed_s"] < last:
            total += last
        last = rec["elapsed_s"]
    return total + last


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> dict:
    """Train (or resume) a DepthAnything model as configured; returns a summary.

    Returns {"steps", "start_step", "seconds", "images_per_s", "final" (last loss terms), "checkpoint"
    (folder of the final checkpoint), "out_dir", "world_size"}. Under torchrun every rank calls it;
    rank 0 writes the files. Notebooks 04 (teacher) and 06 (student, with `hooks`).
    """
    hooks = hooks or TrainHooks()
    rank, world, local_rank = dist_env()
    device = _device(cfg, local_rank)
    own_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_group = True
    try:
        result = _train(cfg, hooks, rank, world, device)
        if rank == 0:
            atomic_write_json(Path(cfg.out_dir) / RESULT_FILE, result)
        return result
    finally:
        if own_group:
            dist.destroy_process_group()


def launch(cfg: TrainConfig, nproc: int = 1, hooks: TrainHooks | None = None) -> dict:
    """`train(cfg, hooks)` in this process (nproc <= 1), or DDP in `nproc` processes under torchrun (one
    GPU each; gloo on CPUs). Same return value. Notebooks 04 and 06 (`gpus` parameter).

    For torchrun the run is written to `out_dir/launch.yaml` (in-memory datasets saved under
    `out_dir/inputs/`); hooks must describe themselves with `to_spec()` (`dalib.student.StudentHooks` does)
    and are rebuilt in every process by `python -m dalib.student`.
    """
    if nproc <= 1:
        return train(cfg, hooks)
    import yaml

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = cfg.to_dict()
    from dalib.data import dataset_on_disk

    spec["datasets"] = [dataset_on_disk(d, out / "inputs" / f"source{i}") for i, d in enumerate(cfg.datasets)]
    module = "dalib.train"
    if hooks is not None and type(hooks) is not TrainHooks:
        if not hasattr(hooks, "to_spec"):
            raise ValueError(f"{type(hooks).__name__} has no to_spec(); only hooks that describe themselves can run "
                             "under torchrun (nproc > 1)")
        spec["student"] = hooks.to_spec()
        module = "dalib.student"
    path = out / "launch.yaml"
    atomic_write_bytes(path, yaml.safe_dump(spec, sort_keys=False).encode())
    return run_torchrun(module, ["--config", str(path)], nproc)[0]  # rank 0's report (`main`)


def build_plan(cfg: TrainConfig, rank: int = 0, world: int = 1) -> BatchPlan:
    """The run's data: step s -> this rank's share of global batch s (`BatchPlan`)."""
    sources = cfg.sources()
    dsets = [open_dataset(s["dataset"], s["split"], root=cfg.data_root, n=cfg.data_n) for s in sources]
    transform = JointTransform(cfg.crop, scale=tuple(cfg.scale), hflip=cfg.hflip)
    return BatchPlan(dsets, per_batch(cfg, world), [s["target"] for s in sources], transform, cfg.seed, rank, world)


def build_model(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, list[str]]:
    """The network as configured (seeded, so every rank starts from the same weights), on `device`, in
    train mode, with never-used parameters frozen; returns (model, names of the frozen parameters)."""
    from dalib.model import DepthAnything, resolve_pretrained_encoder

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    pre = resolve_pretrained_encoder(cfg.pretrained_encoder, cfg.encoder)  # "auto": local DINOv2 or random init
    model = DepthAnything(cfg.encoder, cfg.version, pretrained_encoder=pre)
    model.grad_checkpointing = cfg.grad_checkpointing
    model.to(device).train()
    return model, freeze_unused(model, device)


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for this run: TrainConfig.amp and a device where it pays off (CUDA, CPUs with native
    bf16; `dalib.model.bf16_autocast_supported`)."""
    from dalib.model import bf16_autocast_supported

    return bool(cfg.amp) and bf16_autocast_supported(device)


def gm_weight_at(cfg: TrainConfig, step: int) -> float:
    """Gradient-matching weight of optimiser step `step` (0-based): gm_weight * min(1, step / gm_ramp_steps).

    A network trained from scratch starts from an output that is flat or zero almost everywhere; the
    gradient-matching term then sends a large, high-frequency gradient that drowns the SSI term's (notebook 04
    shows it with the overfit-one-batch check). Ramping it in lets the SSI term shape the layout first."""
    if cfg.gm_ramp_steps <= 0:
        return cfg.gm_weight
    return cfg.gm_weight * min(1.0, step / cfg.gm_ramp_steps)


def train_step(net: nn.Module, model: nn.Module, batch: dict, step: int, *, hooks: TrainHooks, cfg: TrainConfig,
               sources: list[dict], shares: Sequence[int], optimizer, scheduler, amp: bool) -> tuple[dict, list[float]]:
    """One optimiser step on a batch already on the device: hooks' input transform, forward (bf16 autocast
    when `amp`), depth loss + extra terms, backward, clipping, AdamW, schedule. Returns (loss terms as
    tensors, the learning rates the step used). A non-finite loss or gradient norm raises FloatingPointError
    before the weights change, naming the step and the terms."""
    batch = hooks.transform_batch(batch, step)
    if cfg.gm_ramp_steps > 0:
        cfg = dataclasses.replace(cfg, gm_weight=gm_weight_at(cfg, step))
    with torch.autocast(batch["image"].device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = hooks.forward(net, batch)
    terms = hooks.depth_loss(outputs["pred"], batch, hooks.loss_mask(batch, outputs), sources, cfg, shares)
    for name, value in hooks.extra_losses(model, batch, outputs, step).items():
        terms[name] = value
        terms["total"] = terms["total"] + value
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    if cfg.grad_clip > 0:
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach()
    check = torch.stack([terms["total"].detach().float()] + ([terms["grad_norm"].float()] if "grad_norm" in terms else []))
    if not bool(torch.isfinite(check).all()):  # one synchronisation per step; a NaN step would poison every weight
        values = {k: float(v.detach()) for k, v in terms.items()}
        raise FloatingPointError(f"step {step + 1}: non-finite training loss or gradient {values}; the weights were "
                                 f"not updated and the last checkpoint of {cfg.out_dir} is intact. Lower lr_encoder "
                                 f"({cfg.lr_encoder:g}) or decoder_lr_mult, add warmup_steps, or check the labels.")
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.step()
    scheduler.step()
    return terms, lrs


def _resume(cfg: TrainConfig, out_dir: Path, model: nn.Module, optimizer, scheduler, device) -> tuple[Path | None, int]:
    """Load the last published checkpoint of out_dir when resuming; returns (checkpoint folder or None, step)."""
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is None:
        return None, 0
    from dalib.model import WEIGHTS_FILE, read_safetensors

    saved_cfg = json.loads((out_dir / CONFIG_FILE).read_text())["config"] if (out_dir / CONFIG_FILE).is_file() else {}
    _check_resume(saved_cfg, cfg)
    model.load_state_dict(read_safetensors(ckpt / WEIGHTS_FILE, device=str(device)), strict=True)
    state = load_train_state(ckpt)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return ckpt, int(state["step"])


def _write_run_files(cfg: TrainConfig, out_dir: Path, ckpt, start: int, world: int, device, unused, amp: bool) -> None:
    """Rank 0: the log truncated to the resumed step (or removed), and config.json of the run."""
    log_path = out_dir / LOG_FILE
    if ckpt is not None:
        _truncate_log(log_path, start)
    elif log_path.exists():
        log_path.unlink()
    atomic_write_json(out_dir / CONFIG_FILE, {"config": cfg.to_dict(), "world_size": world, "device": str(device),
                                              "bf16_autocast": amp, "resumed_from": start if ckpt is not None else None,
                                              "frozen_unused_parameters": unused, "environment": environment_info()})


@dataclass
class _Run:
    """What one training process holds while it trains (made by `_build_run`)."""

    cfg: TrainConfig
    hooks: TrainHooks
    rank: int
    world: int
    device: torch.device
    out_dir: Path
    sources: list  # cfg.sources()
    shares: list  # images of each source in this rank's batch, in order
    plan: BatchPlan
    model: nn.Module
    net: nn.Module  # the model, DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: bool
    ckpt: Path | None  # the checkpoint resumed from
    start: int  # first step to run

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _set_torch_flags(cfg: TrainConfig) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)


def _build_run(cfg: TrainConfig, hooks: TrainHooks, rank: int, world: int, device: torch.device) -> _Run:
    """Build: data plan, model, AdamW and schedule; resume from the last checkpoint; rank 0 writes the run
    files; hooks set up; DDP wrap. (This order fixes the RNG draws, so resumed runs repeat exactly.)"""
    cfg.validate(world)
    _set_torch_flags(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shares = [k // world for k in per_batch(cfg, world)]
    plan = build_plan(cfg, rank, world)
    model, unused = build_model(cfg, device)
    optimizer, scheduler = build_optimizer(model, cfg)
    amp = use_autocast(cfg, device)
    if rank == 0:
        _clean_partial(out_dir)
    ckpt, start = _resume(cfg, out_dir, model, optimizer, scheduler, device)
    if rank == 0:
        _write_run_files(cfg, out_dir, ckpt, start, world, device, unused, amp)
    hooks.setup(model, cfg, device)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Run(cfg, hooks, rank, world, device, out_dir, cfg.sources(), shares, plan, model, net, optimizer,
                scheduler, amp, ckpt, start)


def _loader(run: _Run) -> torch.utils.data.DataLoader:
    """Batches of steps start .. steps-1 of this rank, prepared by `num_workers` processes."""
    cfg = run.cfg
    return torch.utils.data.DataLoader(
        run.plan, batch_size=None, sampler=range(run.start, cfg.steps), num_workers=cfg.num_workers,
        pin_memory=run.device.type == "cuda", worker_init_fn=_worker_init if cfg.num_workers else None,
        prefetch_factor=cfg.prefetch if cfg.num_workers else None, persistent_workers=False)


def _progress_bar(run: _Run):
    if not (run.is_main and run.cfg.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.cfg.steps, initial=run.start, desc="train", dynamic_ncols=True, file=sys.stderr)


def _maybe_checkpoint(run: _Run, step: int, metrics: dict) -> str | None:
    """Rank 0, every `checkpoint_every` steps and at the last: save a checkpoint; returns its folder."""
    cfg = run.cfg
    if run.is_main and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps):
        return str(save_checkpoint(run.out_dir, step, run.model, run.optimizer, run.scheduler,
                                   extra={"metrics": metrics}, keep=cfg.keep_checkpoints))
    return None


def _train(cfg: TrainConfig, hooks: TrainHooks, rank: int, world: int, device: torch.device) -> dict:
    run = _build_run(cfg, hooks, rank, world, device)
    result = {"steps": cfg.steps, "start_step": run.start, "seconds": 0.0, "images_per_s": None, "final": {},
              "checkpoint": str(run.ckpt) if run.ckpt is not None else None, "out_dir": str(run.out_dir),
              "world_size": world, "bf16_autocast": run.amp}
    if run.start >= cfg.steps:  # already finished: report what the final checkpoint recorded
        from dalib.model import CONFIG_FILE as MODEL_CONFIG_FILE

        result["final"] = json.loads((run.ckpt / MODEL_CONFIG_FILE).read_text()).get("extra", {}).get("metrics", {})
        return result
    bar = _progress_bar(run)
    logger = _StepLogger(cfg, run.out_dir / LOG_FILE, world, run.is_main, bar)
    t_first = None  # end of the first step: images/s excludes start-up
    step = run.start
    it = iter(_loader(run))
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(it)
        logger.data_s += time.perf_counter() - t0
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        terms, lrs = train_step(run.net, run.model, batch, step, hooks=hooks, cfg=cfg, sources=run.sources,
                                shares=run.shares, optimizer=run.optimizer, scheduler=run.scheduler, amp=run.amp)
        step += 1
        t_first = t_first or time.perf_counter()
        logger.after_step(step, terms, lrs)
        result["checkpoint"] = _maybe_checkpoint(run, step, logger.last) or result["checkpoint"]
    if bar is not None:
        bar.close()
    del it
    t_end = time.perf_counter()
    done = step - run.start
    result["seconds"] = round(t_end - logger.t_start, 3)
    if done > 1 and t_first is not None:
        result["images_per_s"] = round((done - 1) * cfg.batch_size / max(t_end - t_first, 1e-9), 3)
    result["final"] = logger.last
    if world > 1:
        dist.barrier()  # every rank returns after rank 0 has written the final checkpoint
        result["checkpoint"] = str(run.out_dir / "checkpoints" / f"step-{cfg.steps:08d}")
    return result


class _StepLogger:
    """Every `log_every` steps: the loss terms averaged over ranks, lrs, images/s and data-wait time as a
    JSON line of train_log.jsonl (rank 0), the progress bar; a warning when the loss is exactly 0."""

    def __init__(self, cfg: TrainConfig, path: Path, world: int, is_main: bool, bar):
        self.cfg, self.path, self.world, self.is_main, self.bar = cfg, path, world, is_main, bar
        self.t_start = self.t_log = time.perf_counter()
        self.images, self.data_s, self.last, self.warned = 0, 0.0, {}, False

    def after_step(self, step: int, terms: dict, lrs: list[float]) -> None:
        cfg = self.cfg
        self.images += cfg.batch_size
        if step % cfg.log_every == 0 or step == cfg.steps:
            vals = torch.stack([v.detach().float() for v in terms.values()])
            if self.world > 1:
                dist.all_reduce(vals)
                vals /= self.world
            self.last = dict(zip(terms, vals.tolist()))
            now = time.perf_counter()
            rec = {"step": step, **{k: round(v, 7) for k, v in self.last.items()},
                   "lr_encoder": lrs[0], "lr_decoder": lrs[1], "gm_weight": gm_weight_at(cfg, step - 1),
                   "images_per_s": round(self.images / max(now - self.t_log, 1e-9), 3),
                   "data_wait_s": round(self.data_s, 4), "elapsed_s": round(now - self.t_start, 3)}
            self.t_log, self.images, self.data_s = now, 0, 0.0
            if self.is_main:
                _append_log(self.path, rec)
                if self.last["total"] == 0.0 and not self.warned:
                    self.warned = True
                    warnings.warn(f"step {step}: loss is exactly 0; the prediction has probably collapsed to a "
                                  "constant (dead final ReLU), which gives no gradient. Lower lr_encoder or "
                                  "decoder_lr_mult, or add warmup_steps.", RuntimeWarning, stacklevel=3)
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{self.last['total']:.4f}", refresh=False)
        if self.bar is not None:
            self.bar.update(1)


# ============================================================================ diagnostics
class _Diagnostic:
    """What a short diagnostic run needs, built as `train` builds it (one process, nothing written): the
    config with `changes`, device, data plan, model, AdamW and its schedule, and `step(batch, s)`."""

    def __init__(self, cfg: TrainConfig, hooks: TrainHooks | None, device: str | None, **changes):
        self.hooks = hooks or TrainHooks()
        self.cfg = dataclasses.replace(cfg, device=device or cfg.device, **changes)
        self.cfg.validate()
        self.device = _device(self.cfg, 0)
        self.plan = build_plan(self.cfg)
        self.model, _ = build_model(self.cfg, self.device)
        self.optimizer, self.scheduler = build_optimizer(self.model, self.cfg)
        self.hooks.setup(self.model, self.cfg, self.device)
        self.amp = use_autocast(self.cfg, self.device)

    def step(self, batch: dict, step: int) -> tuple[dict, list[float]]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return train_step(self.model, self.model, batch, step, hooks=self.hooks, cfg=self.cfg,
                          sources=self.cfg.sources(), shares=per_batch(self.cfg), optimizer=self.optimizer,
                          scheduler=self.scheduler, amp=self.amp)


def lr_range_test(cfg: TrainConfig, *, lr_min: float = 1e-6, lr_max: float = 1e-2, steps: int = 60,
                  hooks: TrainHooks | None = None, device: str | None = None) -> list[dict]:
    """Learning-rate range test (L. Smith, arXiv 1506.01186): `steps` steps of the run's data and model with
    the encoder lr growing geometrically from lr_min to lr_max (decoder: x decoder_lr_mult, no schedule),
    recording the loss. Pick an lr below the one where the loss falls fastest and well below where it
    diverges. Nothing is written; stops early once the loss exceeds 4x its best or becomes non-finite.
    Returns [{"step", "lr_encoder", "loss"}]. Notebook 04.
    """
    d = _Diagnostic(cfg, hooks, device, steps=steps, warmup_steps=0)
    ratio = (lr_max / lr_min) ** (1 / max(1, steps - 1))
    d.scheduler = torch.optim.lr_scheduler.LambdaLR(d.optimizer, lambda s: lr_min / d.cfg.lr_encoder * ratio ** s)
    out, best = [], math.inf
    for step in range(steps):
        try:
            terms, lrs = d.step(d.plan[step], step)
        except FloatingPointError:
            break
        loss = float(terms["total"].detach())
        out.append({"step": step, "lr_encoder": lrs[0], "loss": loss})
        best = min(best, loss)
        if loss > 4 * best:
            break
    return out


def overfit_batch(cfg: TrainConfig, *, steps: int = 100, hooks: TrainHooks | None = None,
                  device: str | None = None) -> list[float]:
    """Train on the first batch of the run only, `steps` times (constant lr after cfg's warmup), and return the
    loss of each step: a network, loss and optimiser that work drive it far below its start. Nothing is
    written. Notebook 04 and the tests."""
    d = _Diagnostic(cfg, hooks, device, steps=steps, poly_power=0.0, warmup_steps=min(cfg.warmup_steps, steps - 1))
    batch0 = d.plan[0]
    return [float(d.step(batch0, step)[0]["total"].detach()) for step in range(steps)]


# ============================================================================ command line
def _parse_list(text: str, conv) -> list:
    return [conv(x) for x in text.split(",") if x != ""]


def _field_parser(f: dataclasses.Field):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, (list, tuple)):
        elem = type(default[0]) if default else str
        conv = float if elem is float else int if elem is int else str
        return (lambda s: tuple(_parse_list(s, conv))) if isinstance(default, tuple) else (lambda s: _parse_list(s, conv))
    if isinstance(default, (int, float)):
        return type(default)
    if f.name == "data_n":
        return lambda s: None if s.lower() == "none" else int(s)
    return lambda s: None if s.lower() == "none" else s


def field_comments() -> dict[str, str]:
    """{field: its comment} read from the TrainConfig source (the help text of the command line)."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^#]+#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """`--config file.yaml` (TrainConfig fields) then `--field value` flags (lists comma-separated)."""
    ap = argparse.ArgumentParser(prog="python -m dalib.train", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with TrainConfig fields")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    comments = field_comments()
    for name, f in fields.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=_field_parser(f), default=None,
                        help=(f"{comments.get(name, '')} (default {default!r}"
                              + ("; comma-separated" if isinstance(default, (list, tuple)) else "") + ")").replace("%", "%%"))
    args = ap.parse_args(argv)
    values: dict = read_config_file(args.config) if args.config else {}
    for name in fields:
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    return config_from_mapping(values, args.config or "command line")  # flags are known: unknowns come from the file


def read_config_file(path) -> dict:
    """A YAML (or JSON) mapping from `path`; ValueError naming the file when it is not a mapping."""
    import yaml

    loaded = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
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


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config_from_args(argv)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:  # bad settings or data, or a diverged run
        print(f"dalib.train: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FloatingPointError) else 2
    report_result(result)
    if dist_env()[0] == 0:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

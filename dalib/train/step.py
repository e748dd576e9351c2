"""One optimiser step and what it is built from: the hooks the student recipe plugs into, the model,
AdamW with its warmup + poly schedule, the per-source depth loss (notebooks 04 and 06)."""
from __future__ import annotations

import dataclasses
import random
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dalib.distributed import resolve_device
from dalib.train.config import TrainConfig


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


def train_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    """The device of this process (TrainConfig.device; "auto": cuda:local_rank when there is one, else cpu)."""
    return resolve_device(cfg.device, local_rank=local_rank, mps=False, what="TrainConfig.device")


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

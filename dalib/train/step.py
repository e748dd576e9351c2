"""One optimiser step and what it works on (notebooks 04 and 06):

    state = build_state(cfg, hooks, device)        # the model, AdamW + warmup/poly schedule, the sources' shares
    terms, lrs = train_step(state, batch, step)    # perturb -> forward -> loss -> backward -> clip -> AdamW step

The loss of a batch (`batch_loss`) is the V2 depth loss of each source's images, weighted and summed; the
student recipe plugs in through two hooks (`TrainHooks.perturb_batch`, `TrainHooks.extra_losses`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dalib.distributed import bf16_autocast_supported, resolve_device
from dalib.images import PATCH
from dalib.losses import cutmix_regions, depth_loss
from dalib.train.config import TrainConfig, per_batch
from dalib.weights import build_model, resolve_pretrained_encoder


class TrainHooks:
    """Where the student recipe differs from the teacher's; the defaults train the teacher (notebook 06 uses
    `dalib.student.StudentHooks`). `wants_tokens`: the forward pass also returns the encoder's final patch tokens,
    which `extra_losses` receives."""

    wants_tokens = False

    def setup(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        """Once, after the model is built and resumed (e.g. load a frozen encoder onto `device`)."""

    def perturb_batch(self, batch: dict, step: int) -> dict:
        """The batch the network sees at `step`: perturbed images, CutMix boxes in batch["cutmix"] (the loss then
        scores each box against its own label). Images keep their order: the loss finds sources by position."""
        return batch

    def extra_losses(self, batch: dict, tokens: Tensor | None, step: int) -> dict[str, Tensor]:
        """Weighted scalar terms added to the total, e.g. {"feat": w * feature_alignment_loss(...)}."""
        return {}


@dataclass
class TrainState:
    """What a training step works on (made by `build_state`)."""

    cfg: TrainConfig
    hooks: TrainHooks
    model: nn.Module
    net: nn.Module  # what the forward pass calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any  # LambdaLR with `lr_factor`
    sources: list[dict]  # TrainConfig.sources()
    shares: list[int]  # images of each source in this process's batch, in batch order
    amp: bool  # bf16 autocast (`use_autocast`)
    frozen: list[str]  # parameters the forward pass never uses, frozen (`freeze_unused`)


def lr_factor(step: int, steps: int, warmup: int = 0, power: float = 0.9) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warmup, then (1 - t)^power."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return max(0.0, 1.0 - t) ** power


def gm_weight_at(cfg: TrainConfig, step: int) -> float:
    """Gradient-matching weight of optimiser step `step` (0-based): gm_weight * min(1, step / gm_ramp_steps).

    A network trained from scratch starts from an output that is flat or zero almost everywhere; the
    gradient-matching term then sends a large, high-frequency gradient that drowns the SSI term's (notebook 04
    shows it with the overfit-one-batch check). Ramping it in lets the SSI term shape the layout first."""
    if cfg.gm_ramp_steps <= 0:
        return cfg.gm_weight
    return cfg.gm_weight * min(1.0, step / cfg.gm_ramp_steps)


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
    x = torch.zeros(1, 3, 2 * PATCH, 2 * PATCH, device=device)
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    return unused


def train_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    """The device of this process (TrainConfig.device; "auto": cuda:local_rank when there is one, else cpu)."""
    return resolve_device(cfg.device, local_rank=local_rank, mps=False, what="TrainConfig.device")


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for this run: TrainConfig.amp and a device where it pays off (CUDA, CPUs with native
    bf16; `dalib.distributed.bf16_autocast_supported`)."""
    return bool(cfg.amp) and bf16_autocast_supported(device)


def build_state(cfg: TrainConfig, hooks: TrainHooks, device: torch.device, world: int = 1) -> TrainState:
    """The run's model (seeded, so every rank starts from the same weights; encoder from `pretrained_encoder`), in
    train mode on `device` with never-used parameters frozen, AdamW and its schedule. `net` is the model itself:
    the loop wraps it in DistributedDataParallel after resuming."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    pre = resolve_pretrained_encoder(cfg.pretrained_encoder, cfg.encoder)
    model = build_model(cfg.encoder, cfg.version, pretrained_encoder=pre)
    model.grad_checkpointing = cfg.grad_checkpointing
    model.to(device).train()
    frozen = freeze_unused(model, device)
    optimizer, scheduler = build_optimizer(model, cfg)
    shares = [k // world for k in per_batch(cfg, world)]
    return TrainState(cfg, hooks, model, model, optimizer, scheduler, cfg.sources(), shares,
                      use_autocast(cfg, device), frozen)


def batch_loss(pred: Tensor, batch: dict, sources: list[dict], shares: Sequence[int], *, cfg: TrainConfig,
               gm_weight: float) -> dict[str, Tensor]:
    """The depth loss of a batch: per source, `dalib.losses.depth_loss` (SSI + gm_weight x gradient matching, the
    source's trim), weighted by its loss weight and summed -> {"ssi", "gm", "total"} (+ "src<i>" per source when
    there are several). A CutMix image (batch["cutmix"]) enters as its two regions, each against its own label,
    weighted by area (`dalib.losses.cutmix_regions`). pred, batch["target"], batch["mask"]: (b, H, W); shares:
    images of each source in batch order (source 0 first, then 1, ...)."""
    pred, target, mask, weights, shares = cutmix_regions(pred.float(), batch["target"], batch["mask"],
                                                         batch.get("cutmix") or [], shares)
    if len(shares) != len(sources) or sum(shares) != pred.shape[0]:
        raise ValueError(f"shares {shares} do not describe a batch of {pred.shape[0]} images from {len(sources)} sources")
    out: dict[str, Tensor] = {}
    ssi = gm = total = pred.new_zeros(())
    start = 0
    for i, (src, k) in enumerate(zip(sources, shares)):
        part = slice(start, start + k)
        start += k
        terms = depth_loss(pred[part], target[part], mask[part], align=cfg.align, trim=src["trim"], gm_weight=gm_weight,
                           scales=cfg.gm_scales, reduction=cfg.reduction, weights=None if weights is None else weights[part])
        w = src["weight"]
        ssi, gm, total = ssi + w * terms["ssi"], gm + w * terms["gm"], total + w * terms["total"]
        if len(sources) > 1:
            out[f"src{i}"] = terms["total"]
    out.update(ssi=ssi, gm=gm, total=total)
    return out


def train_step(state: TrainState, batch: dict, step: int) -> tuple[dict, list[float]]:
    """One optimiser step on a batch already on the device; returns (loss terms as tensors, the lrs it used).
    A non-finite loss or gradient norm raises FloatingPointError before the weights change."""
    cfg, hooks = state.cfg, state.hooks
    batch = hooks.perturb_batch(batch, step)  # the student's harder view (the teacher's batch as is)
    with torch.autocast(batch["image"].device.type, dtype=torch.bfloat16, enabled=state.amp):
        out = state.net(batch["image"], return_features=hooks.wants_tokens)  # DDP syncs what `forward` returns
    pred, tokens = out if hooks.wants_tokens else (out, None)
    terms = batch_loss(pred, batch, state.sources, state.shares, cfg=cfg, gm_weight=gm_weight_at(cfg, step))
    for name, value in hooks.extra_losses(batch, tokens, step).items():
        terms[name] = value
        terms["total"] = terms["total"] + value
    state.optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    if cfg.grad_clip > 0:
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip).detach()
    _stop_unless_finite(terms, step, cfg)
    lrs = [g["lr"] for g in state.optimizer.param_groups]
    state.optimizer.step()
    state.scheduler.step()
    return terms, lrs


def _stop_unless_finite(terms: dict, step: int, cfg: TrainConfig) -> None:
    """One synchronisation per step: a NaN step would poison every weight, so it stops the run instead."""
    check = torch.stack([terms["total"].detach().float()] + ([terms["grad_norm"].float()] if "grad_norm" in terms else []))
    if not bool(torch.isfinite(check).all()):
        values = {k: float(v.detach()) for k, v in terms.items()}
        raise FloatingPointError(f"step {step + 1}: non-finite training loss or gradient {values}; the weights were "
                                 f"not updated and the last checkpoint of {cfg.out_dir} is intact. Lower lr_encoder "
                                 f"({cfg.lr_encoder:g}) or decoder_lr_mult, add warmup_steps, or check the labels.")

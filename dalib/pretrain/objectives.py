"""The two objectives as modules holding everything they train: `DinoObjective` (student, EMA teacher, heads,
centres) and `MaeObjective` (encoder + light decoder), and the per-step schedules they follow.

Both wrap `DepthAnything(encoder)`, whose `pretrained` part is the encoder that is trained and exported; its
DPT head is carried along unused. `objective(batch, sched)` returns the loss terms ("total" first);
`after_step(sched)` moves the teacher (EMA); `encoder()` is the network to export.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dalib.images import PATCH
from dalib.model import DepthAnything
from dalib.pretrain.config import PretrainConfig
from dalib.pretrain.heads import DINOHead, MAEDecoder, patchify
from dalib.pretrain.losses import (centered_softmax, dino_loss, entropies, ibot_loss, koleo_loss, mae_loss,
                                   sinkhorn_knopp, update_center)


# ---------------------------------------------------------------------------- schedules
def _cosine(start: float, end: float, t: float) -> float:
    """start at t = 0 -> end at t = 1 along half a cosine."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


@dataclass(frozen=True)
class Schedule:
    """The values of step `step` (0-based): a pure function of the config and the step, so no state to resume."""

    step: int
    lr: float  # linear warm-up to cfg.lr, then cosine to cfg.min_lr
    weight_decay: float  # cosine from weight_decay[0] to weight_decay[1]
    momentum: float  # EMA teacher momentum, cosine from momentum[0] to momentum[1]
    teacher_temp: float  # linear from teacher_temp[0] to teacher_temp[1] over teacher_temp_warmup, then flat
    freeze_prototypes: bool  # the prototypes get no update (the first freeze_last_layer of the run)

    @classmethod
    def at(cls, cfg: PretrainConfig, step: int) -> "Schedule":
        warm = round(cfg.warmup * cfg.steps)
        if step < warm:
            lr = cfg.lr * (step + 1) / warm
        else:
            lr = _cosine(cfg.lr, cfg.min_lr, (step - warm) / max(cfg.steps - warm - 1, 1))
        t = step / max(cfg.steps - 1, 1)
        tt = round(cfg.teacher_temp_warmup * cfg.steps)
        temp = cfg.teacher_temp[1] if step >= tt else cfg.teacher_temp[0] + (
            cfg.teacher_temp[1] - cfg.teacher_temp[0]) * step / tt
        return cls(step, lr, _cosine(*cfg.weight_decay, t), _cosine(*cfg.momentum, t), temp,
                   step < round(cfg.freeze_last_layer * cfg.steps))


# ---------------------------------------------------------------------------- DINOv2
class DinoObjective(nn.Module):
    """DINOv2's self-distillation: DINO on CLS tokens, iBOT on masked patch tokens, KoLeo on student CLS.

    The student sees the 2 global crops (with iBOT masks) and the local crops; the teacher, an EMA of the
    student, sees the unmasked global crops. Its logits become targets by Sinkhorn-Knopp or centering.
    """

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.student = DepthAnything(cfg.encoder)
        dim = self.student.cfg.embed_dim
        self.student_head = DINOHead(dim, cfg.head_hidden, cfg.head_bottleneck, cfg.prototypes)
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in (*self.teacher.parameters(), *self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center_cls", torch.zeros(1, cfg.prototypes))
        self.register_buffer("center_patch", torch.zeros(1, cfg.prototypes))

    def trainable(self) -> dict[str, nn.Parameter]:
        """Parameters the optimiser updates, by name (the student's encoder and head)."""
        out = {f"student.pretrained.{k}": p for k, p in self.student.pretrained.named_parameters()}
        out.update({f"student_head.{k}": p for k, p in self.student_head.named_parameters()})
        return out

    def encoder(self) -> DepthAnything:
        return self.teacher  # DINO's teacher is the better encoder and the one DINOv2 releases

    def _targets(self, logits: Tensor, center: Tensor, temp: float) -> Tensor:
        if self.cfg.centering == "sinkhorn":
            return sinkhorn_knopp(logits, temp)
        targets = centered_softmax(logits, center, temp)
        update_center(center, logits, self.cfg.center_momentum)
        return targets

    @torch.no_grad()
    def _teacher(self, views: Tensor, masks: Tensor, temp: float) -> tuple[Tensor, Tensor, dict]:
        tokens = self.teacher.encode_tokens(views)  # (2B, 1+N, C)
        n_cls = len(views)
        logits = self.teacher_head(torch.cat((tokens[:, 0], tokens[:, 1:][masks])))
        cls, patch = logits[:n_cls], logits[n_cls:]
        h, h_mean = entropies(torch.softmax(cls.float() / temp, dim=-1))  # mi: what the teacher says of the image
        t_cls = self._targets(cls, self.center_cls, temp)
        t_patch = self._targets(patch, self.center_patch, temp) if len(patch) else patch.float()
        return t_cls, t_patch, {"teacher_entropy": h, "teacher_entropy_batch": h_mean, "teacher_mi": h_mean - h,
                                "target_entropy": entropies(t_cls)[0]}

    def forward(self, batch: dict, sched) -> dict[str, Tensor | float]:
        cfg = self.cfg
        views, local, masks = batch["global"], batch["local"], batch["masks"]
        t_cls, t_patch, stats = self._teacher(views, masks, sched.teacher_temp)
        g_tokens = self.student.encode_tokens(views, masks=masks)  # the mask token where masks is True
        cls = [g_tokens[:, 0]]
        if len(local):
            cls.append(self.student.encode_tokens(local)[:, 0])
        n_cls = sum(len(c) for c in cls)
        logits = self.student_head(torch.cat((*cls, g_tokens[:, 1:][masks])))  # one pass: CLS, then patches
        s_cls, s_patch = logits[:n_cls], logits[n_cls:]
        b = len(views) // 2
        student_views = list(s_cls.split(b))  # global 1, global 2, local 0, local 1, ...
        dino = dino_loss(student_views, list(t_cls.split(b)), cfg.student_temp)
        ibot = ibot_loss(s_patch, t_patch, masks.nonzero()[:, 0], cfg.student_temp)
        koleo = sum(koleo_loss(c) for c in g_tokens[:, 0].split(b)) / 2
        total = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
        return {"total": total, "dino": dino, "ibot": ibot, "koleo": koleo,
                "masked_patches": float(masks.sum()), **stats}

    @torch.no_grad()
    def after_step(self, sched) -> None:
        """EMA teacher: theta_t <- m theta_t + (1 - m) theta_s (encoder and head)."""
        pairs = ((self.student.pretrained, self.teacher.pretrained), (self.student_head, self.teacher_head))
        for s_mod, t_mod in pairs:
            for ps, pt in zip(s_mod.parameters(), t_mod.parameters()):
                pt.mul_(sched.momentum).add_(ps.detach(), alpha=1 - sched.momentum)

    def before_step(self, sched) -> None:
        """DINOv2 keeps the prototypes frozen at first: their gradient is dropped (AdamW then skips them)."""
        if sched.freeze_prototypes:
            self.student_head.prototypes.grad = None


# ---------------------------------------------------------------------------- MAE (the control)
class MaeObjective(nn.Module):
    """MAE: the encoder sees 25% of the patches; a light decoder predicts the normalised pixels of the rest."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.student = DepthAnything(cfg.encoder)
        self.decoder = MAEDecoder(self.student.cfg.embed_dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads)

    def trainable(self) -> dict[str, nn.Parameter]:
        out = {f"student.pretrained.{k}": p for k, p in self.student.pretrained.named_parameters()
               if k != "mask_token"}  # MAE drops the hidden patches instead of masking them
        out.update({f"decoder.{k}": p for k, p in self.decoder.named_parameters()})
        return out

    def encoder(self) -> DepthAnything:
        return self.student

    def forward(self, batch: dict, sched) -> dict[str, Tensor | float]:
        images, keep = batch["image"], batch["keep"]
        grid = (images.shape[-2] // PATCH, images.shape[-1] // PATCH)
        tokens = self.student.encode_tokens(images, keep=keep)  # (B, 1+K, C)
        pred = self.decoder(tokens, keep, grid)
        masked = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device).scatter(1, keep, False)
        loss = mae_loss(pred, patchify(images), masked)
        return {"total": loss, "mae": loss}

    def after_step(self, sched) -> None:
        pass

    def before_step(self, sched) -> None:
        pass


def build_objective(cfg: PretrainConfig) -> DinoObjective | MaeObjective:
    """The objective's module, initialised from torch's global RNG (seed it first)."""
    return DinoObjective(cfg) if cfg.objective == "dino" else MaeObjective(cfg)

"""Short diagnostic runs that write nothing: the learning-rate range test and the overfit-one-batch
check (notebook 04)."""
from __future__ import annotations

import dataclasses
import math

import torch

from dalib.train.config import TrainConfig
from dalib.train.plan import batch_to_device, build_plan
from dalib.train.step import TrainHooks, build_state, train_device, train_step


class _Diagnostic:
    """What a short diagnostic run needs, built as `train` builds it (one process, nothing written): the
    config with `changes`, device, data plan, the `TrainState`, and `step(batch, s)`."""

    def __init__(self, cfg: TrainConfig, hooks: TrainHooks | None, device: str | None, **changes):
        hooks = hooks or TrainHooks()
        self.cfg = dataclasses.replace(cfg, device=device or cfg.device, **changes)
        self.cfg.validate()
        self.device = train_device(self.cfg, 0)
        self.plan = build_plan(self.cfg)
        self.state = build_state(self.cfg, hooks, self.device)
        hooks.setup(self.state.model, self.cfg, self.device)

    def step(self, batch: dict, step: int) -> tuple[dict, list[float]]:
        return train_step(self.state, batch_to_device(batch, self.device), step)


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
    base = d.cfg.lr_encoder
    d.state.scheduler = torch.optim.lr_scheduler.LambdaLR(d.state.optimizer, lambda s: lr_min / base * ratio**s)
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

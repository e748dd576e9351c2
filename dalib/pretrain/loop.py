"""The pretraining loop: AdamW with layer-wise lr decay and the schedules, gradient clipping, the EMA teacher,
JSON-lines diagnostics, atomic checkpoints and an exact resume.

    from dalib.pretrain.config import PretrainConfig
    from dalib.pretrain.loop import pretrain
    result = pretrain(PretrainConfig(objective="dino", steps=2000, out_dir="runs/pretrain/dino"))

A checkpoint is `out_dir/checkpoints/step-XXXXXXXX/` with `weights.safetensors` (every module and buffer of
the objective) and `train_state.pt` (AdamW state, step, RNG; tensors only, read with weights_only=True),
written as a temp folder, fsynced and renamed, then published in `checkpoints/latest.json`. Batches and
schedules are pure functions of (config, step), so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from dalib.model import read_safetensors
from dalib.pretrain.config import RUN_FIELDS, PretrainConfig
from dalib.pretrain.objectives import Schedule, build_objective
from dalib.pretrain.views import ImagePool, PretrainBatches
from dalib.runfiles import atomic_write_bytes, atomic_write_json, environment_info
from dalib.train.checkpoints import (LOG_FILE, TRAIN_STATE_FILE, append_log, clean_partial_checkpoints,
                                     latest_checkpoint, load_train_state, truncate_log)

PRETRAIN_CONFIG_FILE = "config.json"
PRETRAIN_WEIGHTS_FILE = "weights.safetensors"
PRETRAIN_STATE_FORMAT = 1


# ---------------------------------------------------------------------------- optimiser
def param_groups(named: dict[str, nn.Parameter], cfg: PretrainConfig, depth: int) -> list[dict]:
    """AdamW groups by (lr scale, weight decay on/off). Layer-wise decay (DINOv2): patch embedding, tokens and
    position embedding are layer 0, block i is layer i+1, the rest (final norm, heads) layer depth+1;
    lr scale = layer_decay^(depth + 1 - layer), x patch_embed_lr_mult for the patch embedding. Biases, norms
    and LayerScale gains (1-D) get no weight decay."""
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in named.items():
        enc = name[len("student.pretrained."):] if name.startswith("student.pretrained.") else None
        if enc is None:
            layer = depth + 1
        elif enc.startswith(("cls_token", "pos_embed", "mask_token", "patch_embed")):
            layer = 0
        elif enc.startswith("blocks."):
            layer = int(enc.split(".")[1]) + 1
        else:
            layer = depth + 1
        scale = cfg.layer_decay ** (depth + 1 - layer)
        if enc is not None and enc.startswith("patch_embed"):
            scale *= cfg.patch_embed_lr_mult
        key = (scale, p.ndim > 1)
        groups.setdefault(key, {"params": [], "lr_scale": scale, "decay": p.ndim > 1, "names": []})
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], k[1]))]


def set_schedule(optimizer: torch.optim.Optimizer, sched: Schedule) -> None:
    for g in optimizer.param_groups:
        g["lr"] = sched.lr * g["lr_scale"]
        g["weight_decay"] = sched.weight_decay if g["decay"] else 0.0


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(out_dir: Path, step: int, objective: nn.Module, optimizer, keep: int) -> Path:
    """Write checkpoints/step-XXXXXXXX/ atomically and publish it in checkpoints/latest.json."""

    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp, final = root / f".{name}.tmp", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sd = {k: v.detach().contiguous().cpu() for k, v in objective.state_dict().items()}
    save_file(sd, str(tmp / PRETRAIN_WEIGHTS_FILE), metadata={"step": str(step)})
    buf = io.BytesIO()
    torch.save({"format": PRETRAIN_STATE_FORMAT, "step": step, "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state()}}, buf)
    atomic_write_bytes(tmp / TRAIN_STATE_FILE, buf.getvalue())
    with open(tmp / PRETRAIN_WEIGHTS_FILE, "rb") as f:
        os.fsync(f.fileno())
    if final.exists():  # a re-run that reached the same step again
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_json(root / "latest.json", {"step": step, "dir": name})
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _resume(cfg: PretrainConfig, out_dir: Path, objective: nn.Module, optimizer) -> int:
    """Load the run's last checkpoint (same run fields required); returns the first step to run."""

    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is None:
        return 0
    saved = json.loads((out_dir / PRETRAIN_CONFIG_FILE).read_text())["config"]
    now = cfg.to_dict()
    for k in RUN_FIELDS:
        if k in saved and saved[k] != now[k]:
            raise ValueError(f"cannot resume {out_dir}: PretrainConfig.{k} was {saved[k]!r} and is {now[k]!r} now; "
                             "use the same value, another out_dir, or resume=False")
    objective.load_state_dict(read_safetensors(ckpt / PRETRAIN_WEIGHTS_FILE), strict=True)
    state = load_train_state(ckpt, keys=("step", "optimizer", "rng"))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"])


# ---------------------------------------------------------------------------- the loop
def _setup(cfg: PretrainConfig):
    """Objective (seeded), AdamW, resume, run files; returns (objective, optimizer, batches, start step)."""
    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg)
    groups = param_groups(objective.trainable(), cfg, objective.student.cfg.depth)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups],
                                  lr=cfg.lr, betas=tuple(cfg.betas))
    clean_partial_checkpoints(out_dir)
    start = _resume(cfg, out_dir, objective, optimizer)
    if start:
        truncate_log(out_dir / LOG_FILE, start)
    elif (out_dir / LOG_FILE).exists():
        (out_dir / LOG_FILE).unlink()
    pool = ImagePool(cfg)
    atomic_write_json(out_dir / PRETRAIN_CONFIG_FILE, {"config": cfg.to_dict(), "resumed_from": start or None,
                                              "images": pool.counts(), "environment": environment_info()})
    return objective, optimizer, PretrainBatches(pool, cfg), start


def _step(objective, optimizer, batch: dict, sched: Schedule, cfg: PretrainConfig) -> dict:
    """One optimiser step; returns the loss terms and diagnostics as floats."""
    set_schedule(optimizer, sched)
    terms = objective(batch, sched)
    total = terms["total"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"step {sched.step}: the loss is {float(total)}; lower PretrainConfig.lr")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    objective.before_step(sched)
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    optimizer.step()
    objective.after_step(sched)
    out = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
    out["grad_norm"] = float(norm)
    return out


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain (or resume) as configured. Returns {"step" (last step done), "steps", "finished", "checkpoint",
    "seconds", "images_per_s", "last" (last logged record), "out_dir"}."""
    objective, optimizer, batches, start = _setup(cfg)
    out_dir = Path(cfg.out_dir)
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    ckpt = latest_checkpoint(out_dir)
    t_start = t_log = time.perf_counter()
    acc: dict[str, float] = {}
    n_acc, last = 0, {}
    for step in range(start, end):
        sched = Schedule.at(cfg, step)
        terms = _step(objective, optimizer, batches[step], sched, cfg)
        for k, v in terms.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            now = time.perf_counter()
            last = {"step": done, **{k: round(v / n_acc, 6) for k, v in acc.items()}, "lr": sched.lr,
                    "weight_decay": round(sched.weight_decay, 6), "momentum": round(sched.momentum, 6),
                    "teacher_temp": round(sched.teacher_temp, 6), "images_seen": done * cfg.batch_size,
                    "images_per_s": round(n_acc * cfg.batch_size / max(now - t_log, 1e-9), 3),
                    "elapsed_s": round(now - t_start, 3)}
            append_log(out_dir / LOG_FILE, last)
            acc, n_acc, t_log = {}, 0, now
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == end:
            ckpt = save_checkpoint(out_dir, done, objective, optimizer, cfg.keep_checkpoints)
    seconds = time.perf_counter() - t_start
    ran = max(end - start, 0)
    return {"step": max(end, start), "steps": cfg.steps, "finished": max(end, start) >= cfg.steps,
            "checkpoint": str(ckpt) if ckpt else None, "seconds": round(seconds, 3),
            "images_per_s": round(ran * cfg.batch_size / seconds, 3) if ran else None, "last": last,
            "out_dir": str(out_dir)}

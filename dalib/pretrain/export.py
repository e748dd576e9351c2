"""The result of a pretraining run as an encoder file: fp16 safetensors with `pretrained.*` keys (what
`dalib.weights.build_model(encoder, pretrained_encoder=FILE)` and `load_encoder_weights` read) plus a JSON
beside it with the file's sha256, the command that reproduces it, the images seen and the config.

    python -m dalib.pretrain --out-dir runs/pretrain/dino --steps 2000 --export weights/vitt-dino.safetensors
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from dalib.model import read_safetensors
from dalib.pretrain.config import PretrainConfig, config_from_mapping
from dalib.pretrain.loop import PRETRAIN_CONFIG_FILE, PRETRAIN_WEIGHTS_FILE
from dalib.runfiles import REPO_ROOT, atomic_write_json, environment_info, give_default_mode
from dalib.shards import file_sha256
from dalib.train.checkpoints import latest_checkpoint, read_log

MAX_ENTROPY_FRAC = 0.9  # a DINO teacher whose per-sample entropy is above this fraction of ln K has not learnt
MIN_LOSS_GAP = 0.15  # nats the DINO loss must lie below ln K (a student that predicts its teacher at all)


def reproduce_command(cfg: PretrainConfig) -> str:
    """`python -m dalib.pretrain ...` naming every field that shapes the result (lists comma-separated), so
    the command does not depend on the defaults of a later version; run-only fields are left out."""
    skip = {"stop_at", "resume", "threads", "log_every", "checkpoint_every", "keep_checkpoints"}
    parts = ["python -m dalib.pretrain"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in skip or v is None:
            continue
        if f.name == "out_dir":
            v = _in_checkout(v)
        text = ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
        parts.append(f"--{f.name.replace('_', '-')} {text}")
    return " ".join(parts)


def _in_checkout(path: str) -> str:
    """A path inside this checkout relative to its root, so a recorded command reads the same in any clone."""
    p = Path(path)
    return str(p.relative_to(REPO_ROOT)) if p.is_absolute() and p.is_relative_to(REPO_ROOT) else str(path)


def _check_teacher(cfg: PretrainConfig, log: list[dict], force: bool) -> None:
    """Refuse a DINO teacher that has not left the uniform phase (or collapsed): its per-sample entropy must be
    below MAX_ENTROPY_FRAC ln K, the DINO loss MIN_LOSS_GAP below ln K, and what the teacher says about the
    image (entropy of the batch mean - mean entropy) above its value at the first logged step. A random
    initialisation passes the first test at temperature 0.04 (ln K - 1.2 with a 256-wide bottleneck), not
    the other two; a collapsed teacher fails the third."""
    if cfg.objective != "dino" or force:
        return
    ln_k = math.log(cfg.prototypes)
    first, last = (log[0], log[-1]) if log else ({}, {})
    h, loss = last.get("teacher_entropy", ln_k), last.get("dino", ln_k)
    mi, mi0 = last.get("teacher_mi", 0.0), first.get("teacher_mi", 0.0)
    if h > MAX_ENTROPY_FRAC * ln_k or loss > ln_k - MIN_LOSS_GAP or mi <= mi0:
        raise ValueError(f"{cfg.out_dir}: the teacher has not left the uniform phase: per-sample entropy {h:.3f} "
                         f"(limit {MAX_ENTROPY_FRAC * ln_k:.3f}), DINO loss {loss:.3f} (limit "
                         f"{ln_k - MIN_LOSS_GAP:.3f} = ln {cfg.prototypes} - {MIN_LOSS_GAP}), teacher information "
                         f"{mi:.3f} nats (first logged {mi0:.3f}); train longer or fix the recipe (force=True exports "
                         "anyway)")


def export_encoder(run_dir: str | os.PathLike, path: str | os.PathLike, *, force: bool = False) -> dict:
    """Write the encoder of a run's last checkpoint to `path` (fp16 safetensors, `pretrained.*` keys; the
    DINO teacher or the MAE encoder) and `path` with `.json` beside it; returns that JSON's content.

    Refuses a DINO run whose teacher has not left the uniform phase (`_check_teacher`) unless force=True.
    """
    run_dir, path = Path(run_dir), Path(path)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (checkpoints/latest.json) to export")
    config_file = run_dir / PRETRAIN_CONFIG_FILE
    cfg = config_from_mapping(json.loads(config_file.read_text())["config"], str(config_file))
    step = int(json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"])
    log = [r for r in read_log(run_dir) if r["step"] <= step]
    last = log[-1] if log else {}
    _check_teacher(cfg, log, force)
    prefix = "teacher.pretrained." if cfg.objective == "dino" else "student.pretrained."
    sd = {"pretrained." + k[len(prefix):]: v.to(torch.float16).contiguous()
          for k, v in read_safetensors(ckpt / PRETRAIN_WEIGHTS_FILE).items() if k.startswith(prefix)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # one metadata entry: safetensors writes several in a varying order, and the file's bytes (its sha256) would
    # differ between two exports of the same weights; the rest is in the JSON beside it
    save_file(sd, str(tmp), metadata={"format": "dalib.pretrain.encoder"})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    give_default_mode(tmp)
    os.replace(tmp, path)
    info = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size, "dtype": "float16",
            "encoder": cfg.encoder, "objective": cfg.objective, "step": step, "steps": cfg.steps,
            "images_seen": step * cfg.batch_size, "reproduce": reproduce_command(cfg),
            "config": {**cfg.to_dict(), "out_dir": _in_checkout(cfg.out_dir)},
            "last_log": last, "git_revision": environment_info()["git_revision"]}
    atomic_write_json(path.with_suffix(".json"), info)
    return info

"""The result of a pretraining run as an encoder file: fp16 safetensors with `pretrained.*` keys (what
`DepthAnything(encoder, pretrained_encoder=FILE)` and `dalib.weights.load_encoder_weights` read) plus a JSON
beside it with the file's sha256, the command that reproduces it, the images seen and the config.

    python -m dalib.pretrain --out-dir runs/pretrain/dino --steps 2000 --export weights/vitt-dino.safetensors
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import torch

from dalib.pretrain.config import PretrainConfig, config_from_mapping
from dalib.pretrain.loop import CONFIG_FILE, WEIGHTS_FILE
from dalib.runfiles import atomic_write_json, environment_info
from dalib.train.checkpoints import latest_checkpoint, read_log

MAX_ENTROPY_FRAC = 0.9  # a DINO teacher whose per-sample entropy is above this fraction of ln K has not learnt


def reproduce_command(cfg: PretrainConfig) -> str:
    """`python -m dalib.pretrain ...` naming every field that shapes the result (lists comma-separated), so
    the command does not depend on the defaults of a later version; run-only fields are left out."""
    skip = {"stop_at", "resume", "threads", "log_every", "checkpoint_every", "keep_checkpoints"}
    parts = ["python -m dalib.pretrain"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in skip or v is None:
            continue
        text = ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
        parts.append(f"--{f.name.replace('_', '-')} {text}")
    return " ".join(parts)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_teacher(cfg: PretrainConfig, last: dict, force: bool) -> None:
    """A DINO teacher still near the uniform distribution (or without a logged entropy) is refused."""
    if cfg.objective != "dino" or force:
        return
    h, limit = last.get("teacher_entropy"), MAX_ENTROPY_FRAC * math.log(cfg.prototypes)
    if h is None or h > limit:
        raise ValueError(f"{cfg.out_dir}: the teacher's per-sample entropy is {h} nats, above {limit:.2f} "
                         f"({MAX_ENTROPY_FRAC} ln {cfg.prototypes}): it has not left the uniform phase; "
                         "train longer or fix the recipe (force=True exports anyway)")


def export_encoder(run_dir: str | os.PathLike, path: str | os.PathLike, *, force: bool = False) -> dict:
    """Write the encoder of a run's last checkpoint to `path` (fp16 safetensors, `pretrained.*` keys; the
    DINO teacher or the MAE encoder) and `path` with `.json` beside it; returns that JSON's content.

    Refuses a DINO run whose teacher is still near-uniform (`MAX_ENTROPY_FRAC`) unless force=True.
    """
    from safetensors.torch import save_file

    from dalib.model import read_safetensors

    run_dir, path = Path(run_dir), Path(path)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (checkpoints/latest.json) to export")
    cfg = config_from_mapping(json.loads((run_dir / CONFIG_FILE).read_text())["config"], str(run_dir / CONFIG_FILE))
    step = int(json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"])
    log = [r for r in read_log(run_dir) if r["step"] <= step]
    last = log[-1] if log else {}
    _check_teacher(cfg, last, force)
    prefix = "teacher.pretrained." if cfg.objective == "dino" else "student.pretrained."
    sd = {"pretrained." + k[len(prefix):]: v.to(torch.float16).contiguous()
          for k, v in read_safetensors(ckpt / WEIGHTS_FILE).items() if k.startswith(prefix)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(sd, str(tmp), metadata={"format": "dalib.pretrain.encoder", "encoder": cfg.encoder,
                                      "objective": cfg.objective, "step": str(step)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    info = {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size, "dtype": "float16",
            "encoder": cfg.encoder, "objective": cfg.objective, "step": step, "steps": cfg.steps,
            "images_seen": step * cfg.batch_size, "reproduce": reproduce_command(cfg), "config": cfg.to_dict(),
            "last_log": last, "git_revision": environment_info()["git_revision"]}
    atomic_write_json(path.with_suffix(".json"), info)
    return info

"""Checkpoints (written atomically, published in `checkpoints/latest.json`), the RNG states that make a
resumed run repeat exactly, and the run's JSON-lines log (notebooks 04 and 06)."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dalib.runfiles import atomic_write_bytes, atomic_write_json, read_json_object, run_relative
from dalib.train.config import TrainConfig
from dalib.weights import torch_load_tensors

TRAIN_STATE_FILE = "train_state.pt"
LATEST_FILE = "latest.json"
LOG_FILE = "train_log.jsonl"
STATE_FORMAT = 1
START_OVER = "or start over with resume=False (--resume false) or another out_dir"


def _rng_state() -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                    "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
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
    atomic_write_bytes(tmp / TRAIN_STATE_FILE, buf.getvalue())
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
    info = read_json_object(ptr, f"it names the checkpoint to resume: write {{\"step\": N, \"dir\": \"step-...\"}} "
                                 f"for a complete folder of {root}, {START_OVER}")
    if not isinstance(info.get("dir"), str) or "/" in info["dir"]:
        raise ValueError(f"{ptr}: 'dir' is {info.get('dir')!r}, expected a checkpoint folder name such as "
                         f"'step-00000100'; fix it, {START_OVER}")
    d = root / info["dir"]
    if not (d / TRAIN_STATE_FILE).is_file():
        raise FileNotFoundError(f"{ptr} points to {d}, which has no {TRAIN_STATE_FILE}")
    return d


def load_train_state(ckpt: str | os.PathLike, keys=("step", "optimizer", "scheduler", "rng")) -> dict:
    """train_state.pt of a checkpoint folder, loaded with weights_only=True on the CPU; a damaged one (or one
    without `keys`) is a ValueError naming it and what to do. Training and pretraining (`dalib.pretrain`)."""
    path = Path(ckpt) / TRAIN_STATE_FILE
    advice = (f"delete the checkpoint folder {ckpt} and point {LATEST_FILE} at an earlier one to resume from it, "
              f"{START_OVER}")
    state = torch_load_tensors(path, "training state", advice)
    if not isinstance(state, dict) or not all(k in state for k in keys):
        raise ValueError(f"{path}: not the training state of a dalib checkpoint (expected a dict with {list(keys)}); "
                         f"{advice}")
    return state


def clean_partial_checkpoints(out_dir: Path) -> None:
    root = out_dir / "checkpoints"
    for p in root.glob(".step-*.tmp") if root.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def check_resume(saved: dict, cfg: TrainConfig) -> None:
    keys = ("encoder", "version", "datasets", "splits", "ratios", "targets", "crop", "scale", "hflip", "batch_size",
            "steps", "lr_encoder", "decoder_lr_mult", "warmup_steps", "poly_power", "seed", "align", "gm_weight", "gm_ramp_steps",
            "trims", "loss_weights", "data_n")
    now = cfg.to_dict()
    for k in keys:
        if k in saved and saved[k] != now[k]:
            raise ValueError(f"cannot resume {cfg.out_dir}: TrainConfig.{k} was {saved[k]!r} when the checkpoint "
                             f"was written and is {now[k]!r} now; use the same value, another out_dir, or resume=False")


def append_log(path: Path, rec: dict) -> None:
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


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def training_summary(run_dir, cfg, result: dict) -> dict:
    """What a chapter records about one training run of `dalib.train` (notebooks 04 and 06): the final
    checkpoint (relative to the run folder), training time read from the run's own log (so a loaded run
    reports how long it took to train), steps, batch size, images seen, training images per source and the
    last logged loss terms (None where the run logged none).
    """
    log = read_log(cfg.out_dir)
    last = log[-1] if log else {}
    return {
        "checkpoint_rel": run_relative(run_dir, result["checkpoint"]),
        "train_seconds": training_seconds(log),
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "images_seen": cfg.steps * cfg.batch_size,
        "train_images": [None if isinstance(d, str) else len(d) for d in cfg.datasets],  # names: unknown
        "final_loss": last.get("total"),
        "final_feat": last.get("feat"),
    }

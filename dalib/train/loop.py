"""The loop: `train` builds a run (data plan, model and optimiser, resume, run files, hooks, DDP), repeats
`train_step`, logs and checkpoints; `launch` runs it in this process or under torchrun (notebooks 04, 06)."""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm.auto import tqdm

from dalib.data.serve import dataset_on_disk
from dalib.distributed import dist_env, run_torchrun
from dalib.model import MODEL_CONFIG_FILE, WEIGHTS_FILE, read_safetensors
from dalib.runfiles import atomic_write_bytes, atomic_write_json, environment_info
from dalib.train.checkpoints import (LOG_FILE, append_log, check_resume, clean_partial_checkpoints, latest_checkpoint,
                                     load_train_state, save_checkpoint, set_rng_state, truncate_log)
from dalib.train.config import TrainConfig
from dalib.train.plan import BatchPlan, batch_to_device, build_plan, worker_init
from dalib.train.step import TrainHooks, TrainState, build_state, gm_weight_at, train_device, train_step

RUN_CONFIG_FILE = "config.json"  # out_dir/config.json: the resolved TrainConfig, device, arithmetic, environment
RESULT_FILE = "result.json"  # train()'s return value, written by rank 0 when a run ends


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> dict:
    """Train (or resume) a DepthAnything model as configured; returns a summary.

    Returns {"steps", "start_step", "seconds", "images_per_s", "final" (last loss terms), "checkpoint"
    (folder of the final checkpoint), "out_dir", "world_size"}. Under torchrun every rank calls it;
    rank 0 writes the files. Notebooks 04 (teacher) and 06 (student, with `hooks`).
    """
    hooks = hooks or TrainHooks()
    rank, world, local_rank = dist_env()
    device = train_device(cfg, local_rank)
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
    and are rebuilt in every process by `python -m dalib.student`. The processes' output (rank 0's progress bar
    included) streams to this process's output and to `out_dir/torchrun.log`.
    """
    if nproc <= 1:
        return train(cfg, hooks)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = cfg.to_dict()
    spec["datasets"] = [dataset_on_disk(d, out / "inputs" / f"source{i}") for i, d in enumerate(cfg.datasets)]
    module = "dalib.train"
    if hooks is not None and type(hooks) is not TrainHooks:
        if not hasattr(hooks, "to_spec"):
            raise ValueError(f"{type(hooks).__name__} has no to_spec(); only hooks that describe themselves can run "
                             "under torchrun (nproc > 1)")
        spec["student"] = hooks.to_spec()
        module = "dalib.student"
    spec["progress"] = True  # rank 0's progress bar streams to this process's output (and torchrun.log)
    path = out / "launch.yaml"
    atomic_write_bytes(path, yaml.safe_dump(spec, sort_keys=False).encode())
    return run_torchrun(module, ["--config", str(path)], nproc, log_file=out / "torchrun.log")[0]  # rank 0's report


def _resume(cfg: TrainConfig, out_dir: Path, state: TrainState, device) -> tuple[Path | None, int]:
    """Load the last published checkpoint of out_dir when resuming; returns (checkpoint folder or None, step)."""
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is None:
        return None, 0
    run_config = out_dir / RUN_CONFIG_FILE
    saved_cfg = json.loads(run_config.read_text())["config"] if run_config.is_file() else {}
    check_resume(saved_cfg, cfg)
    state.model.load_state_dict(read_safetensors(ckpt / WEIGHTS_FILE, device=str(device)), strict=True)
    saved = load_train_state(ckpt)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return ckpt, int(saved["step"])


def _write_run_files(cfg: TrainConfig, out_dir: Path, ckpt, start: int, world: int, device, state: TrainState) -> None:
    """Rank 0: the log truncated to the resumed step (or removed), and config.json of the run."""
    log_path = out_dir / LOG_FILE
    if ckpt is not None:
        truncate_log(log_path, start)
    elif log_path.exists():
        log_path.unlink()
    atomic_write_json(out_dir / RUN_CONFIG_FILE, {
        "config": cfg.to_dict(), "world_size": world, "device": str(device), "bf16_autocast": state.amp,
        "resumed_from": start if ckpt is not None else None, "frozen_unused_parameters": state.frozen,
        "environment": environment_info()})


def _set_torch_flags(cfg: TrainConfig) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)


def _start(cfg: TrainConfig, hooks: TrainHooks, rank: int, world: int,
           device: torch.device) -> tuple[TrainState, BatchPlan, Path | None, int]:
    """Data plan, model and AdamW; resume from the last checkpoint; rank 0 writes the run files; hooks set up;
    DDP wrap. (This order fixes the RNG draws, so resumed runs repeat exactly.) Returns (state, plan, the
    checkpoint resumed from or None, the first step to run)."""
    cfg.validate(world)
    _set_torch_flags(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = build_plan(cfg, rank, world)
    state = build_state(cfg, hooks, device, world)
    if rank == 0:
        clean_partial_checkpoints(out_dir)
    ckpt, start = _resume(cfg, out_dir, state, device)
    if rank == 0:
        _write_run_files(cfg, out_dir, ckpt, start, world, device, state)
    hooks.setup(state.model, cfg, device)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        state.net = nn.parallel.DistributedDataParallel(state.model, device_ids=ids)
    return state, plan, ckpt, start


def _loader(cfg: TrainConfig, plan: BatchPlan, start: int, device: torch.device) -> torch.utils.data.DataLoader:
    """Batches of steps start .. steps-1 of this rank, prepared by `num_workers` processes."""
    return torch.utils.data.DataLoader(
        plan, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init if cfg.num_workers else None,
        prefetch_factor=cfg.prefetch if cfg.num_workers else None, persistent_workers=False)


def _maybe_checkpoint(state: TrainState, step: int, metrics: dict, is_main: bool) -> str | None:
    """Rank 0, every `checkpoint_every` steps and at the last: save a checkpoint; returns its folder."""
    cfg = state.cfg
    if is_main and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps):
        return str(save_checkpoint(cfg.out_dir, step, state.model, state.optimizer, state.scheduler,
                                   extra={"metrics": metrics}, keep=cfg.keep_checkpoints))
    return None


def _train(cfg: TrainConfig, hooks: TrainHooks, rank: int, world: int, device: torch.device) -> dict:
    state, plan, ckpt, start = _start(cfg, hooks, rank, world, device)
    result = {"steps": cfg.steps, "start_step": start, "seconds": 0.0, "images_per_s": None, "final": {},
              "checkpoint": str(ckpt) if ckpt is not None else None, "out_dir": str(Path(cfg.out_dir)),
              "world_size": world, "bf16_autocast": state.amp}
    if start >= cfg.steps:  # already finished: report what the final checkpoint recorded
        result["final"] = json.loads((ckpt / MODEL_CONFIG_FILE).read_text()).get("extra", {}).get("metrics", {})
        return result
    bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr) \
        if rank == 0 and cfg.progress else None
    logger = _StepLogger(cfg, Path(cfg.out_dir) / LOG_FILE, world, rank == 0, bar)
    t_first = None  # end of the first step: images/s excludes start-up
    step = start
    batches = iter(_loader(cfg, plan, start, device))
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(batches)
        logger.data_s += time.perf_counter() - t0
        terms, lrs = train_step(state, batch_to_device(batch, device), step)
        step += 1
        t_first = t_first or time.perf_counter()
        logger.after_step(step, terms, lrs)
        result["checkpoint"] = _maybe_checkpoint(state, step, logger.last, rank == 0) or result["checkpoint"]
    if bar is not None:
        bar.close()
    del batches
    t_end = time.perf_counter()
    result["seconds"] = round(t_end - logger.t_start, 3)
    if step - start > 1 and t_first is not None:
        result["images_per_s"] = round((step - start - 1) * cfg.batch_size / max(t_end - t_first, 1e-9), 3)
    result["final"] = logger.last
    if world > 1:
        dist.barrier()  # every rank returns after rank 0 has written the final checkpoint
        result["checkpoint"] = str(Path(cfg.out_dir) / "checkpoints" / f"step-{cfg.steps:08d}")
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
                append_log(self.path, rec)
                if self.last["total"] == 0.0 and not self.warned:
                    self.warned = True
                    warnings.warn(f"step {step}: loss is exactly 0; the prediction has probably collapsed to a "
                                  "constant (dead final ReLU), which gives no gradient. Lower lr_encoder or "
                                  "decoder_lr_mult, or add warmup_steps.", RuntimeWarning, stacklevel=3)
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{self.last['total']:.4f}", refresh=False)
        if self.bar is not None:
            self.bar.update(1)

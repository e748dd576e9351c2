"""Several processes: which one this is, which device it uses, starting them with torchrun, and getting
their results back. Used by training (notebooks 04 and 06, `gpus` parameter) and pseudo-labelling (05).

    rank, world, local_rank = dist_env()               # (0, 1, 0) outside torchrun
    device = resolve_device("auto")                    # cuda:LOCAL_RANK, else mps, else cpu
    device = notebook_device(num_threads)              # a chapter's device line (04-07): cuda, else cpu
    bf16_autocast_supported(device)                    # does bfloat16 autocast pay off there?
    results = run_torchrun("dalib.train", ["--config", "run.yaml"], nproc=2)   # one dict per rank

A child returns its result with `report_result(result)`: a JSON file per rank in a folder the parent
names in $DALIB_RESULT_DIR (nothing happens outside `run_torchrun`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from dalib.runfiles import atomic_write_json

RESULT_DIR_ENV = "DALIB_RESULT_DIR"  # where `report_result` writes under `run_torchrun`


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process, from torchrun's variables; (0, 1, 0) without them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(device=None, *, local_rank: int | None = None, mps: bool = True,
                   what: str = "device") -> torch.device:
    """None / 'auto' -> cuda:LOCAL_RANK when CUDA is there, else mps (when `mps`), else cpu; 'cuda' ->
    cuda:LOCAL_RANK; anything else as given. A CUDA device without CUDA is a RuntimeError naming `what`.

    local_rank: default $LOCAL_RANK. Training passes mps=False (it picks between CUDA and the CPU only).
    """
    local_rank = dist_env()[2] if local_rank is None else local_rank
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{what}={str(device)!r} but CUDA is not available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def report_result(result: dict) -> None:
    """In a child of `run_torchrun`: hand this rank's `result` (JSON-able) to the parent; else nothing."""
    folder = os.environ.get(RESULT_DIR_ENV)
    if folder:
        atomic_write_json(Path(folder) / f"rank-{dist_env()[0]}.json", json.loads(json.dumps(result, default=str)))


def run_torchrun(module: str, args: Sequence[str], nproc: int, *, log_file=None, echo=None) -> list[dict]:
    """`torchrun --standalone --nproc_per_node nproc -m module args...` (this Python); returns what each rank
    passed to `report_result`, in rank order. The children's output (stdout and stderr) streams as it comes to
    `echo` (default: this process's stdout, so a notebook shows their progress) and to `log_file` (appended). GPU
    memory this process holds in torch's cache is released first, for the children. RuntimeError with the command
    and the end of the output when it fails or a rank reported nothing. Used by `dalib.train.loop.launch` and
    `dalib.pseudo_label.labelling.launch_pseudo_label`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *map(str, args)]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="dalib-results-") as folder:
        code, tail = _stream(cmd, {**os.environ, RESULT_DIR_ENV: folder}, log_file, echo or sys.stdout)
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}):\n{tail}")
        files = [Path(folder) / f"rank-{r}.json" for r in range(nproc)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise RuntimeError(f"{' '.join(cmd)} reported no result for {missing}:\n{tail}")
        return [json.loads(f.read_text()) for f in files]


def _stream(cmd: list[str], env: dict, log_file, echo) -> tuple[int, str]:
    """Run `cmd`, copying its combined output to `echo` and `log_file` chunk by chunk (progress bars' carriage
    returns included); returns (exit code, the last 4,000 characters of the output)."""
    tail = ""
    log = open(log_file, "ab") if log_file else contextlib.nullcontext()
    with log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc:
        while chunk := proc.stdout.read1(4096):
            text = chunk.decode(errors="replace")
            echo.write(text)
            echo.flush()
            if log_file:
                log.write(chunk)
                log.flush()
            tail = (tail + text)[-4000:]
    return proc.returncode, tail


def notebook_device(num_threads: int = 0, device: str = "auto") -> torch.device:
    """The device a chapter runs its models on (its `device` parameter): "auto" as training chooses (CUDA when
    present, else the CPU), "cuda" (an error without CUDA) or "cpu"; torch gets `num_threads` CPU threads when
    num_threads > 0 (0: torch's default). Notebooks 04 to 07."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0: torch's default), got {num_threads}")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    return resolve_device(device, mps=False, what="the notebook's device parameter")


def cuda_missing_message(what: str) -> str:
    """Why `what` (a profile or setting that asks for CUDA) cannot run here, and what to do: this torch's version
    and CUDA build, and how to install one that matches the machine's driver."""
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return (f"{what} asks for a CUDA GPU, but torch {torch.__version__} ({build}) sees none "
            f"(torch.cuda.is_available() is False). On a GPU machine, install a torch build for its driver "
            f"(nvidia-smi names the driver's CUDA version), e.g. `rm -rf .venv && make setup TORCH_SPEC=\"torch "
            f"torchvision --index-url https://download.pytorch.org/whl/cu124\"`; or run on the CPU knowingly "
            f"with `-p device cpu` (slow at 518 px).")


def device_info() -> dict:
    """torch's version and CUDA build, each GPU's name, memory and bf16 support, and whether the CPU computes bf16
    natively: what a run's params.json and config.json record about the machine."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "bf16": props.major >= 8})
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpus": gpus,
            "cpu_native_bf16": cpu_has_native_bf16()}


# ---------------------------------------------------------------- bfloat16 support
def cpu_has_native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, from /proc/cpuinfo)? Without
    it bf16 autocast on the CPU emulates the format and is slower than fp32. `DALIB_CPU_BF16=0/1` overrides
    the detection (e.g. to compare both in `benchmarks/bench_train.py`)."""
    forced = os.environ.get("DALIB_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpuinfo_has_bf16()


@functools.lru_cache(maxsize=1)
def _cpuinfo_has_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no detection, fp32
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def bf16_autocast_supported(device) -> bool:
    """Whether bf16 autocast pays off on `device`: CUDA with bf16 support, or a CPU with native bf16
    (`cpu_has_native_bf16`); False elsewhere (fp32). Training (dalib.train) uses it for TrainConfig.amp."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False

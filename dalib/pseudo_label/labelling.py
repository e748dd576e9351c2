"""The labelling run: `pseudo_label` (one process, its shards) and `launch_pseudo_label` (several processes
under torchrun); the inference loop overlaps decoding, the model and writing (notebook 05_pseudo_labelling)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dalib.data.serve import dataset_on_disk
from dalib.distributed import resolve_device, run_torchrun
from dalib.export import is_onnx_teacher, onnx_for, onnx_runner
from dalib.model import evaluating
from dalib.pseudo_label.pool import status
from dalib.pseudo_label.sources import (LabellingBatches, load_teacher, open_source, parse_shard, prefetch_batches,
                                        shards_of, source_probe, teacher_fingerprint)
from dalib.pseudo_label.store import (DEFAULT_SHARD_SIZE, output_features, prepare_index, shard_done,
                                      write_label_shard)
from dalib.shards import (FORMAT_VERSION, INDEX_FILE, LOCK_FILE, folder_lock, read_index, shard_grid, shard_name,
                          sweep_temp)

DEFAULT_KEEP = ("index", "kind", "path", "meta")  # source metadata copied when present


def pseudo_label(teacher, source, out_dir, *, split: str | None = None, n: int | None = None, root=None,
                 input_size: int = 518, batch_size: int = 16, shard=(0, 1), shard_size: int | None = None,
                 device=None, amp: bool = True, num_workers: int | None = None, progress: bool = True,
                 keep_columns: Sequence[str] | None = None, verify: bool = True, overwrite: bool = False,
                 backend: str = "torch") -> dict:
    """Label `source` with `teacher` into `out_dir` (layout: `dalib.pseudo_label`'s docstring); resumable, shardable.

    teacher: a DepthAnything or a path (`dalib.weights.load_weights`). source: a datasets.Dataset with an
    `image` column, a dalib.data name with `split` (or a (name, split) pair), or a save_to_disk folder;
    `n` keeps its first n rows. shard: (i, n) or 'i/n': this process computes shards k % n == i.
    shard_size: rows per shard (default 256, or what `out_dir` already uses). device: None = the
    teacher's own device when a model is given, else auto (cuda:LOCAL_RANK, mps, cpu); the model is
    moved there. amp: bfloat16 autocast, on CUDA only. num_workers: threads decoding and preprocessing
    while the model runs (default min(4, cpus per local rank - 1), at least 1; on a CPU device only on
    cores that torch's own threads leave free; 0 = none, in line).
    keep_columns: source columns copied to the output (default: index, kind, path, meta where present;
    `heldout_*` names load synth-photo with its held-out ground truth). verify: check sha256 of existing
    shards (else sizes only). backend: "torch", or "onnxruntime" (`dalib.export`: the teacher may then also be
    an exported .onnx file; a PyTorch teacher is exported once and cached; runs on the CPU with torch's
    thread count). Returns {"images", "skipped", "shards", "seconds", "images_per_s",
    "out_dir", "complete"}; images/s counts the images labelled in this call. Notebook 05_pseudo_labelling.
    """
    worker, workers = parse_shard(shard)
    if input_size < 14 or batch_size < 1:
        raise ValueError(f"input_size must be >= 14 and batch_size >= 1, got {input_size} and {batch_size}")
    model, dev, fingerprint = _labeller(teacher, backend, device)
    src, desc = open_source(source, split, n=n, root=root, keep_columns=keep_columns)
    keep = _kept_columns(src, keep_columns)
    raw = src.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one labeller per worker spec at a time: a second identical one waits, then skips what the first completed
    with folder_lock(out, f"{LOCK_FILE}-{worker}-of-{workers}", on_wait=lambda: print(
            f"pseudo_label: another process is labelling shard {worker}/{workers} of {out}; waiting for it to "
            f"finish", file=sys.stderr, flush=True)):
        old = read_index(out / INDEX_FILE)
        if shard_size is None:
            shard_size = int(old["shard_size"]) if old and old.get("shard_size") else DEFAULT_SHARD_SIZE
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        features = output_features(src.features, keep)
        params = {"format": FORMAT_VERSION, "source": desc, "probe": source_probe(raw), "rows": len(src),
                  "shard_size": int(shard_size), "input_size": int(input_size), "teacher": fingerprint,
                  "encoder": model.encoder, "version": model.version, "columns": list(features),
                  "disparity": "raw teacher output (relative, >= 0, not normalised)"}
        prepare_index(out, params, overwrite)
        grid = shard_grid(len(src), shard_size)
        mine = [grid[k] for k in shards_of(worker, workers, len(grid))]
        sweep_temp(out, [shard_name(k) for k, _, _ in mine])  # leftovers of an interrupted write of these shards
        todo = [(k, s, c) for k, s, c in mine if not shard_done(out, k, s, c, verify=verify)]
        stats = {"images": 0, "seconds": 0.0}
        if todo:
            stats = _run(model, dev, raw, src, keep, features, out, todo, input_size=input_size, batch_size=batch_size,
                         amp=amp, num_workers=num_workers, progress=progress, label=f"shard {worker}/{workers}")
        done = sum(shard_done(out, k, s, c, verify=False) for k, s, c in grid)
        return {"images": stats["images"], "skipped": sum(c for _, _, c in mine) - sum(c for _, _, c in todo),
                "shards": len(todo), "seconds": stats["seconds"],
                "images_per_s": stats["images"] / stats["seconds"] if stats["seconds"] > 0 else 0.0,
                "out_dir": str(out), "complete": done == len(grid)}


def _labeller(teacher, backend: str, device) -> tuple:
    """(the network that labels, its device, the teacher's fingerprint for the index) for a backend."""
    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"backend: expected 'torch' or 'onnxruntime', got {backend!r}")
    if backend == "onnxruntime":
        torch_model = None if is_onnx_teacher(teacher) else load_teacher(teacher)  # for the fingerprint
        model = onnx_runner(teacher)
        fingerprint = teacher_fingerprint(torch_model) if torch_model is not None else \
            "onnx-" + model.metadata.get("weights_sha256", "")[:16]
        return model, torch.device("cpu"), fingerprint
    model = load_teacher(teacher)
    if device is None and isinstance(teacher, torch.nn.Module):
        dev = next(model.parameters()).device
    else:
        dev = resolve_device(device)
    model.to(dev)
    return model, dev, teacher_fingerprint(model)


def _kept_columns(src, keep_columns) -> list[str]:
    """Source columns copied to the output: `keep_columns`, checked, or the present ones of DEFAULT_KEEP."""
    if keep_columns is None:
        return [c for c in DEFAULT_KEEP if c in src.column_names and c not in ("image", "disparity", "source_row")]
    keep = list(keep_columns)
    for c in keep:
        if c not in src.column_names:
            raise ValueError(f"keep_columns: source has no column {c!r} (columns: {src.column_names})")
        if c in ("image", "disparity", "source_row"):
            raise ValueError(f"keep_columns: {c!r} is written by pseudo_label itself")
    return keep


def _loading_threads(num_workers, model, dev) -> int:
    """Threads decoding ahead: `num_workers`, or by default the cpus of this local rank minus one (at most 4,
    at least 1); on a CPU device only cores that the model's own threads leave free."""
    if num_workers is not None:
        return num_workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    num_workers = min(4, max(1, (os.cpu_count() or 1) // max(1, local) - 1))
    if dev.type == "cpu":
        threads = getattr(model, "num_threads", None) or torch.get_num_threads()  # onnxruntime: its own
        num_workers = min(num_workers, max(0, (os.cpu_count() or 1) - threads))
    return num_workers


class _ShardCollector:
    """Gathers labels by shard; a complete shard goes to one writer thread (at most one shard waits, for memory)."""

    def __init__(self, out: Path, todo, raw, src, keep, features, info: dict, bar):
        self.out, self.raw, self.src, self.keep, self.features, self.info, self.bar = \
            out, raw, src, keep, features, info, bar
        self.shard_of = {r: (k, s) for k, s, c in todo for r in range(s, s + c)}
        self.labels = {k: [None] * c for k, _, c in todo}
        self.remaining = {k: c for k, _, c in todo}
        self.start_of = {k: s for k, s, _ in todo}
        self.writer = concurrent.futures.ThreadPoolExecutor(1)
        self.writes: list[concurrent.futures.Future] = []

    def add(self, pending) -> None:
        """Collect a batch's labels (waiting for its copy), and hand complete shards to the writer."""
        rows, sizes, host, event = pending
        if event is not None:
            event.synchronize()
        for j, (r, (H, W)) in enumerate(zip(rows, sizes)):
            k, s = self.shard_of[r]
            self.labels[k][r - s] = host[j] if isinstance(host, list) else host[j, :H, :W].numpy()
            self.remaining[k] -= 1
            if self.remaining[k] == 0:
                for f in self.writes[:-1]:
                    f.result()  # a failed write surfaces here
                del self.writes[:-1]
                self.writes.append(self.writer.submit(write_label_shard, self.out, k, self.start_of[k], self.raw,
                                                      self.src, self.keep, self.labels.pop(k), self.features,
                                                      self.info))
        self.bar.update(len(rows))

    def wait(self) -> None:
        for f in self.writes:
            f.result()


def _predict_back(model, batch: dict, dev, amp: bool, use_cuda: bool) -> tuple:
    """The network on a batch and each prediction resized back to its image's size; returns (rows, sizes, labels on
    the host, the CUDA event their copy completes at or None)."""
    x = batch["x"].to(dev, non_blocking=use_cuda)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(amp and use_cuda)):
        disp = model(x)
    disp = disp.float()[:, None]
    sizes = [(int(h), int(w)) for h, w in batch["sizes"]]
    if len(set(sizes)) > 1:
        host = [F.interpolate(disp[j:j + 1], hw, mode="bilinear", align_corners=True)[0, 0].cpu().numpy()
                for j, hw in enumerate(sizes)]
        return batch["rows"], sizes, host, None
    up = F.interpolate(disp, sizes[0], mode="bilinear", align_corners=True)[:, 0]  # one size: one batched resize
    if not use_cuda:
        return batch["rows"], sizes, up.cpu(), None
    host = torch.empty(up.shape, dtype=up.dtype, pin_memory=True)
    host.copy_(up, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(dev))
    return batch["rows"], sizes, host, event


def _run(model, dev, raw, src, keep, features, out: Path, todo, *, input_size, batch_size, amp, num_workers,
         progress, label) -> dict:
    """Inference loop: threads decode and preprocess ahead, the model runs, a thread writes finished shards."""
    use_cuda = dev.type == "cuda"
    loader = prefetch_batches(LabellingBatches(raw, todo, input_size, batch_size), input_size,
                              _loading_threads(num_workers, model, dev), use_cuda)
    info = {"device": str(dev), "amp": bool(amp and use_cuda), "input_size": input_size,
            "backend": "torch" if isinstance(model, torch.nn.Module) else "onnxruntime"}
    n_images = sum(c for _, _, c in todo)
    bar = tqdm(total=n_images, desc=f"pseudo-labels {label}", unit="img", disable=not progress)
    shards = _ShardCollector(out, todo, raw, src, keep, features, info, bar)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # images are resized in parallel by our threads; cv2's pool would fight torch's
    t0 = time.perf_counter()
    pending = None
    try:
        with torch.inference_mode(), evaluating(model), \
                (torch.cuda.device(dev) if use_cuda else contextlib.nullcontext()):
            for batch in loader:
                done = _predict_back(model, batch, dev, amp, use_cuda)
                if pending is not None:
                    shards.add(pending)  # the previous batch: its copy overlapped this batch's compute
                pending = done
            if pending is not None:
                shards.add(pending)
        shards.wait()
    finally:
        loader.close()  # stops the loading threads when the loop ends early
        cv2.setNumThreads(cv2_threads)
        shards.writer.shutdown(wait=True)
        bar.close()
    return {"images": n_images, "seconds": time.perf_counter() - t0}


def launch_pseudo_label(teacher, source, out_dir, *, nproc: int = 1, input_size: int = 518, batch_size: int = 16,
                        overwrite: bool = False, progress: bool = True, **kw) -> dict:
    """`pseudo_label` in this process (nproc <= 1), or sharded over `nproc` processes under torchrun (shard
    RANK/WORLD_SIZE each, one GPU each). Notebook 05 (`gpus` parameter).

    For torchrun the teacher must be a path (checkpoint folder or weights file) and an in-memory source is
    saved next to out_dir (`<out_dir>.source/`) first. Returns pseudo_label's summary; with torchrun,
    "seconds" is the wall time of the whole launch and "images" the rows labelled by it.
    """
    if nproc <= 1:
        return pseudo_label(teacher, source, out_dir, input_size=input_size, batch_size=batch_size,
                            overwrite=overwrite, progress=progress, **kw)

    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError("launch_pseudo_label with nproc > 1 needs the teacher as a path (checkpoint folder or "
                         "weights file), so that every process can load it")
    passed = ("split", "n", "root", "shard_size", "num_workers", "backend")  # options with a command-line flag
    unknown = sorted(set(kw) - set(passed) - {"amp"})
    if unknown:
        raise ValueError(f"launch_pseudo_label with nproc > 1 does not pass {unknown} to the processes")
    out = Path(out_dir)
    src = dataset_on_disk(source, out.with_name(out.name + ".source"))
    if kw.get("backend") == "onnxruntime":  # export once here rather than in every process

        teacher = onnx_for(teacher)
    args = ["--teacher", teacher, "--source", src, "--out", out, "--input-size", input_size,
            "--batch-size", batch_size, "--quiet"]
    for k in passed:
        if kw.get(k) is not None:
            args += [f"--{k.replace('_', '-')}", kw[k]]
    if kw.get("amp") is False:
        args.append("--no-amp")
    if overwrite:
        args.append("--overwrite")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    results = run_torchrun("dalib.pseudo_label", args, nproc, log_file=out / "torchrun.log")  # each rank's summary
    seconds = time.perf_counter() - t0
    st = status(out)
    images = sum(r["images"] for r in results)
    return {"images": images, "skipped": st["rows"] - images, "shards": st["shards"], "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0, "out_dir": str(out), "complete": not st["missing"]}

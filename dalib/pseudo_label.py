"""Pseudo-labelling: run the teacher over unlabelled images and save (image, disparity) shards.

The student of Depth Anything learns from real images labelled by the teacher (notebook
05_pseudo_labelling). This module does that labelling for any `datasets.Dataset` with an `image`
column, batched, on any device, resumably and split across processes:

    python -m dalib.pseudo_label --teacher runs/cpu/teacher --source synth-photo --split train --out DIR
    python -m dalib.pseudo_label ... --shard 1/4              # worker 1 of 4 (any machine, same DIR)
    torchrun --nproc-per-node 4 -m dalib.pseudo_label ...     # shard RANK/WORLD_SIZE, one GPU each
    >>> ds = load_pseudo_labels(DIR)                          # all shards of all workers, source order
    >>> pool = load_pseudo_pool([DIR, DIR2])                  # image + disparity of several folders (student)

Labels: the teacher's raw relative disparity (>= 0) at each image's own resolution, as the official
`infer_image` computes it (aspect-keeping resize to a multiple of 14 with shorter side >= input_size,
bicubic, ImageNet normalisation, bilinear resize of the prediction back). Not normalised: training
maps every crop to [0, 1] itself (`dalib.transforms.finalize_target`), so the stored scale is the
teacher's and nothing is lost.

On-disk layout of `out_dir` (rows are cut into a fixed grid of shards; shard k = rows
[k * shard_size, (k + 1) * shard_size)):

    index.json            what is being labelled: source, rows, shard_size, input_size, teacher, columns
    shard-00000/          `save_to_disk` of shard 0: image (Image), source_row (int64),
                          disparity (float32 H x W, nested lists), kept source columns
    shard-00000.json      written after the folder is in place: rows, sha256 and sizes of its files
    ...

Worker i of n computes the shards k with k % n == i, a pure function of (i, n), so any number of
processes can share one `out_dir`. A shard is complete when its folder matches its .json entry;
folders are written to a temporary name and renamed, so an interrupted run leaves complete shards
only and a re-run computes just the missing or damaged ones.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dalib.data import list_features
from dalib.distributed import report_result, resolve_device
from dalib.shards import (FORMAT_VERSION, INDEX_FILE, read_index, shard_complete, shard_grid, shard_name, sweep_temp,
                          write_index, write_shard)

DEFAULT_SHARD_SIZE = 256  # rows per shard: ~300 MB of float32 labels at 640x480, written as one unit
DEFAULT_KEEP = ("index", "kind", "path", "meta")  # source metadata copied when present


# ----------------------------------------------------------------------------------------------------
# Inputs: teacher, source, shard spec, device
# ----------------------------------------------------------------------------------------------------
def parse_shard(spec) -> tuple[int, int]:
    """'i/n' or (i, n) -> (i, n) with 0 <= i < n; ValueError naming the bad value otherwise."""
    if isinstance(spec, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if m is None:
            raise ValueError(f"shard: expected 'i/n' with 0 <= i < n (e.g. '0/4'), got {spec!r}")
        i, n = int(m.group(1)), int(m.group(2))
    else:
        try:
            i, n = (int(v) for v in spec)
        except (TypeError, ValueError):
            raise ValueError(f"shard: expected (i, n) or 'i/n' with 0 <= i < n, got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard: expected 0 <= i < n, got {i}/{n}")
    return i, n


def shards_of(worker: int, workers: int, num_shards: int) -> list[int]:
    """Shard numbers that worker `worker` of `workers` computes: k with k % workers == worker."""
    return list(range(worker, num_shards, workers))


def load_teacher(teacher):
    """A DepthAnything, or a path to weights (dalib checkpoint dir, official .pth, HF file/dir)."""
    from dalib.model import DepthAnything, load_weights

    if isinstance(teacher, DepthAnything):
        return teacher
    if isinstance(teacher, (str, os.PathLike)):
        if not Path(teacher).exists():
            raise FileNotFoundError(f"teacher: {teacher}: no such weights file or checkpoint folder")
        return load_weights(teacher)
    raise TypeError(f"teacher: expected a DepthAnything or a path to its weights, got {type(teacher).__name__}")


def teacher_fingerprint(model) -> str:
    """Short id of a model's weights: sha256 over names, shapes and (sum, sum |w|) of each tensor.

    Computed on the model's device (no copy of the weights); identical models give identical ids on
    every worker, so a resumed or sharded run can check it labels with the same teacher.
    """
    h = hashlib.sha256(f"{model.encoder}/{model.version}".encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach().double()
            h.update(f"{name}{tuple(t.shape)}{float(t.sum()):.6e}{float(t.abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


def open_source(source, split: str | None = None, *, n: int | None = None, root=None,
                keep_columns: Sequence[str] | None = None):
    """(dataset, description) for a datasets.Dataset, a (name, split) pair, a dalib.data name with
    `split`, or a folder written by `save_to_disk`. The first `n` rows when n is given."""
    import datasets

    from dalib import data

    desc: dict = {}
    if isinstance(source, tuple) and len(source) == 2:
        source, split = source
    heldout = any(c.startswith("heldout_") for c in keep_columns or ())
    ds = data.open_dataset(source, split, root=root, n=n, with_heldout=heldout, what="source")
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        desc["dataset"] = "in-memory"
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        desc.update(folder=str(Path(source).resolve()), split=split)
    elif isinstance(source, str):
        desc.update(name=source, split=split)
    if "image" not in ds.column_names:
        raise ValueError(f"source {desc.get('name') or desc.get('folder') or 'dataset'}: no 'image' column "
                         f"(columns: {ds.column_names})")
    if not isinstance(ds.features["image"], datasets.Image):
        raise ValueError(f"source: column 'image' must be a datasets.Image feature, got {ds.features['image']!r}")
    return ds, desc


def _source_probe(raw) -> str:
    """sha256 of the encoded images of the first, middle and last rows: identifies a source cheaply."""
    h = hashlib.sha256(str(len(raw)).encode())
    for i in sorted({0, len(raw) // 2, len(raw) - 1}):
        h.update(_image_bytes(raw[i]["image"]))
    return h.hexdigest()[:16]


def _image_bytes(value: dict) -> bytes:
    if value.get("bytes") is not None:
        return value["bytes"]
    if value.get("path"):
        return Path(value["path"]).read_bytes()
    raise ValueError(f"source: an 'image' value has neither bytes nor a path: {value!r}")


def _image_size(value: dict) -> tuple[int, int]:
    """(H, W) of an encoded image as datasets decodes it (EXIF rotation applied), from its header only."""
    from PIL import Image

    with Image.open(io.BytesIO(_image_bytes(value))) as im:
        w, h = im.size
        if im.format == "PNG":  # PNG's getexif() would decode the pixels; an eXIf chunk before IDAT is in info
            exif = Image.Exif()
            if im.info.get("exif"):
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        if exif.get(0x0112) in (5, 6, 7, 8):  # EXIF orientation with a 90-degree turn
            w, h = h, w
    return h, w


# ----------------------------------------------------------------------------------------------------
# Decoding and preprocessing, in threads that run ahead of the model
# ----------------------------------------------------------------------------------------------------
def _load_batch(rows: list[int], values: list[dict], input_size: int, pin: bool) -> dict:
    """Rows and their encoded images -> {"x": (B,3,h,w) float32 (official preprocessing), "rows", "sizes"}.

    Decoding as `datasets` does (EXIF rotation applied), then `dalib.model.preprocess_batch` (the rows of a
    planned batch share one network size); PIL, numpy and cv2 release the GIL, so threads overlap this with
    inference (no forked processes: no fork hazards).
    """
    import datasets

    from dalib.model import network_size, preprocess_batch, to_rgb_float

    rgbs = [to_rgb_float(datasets.Image().decode_example({"bytes": _image_bytes(v), "path": None})) for v in values]
    sizes = [tuple(rgb.shape[:2]) for rgb in rgbs]
    x = torch.from_numpy(preprocess_batch(rgbs, network_size(*sizes[0], input_size)))
    return {"x": x.pin_memory() if pin else x, "rows": list(rows), "sizes": sizes}


def _prefetch(plan: Iterable[tuple[list[int], list[dict]]], input_size: int, threads: int, pin: bool,
              depth: int = 4):
    """Yield `_load_batch` of each planned batch, in order; `threads` > 0 prepares up to
    threads * depth batches ahead in a thread pool, 0 works in the calling thread."""
    if threads <= 0:
        for rows, values in plan:
            yield _load_batch(rows, values, input_size, pin)
        return
    import collections

    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pseudo-label-load")
    queue: collections.deque = collections.deque()
    try:
        for rows, values in plan:
            queue.append(pool.submit(_load_batch, rows, values, input_size, pin))
            if len(queue) >= threads * depth:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for f in queue:
            f.cancel()
        pool.shutdown(wait=True)


class _Plan:
    """Batches (rows, encoded images): for each pending shard, its rows grouped by network size,
    `batch_size` at a time.

    Iterated lazily, so image headers are read just ahead of inference.
    """

    def __init__(self, raw, shards: list[tuple[int, int, int]], input_size: int, batch_size: int):
        self.raw, self.shards, self.input_size, self.batch_size = raw, shards, input_size, batch_size

    def __iter__(self):
        from dalib.model import network_size

        for k, start, count in self.shards:
            values = self.raw[start:start + count]["image"]  # one slice per shard: encoded bytes only
            groups: dict[tuple[int, int], list[int]] = {}
            for j, v in enumerate(values):
                h, w = _image_size(v)
                groups.setdefault(network_size(h, w, self.input_size), []).append(j)
            for members in groups.values():
                for s in range(0, len(members), self.batch_size):
                    chunk = members[s:s + self.batch_size]
                    yield [start + j for j in chunk], [values[j] for j in chunk]


# ----------------------------------------------------------------------------------------------------
# Writing shards
# ----------------------------------------------------------------------------------------------------
def _output_features(src_features, keep: Sequence[str]):
    import datasets

    feats = {"image": datasets.Image(), "source_row": datasets.Value("int64")}
    feats.update({c: src_features[c] for c in keep})
    feats.update(list_features(["disparity"]))
    return datasets.Features(feats)


def _nested_float32(arrays: list[np.ndarray]):
    """(H_i, W_i) float32 arrays -> one Arrow list<list<float>> column, built from offsets (no Python lists)."""
    import pyarrow as pa

    heights = [a.shape[0] for a in arrays]
    widths = np.repeat([a.shape[1] for a in arrays], heights)
    inner = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    outer = np.concatenate([[0], np.cumsum(heights)]).astype(np.int64)
    values = pa.array(np.concatenate([np.ascontiguousarray(a, np.float32).ravel() for a in arrays]))
    if inner[-1] >= 2**31:
        raise ValueError(f"a shard of {len(arrays)} labels holds {inner[-1]} values, more than Arrow lists can "
                         f"index (2^31); use a smaller shard_size")
    rows = pa.ListArray.from_arrays(pa.array(inner.astype(np.int32)), values)
    return pa.ListArray.from_arrays(pa.array(outer.astype(np.int32)), rows)


def _write_shard(out: Path, k: int, start: int, raw, src, keep: Sequence[str], labels: list[np.ndarray],
                 features, info: dict) -> dict:
    """Save rows [start, start+len(labels)) with their labels to out/shard-k atomically; then its entry."""
    import datasets

    count = len(labels)
    cols = {"image": [{"bytes": _image_bytes(v), "path": None} for v in raw[start:start + count]["image"]],
            "source_row": list(range(start, start + count))}
    if keep:
        part = src.select(range(start, start + count)).select_columns(list(keep))[:]
        cols.update({c: part[c] for c in keep})
    cols["disparity"] = _nested_float32(labels)
    ds = datasets.Dataset.from_dict(cols, features=features)
    dest = out / shard_name(k)
    del cols
    entry = {"shard": k, **write_shard(ds, dest, start), **info}
    write_index(out / f"{dest.name}.json", entry)
    return entry


def _complete(out: Path, k: int, start: int, count: int, *, verify: bool) -> bool:
    """Is shard k on disk, with its entry, the expected rows, and files matching the entry?"""
    return shard_complete(out / shard_name(k), read_index(out / f"{shard_name(k)}.json"), start, count, full=verify)


def _prepare_index(out: Path, params: dict, overwrite: bool) -> dict:
    """Create out/index.json, or check that the one there describes the same labelling job.

    `source` (a name, folder or "in-memory") is informational: workers on other machines may see the
    same data under other paths; the source is identified by its row count and `probe`.
    """
    index_path = out / INDEX_FILE
    old = read_index(index_path)
    same = old is not None and {k: v for k, v in old.items() if k != "source"} == {
        k: v for k, v in params.items() if k != "source"}
    if old is not None and not same:
        if not overwrite:
            diff = sorted(k for k in set(old) | set(params) if k != "source" and old.get(k) != params.get(k))
            raise ValueError(f"{index_path}: holds pseudo-labels of another job (differs in {', '.join(diff)}); "
                             f"use another output folder or overwrite=True (--overwrite) to start over")
        for p in list(out.glob("shard-*")) + list(out.glob(".shard-*")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        old = None
    if old is None:
        write_index(index_path, params)  # same job from every worker: a race is harmless
        return params
    return old


# ----------------------------------------------------------------------------------------------------
# pseudo_label
# ----------------------------------------------------------------------------------------------------
def pseudo_label(teacher, source, out_dir, *, split: str | None = None, n: int | None = None, root=None,
                 input_size: int = 518, batch_size: int = 16, shard=(0, 1), shard_size: int | None = None,
                 device=None, amp: bool = True, num_workers: int | None = None, progress: bool = True,
                 keep_columns: Sequence[str] | None = None, verify: bool = True, overwrite: bool = False,
                 backend: str = "torch") -> dict:
    """Label `source` with `teacher` into `out_dir` (layout in the module docstring); resumable, shardable.

    teacher: a DepthAnything or a path (`dalib.model.load_weights`). source: a datasets.Dataset with an
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
    import datasets

    worker, workers = parse_shard(shard)
    if input_size < 14 or batch_size < 1:
        raise ValueError(f"input_size must be >= 14 and batch_size >= 1, got {input_size} and {batch_size}")
    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"backend: expected 'torch' or 'onnxruntime', got {backend!r}")
    if backend == "onnxruntime":
        from dalib.export import is_onnx_teacher, onnx_runner

        torch_model = None if is_onnx_teacher(teacher) else load_teacher(teacher)  # for the fingerprint
        model = onnx_runner(teacher)
        fingerprint = teacher_fingerprint(torch_model) if torch_model is not None else \
            "onnx-" + model.metadata.get("weights_sha256", "")[:16]
        dev = torch.device("cpu")
    else:
        model = load_teacher(teacher)
        if device is None and isinstance(teacher, torch.nn.Module):
            dev = next(model.parameters()).device
        else:
            dev = resolve_device(device)
        model.to(dev)
        fingerprint = teacher_fingerprint(model)
    src, desc = open_source(source, split, n=n, root=root, keep_columns=keep_columns)
    if keep_columns is None:
        keep = [c for c in DEFAULT_KEEP if c in src.column_names and c not in ("image", "disparity", "source_row")]
    else:
        keep = list(keep_columns)
        for c in keep:
            if c not in src.column_names:
                raise ValueError(f"keep_columns: source has no column {c!r} (columns: {src.column_names})")
            if c in ("image", "disparity", "source_row"):
                raise ValueError(f"keep_columns: {c!r} is written by pseudo_label itself")
    raw = src.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = read_index(out / INDEX_FILE)
    if shard_size is None:
        shard_size = int(old["shard_size"]) if old and old.get("shard_size") else DEFAULT_SHARD_SIZE
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    features = _output_features(src.features, keep)
    params = {"format": FORMAT_VERSION, "source": desc, "probe": _source_probe(raw), "rows": len(src),
              "shard_size": int(shard_size), "input_size": int(input_size), "teacher": fingerprint,
              "encoder": model.encoder, "version": model.version, "columns": list(features),
              "disparity": "raw teacher output (relative, >= 0, not normalised)"}
    _prepare_index(out, params, overwrite)

    grid = shard_grid(len(src), shard_size)
    mine = [grid[k] for k in shards_of(worker, workers, len(grid))]
    sweep_temp(out, [shard_name(k) for k, _, _ in mine])  # leftovers of an interrupted write by this worker's shards
    todo = [(k, s, c) for k, s, c in mine if not _complete(out, k, s, c, verify=verify)]
    skipped = sum(c for _, _, c in mine) - sum(c for _, _, c in todo)
    if todo:
        stats = _run(model, dev, raw, src, keep, features, out, todo, input_size=input_size, batch_size=batch_size,
                     amp=amp, num_workers=num_workers, progress=progress, label=f"shard {worker}/{workers}")
    else:
        stats = {"images": 0, "seconds": 0.0}
    done = sum(_complete(out, k, s, c, verify=False) for k, s, c in grid)
    return {"images": stats["images"], "skipped": skipped, "shards": len(todo), "seconds": stats["seconds"],
            "images_per_s": stats["images"] / stats["seconds"] if stats["seconds"] > 0 else 0.0,
            "out_dir": str(out), "complete": done == len(grid)}


def _run(model, dev, raw, src, keep, features, out: Path, todo, *, input_size, batch_size, amp, num_workers,
         progress, label) -> dict:
    """Inference loop: threads decode and preprocess ahead, the model runs, a thread writes finished shards."""
    from tqdm.auto import tqdm

    use_cuda = dev.type == "cuda"
    if num_workers is None:  # share the cpus between the local ranks; at least one thread runs ahead
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        num_workers = min(4, max(1, (os.cpu_count() or 1) // max(1, local) - 1))
        if dev.type == "cpu":  # the model's own threads need the cores: load ahead only on a spare one
            threads = getattr(model, "num_threads", None) or torch.get_num_threads()  # onnxruntime: its own
            num_workers = min(num_workers, max(0, (os.cpu_count() or 1) - threads))
    loader = _prefetch(_Plan(raw, todo, input_size, batch_size), input_size, num_workers, use_cuda)
    shard_of = {}
    labels: dict[int, list] = {}
    for k, s, c in todo:
        labels[k] = [None] * c
        for r in range(s, s + c):
            shard_of[r] = (k, s)
    remaining = {k: c for k, _, c in todo}
    start_of = {k: s for k, s, _ in todo}
    info = {"device": str(dev), "amp": bool(amp and use_cuda), "input_size": input_size,
            "backend": "torch" if isinstance(model, torch.nn.Module) else "onnxruntime"}
    writer = concurrent.futures.ThreadPoolExecutor(1)
    writes: list[concurrent.futures.Future] = []
    was_training = model.training
    model.eval()
    n_images = sum(c for _, _, c in todo)
    bar = tqdm(total=n_images, desc=f"pseudo-labels {label}", unit="img", disable=not progress)

    def finish(pending):
        """Collect a batch's labels (waiting for its copy), and hand complete shards to the writer."""
        rows, sizes, host, event = pending
        if event is not None:
            event.synchronize()
        for j, (r, (H, W)) in enumerate(zip(rows, sizes)):
            k, s = shard_of[r]
            labels[k][r - s] = host[j] if isinstance(host, list) else host[j, :H, :W].numpy()
            remaining[k] -= 1
            if remaining[k] == 0:
                for f in writes[:-1]:
                    f.result()  # at most one shard waits to be written (memory); a failed write surfaces here
                del writes[:-1]
                writes.append(writer.submit(_write_shard, out, k, start_of[k], raw, src, keep, labels.pop(k),
                                            features, info))
        bar.update(len(rows))

    import cv2

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # images are resized in parallel by our threads; cv2's pool would fight torch's
    t0 = time.perf_counter()
    pending = None
    try:
        with torch.inference_mode(), (torch.cuda.device(dev) if use_cuda else contextlib.nullcontext()):
            for batch in loader:
                x = batch["x"].to(dev, non_blocking=use_cuda)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(amp and use_cuda)):
                    disp = model(x)
                disp = disp.float()[:, None]
                sizes = [(int(h), int(w)) for h, w in batch["sizes"]]
                if len(set(sizes)) == 1:  # one original size: one batched resize back
                    up = F.interpolate(disp, sizes[0], mode="bilinear", align_corners=True)[:, 0]
                    if use_cuda:
                        host = torch.empty(up.shape, dtype=up.dtype, pin_memory=True)
                        host.copy_(up, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(torch.cuda.current_stream(dev))
                    else:
                        host, event = up.cpu(), None
                else:
                    host = [F.interpolate(disp[j:j + 1], hw, mode="bilinear", align_corners=True)[0, 0].cpu().numpy()
                            for j, hw in enumerate(sizes)]
                    event = None
                if pending is not None:
                    finish(pending)  # the previous batch: its copy overlapped this batch's compute
                pending = (batch["rows"], sizes, host, event)
            if pending is not None:
                finish(pending)
        for f in writes:
            f.result()
    finally:
        loader.close()  # stops the loading threads when the loop ends early
        cv2.setNumThreads(cv2_threads)
        writer.shutdown(wait=True)
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - t0
    return {"images": n_images, "seconds": seconds}


# ----------------------------------------------------------------------------------------------------
# Reading the result
# ----------------------------------------------------------------------------------------------------
def _runs(ks: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted integers -> [(first, last)] runs of consecutive ones."""
    runs: list[list[int]] = []
    for k in sorted(ks):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return [(a, b) for a, b in runs]


def _fmt_runs(runs) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


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
    from dalib.data import dataset_on_disk
    from dalib.distributed import run_torchrun

    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError("launch_pseudo_label with nproc > 1 needs the teacher as a path (checkpoint folder or "
                         "weights file), so that every process can load it")
    unknown = sorted(set(kw) - {"split", "n", "root", "shard_size"})
    if unknown:
        raise ValueError(f"launch_pseudo_label with nproc > 1 does not pass {unknown} to the processes")
    out = Path(out_dir)
    src = dataset_on_disk(source, out.with_name(out.name + ".source"))
    args = ["--teacher", teacher, "--source", src, "--out", out, "--input-size", input_size,
            "--batch-size", batch_size, "--quiet"]
    for k in ("split", "n", "root", "shard_size"):
        if kw.get(k) is not None:
            args += [f"--{k.replace('_', '-')}", kw[k]]
    if overwrite:
        args.append("--overwrite")
    t0 = time.perf_counter()
    results = run_torchrun("dalib.pseudo_label", args, nproc)  # each rank's summary (see `main`)
    seconds = time.perf_counter() - t0
    st = status(out)
    images = sum(r["images"] for r in results)
    return {"images": images, "skipped": st["rows"] - images, "shards": st["shards"], "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0, "out_dir": str(out), "complete": not st["missing"]}


def status(out_dir) -> dict:
    """{"rows", "shards", "complete": [k...], "missing": [k...]} of a pseudo-label folder (size checks)."""
    out = Path(out_dir)
    index = read_index(out / INDEX_FILE)
    if index is None:
        raise FileNotFoundError(f"{out / INDEX_FILE}: missing or unreadable; {out} is not a pseudo-label folder "
                                f"(write one with dalib.pseudo_label.pseudo_label)")
    grid = shard_grid(index["rows"], index["shard_size"])
    ok = [k for k, s, c in grid if _complete(out, k, s, c, verify=False)]
    return {"rows": index["rows"], "shards": len(grid), "complete": ok,
            "missing": [k for k, _, _ in grid if k not in set(ok)]}


def load_pseudo_labels(out_dir, *, verify: bool = False):
    """All shards of a pseudo-label folder as one datasets.Dataset, in source order.

    Columns: image, source_row, kept source columns, disparity (float32 H x W; `.with_format("numpy")`).
    Raises FileNotFoundError naming the missing shards and their row ranges when any worker has not
    finished. verify: recompute each shard's sha256 (else file sizes only). Notebook 05_pseudo_labelling.
    """
    import datasets

    out = Path(out_dir)
    index = read_index(out / INDEX_FILE)
    if index is None:
        raise FileNotFoundError(f"{out / INDEX_FILE}: missing or unreadable; {out} is not a pseudo-label folder "
                                f"(write one with dalib.pseudo_label.pseudo_label)")
    size = index["shard_size"]
    grid = shard_grid(index["rows"], size)
    missing = [k for k, s, c in grid if not _complete(out, k, s, c, verify=verify)]
    if missing:
        runs = _runs(missing)
        rows = _fmt_runs((grid[a][1], grid[b][1] + grid[b][2] - 1) for a, b in runs)
        raise FileNotFoundError(f"{out}: pseudo-labels incomplete: shards {_fmt_runs(runs)} of 0-{len(grid) - 1} "
                                f"(rows {rows}) are missing or damaged; run dalib.pseudo_label again with the same "
                                f"arguments (each --shard i/n rebuilds its own shards k with k % n == i)")
    parts = [datasets.load_from_disk(str(out / shard_name(k))) for k, _, _ in grid]
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_pseudo_pool(dirs, *, exclude_paths: Sequence[str] = ()):
    """Several pseudo-label folders -> ONE datasets.Dataset with exactly the columns `image`, `disparity`.

    This is the student's unlabelled pool (notebooks 05_pseudo_labelling and 06_student_training):
    `TrainConfig(datasets=[load_pseudo_pool(dirs)], targets=["disparity"])`.

    dirs: one folder or a list of folders written by `pseudo_label` (each read with
    `load_pseudo_labels`, in the given order, rows in source order). Every folder must be complete and
    hold an `image` column (datasets.Image) and a `disparity` column (float32 H x W, the teacher's raw
    relative disparity); all other columns (source_row, kept source columns) are dropped, and the
    features are cast to one schema (`image`: Image, `disparity`: float32 nested lists), so folders
    that kept different columns or hold images of different sizes concatenate. Rows keep their own
    (H, W); `.with_format("numpy")` gives (H, W) arrays.
    exclude_paths: rows whose `path` column (kept by default from e.g. skimage-photos) equals one of
    these or ends with it as a file name (e.g. "motorcycle_left.png") are left out; folders without a
    `path` column are kept whole.
    ValueError naming the folder when it lacks `image` or `disparity`; FileNotFoundError (from
    `load_pseudo_labels`) when a folder is not a complete pseudo-label folder.
    """
    import datasets

    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    dirs = list(dirs)
    if not dirs:
        raise ValueError("load_pseudo_pool: no folders given")
    if isinstance(exclude_paths, (str, os.PathLike)):
        exclude_paths = [exclude_paths]
    excluded = {str(p) for p in exclude_paths}
    features = datasets.Features({"image": datasets.Image(), **list_features(["disparity"])})
    parts = []
    for d in dirs:
        ds = load_pseudo_labels(d)
        missing = [c for c in features if c not in ds.column_names]
        if missing:
            raise ValueError(f"{d}: pseudo-label folder has no column(s) {missing} (columns: {ds.column_names}); "
                             f"the pool needs 'image' and 'disparity' (write it with dalib.pseudo_label.pseudo_label)")
        if not isinstance(ds.features["image"], datasets.Image):
            raise ValueError(f"{d}: column 'image' must be a datasets.Image feature, got {ds.features['image']!r}")
        if excluded and "path" in ds.column_names:
            keep = [i for i, p in enumerate(ds["path"])
                    if p is None or (str(p) not in excluded and Path(str(p)).name not in excluded)]
            if len(keep) < len(ds):
                ds = ds.select(keep)
        ds = ds.select_columns(list(features))
        try:  # only when needed: a cast rewrites the data (in memory here, never next to the shards)
            ds = ds if ds.features == features else ds.cast(features, keep_in_memory=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{d}: cannot cast columns to image (Image) and disparity (float32 H x W): {e}") from e
        parts.append(ds)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m dalib.pseudo_label --teacher PATH --source NAME --split S --out DIR [--shard i/n] ...`."""
    p = argparse.ArgumentParser(prog="python -m dalib.pseudo_label",
                                description="label unlabelled images with a teacher (resumable, shardable)")
    p.add_argument("--teacher", required=True,
                   help="teacher weights: dalib checkpoint folder, official .pth, HF file (onnxruntime: or an .onnx file)")
    p.add_argument("--source", required=True, help="dalib.data dataset name, or a save_to_disk folder")
    p.add_argument("--split", default="train", help="split of the source (default train)")
    p.add_argument("--out", required=True, help="output folder (shards + index.json)")
    p.add_argument("--shard", type=_shard_arg, default=None,
                   help="i/n: compute shards k with k %% n == i (default RANK/WORLD_SIZE under torchrun, else 0/1)")
    p.add_argument("--input-size", type=int, default=518, help="shorter side of the network input (default 518)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=None, help=f"rows per shard (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK, mps, cpu), cpu, cuda:1, ...")
    p.add_argument("--n", type=int, default=None, help="label the first N rows of the source only")
    p.add_argument("--root", default=None, help="data folder of the source (see dalib.data.load)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="decoding threads (default min(4, cpus per local rank - 1), at least 1)")
    p.add_argument("--keep", action="append", default=None, metavar="COL",
                   help="source column to copy (repeatable; heldout_* loads the held-out ground truth)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="torch, or onnxruntime (teacher: any checkpoint, exported once and cached, or an .onnx file)")
    p.add_argument("--overwrite", action="store_true", help="start over when DIR holds another job")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    shard = args.shard
    if shard is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            try:
                shard = parse_shard((os.environ["RANK"], os.environ["WORLD_SIZE"]))
            except ValueError as e:
                p.error(f"RANK/WORLD_SIZE: {e}")
        else:
            shard = (0, 1)
    try:
        res = pseudo_label(args.teacher, args.source, args.out, split=args.split, n=args.n, root=args.root,
                           input_size=args.input_size, batch_size=args.batch_size, shard=shard,
                           shard_size=args.shard_size, device=args.device, amp=not args.no_amp,
                           num_workers=args.num_workers, progress=not args.quiet, keep_columns=args.keep,
                           overwrite=args.overwrite, backend=args.backend)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report_result(res)
    print(f"shard {shard[0]}/{shard[1]}: labelled {res['images']} images ({res['skipped']} already done) in "
          f"{res['seconds']:.1f} s = {res['images_per_s']:.1f} images/s -> {res['out_dir']}"
          + ("" if res["complete"] else " (other shards still missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What pseudo-labelling reads: the shard spec, the teacher, the source dataset, and its images decoded and
preprocessed in threads that run ahead of the model (notebook 05_pseudo_labelling)."""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import datasets
import torch
from dalib.data.serve import open_dataset
from dalib.images import network_size, preprocess_batch, to_rgb_float
from dalib.model import DepthAnything
from dalib.weights import load_weights
from PIL import Image


# ----------------------------------------------------------------------------------------------------
# Inputs: teacher, source, shard spec
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
    desc: dict = {}
    if isinstance(source, tuple) and len(source) == 2:
        source, split = source
    heldout = any(c.startswith("heldout_") for c in keep_columns or ())
    ds = open_dataset(source, split, root=root, n=n, with_heldout=heldout, what="source")
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


def source_probe(raw) -> str:
    """sha256 of the encoded images of the first, middle and last rows: identifies a source cheaply."""
    h = hashlib.sha256(str(len(raw)).encode())
    for i in sorted({0, len(raw) // 2, len(raw) - 1}):
        h.update(image_bytes(raw[i]["image"]))
    return h.hexdigest()[:16]


def image_bytes(value: dict) -> bytes:
    if value.get("bytes") is not None:
        return value["bytes"]
    if value.get("path"):
        return Path(value["path"]).read_bytes()
    raise ValueError(f"source: an 'image' value has neither bytes nor a path: {value!r}")


def _image_size(value: dict) -> tuple[int, int]:
    """(H, W) of an encoded image as datasets decodes it (EXIF rotation applied), from its header only."""

    with Image.open(io.BytesIO(image_bytes(value))) as im:
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
def load_batch(rows: list[int], values: list[dict], input_size: int, pin: bool) -> dict:
    """Rows and their encoded images -> {"x": (B,3,h,w) float32 (official preprocessing), "rows", "sizes"}.

    Decoding as `datasets` does (EXIF rotation applied), then `dalib.images.preprocess_batch` (the rows of a
    planned batch share one network size); PIL, numpy and cv2 release the GIL, so threads overlap this with
    inference (no forked processes: no fork hazards).
    """
    rgbs = [to_rgb_float(datasets.Image().decode_example({"bytes": image_bytes(v), "path": None})) for v in values]
    sizes = [tuple(rgb.shape[:2]) for rgb in rgbs]
    x = torch.from_numpy(preprocess_batch(rgbs, network_size(*sizes[0], input_size)))
    return {"x": x.pin_memory() if pin else x, "rows": list(rows), "sizes": sizes}


def prefetch_batches(plan: Iterable[tuple[list[int], list[dict]]], input_size: int, threads: int, pin: bool,
              depth: int = 4):
    """Yield `load_batch` of each planned batch, in order; `threads` > 0 prepares up to
    threads * depth batches ahead in a thread pool, 0 works in the calling thread."""
    if threads <= 0:
        for rows, values in plan:
            yield load_batch(rows, values, input_size, pin)
        return

    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pseudo-label-load")
    queue: collections.deque = collections.deque()
    try:
        for rows, values in plan:
            queue.append(pool.submit(load_batch, rows, values, input_size, pin))
            if len(queue) >= threads * depth:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for f in queue:
            f.cancel()
        pool.shutdown(wait=True)


class LabellingBatches:
    """Batches (rows, encoded images): for each pending shard, its rows grouped by network size,
    `batch_size` at a time.

    Iterated lazily, so image headers are read just ahead of inference.
    """

    def __init__(self, raw, shards: list[tuple[int, int, int]], input_size: int, batch_size: int):
        self.raw, self.shards, self.input_size, self.batch_size = raw, shards, input_size, batch_size

    def __iter__(self):
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

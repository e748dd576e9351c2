"""The on-disk side of a pseudo-label folder being written: the job's index.json, the shards with their
labels, and the check that a shard is complete (layout in `dalib.pseudo_label`)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pyarrow as pa

from dalib.data.schema import list_features
from dalib.pseudo_label.sources import image_bytes
from dalib.shards import (INDEX_FILE, columns_dataset, mark_verified, read_index, shard_complete, shard_name,
                          write_index, write_shard)

DEFAULT_SHARD_SIZE = 256  # rows per shard: ~300 MB of float32 labels at 640x480, written as one unit


def output_features(src_features, keep: Sequence[str]):
    feats = {"image": datasets.Image(), "source_row": datasets.Value("int64")}
    feats.update({c: src_features[c] for c in keep})
    feats.update(list_features(["disparity"]))
    return datasets.Features(feats)


def _nested_float32(arrays: list[np.ndarray]):
    """(H_i, W_i) float32 arrays -> one Arrow list<list<float>> column, built from offsets (no Python lists)."""

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


def write_label_shard(out: Path, k: int, start: int, raw, src, keep: Sequence[str], labels: list[np.ndarray],
                 features, info: dict) -> dict:
    """Save rows [start, start+len(labels)) with their labels to out/shard-k atomically; then its entry."""
    count = len(labels)
    cols = {"image": [{"bytes": image_bytes(v), "path": None} for v in raw[start:start + count]["image"]],
            "source_row": list(range(start, start + count))}
    if keep:
        part = src.select(range(start, start + count)).select_columns(list(keep))[:]
        cols.update({c: part[c] for c in keep})
    cols["disparity"] = _nested_float32(labels)
    ds = columns_dataset(cols, features)
    dest = out / shard_name(k)
    del cols
    entry = {"shard": k, **write_shard(ds, dest, start), **info}
    write_index(entry_path(out, k), entry)
    mark_verified(out, {dest.name: entry})  # written by this process: no need to hash it again before serving
    return entry


def entry_path(out: Path, k: int) -> Path:
    """The .json entry of shard k (rows, sha256 and sizes of its files), written after its folder."""
    return out / f"{shard_name(k)}.json"


def shard_done(out: Path, k: int, start: int, count: int, *, verify: bool) -> bool:
    """Is shard k on disk, with its entry, the expected rows, and files matching the entry? `verify` checks the
    sha256 of its files (then recorded as verified for this process), else their sizes."""
    entry = read_index(entry_path(out, k))
    ok = shard_complete(out / shard_name(k), entry, start, count, full=verify)
    if ok and verify:
        mark_verified(out, {shard_name(k): entry})
    return ok


def prepare_index(out: Path, params: dict, overwrite: bool) -> dict:
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

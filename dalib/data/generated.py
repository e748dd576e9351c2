"""Generator sources: the procedural engine's samples (`dalib.synth`) materialised once under $DALIB_DATA
in resumable, verified shards (`dalib.shards`). Taught in notebook 00_depth_data.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np

from dalib.data.schema import (SENSORS, array_features, data_root, data_root_error, dataset_ref, get_manifest,
                               split_entry)
from dalib.shards import (FORMAT_VERSION, INDEX_FILE, columns_dataset, damaged_shards, folder_lock, mark_verified,
                          read_index, shard_complete, shard_grid, shard_name, shard_ok, sweep_temp, write_index,
                          write_shard)
from dalib.synth.engine import generate
from dalib.synth.sensor import simulate_sensor
from dalib.synth.style import STYLE_VERSIONS


# ----------------------------------------------------------------------------------------------------
# Generator sources: sharded, resumable builds under $DALIB_DATA
# ----------------------------------------------------------------------------------------------------
#   <data>/<name>/<H>x<W>/<split>/index.json        what was built: params, n, one entry per shard
#   <data>/<name>/<H>x<W>/<split>/shard-00000/      `save_to_disk` of rows [0, shard_size)
# index.json is rewritten atomically after each shard, with the row count and a sha256 of the shard's
# files: an interrupted build resumes at the first missing shard, a damaged one is rebuilt.
_SENSOR_IDS = {s: i + 1 for i, s in enumerate(SENSORS)}


def _positive_int(m: dict, name: str, value, unit: str) -> int:
    """`value` as an int; a ValueError naming the dataset and `name` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{dataset_ref(m)}: {name} must be a positive integer number of {unit}, got {value!r}")
    return int(value)


def render_size(m: dict, height=None, width=None) -> tuple[int, int]:
    """(H, W) of a generated split: the given sizes, or the manifest's where None. A size that is not a
    positive integer is an error naming it (0 used to fall back to the manifest's size silently)."""
    return tuple(_positive_int(m, name, m["source"][name] if value is None else value, "pixels")
                 for name, value in (("height", height), ("width", width)))


def _generator_params(m: dict, split: str, height=None, width=None, shard_size=None) -> dict:
    src = m["source"]
    h, w = render_size(m, height, width)
    kinds = [src["kind"]] if isinstance(src["kind"], str) else list(src["kind"])
    if shard_size is None:  # about 64 MB of arrays per shard, so memory stays flat for any N
        shard_size = src.get("shard_size") or max(1, min(1024, int(64e6 // (h * w * 16))))
    shard_size = _positive_int(m, "shard_size", shard_size, "rows")
    params = {"format": FORMAT_VERSION, "kinds": kinds, "style": src["style"], "seed": int(split_entry(m, split)["seed"]),
              "height": h, "width": w, "sensor": src.get("sensor"), "shard_size": int(shard_size)}

    if STYLE_VERSIONS.get(src["style"], 1) != 1:  # a recalibrated style: builds of the older one are rebuilt
        params["style_version"] = STYLE_VERSIONS[src["style"]]
    return params


def _same_build(a: dict | None, b: dict) -> bool:
    """Do two generator parameter sets describe the same samples (shard size aside)?"""
    strip = lambda d: {k: v for k, v in (d or {}).items() if k != "shard_size"}  # noqa: E731
    return a is not None and strip(a) == strip(b)


def split_dir(name: str, split: str, *, root=None, height=None, width=None) -> Path:
    """Folder of a generated split: `<data>/<name>/<H>x<W>/<split>`."""
    m = get_manifest(name)
    h, w = render_size(m, height, width)
    return data_root(root) / m["name"] / f"{h}x{w}" / split


def generate_rows(params: dict, start: int, count: int) -> dict:
    """Samples [start, start+count) of a generator split as column arrays (deterministic per index).

    With several kinds, sample i has kind kinds[i % K] and is the generator's sample i // K of that
    kind; a sensor variant stores the simulated label as `depth` and the exact one as `depth_exact`.
    """

    kinds, k = params["kinds"], len(params["kinds"])
    h, w = params["height"], params["width"]
    idx = np.arange(start, start + count)
    cols = {"image": np.zeros((count, h, w, 3), np.uint8), "depth": np.zeros((count, h, w), np.float32),
            "mask": np.zeros((count, h, w), bool), "material": np.zeros((count, h, w), np.uint8)}
    apparent = np.zeros((count, h, w), np.float32)
    meta: list = [None] * count
    for ki, kind in enumerate(kinds):
        sel = np.nonzero(idx % k == ki)[0]
        if len(sel) == 0:
            continue
        out = generate(kind, len(sel), seed=params["seed"], height=h, width=w, style=params["style"],
                       start_index=int(idx[sel[0]] // k))
        for c in cols:
            cols[c][sel] = np.asarray(out[c])
        apparent[sel] = np.asarray(out.get("apparent_depth", out["depth"]))
        for j, s in enumerate(sel):
            meta[s] = out["meta"][j]
    cols["index"] = idx.astype(np.int64)
    cols["kind"] = [kinds[i % k] for i in idx]
    cols["meta"] = [json.dumps(x, sort_keys=True, default=_json_default) for x in meta]
    if params["sensor"]:
        exact = cols["depth"]
        label = np.zeros_like(exact)
        for j, i in enumerate(idx):  # one RNG per sample index: shards stay independent
            rng = np.random.default_rng([params["seed"], _SENSOR_IDS[params["sensor"]], int(i)])
            label[j] = np.asarray(simulate_sensor(exact[j], cols["material"][j], params["sensor"], rng,
                                                  apparent_depth=apparent[j], image=cols["image"][j]), np.float32)
        label = np.where(np.isfinite(label) & (label > 0), label, 0).astype(np.float32)
        cols["depth_exact"], cols["depth"], cols["mask"] = exact, label, label > 0
    return cols


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _generator_features(params: dict):
    feats = array_features((params["height"], params["width"]), True,
                            ("depth_exact",) if params["sensor"] else ())
    feats.update(index=datasets.Value("int64"), kind=datasets.Value("string"), meta=datasets.Value("string"))
    return datasets.Features(feats)


def _write_shard(params: dict, start: int, count: int, dest: Path, chunk: int = 32) -> dict:
    """Generate rows [start, start+count) and save them atomically to `dest` (temp folder + rename)."""

    feats = _generator_features(params)
    parts = []
    for s in range(start, start + count, chunk):
        cols = generate_rows(params, s, min(chunk, start + count - s))
        parts.append(columns_dataset(cols, feats))
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    del parts
    return write_shard(ds, dest, start)


def build_shards(m: dict, split: str, n: int | None = None, *, root=None, height=None, width=None,
                 shard_size=None, verify: bool = True, progress: bool = False) -> Path:
    """Materialise `n` samples of generator split `split` of manifest `m` on disk (resumable); returns the
    split folder. Shards already on disk are reused when their checksum (`verify=True`) or size and row
    count match the index; missing or damaged ones are (re)built; sample i only depends on the split seed
    and i, so any shard can be rebuilt alone. Memory stays flat in n. `dalib.data.build` calls it. A data folder
    that cannot be written is a DataRootError naming it ($DALIB_DATA or root) and the path."""
    n = int(n if n is not None else (split_entry(m, split)["size"] or 0))
    if n <= 0:
        raise ValueError(f"{dataset_ref(m)}: split {split!r} needs n > 0 samples to build")
    params = _generator_params(m, split, height, width, shard_size)
    out = split_dir(m["name"], split, root=root, height=params["height"], width=params["width"])
    try:  # a data folder that is a file or read-only fails here, named, before any work
        out.mkdir(parents=True, exist_ok=True)
        with folder_lock(out):  # two processes (e.g. parallel notebooks) never write the same split at once
            return _build_locked(m, split, n, params, out, shard_size=shard_size, verify=verify, progress=progress)
    except OSError as e:
        raise data_root_error(root, out, e) from e


def _build_locked(m: dict, split: str, n: int, params: dict, out: Path, *, shard_size, verify, progress) -> Path:
    sweep_temp(out)  # leftovers of an interrupted write
    index_path = out / INDEX_FILE
    index = read_index(index_path)
    if shard_size is None and index is not None:  # keep the shard size of what is already there
        prev = index.get("params") or {}
        if _same_build(prev, params):
            params["shard_size"] = prev.get("shard_size", params["shard_size"])
    if index is None or index.get("params") != params:
        for stale in out.glob("shard-*"):  # built with other parameters: start over
            shutil.rmtree(stale, ignore_errors=True)
        index = {"name": m["name"], "split": split, "params": params, "n": None, "shards": {}}
    index["n"] = None  # incomplete until the last shard is written
    write_index(index_path, index)
    size = params["shard_size"]
    wanted = {shard_name(k): (s, c) for k, s, c in shard_grid(n, size)}
    for key in list(index["shards"]):
        if key not in wanted:
            del index["shards"][key]
            shutil.rmtree(out / key, ignore_errors=True)
    for stale in out.glob("shard-*"):
        if stale.name not in wanted:
            shutil.rmtree(stale, ignore_errors=True)
    for i, (key, (start, count)) in enumerate(wanted.items()):
        entry = index["shards"].get(key)
        if shard_complete(out / key, entry, start, count, full=verify):
            continue
        index["shards"].pop(key, None)
        write_index(index_path, index)
        index["shards"][key] = _write_shard(params, start, count, out / key)
        write_index(index_path, index)
        if progress:
            print(f"{m['name']}/{split}: shard {i + 1}/{len(wanted)} ({start + count}/{n} samples)", file=sys.stderr)
    index["n"] = n
    write_index(index_path, index)
    return out


def build_status(name: str, split: str, *, root=None, height=None, width=None) -> dict:
    """What is on disk for a generator split: {"n": complete sample count or None, "shards": k, "ok": bool};
    ok = complete, intact, and built with the current engine's parameters (e.g. the style's version)."""
    d = split_dir(name, split, root=root, height=height, width=width)
    index = read_index(d / INDEX_FILE)
    if index is None:
        return {"dir": str(d), "n": None, "shards": 0, "ok": False}
    current = _same_build(index.get("params"), _generator_params(get_manifest(name), split, height, width))
    ok = current and index.get("n") is not None and all(shard_ok(d / k, e, full=False) for k, e in index["shards"].items())
    return {"dir": str(d), "n": index.get("n"), "shards": len(index["shards"]), "ok": ok}


def load_generated(m: dict, split: str, *, root, n, height, width):
    """The first n samples of a generator split, (re)built first when missing, incomplete or damaged."""

    st = build_status(m["name"], split, root=root, height=height, width=width)
    want = n if n is not None else (st["n"] or split_entry(m, split)["size"])
    d = Path(st["dir"])
    index = read_index(d / INDEX_FILE)
    if not (st["ok"] and st["n"] >= want and not damaged_shards(d, index["shards"])):
        # first use, a larger n, a damaged shard, or built by an older engine: (re)build what is missing
        build_shards(m, split, max(want, st["n"] or 0), root=root, height=height, width=width, verify=True)
        index = read_index(d / INDEX_FILE)
        mark_verified(d, index["shards"])
    parts = [datasets.load_from_disk(str(d / key)) for key in sorted(index["shards"])]
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return ds.select(range(want)) if len(ds) > want else ds


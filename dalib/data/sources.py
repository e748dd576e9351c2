"""hf, local and bundled sources: real datasets from the Hugging Face hub or a local copy (any documented file
layout), and files shipped inside installed packages; depth converted to metres, results cached under
<data>/cache/<name>. Taught in notebook 00_depth_data.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

import datasets
import numpy as np

from dalib.data.depth_files import convert_depth, read_depth_file, rgb_image
from dalib.data.schema import COLUMNS, DataSourceError, data_root, dataset_ref, list_features, split_entry
from dalib.shards import FORMAT_VERSION, file_sha256, quiet_progress


# ----------------------------------------------------------------------------------------------------
# hf, local and bundled sources
# ----------------------------------------------------------------------------------------------------
def env_name(name: str) -> str:
    """The variable naming a local copy of dataset `name`: DALIB_ROOT_<NAME>."""
    return "DALIB_ROOT_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def local_copy(m: dict, root) -> Path | None:
    """Where a user's copy of a real dataset is: `root`, $DALIB_ROOT_<NAME>, or <data>/raw/<name>."""
    for cand in (root, os.environ.get(env_name(m["name"])), data_root() / "raw" / m["name"]):
        if cand and Path(cand).expanduser().exists():
            return Path(cand).expanduser().resolve()
    if root:
        raise DataSourceError(f"{dataset_ref(m)}: root={str(root)!r} does not exist")
    return None


def _how_to_provide(m: dict) -> str:
    where = m.get("homepage") or m["source"].get("download") or "its homepage"
    src = m["source"]
    if src["type"] == "local":
        desc = src["layout"].get("description") or f"files matching {src['layout'].get('image')!r}"
        layout = f"a folder laid out as: {desc}"
    else:
        layout = "a folder written by datasets' `save_to_disk` (a DatasetDict with the split names, or one split)"
    return (f"Provide a local copy: download it from {where} as {layout}; then call "
            f"dalib.data.serve.load({m['name']!r}, SPLIT, root=PATH), or set {env_name(m['name'])}=PATH, "
            f"or put it at {data_root() / 'raw' / m['name']}.")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def converted_cache_dir(m: dict) -> Path:
    """Where converted copies of a real dataset are cached: <data>/cache/<name> (created)."""
    d = data_root() / "cache" / m["name"]
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_hf(m: dict, split: str, root):
    """The raw split of an hf source: local copy first (save_to_disk folder or data files), then the hub."""

    hub_split = split_entry(m, split).get("hub_split", split)
    local = local_copy(m, root)
    if local is not None:
        if (local / "dataset_dict.json").exists():
            dd = datasets.load_from_disk(str(local))
            if hub_split not in dd:
                raise DataSourceError(f"{dataset_ref(m)}: the local copy {local} has "
                                      f"splits {list(dd)}, expected {hub_split!r} (splits.{split}.hub_split)")
            return dd[hub_split]
        if (local / hub_split / "state.json").exists():
            return datasets.load_from_disk(str(local / hub_split))
        if (local / "state.json").exists():
            return datasets.load_from_disk(str(local))
        return datasets.load_dataset(str(local), m["source"].get("config"), split=hub_split,
                                     cache_dir=str(converted_cache_dir(m)))
    src = m["source"]
    if not src.get("hub_id"):
        raise DataSourceError(f"{dataset_ref(m)}: no hub id is recorded and no local copy "
                              f"was found. {_how_to_provide(m)}")
    if _offline():
        raise DataSourceError(f"{dataset_ref(m)}: the Hugging Face hub is offline "
                              f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and no local copy was found for "
                              f"{src['hub_id']!r}. {_how_to_provide(m)}")
    try:
        return datasets.load_dataset(src["hub_id"], src.get("config"), revision=src.get("revision"), split=hub_split,
                                     cache_dir=str(converted_cache_dir(m)))
    except Exception as e:  # network, auth, missing revision: one message that says what to do
        raise DataSourceError(f"{dataset_ref(m)}: cannot load {src['hub_id']!r} "
                              f"(revision {src.get('revision')}) from the hub: {e}. {_how_to_provide(m)}") from e


def map_hf(m: dict, split: str, ds):
    """Rename source columns to ours and convert depth to metres (cached under <data>/cache/<name>)."""
    mapped = dict(m.get("columns") or {})
    for ours, theirs in mapped.items():
        if theirs not in ds.column_names:
            raise DataSourceError(f"{dataset_ref(m)}: field 'columns.{ours}' names source "
                                  f"column {theirs!r}, expected one of {ds.column_names}")
    # unmapped columns that already have our names are taken as they are
    cols = {c: c for c in COLUMNS if c in ds.column_names and c not in mapped.values()} | mapped
    if "image" not in cols:
        raise DataSourceError(f"{dataset_ref(m)}: no 'image' column in {ds.column_names}; "
                              f"map one with field 'columns.image'")
    spec = m.get("depth")
    ds = ds.rename_columns({theirs: f"__{ours}" for ours, theirs in cols.items() if theirs != f"__{ours}"})
    for c in ("__image", "__image_right"):  # pass encoded images through untouched (no decode / re-encode)
        if c in ds.column_names and isinstance(ds.features[c], datasets.Image):
            ds = ds.cast_column(c, datasets.Image(decode=False))
    src_depth = "__depth" if "__depth" in ds.column_names else ("__disparity" if "__disparity" in ds.column_names else None)
    if spec is None:
        out = ds.rename_columns({c: c[2:] for c in ds.column_names if c.startswith("__")})
        for c in ("image", "image_right"):
            if c in out.column_names:
                out = out.cast_column(c, datasets.Image())
        return out
    if src_depth is None:
        raise DataSourceError(f"{dataset_ref(m)}: split {split!r} has no depth column in "
                              f"{[c.removeprefix('__') for c in ds.column_names]}; map one with field 'columns.depth' "
                              f"(or 'columns.disparity')")
    key = hashlib.sha256(json.dumps([ds._fingerprint, cols, spec, FORMAT_VERSION], sort_keys=True).encode()).hexdigest()
    with quiet_progress():
        return ds.map(_depth_converter(spec, src_depth), batched=True, batch_size=8,
                      features=datasets.Features(_mapped_features(ds, spec)),
                      remove_columns=[c for c in ds.column_names if c.startswith("__")],
                      cache_file_name=str(converted_cache_dir(m) / f"{split}-{key[:16]}.arrow"), new_fingerprint=key[:32])


def _mapped_features(ds, spec: dict) -> dict:
    """Features of `map_hf`'s output: the unmapped columns, images, material, and the label columns."""
    feats = {c: f for c, f in ds.features.items() if not c.startswith("__")}
    feats["image"] = datasets.Image()
    if "__image_right" in ds.features:
        feats["image_right"] = datasets.Image()
    if "__material" in ds.features:
        feats["material"] = ds.features["__material"]
    feats.update(list_features(["depth", "mask"] + (["disparity"] if spec["kind"] == "disparity" else [])))
    return feats


def _depth_converter(spec: dict, src_depth: str):
    """A batched `datasets.map` function: source depth (column `src_depth`) -> metres, mask (and disparity)."""
    def convert(batch):
        out = {"image": batch["__image"]}
        for c in ("image_right", "material"):
            if f"__{c}" in batch:
                out[c] = batch[f"__{c}"]
        out["depth"], out["mask"] = [], []
        if spec["kind"] == "disparity":
            out["disparity"] = []
        for i, raw in enumerate(batch[src_depth]):
            depth, disp = convert_depth(np.asarray(raw), spec)
            mask = depth > 0
            if "__mask" in batch:
                mask &= np.asarray(batch["__mask"][i]).astype(bool)
                depth = np.where(mask, depth, 0).astype(np.float32)
            out["depth"].append(depth)
            out["mask"].append(mask)
            if disp is not None:
                out["disparity"].append(np.where(mask, disp, 0).astype(np.float32))
        return out

    return convert


def _local_rows(m: dict, split: str, root: Path) -> list[dict]:
    """Pair the files of a local source: {column: path} per sample, joined on the layout's key regex."""
    lay = m["source"]["layout"]
    folder = split_entry(m, split).get("folder", split)
    if not lay.get("image"):
        raise DataSourceError(f"{dataset_ref(m)}: the file layout is not recorded "
                              f"(source.layout.image is null). Convert your copy with datasets' save_to_disk "
                              f"(columns image, depth) and load it through an hf-type manifest, or fill in the layout.")

    def files(pattern):
        pat = pattern.replace("{split}", folder)
        return sorted(Path(p) for p in globlib.glob(str(root / pat), recursive=True))

    def key_of(p: Path, col: str):
        if not lay.get("key"):
            return p.relative_to(root).as_posix()
        hit = re.search(lay["key"], p.relative_to(root).as_posix())
        if hit is None:
            return None
        return tuple(hit.groupdict().values()) if hit.groupdict() else hit.groups()

    images = files(lay["image"])
    if not images:
        raise DataSourceError(f"{dataset_ref(m)}: no files match "
                              f"source.layout.image={lay['image']!r} (split {split!r}) under {root}. {_how_to_provide(m)}")
    rows = {key_of(p, "image"): {"image": p} for p in images}
    rows.pop(None, None)
    for col in ("depth", "mask"):
        if not lay.get(col):
            continue
        if not lay.get("key"):
            raise DataSourceError(f"{dataset_ref(m)}: field 'source.layout.key' is needed "
                                  f"to pair images with {col} files")
        found = {key_of(p, col): p for p in files(lay[col])}
        rows = {k: r | {col: found[k]} for k, r in rows.items() if k in found}
    if not rows:
        raise DataSourceError(f"{dataset_ref(m)}: no image under {root} has a matching "
                              f"depth file (source.layout.depth={lay.get('depth')!r}, key={lay.get('key')!r})")
    return [rows[k] for k in sorted(rows)]


def _gen_local(rows, spec, depth_key, root):
    """Rows of a local source with depth converted to metres (a generator for Dataset.from_generator)."""
    for r in rows:
        out = {"image": rgb_image(r["image"]), "path": str(Path(r["image"]).relative_to(root))}
        if "depth" in r:
            depth, disp = convert_depth(read_depth_file(r["depth"], depth_key), spec)
            mask = depth > 0
            if "mask" in r:
                mask &= np.asarray(read_depth_file(r["mask"])).astype(bool).reshape(mask.shape)
                depth = np.where(mask, depth, 0).astype(np.float32)
            out["depth"], out["mask"] = depth, mask
            if spec["kind"] == "disparity":
                out["disparity"] = np.where(mask, disp, 0).astype(np.float32)
        yield out


def load_local(m: dict, split: str, root):
    local = local_copy(m, root)
    if local is None:
        raise DataSourceError(f"{dataset_ref(m)}: no local copy found. {_how_to_provide(m)}")
    if (local / "dataset_dict.json").exists() or (local / "state.json").exists() or (local / split / "state.json").exists():
        return map_hf(m, split, open_hf(m, split, local))  # a converted copy saved with save_to_disk
    rows = _local_rows(m, split, local)
    spec, lay = m.get("depth"), m["source"]["layout"]
    feats = {"image": datasets.Image(), "path": datasets.Value("string")}
    if spec is not None and lay.get("depth"):
        feats.update(list_features(["depth", "mask"] + (["disparity"] if spec["kind"] == "disparity" else [])))
    else:
        spec = None
        rows = [{"image": r["image"]} for r in rows]
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for r in rows for p in r.values()]
    fp = hashlib.sha256(json.dumps([m["name"], split, stamp, spec, FORMAT_VERSION]).encode()).hexdigest()[:32]
    with quiet_progress():
        return datasets.Dataset.from_generator(
            _gen_local, features=datasets.Features(feats), cache_dir=str(converted_cache_dir(m)), fingerprint=fp,
            gen_kwargs={"rows": [{k: str(v) for k, v in r.items()} for r in rows], "spec": spec,
                        "depth_key": lay.get("depth_key"), "root": str(local)})


def load_bundled(m: dict, split: str):
    """Files shipped inside an installed package, checked against their sha256."""
    src = m["source"]
    spec_ = importlib.util.find_spec(src["package"])
    if spec_ is None or not spec_.submodule_search_locations:
        raise DataSourceError(f"{dataset_ref(m)}: package {src['package']!r} is not "
                              f"installed (pip install {src['package']})")
    base = Path(list(spec_.submodule_search_locations)[0])
    dspec = m.get("depth")
    cols: dict[str, list] = {}
    for row in src["rows"]:
        for col, rel in row.items():
            path = base / rel
            if not path.exists():
                raise DataSourceError(f"{dataset_ref(m)}: {path} is missing from the "
                                      f"installed {src['package']!r}; reinstall it")
            digest = file_sha256(path)
            if digest != src["sha256"][rel]:
                raise DataSourceError(f"{dataset_ref(m)}: sha256 of {path} is {digest}, "
                                      f"expected {src['sha256'][rel]} (field 'source.sha256')")
            if col in ("image", "image_right"):
                cols.setdefault(col, []).append(rgb_image(path))
            else:  # a label file: disparity or depth, converted with the manifest's depth block
                depth, disp = convert_depth(read_depth_file(path), dspec)
                cols.setdefault("depth", []).append(depth)
                cols.setdefault("mask", []).append(depth > 0)
                if disp is not None:
                    cols.setdefault("disparity", []).append(disp)
        cols.setdefault("path", []).append(row.get("image"))
    feats = {"image": datasets.Image(), "path": datasets.Value("string")}
    if "image_right" in cols:
        feats["image_right"] = datasets.Image()
    feats.update(list_features([c for c in ("depth", "mask", "disparity") if c in cols]))
    n = split_entry(m, split)["size"]
    ds = datasets.Dataset.from_dict(cols, features=datasets.Features(feats))
    return ds.select(range(n)) if n and n < len(ds) else ds


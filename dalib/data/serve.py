"""Serving a dataset: `load(name, split)` for every source type, `build` for generated splits,
`open_dataset` for any way of naming a dataset, `dataset_on_disk` for handing one to another process.
Taught in notebooks 00_depth_data and 04_teacher_training.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets

from dalib.data.generated import build_shards, load_generated
from dalib.data.hub_sources import load_hub
from dalib.data.schema import LABEL_COLUMNS, dataset_ref, get_manifest, split_entry, split_role
from dalib.data.sources import converted_cache_dir, load_bundled, load_local, map_hf, open_hf


# ----------------------------------------------------------------------------------------------------
# load and build
# ----------------------------------------------------------------------------------------------------
def load(name: str, split: str, *, root=None, n: int | None = None, height: int | None = None,
         width: int | None = None, with_heldout: bool = False):
    """Serve split `split` of dataset `name` as a `datasets.Dataset` (columns in the module docstring).

    root: for generator sources the data folder (default $DALIB_DATA, else `<repo>/data`); for
    hf/local sources the folder of the local copy (else $DALIB_ROOT_<NAME>, else <data>/raw/<name>); hub
    sources read their pinned files from the Hugging Face cache or the hub (`dalib.data.hub_sources`).
    n, height, width: generator sources only; build/serve the first n samples at that size (built on
    first use, reused afterwards). Use `.with_format("numpy" | "torch")` to get (H, W) arrays; the
    numpy/torch formatters return integer columns (material) as int64.

    Unlabelled splits (role `unlabelled`, e.g. the train split of `synth-photo`) never carry labels: the
    ground truth stays on disk and is only returned with `with_heldout=True`, renamed `heldout_depth`,
    `heldout_mask`, `heldout_material`, so training code cannot use it by accident (for measuring
    pseudo-label quality). Taught in notebooks 00_depth_data and 04_teacher_training.
    """
    m = get_manifest(name)
    stype = m["source"]["type"]
    if stype != "generator" and (height or width):
        raise ValueError(f"{dataset_ref(m)}: height/width apply to generator sources only")
    if stype == "generator":
        ds = load_generated(m, split, root=root, n=n, height=height, width=width)
    elif stype == "hf":
        ds = map_hf(m, split, open_hf(m, split, root))
    elif stype == "local":
        ds = load_local(m, split, root)
    elif stype == "hub":  # only the files the first n rows need are fetched
        ds = load_hub(m, split, n)
    else:
        ds = load_bundled(m, split)
    if stype != "generator" and n is not None and n < len(ds):
        ds = ds.select(range(n))
    if split_role(m, split) == "unlabelled":
        labels = [c for c in LABEL_COLUMNS if c in ds.column_names]
        if with_heldout:
            ds = ds.rename_columns({c: f"heldout_{c}" for c in labels})
        elif labels:
            ds = ds.remove_columns(labels)
    return ds


def build(name: str, split: str, n: int | None = None, *, root=None, height=None, width=None,
          shard_size=None, verify: bool = True, progress: bool = False) -> Path:
    """Materialise `n` samples of a generator split on disk (resumable); returns the split folder.

    Shards already on disk are reused when their checksum (`verify=True`) or size and row count
    match the index; missing or damaged ones are (re)built; sample i only depends on the split seed
    and i, so any shard can be rebuilt alone. Memory stays flat in n. For hf/local/bundled sources
    this converts and caches the split instead (see `load`). Taught in notebook 00_depth_data.
    """
    m = get_manifest(name)
    if m["source"]["type"] != "generator":
        load(name, split, root=root, n=n)
        return converted_cache_dir(m)
    return build_shards(m, split, n, root=root, height=height, width=width, shard_size=shard_size,
                        verify=verify, progress=progress)


# ----------------------------------------------------------------------------------------------------
# Datasets named any way, and handed to other processes
# ----------------------------------------------------------------------------------------------------
def dataset_on_disk(ds, folder) -> str:
    """A dataset as something another process can open: names and folders are returned as they are, an
    in-memory `datasets.Dataset` is saved to `folder` (atomically; reused while its fingerprint is the
    same). What `dalib.train.loop.launch` and `dalib.pseudo_label.labelling.launch_pseudo_label` pass to torchrun."""
    if isinstance(ds, (str, os.PathLike)):
        return str(ds)
    folder = Path(folder)
    stamp = folder / ".fingerprint"
    fp = getattr(ds, "_fingerprint", None)
    if not (fp and stamp.is_file() and stamp.read_text() == fp):
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ds.save_to_disk(str(tmp))
        if fp:
            (tmp / ".fingerprint").write_text(fp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return str(folder)


def open_dataset(spec, split: str | None = None, *, root=None, n: int | None = None, with_heldout: bool = False,
                 what: str = "dataset"):
    """Any way of naming a dataset -> `datasets.Dataset`: a Dataset (as is), a DatasetDict or a
    `save_to_disk` folder (its `split`), or a manifest name (`load(name, split, root=, n=)`); the first
    `n` rows when n is given. Errors start with `what` (the argument being resolved). Used by
    `dalib.train` and `dalib.pseudo_label`."""

    def pick(dd, where):
        if split not in dd:
            raise ValueError(f"{what}: {where} holds splits {list(dd)}; pass split=one of them, got {split!r}")
        return dd[split]

    if isinstance(spec, datasets.DatasetDict):
        ds = pick(spec, "the DatasetDict")
    elif isinstance(spec, datasets.Dataset):
        ds = spec
    elif isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        ds = datasets.load_from_disk(str(spec))
        if isinstance(ds, datasets.DatasetDict):
            ds = pick(ds, str(spec))
    elif isinstance(spec, str):
        if split is None:
            raise ValueError(f"{what}: dataset name {spec!r} needs a split (e.g. split='train')")
        try:  # an unknown name or split is a bad setting of the caller, named as such
            split_entry(get_manifest(spec), split)
        except KeyError as e:
            raise ValueError(f"{what}: {e.args[0]}") from None
        ds = load(spec, split, root=root, n=n, with_heldout=with_heldout)
    else:
        raise TypeError(f"{what}: expected a datasets.Dataset, a dataset name or a save_to_disk folder, "
                        f"got {type(spec).__name__}")
    if n is not None and n < len(ds):
        ds = ds.select(range(n))
    if len(ds) == 0:
        raise ValueError(f"{what} {spec if isinstance(spec, (str, os.PathLike)) else ''} (split {split!r}) has no rows")
    return ds

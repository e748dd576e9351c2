"""Reading a pseudo-label folder: its status, its shards as one dataset, and the student's pool of several
folders (notebooks 05_pseudo_labelling and 06_student_training)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import datasets

from dalib.data.schema import list_features
from dalib.pseudo_label.store import entry_path, shard_done
from dalib.shards import INDEX_FILE, damaged_shards, read_index, shard_grid, shard_name


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


def status(out_dir) -> dict:
    """{"rows", "shards", "complete": [k...], "missing": [k...]} of a pseudo-label folder (size checks)."""
    out = Path(out_dir)
    index = read_index(out / INDEX_FILE)
    if index is None:
        raise FileNotFoundError(f"{out / INDEX_FILE}: missing or unreadable; {out} is not a pseudo-label folder "
                                f"(write one with dalib.pseudo_label.pseudo_label)")
    grid = shard_grid(index["rows"], index["shard_size"])
    ok = [k for k, s, c in grid if shard_done(out, k, s, c, verify=False)]
    return {"rows": index["rows"], "shards": len(grid), "complete": ok,
            "missing": [k for k, _, _ in grid if k not in set(ok)]}


def load_pseudo_labels(out_dir, *, verify: bool = False):
    """All shards of a pseudo-label folder as one datasets.Dataset, in source order.

    Columns: image, source_row, kept source columns, disparity (float32 H x W; `.with_format("numpy")`).
    Raises FileNotFoundError naming the missing shards and their row ranges when any worker has not
    finished, and naming the damaged ones (files that no longer match their sha256, checked once per
    process) with what to do. verify: recompute every shard's sha256 now, even if this process checked it
    before. Notebook 05_pseudo_labelling.
    """

    out = Path(out_dir)
    index = read_index(out / INDEX_FILE)
    if index is None:
        raise FileNotFoundError(f"{out / INDEX_FILE}: missing or unreadable; {out} is not a pseudo-label folder "
                                f"(write one with dalib.pseudo_label.pseudo_label)")
    size = index["shard_size"]
    grid = shard_grid(index["rows"], size)
    missing = [k for k, s, c in grid if not shard_done(out, k, s, c, verify=verify)]
    entries = {shard_name(k): read_index(entry_path(out, k)) for k, _, _ in grid if k not in missing}
    damaged = damaged_shards(out, entries)  # contents, not just sizes: never serve labels that changed on disk
    if damaged:
        rows = ", ".join(f"{key} (rows {e['start']}-{e['start'] + e['rows'] - 1})" for key, e in entries.items()
                         if key in damaged)
        raise FileNotFoundError(f"{out}: pseudo-label shards damaged, their files no longer match the sha256 in "
                                f"their .json entry: {rows}; run dalib.pseudo_label again with the same arguments "
                                f"(it re-labels damaged shards), or delete those shard folders and their .json")
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

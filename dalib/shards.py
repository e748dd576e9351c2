"""The one shard format: a dataset cut into `save_to_disk` folders, each written atomically and checked
by the sha256 of its files. Generated datasets (`dalib.data`) and pseudo-labels (`dalib.pseudo_label`)
both use it (notebooks 00_depth_data and 05_pseudo_labelling):

    <folder>/index.json        what is built (parameters; `dalib.data` also keeps the shard entries here)
    <folder>/shard-00000/      `save_to_disk` of rows [0, shard_size)
    <folder>/.shard-00000.tmp-PID/   a shard being written (renamed into place when complete)
    <folder>/.lock             advisory lock of the processes writing the folder (`folder_lock`)

A shard entry is {"start", "rows", "sha256", "files": {name: bytes}}: a shard is complete when its folder
matches its entry (sizes: cheap; sha256: every byte), so an interrupted build keeps its complete shards
and a re-run (re)writes just the missing or damaged ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import xxhash
from datasets.arrow_writer import OptimizedTypedSequence
from datasets.table import InMemoryTable, cast_array_to_feature

from dalib.runfiles import atomic_write_json

FORMAT_VERSION = 1  # bump when the on-disk layout of shards or their index changes
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"


def shard_name(k: int) -> str:
    """Folder name of shard k: `shard-00000`."""
    return f"shard-{k:05d}"


def shard_grid(rows: int, shard_size: int) -> list[tuple[int, int, int]]:
    """[(k, start, count)] of the fixed shard grid over `rows` rows: shard k = rows [k*size, (k+1)*size)."""
    return [(k, s, min(shard_size, rows - s)) for k, s in enumerate(range(0, rows, shard_size))]


def read_index(path: Path) -> dict | None:
    """A JSON index or shard entry, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_index(path: Path, index: dict) -> None:
    """Replace a JSON index or shard entry atomically (temp file, fsync, rename)."""
    atomic_write_json(path, index)


def file_sha256(path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_digest(d: Path) -> tuple[str, dict]:
    """sha256 over a shard folder's files (names and bytes), and {file: size}."""
    h, sizes = hashlib.sha256(), {}
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
        sizes[f.name] = f.stat().st_size
    return h.hexdigest(), sizes


def shard_ok(d: Path, entry: dict | None, *, full: bool) -> bool:
    """Does shard folder `d` match its index entry? `full` recomputes the sha256, else file sizes."""
    if entry is None or not d.is_dir():
        return False
    try:
        if full:
            return dir_digest(d) == (entry["sha256"], entry["files"])
        return {f.name: f.stat().st_size for f in d.iterdir() if f.is_file()} == entry["files"]
    except (OSError, KeyError):
        return False


def shard_complete(d: Path, entry: dict | None, start: int, count: int, *, full: bool) -> bool:
    """Is shard folder `d` the rows [start, start+count) its entry records, with files matching it?"""
    return (entry is not None and entry.get("start") == start and entry.get("rows") == count
            and shard_ok(d, entry, full=full))


@contextlib.contextmanager
def quiet_progress():
    """Silence `datasets` progress bars for library-internal writes."""

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def columns_dataset(cols: dict, features):
    """{column: values or Arrow array} -> `datasets.Dataset` with `features`, the rows of one shard.

    What `datasets.Dataset.from_dict` builds (same encoding, Arrow types and casts), but with its fingerprint
    taken as an xxhash of the table's Arrow buffers: from_dict pickles every value to hash it, which was half
    the time of writing a pseudo-label shard. The fingerprint is as deterministic (it lands in the shard's
    state.json, so equal rows still give equal shard digests).
    """

    typed = {}
    for col, values in cols.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            typed[col] = cast_array_to_feature(values, features[col])
        else:
            typed[col] = OptimizedTypedSequence(features.encode_column(values, col), type=features[col], col=col)
    table = InMemoryTable.from_pydict(mapping=typed)
    digest = xxhash.xxh3_128()
    for name, column in zip(table.column_names, table.columns):
        digest.update(name.encode())
        for chunk in column.chunks:
            for buf in chunk.buffers():
                digest.update(b"-" if buf is None else memoryview(buf))
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=digest.hexdigest())


def save_shard(ds, dest: Path) -> tuple[str, dict]:
    """`ds.save_to_disk` into a temp folder beside `dest`, then rename it into place (a crash never
    leaves a partial `dest`); returns `dir_digest(dest)` for the shard index."""
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_progress():
        ds.save_to_disk(str(tmp))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dir_digest(dest)


def write_shard(ds, dest: Path, start: int) -> dict:
    """Save `ds` (rows [start, start+len(ds)) of the whole) as shard folder `dest`; returns its entry."""
    digest, files = save_shard(ds, dest)
    return {"start": start, "rows": len(ds), "sha256": digest, "files": files}


def sweep_temp(folder: Path, names=None) -> None:
    """Remove leftovers of interrupted shard writes in `folder` (all, or those of the shard `names`)."""
    patterns = [".shard-*.tmp-*"] if names is None else [f".{name}.tmp-*" for name in names]
    for pattern in patterns:
        for stale in folder.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


_VERIFIED: set[tuple[str, str]] = set()  # (shard folder, sha256) whose bytes this process has checked in full


def damaged_shards(folder: Path, shards: dict) -> list[str]:
    """The shards {name: entry} of `folder` whose files do not match their sha256, each checked once per process:
    a shard whose bytes changed but not its size (which a size check alone would pass) is caught before it is
    served. Data builds and pseudo-labels both check their shards with it."""
    damaged = []
    for key, entry in shards.items():
        tag = (str(folder / key), str((entry or {}).get("sha256")))
        if tag not in _VERIFIED:
            if shard_ok(folder / key, entry, full=True):
                _VERIFIED.add(tag)
            else:
                damaged.append(key)
    return damaged


def mark_verified(folder: Path, shards: dict) -> None:
    """Record shards just written or checked in full by this process as verified (see `damaged_shards`)."""
    _VERIFIED.update((str(folder / k), str(e.get("sha256"))) for k, e in shards.items())


@contextlib.contextmanager
def folder_lock(folder: Path, name: str = LOCK_FILE, on_wait=None):
    """Hold an exclusive advisory lock on `folder/name` (POSIX flock; no-op where unavailable), so that two
    processes never write one shard folder at once. When another process holds it, `on_wait()` is called
    once (e.g. to say so), then this one waits for it."""
    try:
        import fcntl  # local import: fcntl is POSIX-only
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(folder / name, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

"""hub sources: benchmarks and image pools read file by file from a pinned hub commit (`dalib.hub`), so that a
quick run fetches only the files its n rows need. How the files are read (`source.format`):

    parquet    parquet files; `columns` maps image / depth / mask to the file's columns. Images are encoded
               bytes (a datasets Image struct or plain binary); depth is an encoded image (16-bit PNG, float
               TIFF) or nested lists, converted to metres with the manifest's `depth` block. With
               `stream: true` a file that is not cached is read over HTTP range requests, row group by row
               group, until n rows are served (large image pools); otherwise it is downloaded into the cache.
    h5-tar     tar archives of .h5 files, each one sample: `columns.image` names a (3, H, W) or (H, W, 3)
               uint8 array, `columns.depth` an (H, W) array (NYU Depth V2 as FastDepth distributes it).
    da2k-zip   DA-2K: a zip of images and an annotation file {image path: [{point1: [h, w], point2: [h, w],
               closer_point: "point1" | "point2"}]}; served as columns image, path, scene, point1, point2,
               closer (1 or 2: which point is closer).

Converted rows are cached under <data>/cache/<name> (keyed by the manifest's source, columns and depth block
and n), so a second run works offline. Taught in notebook 07_evaluation.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import posixpath
import tarfile
import zipfile

import datasets
import h5py
import numpy as np
import pyarrow.parquet as pq
from datasets.exceptions import DatasetGenerationError
from PIL import Image

from dalib.data.depth_files import convert_depth
from dalib.data.schema import DataSourceError, dataset_ref, list_features, split_entry
from dalib.data.sources import converted_cache_dir
from dalib.hub import HubFileError, hub_file, open_remote
from dalib.hub import hub_cache_dir
from dalib.shards import FORMAT_VERSION, quiet_progress

#: DA-2K's eight scene types (its card); an image's scene is the first folder of its path that names one
DA2K_SCENES = ("indoor", "outdoor", "non_real", "transparent_reflective", "adverse_style", "aerial", "underwater",
               "object")


def load_hub(m: dict, split: str, n: int | None = None) -> datasets.Dataset:
    """The first `n` rows (default: the split's size; None there: every row of the listed files) of a hub
    source's split, converted to the course's columns and cached. DataSourceError naming the manifest when a
    file cannot be had (not cached and offline, download failed) or does not hold what the manifest says."""
    src = m["source"]
    n = n if n is not None else split_entry(m, split).get("size")
    fmt = src["format"]
    feats = _features(fmt, m.get("depth"))
    key = hashlib.sha256(json.dumps([m["name"], split, n, {k: v for k, v in src.items() if k != "verified"},
                                     m.get("columns"), m.get("depth"), FORMAT_VERSION, _cached_files(m, split)],
                                    sort_keys=True, default=str).encode()).hexdigest()
    try:
        with quiet_progress():
            return datasets.Dataset.from_generator(
                _generate, features=datasets.Features(feats), cache_dir=str(converted_cache_dir(m)), fingerprint=key[:32],
                gen_kwargs={"m": m, "split": split, "n": n})
    except DatasetGenerationError as e:  # the generator's own error, not datasets' wrapper
        if isinstance(e.__cause__, (DataSourceError, HubFileError, KeyError, ValueError)):
            raise DataSourceError(str(e.__cause__)) from None
        raise


def _cached_files(m: dict, split: str) -> list:
    """Which hub cache serves the split and the size and time of the files already in it: rows converted from
    another cache (a test's fixtures, a re-downloaded file) are never served from this cache's conversion."""
    src = m["source"]
    out: list = [str(hub_cache_dir())]
    for filename in src["files"][split]:
        try:
            st = hub_file(src["hub_id"], filename, src["revision"], repo_type=src.get("repo_type", "dataset"),
                          local_only=True).stat()
            out.append([filename, st.st_size, st.st_mtime_ns])
        except HubFileError:
            out.append([filename, None])
    return out


def _features(fmt: str, spec) -> dict:
    feats = {"image": datasets.Image(), "path": datasets.Value("string")}
    if fmt == "da2k-zip":
        points = datasets.List(datasets.List(datasets.Value("float32")))
        return feats | {"scene": datasets.Value("string"), "point1": points, "point2": points,
                        "closer": datasets.List(datasets.Value("int8"))}
    return feats | (list_features(["depth", "mask"]) if spec is not None else {})


def _generate(m: dict, split: str, n: int | None):
    """Rows of the split's files in order, at most n (a generator for Dataset.from_generator)."""
    rows = {"parquet": _parquet_rows, "h5-tar": _h5_tar_rows, "da2k-zip": _da2k_rows}[m["source"]["format"]]
    yield from itertools.islice(rows(m, m["source"]["files"][split]), n)  # stops before a file it does not need


def _fetch(m: dict, filename: str):
    """A listed file from the cache or the hub (DataSourceError naming the manifest otherwise)."""
    src = m["source"]
    try:
        return hub_file(src["hub_id"], filename, src["revision"], repo_type=src.get("repo_type", "dataset"))
    except HubFileError as e:
        raise DataSourceError(f"{dataset_ref(m)}: {e}") from None


def _columns(m: dict, *names: str) -> dict:
    """{ours: theirs} for the named columns: the manifest's `columns`, else the same name."""
    return {c: (m.get("columns") or {}).get(c, c) for c in names}


# ----------------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------------
def _encoded(value, what: str) -> bytes:
    if isinstance(value, dict) and value.get("bytes") is not None:
        return value["bytes"]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError(f"{what}: expected encoded image bytes (or a datasets Image struct), got {type(value).__name__}")


def image_value(data: bytes, short_side: int | None = None) -> dict:
    """A datasets.Image value: the bytes as they are when already RGB PNG/JPEG and small enough, else RGB
    re-encoded (PNG, or JPEG q95 after shrinking the shorter side to `short_side`)."""
    with Image.open(io.BytesIO(data)) as im:
        small = short_side is None or min(im.size) <= short_side
        if im.mode == "RGB" and im.format in ("PNG", "JPEG") and small:
            return {"bytes": data, "path": None}
        rgb = im.convert("RGB")
        buf = io.BytesIO()
        if small:
            rgb.save(buf, format="PNG")
        else:
            scale = short_side / min(rgb.size)
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb.resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=95)
        return {"bytes": buf.getvalue(), "path": None}


def _array_image(rgb: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8))).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _depth_value(value, what: str) -> np.ndarray:
    if isinstance(value, (dict, bytes, bytearray)):
        with Image.open(io.BytesIO(_encoded(value, what))) as im:
            return np.asarray(im)
    return np.asarray(value, dtype=np.float64)


def _labels(m: dict, raw_depth, raw_mask=None) -> dict:
    """depth (metres, 0 = invalid) and mask from stored values, with the manifest's depth block."""
    depth, _ = convert_depth(raw_depth, m["depth"])
    mask = depth > 0
    if raw_mask is not None:
        mask &= np.asarray(raw_mask).astype(bool).reshape(mask.shape)
        depth = np.where(mask, depth, 0).astype(np.float32)
    return {"depth": depth, "mask": mask}


# ----------------------------------------------------------------------------------------------------
# formats
# ----------------------------------------------------------------------------------------------------
def _parquet_source(m: dict, filename: str):
    """A local path (cached, or downloaded now), or with `stream: true`, a file streamed from the hub."""
    src = m["source"]
    if src.get("stream"):
        try:
            return hub_file(src["hub_id"], filename, src["revision"], repo_type=src.get("repo_type", "dataset"),
                            local_only=True)
        except HubFileError:
            try:
                return open_remote(src["hub_id"], filename, src["revision"], src.get("repo_type", "dataset"))
            except HubFileError as e:
                raise DataSourceError(f"{dataset_ref(m)}: {e}") from None
    return _fetch(m, filename)


def _parquet_rows(m: dict, files: list[str]):
    spec = m.get("depth")
    cols = _columns(m, "image", *(("depth", "mask") if spec is not None else ()))
    short = m["source"].get("resize_short_side")
    for filename in files:
        source = _parquet_source(m, filename)
        with source if hasattr(source, "read") else contextlib.nullcontext(source) as opened:
            yield from _parquet_file_rows(m, filename, pq.ParquetFile(opened), cols, short)


def _parquet_file_rows(m: dict, filename: str, pf: pq.ParquetFile, cols: dict, short: int | None):
    """Rows of one parquet file, 16 at a time (a streamed file fetches only the row groups it reads)."""
    spec = m.get("depth")
    have = pf.schema_arrow.names
    wanted = {ours: theirs for ours, theirs in cols.items() if theirs in have or ours != "mask"}
    missing = [f"columns.{o}={t!r}" for o, t in wanted.items() if t not in have]
    if missing:
        raise DataSourceError(f"{dataset_ref(m)}: {filename} has no column {', '.join(missing)}; "
                              f"its columns are {have}")
    for b, batch in enumerate(pf.iter_batches(batch_size=16, columns=list(wanted.values()))):
        for i, row in enumerate(batch.to_pylist()):
            where = f"{dataset_ref(m)}: {filename} row {16 * b + i}"
            out = {"image": image_value(_encoded(row[wanted["image"]], where), short),
                   "path": f"{filename}#{16 * b + i}"}
            if spec is not None:
                mask = row[wanted["mask"]] if "mask" in wanted else None
                out |= _labels(m, _depth_value(row[wanted["depth"]], where), mask)
            yield out


def _h5_tar_rows(m: dict, files: list[str]):
    cols = _columns(m, "image", "depth")
    for filename in files:
        with tarfile.open(_fetch(m, filename), "r|*") as tar:  # sequential: one pass, no extraction to disk
            for member in tar:
                if not (member.isfile() and member.name.endswith(".h5")):
                    continue
                with h5py.File(io.BytesIO(tar.extractfile(member).read()), "r") as h5:
                    missing = [f"columns.{o}={t!r}" for o, t in cols.items() if t not in h5]
                    if missing:
                        raise DataSourceError(f"{dataset_ref(m)}: {filename}:{member.name} has no dataset "
                                              f"{', '.join(missing)}; it holds {sorted(h5)}")
                    rgb, raw = np.asarray(h5[cols["image"]]), np.asarray(h5[cols["depth"]])
                if rgb.ndim == 3 and rgb.shape[0] == 3 and rgb.shape[-1] != 3:
                    rgb = rgb.transpose(1, 2, 0)  # FastDepth stores (3, H, W)
                yield {"image": _array_image(rgb), "path": f"{filename}:{member.name}"} | _labels(m, raw)


def _da2k_member(names: set, base: str, key: str) -> str | None:
    for cand in (posixpath.join(base, key), key):
        if cand in names:
            return cand
    return next((x for x in sorted(names) if x.endswith("/" + key)), None)


def _da2k_pairs(pairs, where: str) -> dict:
    out = {"point1": [], "point2": [], "closer": []}
    for j, p in enumerate(pairs):
        closer = p.get("closer_point") if isinstance(p, dict) else None
        pts = [p.get(k) for k in ("point1", "point2")] if isinstance(p, dict) else [None, None]
        if closer not in ("point1", "point2") or not all(isinstance(q, list) and len(q) == 2 for q in pts):
            raise DataSourceError(f"{where} pair {j}: expected point1 [h, w], point2 [h, w] and closer_point "
                                  f"'point1' | 'point2', got {p!r}")
        out["point1"].append([float(v) for v in pts[0]])
        out["point2"].append([float(v) for v in pts[1]])
        out["closer"].append(1 if closer == "point1" else 2)
    return out


def _da2k_rows(m: dict, files: list[str]):
    ann_name = m["source"].get("annotations", "annotations.json")
    for filename in files:
        with zipfile.ZipFile(_fetch(m, filename)) as z:
            names = set(z.namelist())
            found = sorted((x for x in names if posixpath.basename(x) == posixpath.basename(ann_name)), key=len)
            if not found:
                raise DataSourceError(f"{dataset_ref(m)}: {filename} holds no {ann_name} "
                                      f"(field 'source.annotations')")
            annotations = json.loads(z.read(found[0]))
            base = posixpath.dirname(found[0])
            for key, pairs in annotations.items():
                member = _da2k_member(names, base, key)
                if member is None:
                    raise DataSourceError(f"{dataset_ref(m)}: {filename}:{found[0]} names image {key!r}, "
                                          f"which is not in the archive")
                scene = next((part for part in key.split("/") if part in DA2K_SCENES), "")
                labels = _da2k_pairs(pairs, f"{dataset_ref(m)}: {filename}:{found[0]} image {key!r}")
                try:
                    image = image_value(z.read(member))
                except OSError as e:  # PIL's UnidentifiedImageError among them
                    raise DataSourceError(f"{dataset_ref(m)}: {filename}:{member} is not a readable image ({e})")
                yield {"image": image, "path": key, "scene": scene, **labels}

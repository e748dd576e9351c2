"""Datasets for the course: YAML manifests -> Hugging Face `datasets` with one schema.

Every dataset the course knows about has a manifest in `data_manifests/<name>.yaml` (what it is, where
it comes from, its licence and citation, how its depth is stored). `load` turns any of them into a
`datasets.Dataset` with the same columns, whatever the source:

    image     datasets.Image (RGB)
    depth     float32 (H, W) metres, 0 = invalid          (labelled and eval splits)
    mask      bool (H, W), True where depth is valid
    material  uint8 (H, W) material id where known (synthetic data: plain, glass, mirror, thin, sky)
    ...       source extras: `disparity` (px), `image_right`, `depth_exact` (sensor variants), `meta`

    python -m dalib data list                                  manifests and what is on disk
    python -m dalib data validate [DIR]                        check manifests (non-zero exit on error)
    python -m dalib data build synth-indoor --split train -n 512
    >>> ds = dalib.data.load("synth-indoor", "train").with_format("torch")

Sources (`source.type`):
    generator  the offline procedural engine (`dalib.synth`), materialised once under $DALIB_DATA
               (default `<repo>/data/`) in shards: resumable, damaged shards are detected and rebuilt.
    hf         a Hugging Face hub dataset (hub id + revision) or a local copy of it.
    local      files on disk in a documented layout (globs + a regex that pairs image and depth).
    bundled    files shipped inside an installed package (scikit-image's Middlebury pair and photos).

Notebooks: 00_depth_data (what the labels are and how they are flawed), 04_teacher_training (which
data the teacher trains on). Training transforms, perturbations and CutMix live further down this
module once written; this part is about getting pixels and metres in.
"""
from __future__ import annotations

import argparse
import contextlib
import glob as globlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from dalib.runfiles import REPO_ROOT, atomic_write_json

# ----------------------------------------------------------------------------------------------------
# Constants shared by the schema and the loaders
# ----------------------------------------------------------------------------------------------------
ROLES = ("synthetic-labelled", "real-labelled", "unlabelled", "eval")
SOURCE_TYPES = ("generator", "hf", "local", "bundled")
DEPTH_KINDS = ("planar", "ray", "disparity")  # what the stored number measures
UNITS_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}  # depth units; disparity is in "px"
UNITS = (*UNITS_TO_M, "px")
# Mirrors the generator's contract (dalib.synth); kept here so that manifests validate without it.
SCENE_KINDS = ("indoor", "outdoor")
STYLES = ("clean", "photo")
SENSORS = ("stereo", "lidar", "rgbd")
#: columns a manifest may map; the label columns are hidden on unlabelled splits (see `load`).
COLUMNS = ("image", "image_right", "depth", "mask", "material", "disparity", "depth_exact")
LABEL_COLUMNS = ("depth", "mask", "material", "disparity", "depth_exact")
FORMAT_VERSION = 1  # bump when the on-disk layout of generated shards changes


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file, the field and what was expected."""


class DataSourceError(RuntimeError):
    """A dataset cannot be served (no local copy, offline hub, missing files); says how to fix it."""


def manifest_dir() -> Path:
    """Folder of the shipped manifests: $DALIB_MANIFESTS, else `<repo>/data_manifests`."""
    return Path(os.environ.get("DALIB_MANIFESTS") or REPO_ROOT / "data_manifests")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets are built and cached: `root`, else $DALIB_DATA, else `<repo>/data`."""
    return Path(root or os.environ.get("DALIB_DATA") or REPO_ROOT / "data").expanduser().resolve()


# ----------------------------------------------------------------------------------------------------
# 1. Manifest schema and validation
# ----------------------------------------------------------------------------------------------------
# A field spec is (types, required, check); `check(value) -> error message | None`. Types use
# "null" for None. Unknown fields are errors too (they are almost always typos).
_NUM = (int, float)


def _enum(values):
    return lambda v: None if v in values else f"expected one of {' | '.join(map(str, values))}, got {v!r}"


def _positive(v):
    return None if v > 0 else f"expected a positive number, got {v!r}"


def _sha256(v):
    return None if re.fullmatch(r"[0-9a-f]{64}", v) else f"expected 64 lowercase hex digits, got {v!r}"


def _range(v):
    if len(v) != 2 or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in v):
        return f"expected [min, max] in metres, got {v!r}"
    return None if 0 <= v[0] < v[1] else f"expected 0 <= min < max, got {v!r}"


def _kinds(v):
    kinds = [v] if isinstance(v, str) else v
    if not kinds or any(k not in SCENE_KINDS for k in kinds):
        return f"expected one of {' | '.join(SCENE_KINDS)} or a list of them, got {v!r}"
    return None


def _regex(v):
    try:
        re.compile(v)
    except re.error as e:
        return f"expected a regular expression, got {v!r} ({e})"
    return None


TOP_FIELDS = {
    "name": (str, True, lambda v: None if re.fullmatch(r"[a-z0-9][a-z0-9-]*", v) else
             f"expected lowercase letters, digits and '-', got {v!r}"),
    "role": (str, True, _enum(ROLES)),
    "description": (str, True, None),
    "license": ((str, "null"), True, None),
    "citation": ((str, "null"), True, None),
    "homepage": ((str, "null"), False, None),
    "size": ((int, "null"), True, _positive),  # images in the full dataset as the papers used it; null if unknown / unbounded
    "splits": (dict, True, lambda v: None if v else "expected at least one split"),
    "source": (dict, True, None),
    "depth": ((dict, "null"), True, None),
    "columns": (dict, False, None),
    "notes": (str, False, None),
}
SPLIT_FIELDS = {
    "size": ((int, "null"), True, _positive),  # default number of samples to build / serve
    "role": (str, False, _enum(ROLES)),  # overrides the manifest role for this split
    "seed": (int, False, None),  # generator sources: base seed of the split
    "folder": (str, False, None),  # local sources: replaces {split} in the layout globs
    "hub_split": (str, False, None),  # hf sources: split name on the hub / in the local copy
}
SOURCE_FIELDS = {
    "generator": {
        "kind": ((str, list), True, _kinds),  # a list interleaves kinds: sample i has kind[i % len]
        "style": (str, True, _enum(STYLES)),
        "height": (int, True, _positive),
        "width": (int, True, _positive),
        "sensor": ((str, "null"), False, _enum(SENSORS)),  # label = simulated sensor, exact kept
        "shard_size": (int, False, _positive),
    },
    "hf": {
        "hub_id": ((str, "null"), True, None),
        "revision": ((str, "null"), True, None),
        "config": ((str, "null"), False, None),
    },
    "local": {
        "layout": (dict, True, None),
        "download": ((str, "null"), False, None),
    },
    "bundled": {
        "package": (str, True, None),
        "rows": (list, True, lambda v: None if v else "expected at least one row"),
        "sha256": (dict, True, None),
    },
}
LAYOUT_FIELDS = {
    "image": ((str, "null"), True, None),  # glob relative to the root; may contain {split}
    "depth": ((str, "null"), False, None),
    "mask": ((str, "null"), False, None),
    "key": ((str, "null"), False, _regex),  # regex whose groups pair an image with its depth/mask
    "depth_key": ((str, "null"), False, None),  # npz / hdf5 array name inside a depth file
    "description": (str, False, None),
}
DEPTH_FIELDS = {
    "kind": (str, True, _enum(DEPTH_KINDS)),
    "units": (str, True, _enum(UNITS)),
    "scale": (_NUM, False, _positive),  # stored value * scale = value in `units` (KITTI: 1/256)
    "invalid": (list, False, None),  # stored values that mean "no measurement" (besides NaN/inf)
    "valid_range": ((list, "null"), True, lambda v: _range(v)),
    "focal_px": ((_NUM, "null"), False, _positive),  # ray -> planar, disparity -> depth
    "baseline_m": ((_NUM, "null"), False, _positive),  # disparity -> depth
    "doffs_px": (_NUM, False, None),  # disparity offset between the principal points (Middlebury)
    "notes": (str, False, None),
}


def _type_ok(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    for t in types:
        if t == "null" and value is None:
            return True
        if isinstance(t, tuple) and isinstance(value, t) and not isinstance(value, bool):
            return True
        if isinstance(t, type) and isinstance(value, t) and not (isinstance(value, bool) and t is not bool):
            return True
    return False


def _type_name(types) -> str:
    names = []
    for t in types if isinstance(types, tuple) else (types,):
        if t == "null":
            names.append("null")
        elif isinstance(t, tuple):
            names.append("number")
        else:
            names.append({"str": "string", "dict": "mapping", "int": "integer"}.get(t.__name__, t.__name__))
    return " or ".join(names)


def _check_fields(obj: dict, spec: dict, prefix: str, errors: list[str]) -> None:
    for key in obj:
        if key not in spec:
            errors.append(f"field '{prefix}{key}': unknown field; expected one of {', '.join(spec)}")
    for key, (types, required, check) in spec.items():
        if key not in obj:
            if required:
                errors.append(f"field '{prefix}{key}': missing (expected {_type_name(types)})")
            continue
        value = obj[key]
        if not _type_ok(value, types):
            errors.append(f"field '{prefix}{key}': expected {_type_name(types)}, got {type(value).__name__} {value!r}")
        elif value is not None and check is not None and (msg := check(value)):
            errors.append(f"field '{prefix}{key}': {msg}")


def validate_manifest(m, path: str | os.PathLike | None = None) -> list[str]:
    """Errors of one parsed manifest as 'field ...: what was expected' strings ([] when valid).

    Checks the schema above plus the cross-field rules (ray depth needs `focal_px`, disparity needs
    `focal_px` and `baseline_m`, generator splits need a `seed`, bundled files need a sha256, the name
    matches the file name). Taught in notebook 00_depth_data.
    """
    if not isinstance(m, dict):
        return [f"top level: expected a mapping of fields, got {type(m).__name__}"]
    errors: list[str] = []
    _check_fields(m, TOP_FIELDS, "", errors)
    if path is not None and isinstance(m.get("name"), str) and Path(path).stem != m["name"]:
        errors.append(f"field 'name': expected the file name {Path(path).stem!r}, got {m['name']!r}")
    src = m.get("source")
    stype = src.get("type") if isinstance(src, dict) else None
    if isinstance(src, dict):
        if stype not in SOURCE_TYPES:
            errors.append(f"field 'source.type': expected one of {' | '.join(SOURCE_TYPES)}, got {stype!r}")
        else:
            _check_fields({k: v for k, v in src.items() if k != "type"}, SOURCE_FIELDS[stype], "source.", errors)
            if stype == "local" and isinstance(src.get("layout"), dict):
                _check_fields(src["layout"], LAYOUT_FIELDS, "source.layout.", errors)
            if stype == "bundled" and isinstance(src.get("rows"), list) and isinstance(src.get("sha256"), dict):
                for i, row in enumerate(src["rows"]):
                    if not isinstance(row, dict) or not row:
                        errors.append(f"field 'source.rows[{i}]': expected a mapping column -> file path")
                        continue
                    for col, rel in row.items():
                        if col not in COLUMNS:
                            errors.append(f"field 'source.rows[{i}].{col}': expected a column in {', '.join(COLUMNS)}")
                        if rel not in src["sha256"]:
                            errors.append(f"field 'source.sha256': missing the checksum of {rel!r}")
                for rel, digest in src["sha256"].items():
                    if not isinstance(digest, str) or _sha256(digest):
                        errors.append(f"field 'source.sha256.{rel}': expected 64 lowercase hex digits, got {digest!r}")
    if isinstance(m.get("splits"), dict):
        for split, entry in m["splits"].items():
            if not isinstance(entry, dict):
                errors.append(f"field 'splits.{split}': expected a mapping with at least 'size'")
                continue
            _check_fields(entry, SPLIT_FIELDS, f"splits.{split}.", errors)
            if stype == "generator" and "seed" not in entry:
                errors.append(f"field 'splits.{split}.seed': missing (generator sources need a seed per split)")
    dep = m.get("depth")
    if isinstance(dep, dict):
        _check_fields(dep, DEPTH_FIELDS, "depth.", errors)
        kind, units = dep.get("kind"), dep.get("units")
        if kind == "disparity" and units not in (None, "px"):
            errors.append(f"field 'depth.units': expected 'px' for disparity, got {units!r}")
        if kind in ("planar", "ray") and units == "px":
            errors.append(f"field 'depth.units': expected one of {' | '.join(UNITS_TO_M)} for {kind} depth, got 'px'")
        if kind == "ray" and not dep.get("focal_px"):
            errors.append("field 'depth.focal_px': missing (ray distance -> planar depth needs the focal in px)")
        if kind == "disparity":
            for f in ("focal_px", "baseline_m"):
                if not dep.get(f):
                    errors.append(f"field 'depth.{f}': missing (disparity -> depth needs focal and baseline)")
    if isinstance(m.get("columns"), dict):
        for col, srccol in m["columns"].items():
            if col not in COLUMNS:
                errors.append(f"field 'columns.{col}': expected a column in {', '.join(COLUMNS)}")
            elif not isinstance(srccol, str):
                errors.append(f"field 'columns.{col}': expected the source column name (string), got {srccol!r}")
    return errors


def read_manifest(path: str | os.PathLike) -> dict:
    """Parse and validate one manifest file; raises ManifestError naming the file and every bad field."""
    import yaml

    path = Path(path)
    try:
        m = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ManifestError(f"{path}: cannot read YAML ({e})") from e
    errors = validate_manifest(m, path)
    if errors:
        raise ManifestError(f"{path}: invalid manifest\n" + "\n".join(f"  {path}: {e}" for e in errors))
    m = dict(m)
    m["_path"] = str(path)
    return m


def validate_dir(directory: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """{file: errors} for every `*.yaml` in `directory` (default: the shipped manifests)."""
    import yaml

    directory = Path(directory or manifest_dir())
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    out = {}
    for f in files:
        try:
            out[str(f)] = validate_manifest(yaml.safe_load(f.read_text()), f)
        except yaml.YAMLError as e:
            out[str(f)] = [f"top level: cannot parse YAML ({e})"]
    return out


def list_manifests(directory: str | os.PathLike | None = None) -> list[dict]:
    """All manifests of `directory` (default: shipped), parsed and validated, sorted by name."""
    directory = Path(directory or manifest_dir())
    return sorted((read_manifest(f) for f in directory.glob("*.yaml")), key=lambda m: m["name"])


def get_manifest(name: str | os.PathLike) -> dict:
    """The manifest called `name` (or a path to a YAML file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return read_manifest(p)
    f = manifest_dir() / f"{name}.yaml"
    if not f.exists():
        known = ", ".join(sorted(x.stem for x in manifest_dir().glob("*.yaml")))
        raise KeyError(f"no manifest {f} for dataset {str(name)!r}; known datasets: {known}")
    return read_manifest(f)


def _split_entry(m: dict, split: str) -> dict:
    if split not in m["splits"]:
        raise KeyError(f"dataset {m['name']!r} ({m['_path']}) has no split {split!r}; "
                       f"expected one of {', '.join(m['splits'])}")
    return m["splits"][split]


def split_role(m: dict, split: str) -> str:
    """The role of one split: `splits.<split>.role` if given, else the manifest role."""
    return _split_entry(m, split).get("role", m["role"])


# ----------------------------------------------------------------------------------------------------
# 2. Depth units and conversions
# ----------------------------------------------------------------------------------------------------
def ray_to_planar(ray, focal_px: float):
    """Distance along each pixel's ray -> planar depth (z), principal point at the image centre.

    z = r * f / sqrt(u^2 + v^2 + f^2), with (u, v) the pixel centre's offset from the image centre
    (Hypersim's `depth_meters` stores r; f = 886.81 px at 1024x768). `ray`: (..., H, W) metres.
    """
    ray = np.asarray(ray, dtype=np.float64)
    h, w = ray.shape[-2:]
    u = np.linspace(-0.5 * w + 0.5, 0.5 * w - 0.5, w)
    v = np.linspace(-0.5 * h + 0.5, 0.5 * h - 0.5, h)
    norm = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2 + focal_px**2)
    return ray * (focal_px / norm)


def convert_depth(raw, spec: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Stored depth values -> (planar depth float32 metres with 0 = invalid, disparity px or None).

    `spec` is a manifest's `depth` block: value * scale is in `units` (KITTI PNG: scale 1/256, m;
    VKITTI2 PNG: cm); `kind: ray` converts with `focal_px`; `kind: disparity` uses depth =
    baseline_m * focal_px / (d + doffs_px). NaN, inf, <= 0, the `invalid` values and anything outside
    `valid_range` become 0. Taught in notebook 00_depth_data.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    spec = spec or {"kind": "planar", "units": "m"}
    bad = ~np.isfinite(raw)
    for v in spec.get("invalid") or ():
        bad |= raw == v
    x = np.where(bad, np.nan, raw) * float(spec.get("scale", 1.0))
    disparity = None
    if spec["kind"] == "disparity":
        disparity = np.where(x > 0, x, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = spec["baseline_m"] * spec["focal_px"] / (disparity + float(spec.get("doffs_px", 0.0)))
    else:
        depth = x * UNITS_TO_M[spec["units"]]
        if spec["kind"] == "ray":
            depth = ray_to_planar(depth, spec["focal_px"])
    ok = np.isfinite(depth) & (depth > 0)
    if spec.get("valid_range"):
        lo, hi = spec["valid_range"]
        ok &= (depth >= lo) & (depth <= hi)
    depth = np.where(ok, depth, 0.0).astype(np.float32)
    if disparity is not None:
        disparity = np.where(ok, disparity, 0.0).astype(np.float32)
    return depth, disparity


def read_depth_file(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Raw stored values of a depth file: 16-bit PNG, .npy, .npz, .hdf5/.h5 (needs h5py), Sintel .dpt,
    or .pfm. No unit conversion here (see `convert_depth`)."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf in (".png", ".tif", ".tiff"):
        from PIL import Image

        with Image.open(path) as im:
            return np.array(im)
    if suf == ".npy":
        return np.load(path)
    if suf == ".npz":
        with np.load(path) as z:
            return z[key or z.files[0]]
    if suf in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError as e:
            raise DataSourceError(f"{path}: reading HDF5 depth needs `pip install h5py`") from e
        with h5py.File(path, "r") as f:
            return np.asarray(f[key or "dataset"])
    if suf == ".dpt":  # Sintel: float tag 202021.25, int32 width, int32 height, float32 rows
        with open(path, "rb") as f:
            tag = np.fromfile(f, np.float32, 1)[0]
            if tag != np.float32(202021.25):
                raise DataSourceError(f"{path}: not a Sintel .dpt file (tag {tag})")
            w, h = np.fromfile(f, np.int32, 2)
            return np.fromfile(f, np.float32, int(w) * int(h)).reshape(int(h), int(w))
    if suf == ".pfm":
        with open(path, "rb") as f:
            header = f.readline().decode().strip()
            w, h = map(int, f.readline().decode().split())
            scale = float(f.readline().decode().strip())
            data = np.fromfile(f, "<f4" if scale < 0 else ">f4")
        chans = 3 if header == "PF" else 1
        return np.flipud(data.reshape(h, w, chans).squeeze()).astype(np.float32)
    raise DataSourceError(f"{path}: unsupported depth file type {suf!r} (png, npy, npz, h5, dpt, pfm)")


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rgb_image(path) -> dict:
    """A datasets.Image value: the file's own bytes when already 8-bit RGB, else re-encoded as RGB PNG."""
    from PIL import Image

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "RGB" and im.format in ("PNG", "JPEG"):
            return {"bytes": data, "path": None}
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}


@contextlib.contextmanager
def quiet_progress():
    """Silence `datasets` progress bars for library-internal writes."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _array_features(shape, with_material: bool, extra_float: tuple[str, ...] = ()):
    import datasets

    h, w = shape
    feats = {
        "image": datasets.Image(),
        "depth": datasets.Array2D((h, w), "float32"),
        "mask": datasets.Array2D((h, w), "bool"),
    }
    for col in extra_float:
        feats[col] = datasets.Array2D((h, w), "float32")
    if with_material:
        feats["material"] = datasets.Array2D((h, w), "uint8")
    return feats


def list_features(cols):
    """Variable-size (H, W) columns (real data): nested lists, decoded to arrays by with_format."""
    import datasets

    kinds = {"depth": "float32", "disparity": "float32", "depth_exact": "float32", "mask": "bool", "material": "uint8"}
    return {c: datasets.List(datasets.List(datasets.Value(kinds[c]))) for c in cols}


# ----------------------------------------------------------------------------------------------------
# 3. Generator sources: sharded, resumable builds under $DALIB_DATA
# ----------------------------------------------------------------------------------------------------
#   <data>/<name>/<H>x<W>/<split>/index.json        what was built: params, n, one entry per shard
#   <data>/<name>/<H>x<W>/<split>/shard-00000/      `save_to_disk` of rows [0, shard_size)
# index.json is rewritten atomically after each shard, with the row count and a sha256 of the shard's
# files: an interrupted build resumes at the first missing shard, a damaged one is rebuilt.
_SENSOR_IDS = {s: i + 1 for i, s in enumerate(SENSORS)}


def _generator_params(m: dict, split: str, height=None, width=None, shard_size=None) -> dict:
    src = m["source"]
    h, w = int(height or src["height"]), int(width or src["width"])
    kinds = [src["kind"]] if isinstance(src["kind"], str) else list(src["kind"])
    if shard_size is None:  # about 64 MB of arrays per shard, so memory stays flat for any N
        shard_size = src.get("shard_size") or max(1, min(1024, int(64e6 // (h * w * 16))))
    params = {"format": FORMAT_VERSION, "kinds": kinds, "style": src["style"], "seed": int(_split_entry(m, split)["seed"]),
              "height": h, "width": w, "sensor": src.get("sensor"), "shard_size": int(shard_size)}
    from dalib.synth.style import STYLE_VERSIONS

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
    h, w = int(height or m["source"]["height"]), int(width or m["source"]["width"])
    return data_root(root) / m["name"] / f"{h}x{w}" / split


def generate_rows(params: dict, start: int, count: int) -> dict:
    """Samples [start, start+count) of a generator split as column arrays (deterministic per index).

    With several kinds, sample i has kind kinds[i % K] and is the generator's sample i // K of that
    kind; a sensor variant stores the simulated label as `depth` and the exact one as `depth_exact`.
    """
    from dalib.synth import generate, simulate_sensor

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
    import datasets

    feats = _array_features((params["height"], params["width"]), True,
                            ("depth_exact",) if params["sensor"] else ())
    feats.update(index=datasets.Value("int64"), kind=datasets.Value("string"), meta=datasets.Value("string"))
    return datasets.Features(feats)


def dir_digest(d: Path) -> tuple[str, dict]:
    """sha256 over a shard folder's files (names and bytes), and {file: size}."""
    h, sizes = hashlib.sha256(), {}
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0" + _file_sha256(f).encode())
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


def _write_shard(params: dict, start: int, count: int, dest: Path, chunk: int = 32) -> dict:
    """Generate rows [start, start+count) and save them atomically to `dest` (temp folder + rename)."""
    import datasets

    feats = _generator_features(params)
    parts = []
    for s in range(start, start + count, chunk):
        cols = generate_rows(params, s, min(chunk, start + count - s))
        parts.append(datasets.Dataset.from_dict(cols, features=feats))
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    del parts
    digest, files = save_shard(ds, dest)
    return {"start": start, "rows": count, "sha256": digest, "files": files}


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
        return _cache_dir(m)
    n = int(n if n is not None else (_split_entry(m, split)["size"] or 0))
    if n <= 0:
        raise ValueError(f"dataset {m['name']!r} ({m['_path']}): split {split!r} needs n > 0 samples to build")
    params = _generator_params(m, split, height, width, shard_size)
    out = split_dir(name, split, root=root, height=params["height"], width=params["width"])
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):  # two processes (e.g. parallel notebooks) never write the same split at once
        return _build_locked(m, split, n, params, out, shard_size=shard_size, verify=verify, progress=progress)


@contextlib.contextmanager
def _build_lock(folder: Path):
    """An exclusive advisory lock on `folder/.lock` (POSIX flock; no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _build_locked(m: dict, split: str, n: int, params: dict, out: Path, *, shard_size, verify, progress) -> Path:
    for stale in out.glob(".shard-*.tmp-*"):  # leftovers of an interrupted write
        shutil.rmtree(stale, ignore_errors=True)
    index_path = out / "index.json"
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
    atomic_write_json(index_path, index)
    size = params["shard_size"]
    wanted = {}
    for s in range(0, n, size):
        wanted[f"shard-{s // size:05d}"] = (s, min(size, n - s))
    for key in list(index["shards"]):
        if key not in wanted:
            del index["shards"][key]
            shutil.rmtree(out / key, ignore_errors=True)
    for stale in out.glob("shard-*"):
        if stale.name not in wanted:
            shutil.rmtree(stale, ignore_errors=True)
    for i, (key, (start, count)) in enumerate(wanted.items()):
        entry = index["shards"].get(key)
        if entry is not None and entry["rows"] == count and shard_ok(out / key, entry, full=verify):
            continue
        index["shards"].pop(key, None)
        atomic_write_json(index_path, index)
        index["shards"][key] = _write_shard(params, start, count, out / key)
        atomic_write_json(index_path, index)
        if progress:
            print(f"{m['name']}/{split}: shard {i + 1}/{len(wanted)} ({start + count}/{n} samples)", file=sys.stderr)
    index["n"] = n
    atomic_write_json(index_path, index)
    return out


def read_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_status(name: str, split: str, *, root=None, height=None, width=None) -> dict:
    """What is on disk for a generator split: {"n": complete sample count or None, "shards": k, "ok": bool};
    ok = complete, intact, and built with the current engine's parameters (e.g. the style's version)."""
    d = split_dir(name, split, root=root, height=height, width=width)
    index = read_index(d / "index.json")
    if index is None:
        return {"dir": str(d), "n": None, "shards": 0, "ok": False}
    current = _same_build(index.get("params"), _generator_params(get_manifest(name), split, height, width))
    ok = current and index.get("n") is not None and all(shard_ok(d / k, e, full=False) for k, e in index["shards"].items())
    return {"dir": str(d), "n": index.get("n"), "shards": len(index["shards"]), "ok": ok}


_VERIFIED: set[tuple[str, str]] = set()  # (shard folder, sha256) whose bytes this process has checked in full


def _shards_verified(d: Path, index: dict) -> bool:
    """Every shard of a split folder matches its sha256, each checked once per process: a shard whose bytes
    changed but not its size (which `build_status` alone would pass) is caught before it is served."""
    for key, entry in index["shards"].items():
        tag = (str(d / key), str(entry.get("sha256")))
        if tag not in _VERIFIED:
            if not shard_ok(d / key, entry, full=True):
                return False
            _VERIFIED.add(tag)
    return True


def _load_generator(m: dict, split: str, *, root, n, height, width):
    import datasets

    st = build_status(m["name"], split, root=root, height=height, width=width)
    want = n if n is not None else (st["n"] or _split_entry(m, split)["size"])
    d = Path(st["dir"])
    index = read_index(d / "index.json")
    if not (st["ok"] and st["n"] >= want and _shards_verified(d, index)):
        # first use, a larger n, a damaged shard, or built by an older engine: (re)build what is missing
        build(m["name"], split, max(want, st["n"] or 0), root=root, height=height, width=width, verify=True)
        index = read_index(d / "index.json")
        _VERIFIED.update((str(d / k), str(e.get("sha256"))) for k, e in index["shards"].items())
    parts = [datasets.load_from_disk(str(d / key)) for key in sorted(index["shards"])]
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return ds.select(range(want)) if len(ds) > want else ds


# ----------------------------------------------------------------------------------------------------
# 4. hf, local and bundled sources
# ----------------------------------------------------------------------------------------------------
def _env_name(name: str) -> str:
    return "DALIB_ROOT_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _local_copy(m: dict, root) -> Path | None:
    """Where a user's copy of a real dataset is: `root`, $DALIB_ROOT_<NAME>, or <data>/raw/<name>."""
    for cand in (root, os.environ.get(_env_name(m["name"])), data_root() / "raw" / m["name"]):
        if cand and Path(cand).expanduser().exists():
            return Path(cand).expanduser().resolve()
    if root:
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): root={str(root)!r} does not exist")
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
            f"dalib.data.load({m['name']!r}, SPLIT, root=PATH), or set {_env_name(m['name'])}=PATH, "
            f"or put it at {data_root() / 'raw' / m['name']}.")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _cache_dir(m: dict) -> Path:
    d = data_root() / "cache" / m["name"]
    d.mkdir(parents=True, exist_ok=True)
    return d


def _open_hf(m: dict, split: str, root):
    """The raw split of an hf source: local copy first (save_to_disk folder or data files), then the hub."""
    import datasets

    hub_split = _split_entry(m, split).get("hub_split", split)
    local = _local_copy(m, root)
    if local is not None:
        if (local / "dataset_dict.json").exists():
            dd = datasets.load_from_disk(str(local))
            if hub_split not in dd:
                raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): the local copy {local} has "
                                      f"splits {list(dd)}, expected {hub_split!r} (splits.{split}.hub_split)")
            return dd[hub_split]
        if (local / hub_split / "state.json").exists():
            return datasets.load_from_disk(str(local / hub_split))
        if (local / "state.json").exists():
            return datasets.load_from_disk(str(local))
        return datasets.load_dataset(str(local), m["source"].get("config"), split=hub_split,
                                     cache_dir=str(_cache_dir(m)))
    src = m["source"]
    if not src.get("hub_id"):
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): no hub id is recorded and no local copy "
                              f"was found. {_how_to_provide(m)}")
    if _offline():
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): the Hugging Face hub is offline "
                              f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and no local copy was found for "
                              f"{src['hub_id']!r}. {_how_to_provide(m)}")
    try:
        return datasets.load_dataset(src["hub_id"], src.get("config"), revision=src.get("revision"), split=hub_split,
                                     cache_dir=str(_cache_dir(m)))
    except Exception as e:  # network, auth, missing revision: one message that says what to do
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): cannot load {src['hub_id']!r} "
                              f"(revision {src.get('revision')}) from the hub: {e}. {_how_to_provide(m)}") from e


def _map_hf(m: dict, split: str, ds):
    """Rename source columns to ours and convert depth to metres (cached under <data>/cache/<name>)."""
    import datasets

    mapped = dict(m.get("columns") or {})
    for ours, theirs in mapped.items():
        if theirs not in ds.column_names:
            raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): field 'columns.{ours}' names source "
                                  f"column {theirs!r}, expected one of {ds.column_names}")
    # unmapped columns that already have our names are taken as they are
    cols = {c: c for c in COLUMNS if c in ds.column_names and c not in mapped.values()} | mapped
    if "image" not in cols:
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): no 'image' column in {ds.column_names}; "
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
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): split {split!r} has no depth column in "
                              f"{[c.removeprefix('__') for c in ds.column_names]}; map one with field 'columns.depth' "
                              f"(or 'columns.disparity')")
    label_cols = ["depth", "mask"] + (["disparity"] if spec["kind"] == "disparity" else [])
    feats = {c: f for c, f in ds.features.items() if not c.startswith("__")}
    feats["image"] = datasets.Image()
    if "__image_right" in ds.features:
        feats["image_right"] = datasets.Image()
    if "__material" in ds.features:
        feats["material"] = ds.features["__material"]
    feats.update(list_features(label_cols))

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

    key = hashlib.sha256(json.dumps([ds._fingerprint, cols, spec, FORMAT_VERSION], sort_keys=True).encode()).hexdigest()
    with quiet_progress():
        return ds.map(convert, batched=True, batch_size=8, features=datasets.Features(feats),
                      remove_columns=[c for c in ds.column_names if c.startswith("__")],
                      cache_file_name=str(_cache_dir(m) / f"{split}-{key[:16]}.arrow"), new_fingerprint=key[:32])


def _local_rows(m: dict, split: str, root: Path) -> list[dict]:
    """Pair the files of a local source: {column: path} per sample, joined on the layout's key regex."""
    lay = m["source"]["layout"]
    folder = _split_entry(m, split).get("folder", split)
    if not lay.get("image"):
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): the file layout is not recorded "
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
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): no files match "
                              f"source.layout.image={lay['image']!r} (split {split!r}) under {root}. {_how_to_provide(m)}")
    rows = {key_of(p, "image"): {"image": p} for p in images}
    rows.pop(None, None)
    for col in ("depth", "mask"):
        if not lay.get(col):
            continue
        if not lay.get("key"):
            raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): field 'source.layout.key' is needed "
                                  f"to pair images with {col} files")
        found = {key_of(p, col): p for p in files(lay[col])}
        rows = {k: r | {col: found[k]} for k, r in rows.items() if k in found}
    if not rows:
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): no image under {root} has a matching "
                              f"depth file (source.layout.depth={lay.get('depth')!r}, key={lay.get('key')!r})")
    return [rows[k] for k in sorted(rows)]


def _gen_local(rows, spec, depth_key, root):
    """Rows of a local source with depth converted to metres (a generator for Dataset.from_generator)."""
    for r in rows:
        out = {"image": _rgb_image(r["image"]), "path": str(Path(r["image"]).relative_to(root))}
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


def _load_local(m: dict, split: str, root):
    import datasets

    local = _local_copy(m, root)
    if local is None:
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): no local copy found. {_how_to_provide(m)}")
    if (local / "dataset_dict.json").exists() or (local / "state.json").exists() or (local / split / "state.json").exists():
        return _map_hf(m, split, _open_hf(m, split, local))  # a converted copy saved with save_to_disk
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
            _gen_local, features=datasets.Features(feats), cache_dir=str(_cache_dir(m)), fingerprint=fp,
            gen_kwargs={"rows": [{k: str(v) for k, v in r.items()} for r in rows], "spec": spec,
                        "depth_key": lay.get("depth_key"), "root": str(local)})


def _load_bundled(m: dict, split: str):
    """Files shipped inside an installed package, checked against their sha256."""
    import importlib.util

    import datasets

    src = m["source"]
    spec_ = importlib.util.find_spec(src["package"])
    if spec_ is None or not spec_.submodule_search_locations:
        raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): package {src['package']!r} is not "
                              f"installed (pip install {src['package']})")
    base = Path(list(spec_.submodule_search_locations)[0])
    dspec = m.get("depth")
    cols: dict[str, list] = {}
    for row in src["rows"]:
        for col, rel in row.items():
            path = base / rel
            if not path.exists():
                raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): {path} is missing from the "
                                      f"installed {src['package']!r}; reinstall it")
            digest = _file_sha256(path)
            if digest != src["sha256"][rel]:
                raise DataSourceError(f"dataset {m['name']!r} (manifest {m['_path']}): sha256 of {path} is {digest}, "
                                      f"expected {src['sha256'][rel]} (field 'source.sha256')")
            if col in ("image", "image_right"):
                cols.setdefault(col, []).append(_rgb_image(path))
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
    n = _split_entry(m, split)["size"]
    ds = datasets.Dataset.from_dict(cols, features=datasets.Features(feats))
    return ds.select(range(n)) if n and n < len(ds) else ds


# ----------------------------------------------------------------------------------------------------
# 5. load
# ----------------------------------------------------------------------------------------------------
def load(name: str, split: str, *, root=None, n: int | None = None, height: int | None = None,
         width: int | None = None, with_heldout: bool = False):
    """Serve split `split` of dataset `name` as a `datasets.Dataset` (columns in the module docstring).

    root: for generator sources the data folder (default $DALIB_DATA, else `<repo>/data`); for
    hf/local sources the folder of the local copy (else $DALIB_ROOT_<NAME>, else <data>/raw/<name>).
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
        raise ValueError(f"dataset {m['name']!r} ({m['_path']}): height/width apply to generator sources only")
    if stype == "generator":
        ds = _load_generator(m, split, root=root, n=n, height=height, width=width)
    elif stype == "hf":
        ds = _map_hf(m, split, _open_hf(m, split, root))
    elif stype == "local":
        ds = _load_local(m, split, root)
    else:
        ds = _load_bundled(m, split)
    if stype != "generator" and n is not None and n < len(ds):
        ds = ds.select(range(n))
    if split_role(m, split) == "unlabelled":
        labels = [c for c in LABEL_COLUMNS if c in ds.column_names]
        if with_heldout:
            ds = ds.rename_columns({c: f"heldout_{c}" for c in labels})
        elif labels:
            ds = ds.remove_columns(labels)
    return ds


# ----------------------------------------------------------------------------------------------------
# 6. Command line: python -m dalib data {list,validate,build}
# ----------------------------------------------------------------------------------------------------

def dataset_on_disk(ds, folder) -> str:
    """A dataset as something another process can open: names and folders are returned as they are, an
    in-memory `datasets.Dataset` is saved to `folder` (atomically; reused while its fingerprint is the
    same). What `dalib.train.launch` and `dalib.pseudo_label.launch_pseudo_label` pass to torchrun."""
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
    import datasets

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
        ds = load(spec, split, root=root, n=n, with_heldout=with_heldout)
    else:
        raise TypeError(f"{what}: expected a datasets.Dataset, a dataset name or a save_to_disk folder, "
                        f"got {type(spec).__name__}")
    if n is not None and n < len(ds):
        ds = ds.select(range(n))
    if len(ds) == 0:
        raise ValueError(f"{what} {spec if isinstance(spec, (str, os.PathLike)) else ''} (split {split!r}) has no rows")
    return ds

def _on_disk(m: dict) -> str:
    """What `load` would find now: built generator splits, a local copy, or the bundled package."""
    stype = m["source"]["type"]
    if stype == "generator":
        built = []
        for split in m["splits"]:
            st = build_status(m["name"], split)
            if st["n"]:
                built.append(f"{split}:{st['n']}" + ("" if st["ok"] else "(damaged)"))
        return ", ".join(built) or "not built (built on first load)"
    if stype == "bundled":
        import importlib.util

        return "installed" if importlib.util.find_spec(m["source"]["package"]) else f"pip install {m['source']['package']}"
    try:
        local = _local_copy(m, None)
    except DataSourceError:
        local = None
    if local is not None:
        return f"local copy at {local}"
    return "hub" if stype == "hf" and m["source"].get("hub_id") else f"no local copy (set {_env_name(m['name'])})"


def _cmd_list(args) -> int:
    try:
        mans = list_manifests(args.dir)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{'name':<22} {'role':<19} {'source':<9} {'splits':<40} on disk")
    for m in mans:
        splits = ", ".join(f"{s}:{e.get('size') or '?'}" + (f"({e['role']})" if "role" in e else "")
                           for s, e in m["splits"].items())
        print(f"{m['name']:<22} {m['role']:<19} {m['source']['type']:<9} {splits:<40} {_on_disk(m)}")
    return 0


def _cmd_validate(args) -> int:
    directory = Path(args.dir or manifest_dir())
    if not directory.is_dir():
        print(f"{directory}: not a folder of manifests", file=sys.stderr)
        return 2
    results = validate_dir(directory)
    if not results:
        print(f"{directory}: no *.yaml manifests found", file=sys.stderr)
        return 1
    bad = 0
    for f, errors in results.items():
        for e in errors:
            print(f"{f}: {e}", file=sys.stderr)
        bad += bool(errors)
    print(f"{len(results) - bad}/{len(results)} manifests valid in {directory}")
    return 1 if bad else 0


def _cmd_build(args) -> int:
    try:
        m = get_manifest(args.name)
        if m["source"]["type"] == "generator":
            out = build(args.name, args.split, args.n, root=args.root, height=args.height, width=args.width,
                        shard_size=args.shard_size, progress=True)
            print(f"{m['name']}/{args.split}: {args.n or _split_entry(m, args.split)['size']} samples in {out}")
        else:
            ds = load(args.name, args.split, root=args.root, n=args.n)
            print(f"{m['name']}/{args.split}: {len(ds)} samples, columns {ds.column_names}")
    except (ManifestError, DataSourceError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m dalib data list | validate [DIR] | build NAME --split S -n N`."""
    p = argparse.ArgumentParser(prog="python -m dalib data", description="data manifests and datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("list", help="list the manifests")
    q.add_argument("--dir", default=None, help="manifest folder (default data_manifests/)")
    q = sub.add_parser("validate", help="validate every manifest of a folder")
    q.add_argument("dir", nargs="?", default=None, help="manifest folder (default data_manifests/)")
    q = sub.add_parser("build", help="materialise a split under $DALIB_DATA (default data/)")
    q.add_argument("name")
    q.add_argument("--split", required=True)
    q.add_argument("-n", type=int, default=None, help="number of samples (default: the manifest's split size)")
    q.add_argument("--root", default=None, help="data folder (generator) or local copy (hf/local)")
    q.add_argument("--height", type=int, default=None)
    q.add_argument("--width", type=int, default=None)
    q.add_argument("--shard-size", type=int, default=None)
    args = p.parse_args(argv)
    return {"list": _cmd_list, "validate": _cmd_validate, "build": _cmd_build}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

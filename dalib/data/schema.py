"""Dataset manifests (`data_manifests/<name>.yaml`): the schema, its validation, and finding manifests;
the column features every source is served with. Taught in notebook 00_depth_data.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import datasets
import yaml

from dalib.runfiles import REPO_ROOT
from dalib.synth.scenes import SCENE_KINDS, STYLES


# ----------------------------------------------------------------------------------------------------
# Constants shared by the schema and the loaders
# ----------------------------------------------------------------------------------------------------
ROLES = ("synthetic-labelled", "real-labelled", "unlabelled", "eval")
SOURCE_TYPES = ("generator", "hf", "local", "bundled", "hub")
HUB_FORMATS = ("parquet", "h5-tar", "da2k-zip")  # how a hub source's files are read (dalib.data.hub_sources)
#: the zero-shot protocols of dalib.benchmarks, named here so that manifests validate without it
BENCHMARKS = ("nyu", "kitti", "diode", "da-2k")
DEPTH_KINDS = ("planar", "ray", "disparity")  # what the stored number measures
UNITS_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}  # depth units; disparity is in "px"
UNITS = (*UNITS_TO_M, "px")
# Mirrors the generator's contract (dalib.synth); kept here so that manifests validate without it.
SENSORS = ("stereo", "lidar", "rgbd")
#: columns a manifest may map; the label columns are hidden on unlabelled splits (see `load`).
COLUMNS = ("image", "image_right", "depth", "mask", "material", "disparity", "depth_exact")
LABEL_COLUMNS = ("depth", "mask", "material", "disparity", "depth_exact")


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file, the field and what was expected."""


class DataSourceError(RuntimeError):
    """A dataset cannot be served (no local copy, offline hub, missing files); says how to fix it."""


class DataRootError(ValueError):
    """The data folder ($DALIB_DATA, a `root`, or `<repo>/data`) cannot hold a build; names it and the path."""


def manifest_dir() -> Path:
    """Folder of the shipped manifests: $DALIB_MANIFESTS, else `<repo>/data_manifests`."""
    return Path(os.environ.get("DALIB_MANIFESTS") or REPO_ROOT / "data_manifests")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets are built and cached: `root`, else $DALIB_DATA, else `<repo>/data`."""
    return Path(root or os.environ.get("DALIB_DATA") or REPO_ROOT / "data").expanduser().resolve()


def data_root_error(root, path: Path, e: OSError) -> DataRootError:
    """The error for a data folder that cannot hold `path`: names where the folder comes from (`root`,
    $DALIB_DATA or the default), the path and the system's reason."""
    if root:
        where = f"root={str(root)!r}"
    elif os.environ.get("DALIB_DATA"):
        where = f"DALIB_DATA={os.environ['DALIB_DATA']}"
    else:
        where = f"the default data folder {data_root()}"
    return DataRootError(f"{where}: cannot write {e.filename or path} ({e.strerror or e}); set DALIB_DATA (or root, "
                         f"--root) to a folder you can write")


# ----------------------------------------------------------------------------------------------------
# Manifest schema and validation
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


def _commit(v):
    return None if re.fullmatch(r"[0-9a-f]{40}", v) else f"expected a full 40-hex commit hash, got {v!r}"


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
    "benchmark": (str, False, _enum(BENCHMARKS)),  # the zero-shot protocol it is scored with (dalib.benchmarks)
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
    "hub": {
        "hub_id": (str, True, None),  # owner/name on the Hugging Face hub
        "repo_type": (str, False, _enum(("dataset", "model"))),  # default dataset
        "revision": (str, True, _commit),  # the pinned commit (a branch could change under a recorded result)
        "format": (str, True, _enum(HUB_FORMATS)),  # how the files are read
        "files": (dict, True, None),  # {split: [file, ...]} read in order until the split's n rows are served
        "file_sizes": (dict, False, None),  # {file: size as the hub lists it}, said before a download
        "annotations": (str, False, None),  # da2k-zip: the annotation file inside the archive
        "stream": (bool, False, None),  # parquet: not cached and online -> read only the rows needed
        "resize_short_side": (int, False, _positive),  # unlabelled pools: images downscaled to this shorter side
        "card": (str, True, None),  # URL of the dataset card
        "verified": (str, True, None),  # what was checked on the card, and what was not
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


def _check_hub_files(src: dict, splits, errors: list[str]) -> None:
    """A hub source lists, for each of the manifest's splits and no other, at least one file (strings)."""
    files = src.get("files")
    if not isinstance(files, dict) or not isinstance(splits, dict):
        return
    for split, names in files.items():
        if split not in splits:
            errors.append(f"field 'source.files.{split}': no such split; expected one of {', '.join(splits)}")
        elif not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            errors.append(f"field 'source.files.{split}': expected a non-empty list of file names, got {names!r}")
    for split in splits:
        if split not in files:
            errors.append(f"field 'source.files.{split}': missing (a hub source lists the files of every split)")


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
        _check_source(src, m.get("splits"), errors)
    if isinstance(m.get("splits"), dict):
        for split, entry in m["splits"].items():
            if not isinstance(entry, dict):
                errors.append(f"field 'splits.{split}': expected a mapping with at least 'size'")
                continue
            _check_fields(entry, SPLIT_FIELDS, f"splits.{split}.", errors)
            if stype == "generator" and "seed" not in entry:
                errors.append(f"field 'splits.{split}.seed': missing (generator sources need a seed per split)")
    if isinstance(m.get("depth"), dict):
        _check_depth(m["depth"], errors)
    if isinstance(m.get("columns"), dict):
        for col, srccol in m["columns"].items():
            if col not in COLUMNS:
                errors.append(f"field 'columns.{col}': expected a column in {', '.join(COLUMNS)}")
            elif not isinstance(srccol, str):
                errors.append(f"field 'columns.{col}': expected the source column name (string), got {srccol!r}")
    return errors


def _check_source(src: dict, splits, errors: list[str]) -> None:
    """The `source` mapping: its type's fields, a local layout, a hub source's files, bundled rows + checksums."""
    stype = src.get("type")
    if stype not in SOURCE_TYPES:
        errors.append(f"field 'source.type': expected one of {' | '.join(SOURCE_TYPES)}, got {stype!r}")
        return
    _check_fields({k: v for k, v in src.items() if k != "type"}, SOURCE_FIELDS[stype], "source.", errors)
    if stype == "local" and isinstance(src.get("layout"), dict):
        _check_fields(src["layout"], LAYOUT_FIELDS, "source.layout.", errors)
    if stype == "hub":
        _check_hub_files(src, splits, errors)
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


def _check_depth(dep: dict, errors: list[str]) -> None:
    """The `depth` mapping: its fields, units that fit the kind, what ray distance and disparity need."""
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


def read_manifest(path: str | os.PathLike) -> dict:
    """Parse and validate one manifest file; raises ManifestError naming the file and every bad field."""

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


def dataset_ref(m: dict) -> str:
    """How errors name a dataset: `dataset 'name' (manifest path)`."""
    return f"dataset {m['name']!r} (manifest {m['_path']})"


def split_entry(m: dict, split: str) -> dict:
    """The manifest's entry of one split; KeyError naming the known splits."""
    if split not in m["splits"]:
        raise KeyError(f"{dataset_ref(m)} has no split {split!r}; "
                       f"expected one of {', '.join(m['splits'])}")
    return m["splits"][split]


def split_role(m: dict, split: str) -> str:
    """The role of one split: `splits.<split>.role` if given, else the manifest role."""
    return split_entry(m, split).get("role", m["role"])


# ----------------------------------------------------------------------------------------------------
# Column features
# ----------------------------------------------------------------------------------------------------
def array_features(shape, with_material: bool, extra_float: tuple[str, ...] = ()):
    """Fixed-size (H, W) columns (generated data): image, depth, mask, `extra_float` and material."""

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

    kinds = {"depth": "float32", "disparity": "float32", "depth_exact": "float32", "mask": "bool", "material": "uint8"}
    return {c: datasets.List(datasets.List(datasets.Value(kinds[c]))) for c in cols}



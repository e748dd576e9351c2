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

Modules: `schema` (manifests, their validation, column features), `depth_files` (depth files and
images -> metres and RGB), `generated` (sharded generator builds), `sources` (hf, local, bundled),
`serve` (`load`, `build`, `open_dataset`), `cli` (the command line).

Notebooks: 00_depth_data (what the labels are and how they are flawed), 04_teacher_training (which
data the teacher trains on).
"""
from dalib.data.cli import main
from dalib.data.depth_files import convert_depth, ray_to_planar, read_depth_file, rgb_image
from dalib.data.generated import build_status, generate_rows, split_dir
from dalib.data.schema import (COLUMNS, DEPTH_FIELDS, DEPTH_KINDS, LABEL_COLUMNS, LAYOUT_FIELDS, ROLES, SCENE_KINDS,
                               SENSORS, SOURCE_FIELDS, SOURCE_TYPES, SPLIT_FIELDS, STYLES, TOP_FIELDS, UNITS,
                               UNITS_TO_M, DataRootError, DataSourceError, ManifestError, array_features, data_root,
                               dataset_ref, get_manifest, list_features, list_manifests, manifest_dir, read_manifest,
                               split_entry, split_role, validate_dir, validate_manifest)
from dalib.data.serve import build, dataset_on_disk, load, open_dataset
from dalib.shards import FORMAT_VERSION, dir_digest, quiet_progress, read_index, save_shard, shard_ok

__all__ = [
    "COLUMNS", "DEPTH_FIELDS", "DEPTH_KINDS", "FORMAT_VERSION", "LABEL_COLUMNS", "LAYOUT_FIELDS", "ROLES", "SCENE_KINDS",
    "SENSORS", "SOURCE_FIELDS", "SOURCE_TYPES", "SPLIT_FIELDS", "STYLES", "TOP_FIELDS", "UNITS", "UNITS_TO_M",
    "DataRootError", "DataSourceError", "ManifestError", "array_features", "build", "build_status", "convert_depth",
    "data_root", "dataset_on_disk", "dataset_ref", "dir_digest", "generate_rows", "get_manifest", "list_features",
    "list_manifests", "load", "main", "manifest_dir", "open_dataset", "quiet_progress", "ray_to_planar",
    "read_depth_file", "read_index", "read_manifest", "rgb_image", "save_shard", "shard_ok", "split_dir",
    "split_entry", "split_role", "validate_dir", "validate_manifest",
]

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
    >>> from dalib.data.serve import load
    >>> ds = load("synth-indoor", "train").with_format("torch")

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

"""Tiny stand-ins for the hub files the course reads, in the schema each card and loading script documents,
written into a folder laid out as huggingface_hub's cache (`<kind>s--owner--name/snapshots/<commit>/<file>`).

The repository, commit and file names come from the shipped manifests (and dalib.weights.OFFICIAL_WEIGHTS);
the contents (column and key names, encodings, units) are written here from the documented schema, never from
the manifests, so a manifest whose columns, units or format drift from the real files fails the tests:

    nyu-d              .h5 files in tars: rgb (3, H, W) uint8, depth (H, W) float32 metres (FastDepth)
    da-2k              a zip: DA-2K/annotations.json {images/<scene>/<file>: [{point1, point2, closer_point}]}
    commoncatalog-cc-by  parquet: jpg (JPEG bytes), licenseurl, url
    official weights   a random vits state dict in the official key layout, torch.save'd as .pth
    DINOv2 (timm)      a random vits encoder state dict in timm's layout, as model.safetensors

    python tests/hub_fixtures.py DIR     # writes the datasets' cache to DIR (e.g. to try notebook 07 offline)
"""
from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from dalib.model import DepthAnything

REPO = Path(__file__).resolve().parent.parent
NYU_SHAPE = (48, 64)  # (H, W): a tenth of NYU's 480 x 640, so the Eigen crop scales exactly
NYU_DEPTH_M = (1.5, 2.5, 4.0)  # each NYU fixture image is a plane at one of these depths (+ a ramp, see below)
DA2K_PAIRS = 3  # pairs per DA-2K fixture image


def manifest(name: str) -> dict:
    return yaml.safe_load((REPO / "data_manifests" / f"{name}.yaml").read_text())


def snapshot(cache: Path, repo_id: str, revision: str, repo_type: str = "dataset") -> Path:
    """The snapshot folder of a repo at a revision, with refs/main pointing at it (as a download leaves it)."""
    root = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    folder = root / "snapshots" / revision
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def nyu_sample(k: int) -> tuple[np.ndarray, np.ndarray]:
    """rgb (3, H, W) uint8 and depth (H, W) float32 metres of fixture image k: a plane at NYU_DEPTH_M[k % 3]
    plus 0.01 m per column, with the top-left 4 x 4 pixels invalid (0)."""
    h, w = NYU_SHAPE
    depth = (NYU_DEPTH_M[k % 3] + 0.01 * np.arange(w, dtype=np.float32))[None, :].repeat(h, 0)
    depth[:4, :4] = 0
    rgb = np.random.default_rng(k).integers(0, 256, (3, h, w), dtype=np.uint8)
    return rgb, depth.astype(np.float32)


def _h5(rgb, depth) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["rgb"], f["depth"] = rgb, depth
    return buf.getvalue()


def write_nyu(cache: Path, per_tar: tuple[int, ...] = (2, 1)) -> list[Path]:
    m = manifest("nyu-d")
    src = m["source"]
    folder, k, paths = snapshot(cache, src["hub_id"], src["revision"]), 0, []
    for filename, count in zip(src["files"]["test"], per_tar):
        path = folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w") as tar:
            for _ in range(count):
                data = _h5(*nyu_sample(k))
                info = tarfile.TarInfo(f"val/official/{k:05d}.h5")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                k += 1
        paths.append(path)
    return paths


def da2k_annotations() -> dict:
    """Three images of 40 x 60 px; pair j of image i has point1 (closer, per the card) at [5 + j, 10 + j]."""
    return {f"images/{scene}/{i:02d}.jpg": [{"point1": [5 + j, 10 + j], "point2": [30 - j, 50 - j],
                                             "closer_point": "point1"} for j in range(DA2K_PAIRS)]
            for i, scene in enumerate(("indoor", "outdoor", "aerial"))}


def write_da2k(cache: Path) -> Path:
    src = manifest("da-2k")["source"]
    path = snapshot(cache, src["hub_id"], src["revision"]) / src["files"]["test"][0]
    with zipfile.ZipFile(path, "w") as z:
        ann = da2k_annotations()
        z.writestr("DA-2K/annotations.json", json.dumps(ann))
        for i, key in enumerate(ann):
            z.writestr(f"DA-2K/{key}", _jpeg(np.random.default_rng(i).integers(0, 256, (40, 60, 3), np.uint8)))
    return path


def write_pool(cache: Path, n: int = 6, short_side: int = 40) -> Path:
    """n JPEG photos of short_side x 1.5 short_side pixels in CommonCatalog's columns."""
    src = manifest("commoncatalog-cc-by")["source"]
    path = snapshot(cache, src["hub_id"], src["revision"]) / src["files"]["train"][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (short_side, short_side * 3 // 2, 3)
    table = pa.table({"jpg": [_jpeg(rng.integers(0, 256, shape, np.uint8)) for _ in range(n)],
                      "licenseurl": ["http://creativecommons.org/licenses/by/2.0/"] * n,
                      "url": [f"https://example.org/photo/{i}" for i in range(n)]})
    pq.write_table(table, path, row_group_size=4)
    return path


def write_official_weights(cache: Path, ref, seed: int = 0) -> tuple[Path, dict]:
    """A random vits in the official checkpoint's key layout (`pretrained.*`, `depth_head.*`), as a .pth at
    `ref` (repo_id, filename, revision: dalib.weights.OFFICIAL_WEIGHTS["V2-S"])."""
    torch.manual_seed(seed)
    sd = {k: v.clone() for k, v in DepthAnything("vits", "v2").state_dict().items()}
    path = snapshot(cache, ref.repo_id, ref.revision, "model") / ref.filename
    torch.save(sd, path)
    return path, sd


def write_dinov2(cache: Path, ref, seed: int = 1) -> tuple[Path, dict]:
    """A random vits encoder in timm's DINOv2 layout (no `pretrained.` prefix, no mask_token), as the
    model.safetensors of `ref` (dalib.weights.DINOV2_WEIGHTS["vits"])."""
    torch.manual_seed(seed)
    sd = {k: v.clone().contiguous() for k, v in DepthAnything(ref.encoder).pretrained.state_dict().items()
          if k != "mask_token"}
    path = snapshot(cache, ref.repo_id, ref.revision, "model") / ref.filename
    save_file(sd, str(path))
    return path, sd


def write_all(cache: Path, weights=None) -> Path:
    """Every fixture into `cache`; the official weights too when `weights` names them (a HubWeights)."""
    write_nyu(cache)
    write_da2k(cache)
    write_pool(cache)
    if weights is not None:
        write_official_weights(cache, weights)
    return Path(cache)


if __name__ == "__main__":
    print(write_all(Path(sys.argv[1])))

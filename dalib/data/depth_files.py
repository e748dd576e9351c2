"""Depth files and images from disk: stored values -> metres (units, scale, ray -> planar, disparity ->
depth) and RGB images as `datasets.Image` values. Taught in notebook 00_depth_data.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dalib.data.schema import UNITS_TO_M, DataSourceError


# ----------------------------------------------------------------------------------------------------
# Depth units and conversions
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
        with Image.open(path) as im:
            return np.array(im)
    if suf == ".npy":
        return np.load(path)
    if suf == ".npz":
        with np.load(path) as z:
            return z[key or z.files[0]]
    if suf in (".h5", ".hdf5"):
        try:
            import h5py  # local import: h5py only for HDF5 / .mat v7.3 depth files
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


def rgb_image(path) -> dict:
    """A datasets.Image value: the file's own bytes when already 8-bit RGB, else re-encoded as RGB PNG."""

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "RGB" and im.format in ("PNG", "JPEG"):
            return {"bytes": data, "path": None}
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}


"""Evaluate relative-depth models on `datasets` splits, overall and per material (notebooks 04 and 07).

    preds = predict(model, images, input_size=112)              # official preprocessing, batched
    report = evaluate(preds, depth, mask, material)              # {"all": {...}, "thin": {...}, "glass_mirror": {...}}
    report = evaluate_model(model, dataset, input_size=112)      # both at once

Material regions use the ids of `dalib.synth.MATERIALS`. Inside a region the prediction is still
aligned (least-squares scale and shift in disparity) on every valid pixel of the image, and only the
error is measured on the region: a model that sees the background through a glass pane is wrong
there even though a scale/shift fitted on the pane alone might hide it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dalib.metrics import eval_depth, ordinal_accuracy
from dalib.synth import MATERIALS as MATERIAL_NAMES  # material id = index

MATERIAL_REGIONS = {"thin": ("thin",), "glass_mirror": ("glass", "mirror")}


def dataset_arrays(ds, columns: Sequence[str] = ("image", "depth", "mask", "material")) -> dict[str, np.ndarray]:
    """Stack the given columns of a `datasets.Dataset` (equal image sizes) into numpy arrays (N, ...).

    Missing optional columns (`mask`, `material`) are skipped; `image` and `depth` are required.
    """
    present = [c for c in columns if c in ds.column_names]
    for c in ("image", "depth"):
        if c in columns and c not in present:
            raise ValueError(f"dataset has no column {c!r} (columns: {ds.column_names})")
    view = ds.select_columns(present).with_format("numpy")
    out = {}
    for c in present:
        col = view[c]
        try:
            out[c] = np.stack(list(col)) if isinstance(col, list) else np.asarray(col)
        except ValueError as e:
            raise ValueError(f"column {c!r}: images of different sizes cannot be stacked ({e})") from e
    if "mask" in out:
        out["mask"] = out["mask"].astype(bool)
    return out


def predict(model, images, *, input_size: int = 518, batch_size: int = 16) -> np.ndarray:
    """Relative disparity for (N, H, W, 3) uint8 images (or a list of images) at their own resolution.

    Official preprocessing (`DepthAnything.infer_batch`): aspect kept, shorter side >= input_size,
    multiples of 14, prediction resized back bilinearly. Returns (N, H, W) float32.
    """
    preds = model.infer_batch(list(images), input_size, batch_size=batch_size)
    return np.stack(preds)


def _region_mask(material: np.ndarray, names: Sequence[str]) -> np.ndarray:
    ids = [MATERIAL_NAMES.index(n) for n in names]
    return np.isin(material, ids)


def evaluate(
    pred_disp,
    depth,
    mask=None,
    material=None,
    *,
    regions: dict[str, Sequence[str]] | None = MATERIAL_REGIONS,
    ordinal_pairs: int = 0,
    seed: int = 0,
) -> dict:
    """Depth metrics of predictions (N, H, W) against GT depth (N, H, W) metres, overall and per region.

    Returns {"all": metrics, <region>: metrics or None when no image has pixels of that material,
    "n_images": N, "ordinal_accuracy": float (only with ordinal_pairs > 0)}.
    """
    p = torch.as_tensor(np.asarray(pred_disp, dtype=np.float32))
    t = torch.as_tensor(np.asarray(depth, dtype=np.float32))
    m = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
    out: dict = {"all": eval_depth(p, t, m), "n_images": int(p.shape[0])}
    if material is not None and regions:
        mat = np.asarray(material)
        for name, names in regions.items():
            region = torch.as_tensor(_region_mask(mat, names))
            try:
                out[name] = eval_depth(p, t, m, region=region)
            except ValueError:  # no image with pixels of this material
                out[name] = None
    if ordinal_pairs:
        out["ordinal_accuracy"] = ordinal_accuracy(p, t, m, pairs_per_image=ordinal_pairs, seed=seed)
    return out


def evaluate_model(model, ds, *, input_size: int = 518, batch_size: int = 16, ordinal_pairs: int = 0,
                   regions: dict[str, Sequence[str]] | None = MATERIAL_REGIONS) -> tuple[dict, np.ndarray]:
    """Predict every image of a labelled `datasets.Dataset` and `evaluate` it; returns (report, predictions)."""
    arrays = dataset_arrays(ds)
    preds = predict(model, arrays["image"], input_size=input_size, batch_size=batch_size)
    report = evaluate(preds, arrays["depth"], arrays.get("mask"), arrays.get("material"),
                      regions=regions, ordinal_pairs=ordinal_pairs)
    return report, preds


def metrics_table(rows: dict[str, dict], keys: Sequence[str] = ("abs_rel", "delta1"),
                  regions: Sequence[str] = ("all", "thin", "glass_mirror")) -> str:
    """Markdown table: one row per model, `key (region)` columns; missing regions print as '-'."""
    head = [f"{k} ({r})" for r in regions for k in keys]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name, rep in rows.items():
        cells = []
        for r in regions:
            for k in keys:
                v = (rep.get(r) or {}).get(k)
                cells.append("-" if v is None else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

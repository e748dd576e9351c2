"""Evaluate relative-depth models on `datasets` splits, overall and per material (notebooks 04 and 07).

    preds = predict_disparities(model, images, input_size=112)  # official preprocessing, batched
    report = evaluate(preds, depth, mask, material)              # {"all": {...}, "thin": {...}, "glass_mirror": {...}}
    report = evaluate_model(model, dataset, input_size=112)      # both at once
    base = mean_disparity_baseline(depth, mask, 64)              # the trivial baseline: one fixed map
    report = evaluate_model(constant_predictor(base), dataset)   # scored like any model
    report = evaluate_middlebury(model, input_size=112)          # a real image: full view + 5 crops

`model` is a `DepthAnything` (anything with `infer_batch`) or a function from (N, H, W, 3) uint8 images
to (N, H, W) disparities, such as `constant_predictor`.

Material regions use the ids of `dalib.synth.MATERIALS`. Inside a region the prediction is still
aligned (least-squares scale and shift in disparity) on every valid pixel of the image, and only the
error is measured on the region: a model that sees the background through a glass pane is wrong
there even though a scale/shift fitted on the pane alone might hide it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dalib.data.serve import load
from dalib.disparity import depth_to_disparity, normalize_disparity, valid_depth_mask
from dalib.metrics import METRIC_KEYS, edge_precision_recall, eval_depth, ordinal_accuracy, per_image_depth_metrics
from dalib.synth.scenes import MATERIALS as MATERIAL_NAMES

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


def predict_disparities(model, images, *, input_size: int = 518, batch_size: int = 16) -> np.ndarray:
    """Relative disparity for (N, H, W, 3) uint8 images (or a list of equal-size images) at their own resolution.

    A `DepthAnything` uses the official preprocessing (`infer_batch`): aspect kept, shorter side >= input_size,
    multiples of 14, prediction resized back bilinearly. A function is called once on the (N, H, W, 3) array
    (input_size and batch_size do not apply). Returns (N, H, W) float32.
    """
    if hasattr(model, "infer_batch"):
        return np.stack(model.infer_batch(list(images), input_size, batch_size=batch_size))
    if not callable(model):
        raise TypeError(f"predict_disparities: expected a DepthAnything or a function images -> disparities, "
                        f"got {type(model).__name__}")
    images = np.asarray(images)
    out = np.asarray(model(images), dtype=np.float32)
    if out.shape != images.shape[:3]:
        raise ValueError(f"predict_disparities: the function returned shape {out.shape} for images {images.shape}; "
                         f"expected {images.shape[:3]}")
    return out


def _resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) -> size (h, w), bilinear as the model's output resize (align_corners=True)."""
    if tuple(x.shape) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x[None, None], size=tuple(size), mode="bilinear", align_corners=True)[0, 0]


def mean_disparity_baseline(targets, masks=None, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """The trivial baseline of notebook 07: the per-pixel mean of normalised training disparity.

    targets: (N, H, W) training depth (metres; 0/NaN/inf invalid); masks: (N, H, W) bool or None. Each target
    becomes a training label as in `dalib.train` (`depth_to_disparity`, then `normalize_disparity` to [0, 1]);
    invalid pixels count as 0, the sky's label. The mean over the N images is resized bilinearly to `size`
    (an int for a square, or (h, w); None keeps (H, W)). Returns (h, w) float32: a single disparity map that
    "knows" only where near and far things usually are (floor at the bottom, sky or far wall at the top).
    """
    t = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    if t.dim() != 3 or t.shape[0] == 0:
        raise ValueError(f"mean_disparity_baseline: targets must be (N, H, W) with N >= 1, got {tuple(t.shape)}")
    m = None if masks is None else torch.as_tensor(np.asarray(masks, dtype=bool))
    valid = valid_depth_mask(t, m)
    mean = normalize_disparity(depth_to_disparity(t, valid), valid).mean(dim=0)
    if size is not None:
        mean = _resize_map(mean, (size, size) if isinstance(size, int) else tuple(size))
    return mean.numpy().astype(np.float32)


def constant_predictor(disparity):
    """A "model" that predicts the same (h, w) disparity map for every image, resized bilinearly to the
    image's size: images (N, H, W, 3) -> (N, H, W). Use it with `predict_disparities` / `evaluate_model` /
    `evaluate_middlebury`; the evaluation aligns it to each image by least squares, as every model."""
    base = torch.as_tensor(np.asarray(disparity, dtype=np.float32))
    if base.dim() != 2:
        raise ValueError(f"constant_predictor: expected an (h, w) map, got shape {tuple(base.shape)}")

    def predict_constant(images) -> np.ndarray:
        n, h, w = np.asarray(images).shape[:3]
        return np.broadcast_to(_resize_map(base, (h, w)).numpy(), (n, h, w)).copy()

    return predict_constant


def evaluate_constant(disparity, ds, **kwargs) -> tuple[dict, np.ndarray]:
    """`evaluate_model` of `constant_predictor(disparity)` on dataset `ds` (kwargs as evaluate_model). Notebook 07."""
    return evaluate_model(constant_predictor(disparity), ds, **kwargs)


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
    edges: bool = False,
) -> dict:
    """Depth metrics of predictions (N, H, W) against GT depth (N, H, W) metres, overall and per region.

    Returns {"all": metrics, <region>: metrics or None when no image has pixels of that material,
    "n_images": N, "ordinal_accuracy": float (only with ordinal_pairs > 0, that many point pairs per image),
    "edges": {precision, recall, f1, n_images} (only with edges=True; `dalib.metrics.edge_precision_recall`)}.
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
    if edges:
        out["edges"] = edge_precision_recall(p, t, m)
    return out


def evaluate_model(model, ds, *, input_size: int = 518, batch_size: int = 16, ordinal_pairs: int = 0,
                   regions: dict[str, Sequence[str]] | None = MATERIAL_REGIONS, edges: bool = False,
                   seed: int = 0) -> tuple[dict, np.ndarray]:
    """Predict every image of a labelled `datasets.Dataset` and `evaluate` it; returns (report, predictions).

    model: a DepthAnything or a function images -> disparities (see `predict_disparities`)."""
    arrays = dataset_arrays(ds)
    preds = predict_disparities(model, arrays["image"], input_size=input_size, batch_size=batch_size)
    report = evaluate(preds, arrays["depth"], arrays.get("mask"), arrays.get("material"),
                      regions=regions, ordinal_pairs=ordinal_pairs, seed=seed, edges=edges)
    return report, preds


def input_dependence(preds, depth, mask=None, *, shift: int = 1) -> dict:
    """Does a model use its input? AbsRel of each prediction against its own image's ground truth, and
    against the ground truth of another test image (prediction i scored on image (i + shift) mod N, a
    derangement for 0 < shift < N). Notebooks 04 and 07.

    preds, depth: (N, H, W) disparity predictions and GT depth (metres); mask: (N, H, W) bool or None; all
    images the same size. Both scores align each prediction by least squares first, as `eval_depth` does, so
    a model that predicts one layout for every input (the trivial baseline) scores about the same on both:
    its "gain" = shuffled / matched - 1 is near 0. A model that learned depth from the image loses clearly
    when its predictions are paired with the wrong images. Returns {"abs_rel", "abs_rel_shuffled", "gain",
    "n_images"}.
    """
    p = torch.tensor(np.asarray(preds, dtype=np.float32))  # a copy: constant predictors hand in read-only views
    t = torch.as_tensor(np.asarray(depth, dtype=np.float32))
    m = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
    n = p.shape[0]
    if p.dim() != 3 or p.shape != t.shape:
        raise ValueError(f"input_dependence: preds {tuple(p.shape)} and depth {tuple(t.shape)} must both be (N, H, W)")
    if n < 2 or not 0 < shift % n:
        raise ValueError(f"input_dependence: needs N >= 2 images and shift not a multiple of N (N={n}, shift={shift})")
    matched = float(eval_depth(p, t, m)["abs_rel"])
    shuffled = float(eval_depth(torch.roll(p, shifts=shift, dims=0), t, m)["abs_rel"])
    return {"abs_rel": matched, "abs_rel_shuffled": shuffled, "gain": shuffled / matched - 1.0, "n_images": int(n)}


MIDDLEBURY_SAMPLES = ("full", "top_left", "top_right", "bottom_left", "bottom_right", "centre")


def middlebury_samples(*, crop: float = 0.6, root=None) -> list[dict]:
    """The evaluation samples cut from the Middlebury 2014 Motorcycle image (`middlebury-motorcycle`, test).

    Six samples, named as MIDDLEBURY_SAMPLES: the full 500 x 741 image, and five crops of
    round(crop * H) x round(crop * W) pixels: one at each corner (with crop = 0.6 neighbouring crops overlap
    by 20% of the side) and one at the centre. Each is a dict {name, image (h, w, 3) uint8, depth (h, w)
    metres, mask (h, w) bool, box (top, left, h, w)}. Notebook 07.
    """
    if not 0 < crop <= 1:
        raise ValueError(f"middlebury_samples: crop must be in (0, 1], got {crop}")

    arr = dataset_arrays(load("middlebury-motorcycle", "test", root=root), ("image", "depth", "mask"))
    image, depth = arr["image"][0], arr["depth"][0]
    mask = arr["mask"][0] if "mask" in arr else depth > 0
    H, W = depth.shape
    h, w = round(crop * H), round(crop * W)
    tops = {"top": 0, "bottom": H - h, "c": (H - h) // 2}
    lefts = {"left": 0, "right": W - w, "c": (W - w) // 2}
    boxes = {"full": (0, 0, H, W)}
    for name in MIDDLEBURY_SAMPLES[1:]:
        v, u = ("c", "c") if name == "centre" else name.split("_")
        boxes[name] = (tops[v], lefts[u], h, w)
    return [{"name": n, "box": b, "image": image[b[0]:b[0] + b[2], b[1]:b[1] + b[3]],
             "depth": depth[b[0]:b[0] + b[2], b[1]:b[1] + b[3]], "mask": mask[b[0]:b[0] + b[2], b[1]:b[1] + b[3]]}
            for n, b in boxes.items()]


def evaluate_middlebury(model, *, input_size: int = 518, crop: float = 0.6, batch_size: int = 8,
                        root=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Relative-depth metrics on the real Middlebury Motorcycle image, over the six samples of
    `middlebury_samples` (the full image and five crops of `crop` times its sides). Notebook 07.

    Each sample is an image of its own: the model predicts it at `input_size` (shorter side, as
    `predict_disparities`), so a crop is seen magnified 1/crop times relative to the full image; the prediction is
    aligned to the sample's GT disparity by least squares and scored on its valid pixels (`eval_depth`);
    the six per-sample metrics are averaged with equal weight. The samples test one scene at two scales
    and five framings; they are not independent images.

    model: a DepthAnything or a function images -> disparities (see `predict_disparities`). Returns (report,
    predictions by sample name) with report = {"all": metrics averaged over samples, "per_sample":
    {name: {abs_rel, delta1}}, "n_images": 6, "samples": names, "crop", "input_size"}.
    """
    samples = middlebury_samples(crop=crop, root=root)
    by_shape: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        by_shape.setdefault(s["depth"].shape, []).append(i)
    preds: list = [None] * len(samples)
    per: list = [None] * len(samples)  # per sample: {metric: value}
    for idx in by_shape.values():  # samples of one size form one batch (the crops; the full image)
        p = predict_disparities(model, np.stack([samples[i]["image"] for i in idx]), input_size=input_size,
                                batch_size=batch_size)
        t = torch.as_tensor(np.stack([samples[i]["depth"] for i in idx]))
        m = torch.as_tensor(np.stack([samples[i]["mask"] for i in idx]))
        metrics, scored = per_image_depth_metrics(torch.as_tensor(p), t, m)
        if not bool(scored.all()):
            raise ValueError("evaluate_middlebury: a sample has fewer than 2 valid GT pixels; use a larger crop")
        for j, i in enumerate(idx):
            preds[i] = p[j]
            per[i] = {k: metrics[k][j] for k in METRIC_KEYS}
    names = [s["name"] for s in samples]
    report = {
        "all": {k: float(torch.stack([r[k] for r in per]).mean()) for k in METRIC_KEYS},
        "per_sample": {n: {"abs_rel": float(r["abs_rel"]), "delta1": float(r["delta1"])} for n, r in zip(names, per)},
        "n_images": len(samples), "samples": names, "crop": crop, "input_size": input_size,
    }
    return report, dict(zip(names, preds))


def claim_lower(a: float | None, b: float | None, *, tol: float = 0.005) -> dict:
    """Is `a` lower than `b` by more than `tol` (e.g. AbsRel of two models)? Notebook 07's claims.

    Returns {"held": True / False, or None when either value is missing, "a": a, "b": b, "margin": b - a};
    a margin within tol counts as equal, so not held.
    """
    if a is None or b is None:
        return {"held": None, "a": a, "b": b, "margin": None}
    return {"held": bool(b - a > tol), "a": float(a), "b": float(b), "margin": float(b - a)}


CLAIM_TOLERANCE = 0.005  # AbsRel differences within this count as equal: the claim is not held


def paper_claims(table: dict, models: Sequence[str], teacher_of: dict[str, str], *,
                 tol: float = CLAIM_TOLERANCE) -> dict:
    """Notebook 07's claims from its results table ({model: {test: {metric: value}}} with a "baseline" row):
    students beat their teachers on `photo`, the V2 teacher beats the V1-style one on thin and glass/mirror
    regions, feature alignment and CutMix help, and every model in `models` beats the baseline on each test.
    `teacher_of`: {student: its teacher}. A pairwise claim is `claim_lower` plus the names and metric compared."""
    def lower(a, b, test, key="abs_rel"):
        va, vb = (table[n][test][key] if n in table else None for n in (a, b))
        return {**claim_lower(va, vb, tol=tol), "lower": a, "than": b, "metric": f"{test}.{key}"}

    claims = {
        "student_beats_teacher_v2": lower("v2_student", teacher_of.get("v2_student", "v2_teacher"), "photo"),
        "student_beats_teacher_v1": lower("v1_student", teacher_of.get("v1_student", "v1_teacher"), "photo"),
        "v2_teacher_beats_v1_teacher_thin": lower("v2_teacher", "v1_teacher", "clean", "thin_abs_rel"),
        "v2_teacher_beats_v1_teacher_glass_mirror": lower("v2_teacher", "v1_teacher", "clean",
                                                          "glass_mirror_abs_rel"),
        "feature_alignment_helps": lower("v2_student", "v2_student_no_feat", "photo"),
        "cutmix_helps": lower("v2_student", "v2_student_no_cutmix", "photo"),
    }
    for test in ("clean", "photo", "middlebury"):
        each = {name: lower(name, "baseline", test) for name in models}
        claims[f"every_model_beats_baseline_{test}"] = {
            "held": all(c["held"] for c in each.values()),
            "baseline": table["baseline"][test]["abs_rel"],
            "models": {name: c["a"] for name, c in each.items()},
            "not_beating": [n for n, c in each.items() if not c["held"]],
            "metric": f"{test}.abs_rel",
        }
    return claims


def claim_line(key: str, claim: dict) -> str:
    """One markdown line for a claim of `paper_claims`: its key, the verdict (HELD / not held / not measured)
    and the numbers compared."""
    c = claim
    verdict = "not measured" if c["held"] is None else "HELD" if c["held"] else "not held"
    if "not_beating" in c:
        detail = (f"baseline {c['baseline']:.3f}, models {min(c['models'].values()):.3f}.."
                  f"{max(c['models'].values()):.3f}"
                  + (f"; not beating it: {', '.join(c['not_beating'])}" if c["not_beating"] else ""))
    elif c["held"] is None:
        detail = f"{c['lower']} or {c['than']} not trained in this run (or no such pixels in the test images)"
    else:
        detail = f"{c['lower']} {c['a']:.3f} vs {c['than']} {c['b']:.3f} (margin {c['margin']:+.3f})"
    return f"{key}: **{verdict}** ({c['metric']}: {detail})"


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


def headline(rep: dict | None, keys: Sequence[str] = ("abs_rel", "delta1")) -> dict | None:
    """The numbers a chapter records of one region's report (`evaluate`): {key: value}, or None for a region
    without pixels. Notebooks 04 and 05."""
    return None if rep is None else {k: rep[k] for k in keys}


def yes_no(flag) -> str:
    """A boolean table cell as a reader says it: "yes" / "no" (a `results_table` format)."""
    return "yes" if flag else "no"


def results_table(rows: dict[str, dict], columns: Sequence[tuple]) -> str:
    """Markdown table of nested results: one row per model, one column per (header, path[, format]).

    path is a dotted key into the row ("photo.abs_rel"); format a str.format spec (default "{:.3f}") or a
    function of the value (e.g. `yes_no`); missing values (absent key or None) print as '-'. Notebooks 06
    and 07.
    """
    def get(row, path):
        for key in path.split("."):
            if not isinstance(row, dict) or row.get(key) is None:
                return None
            row = row[key]
        return row

    cols = [(c[0], c[1], c[2] if len(c) > 2 else "{:.3f}") for c in columns]
    lines = ["| model | " + " | ".join(h for h, _, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in rows.items():
        cells = [("-" if (v := get(row, path)) is None else fmt(v) if callable(fmt) else fmt.format(v))
                 for _, path, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

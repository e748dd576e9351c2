"""Zero-shot benchmarks of the papers, each protocol implemented once (notebook 07_evaluation, gpu profiles).

    from dalib.benchmarks import evaluate_benchmark, evaluate_da2k, zero_shot_table
    from dalib.data.serve import load
    nyu = evaluate_benchmark(model, load("nyu-d", "test", n=64), "nyu", input_size=518)  # {abs_rel, delta1, ...}
    da2k = evaluate_da2k(model, load("da-2k", "test", n=100), input_size=518)           # {accuracy, n_pairs, ...}

Dense benchmarks (NYU-D, KITTI, DIODE): a pixel is scored when its ground truth is valid (the dataset's mask and
depth > 0), inside the benchmark's crop and within [min_depth, max_depth]; on those pixels the predicted disparity
is aligned to the ground-truth disparity by least squares (scale and shift, `dalib.metrics.align_disparity`),
clamped to [1 / max_depth, 1 / min_depth] and inverted; AbsRel and delta1 are computed per image and averaged over
images (`dalib.metrics.per_image_depth_metrics`), the relative-depth protocol of MiDaS that Depth Anything V1/V2
report (V2 paper, Table 2). The papers publish no relative-depth evaluation code, so the caps and crops are those
of the public code that follows the same protocol, named per benchmark in `PROTOCOLS`.

DA-2K: each annotated pair (two pixels, one marked closer) is right when the prediction, a disparity, is larger
at the closer point; the accuracy is the share of right pairs over all pairs (V2 paper, Sec. 6 and its DA-2K
table; the pair format is the DA-2K card's). No alignment is needed: a positive scale and any shift keep the order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dalib.data.schema import BENCHMARKS, get_manifest
from dalib.data.serve import load
from dalib.evaluate import predict_disparities
from dalib.metrics import per_image_depth_metrics
from dalib.weights import OFFICIAL_WEIGHTS


@dataclass(frozen=True)
class Protocol:
    """How one dense benchmark is scored."""
    name: str                 # the value of a manifest's `benchmark` field
    min_depth: float          # metres; ground truth below it is not scored, the aligned depth is clamped to it
    max_depth: float          # metres; the cap (ground truth beyond it is not scored)
    crop: str | None          # "eigen" | "garg" | None: the image region scored (CROPS)
    source: str               # where these numbers come from


#: crops as fractions of (height, width): (top, bottom, left, right)
CROPS = {
    # Eigen et al. 2014 on NYU's 480 x 640 images: rows 45:471, columns 41:601
    "eigen": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
    # Garg et al. 2016 on KITTI: rows 0.40810811 H : 0.99189189 H, columns 0.03594771 W : 0.96405229 W
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}

PROTOCOLS = {
    "nyu": Protocol("nyu", 1e-3, 10.0, "eigen",
                    "654 official test images; depth 1e-3..10 m and the Eigen crop as in ZoeDepth's evaluation "
                    "(eigen_crop, the code Depth Anything's metric-depth release builds on) and Marigold's "
                    "affine-invariant evaluation (eigen_valid_mask)"),
    "kitti": Protocol("kitti", 1e-3, 80.0, "garg",
                      "Eigen test split (652 images with annotated depth); depth 1e-3..80 m and the Garg crop as "
                      "in ZoeDepth's KITTI evaluation (garg_crop)"),
    "diode": Protocol("diode", 0.6, 350.0, None,
                      "771 val images, indoor and outdoor, with DIODE's validity mask; depth 0.6..350 m as in "
                      "Marigold's affine-invariant DIODE evaluation"),
}
assert set(PROTOCOLS) | {"da-2k"} == set(BENCHMARKS), "dalib.data.schema.BENCHMARKS names the protocols here"

#: V2 paper (arXiv 2406.09414), Table 2: zero-shot relative depth, (AbsRel, delta1) per benchmark
PAPER_TABLE2 = {
    "V1-S": {"kitti": (0.080, 0.936), "nyu": (0.053, 0.972), "diode": (0.076, 0.939)},
    "V1-L": {"kitti": (0.076, 0.947), "nyu": (0.043, 0.981), "diode": (0.066, 0.952)},
    "V2-S": {"kitti": (0.078, 0.936), "nyu": (0.053, 0.973), "diode": (0.073, 0.942)},
    "V2-B": {"kitti": (0.078, 0.939), "nyu": (0.049, 0.976), "diode": (0.068, 0.950)},
    "V2-L": {"kitti": (0.074, 0.946), "nyu": (0.045, 0.979), "diode": (0.066, 0.952)},
}
#: V2 paper, DA-2K benchmark: accuracy (%) of the closer-point choice
PAPER_DA2K = {"Marigold": 86.8, "V1": 88.5, "V2-S": 95.3, "V2-B": 97.0, "V2-L": 97.1, "V2-G": 97.4}


def crop_mask(crop: str | None, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: True inside the benchmark crop (`CROPS`, scaled to the image), everywhere for None."""
    h, w = shape
    out = np.zeros((h, w), bool) if crop else np.ones((h, w), bool)
    if crop:
        if crop not in CROPS:
            raise ValueError(f"crop {crop!r}: expected one of {', '.join(CROPS)} or None")
        t, b, lft, r = CROPS[crop]
        out[int(t * h):int(b * h), int(lft * w):int(r * w)] = True
    return out


def _protocol(benchmark: str) -> Protocol:
    if benchmark not in PROTOCOLS:
        raise ValueError(f"benchmark {benchmark!r}: expected one of {', '.join(PROTOCOLS)} (dense) or use "
                         "evaluate_da2k for 'da-2k'")
    return PROTOCOLS[benchmark]


def _groups(shapes: Sequence[tuple], size: int) -> list[list[int]]:
    """Indices grouped by image shape, in chunks of at most `size` (batches that stack)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, s in enumerate(shapes):
        by_shape.setdefault(tuple(s), []).append(i)
    return [idx[k:k + size] for idx in by_shape.values() for k in range(0, len(idx), size)]


def _dense_per_image(preds, depth, mask, p: Protocol) -> dict[str, list]:
    """Per-image AbsRel / delta1 (scored images only) of one chunk of images under protocol p."""
    per: dict[str, list] = {"abs_rel": [], "delta1": []}
    for idx in _groups([np.shape(d) for d in depth], 16):
        t = torch.as_tensor(np.stack([np.asarray(depth[i], np.float32) for i in idx]))
        m = np.stack([crop_mask(p.crop, t.shape[1:]) & (True if mask is None else np.asarray(mask[i], bool))
                      for i in idx])
        pr = torch.as_tensor(np.stack([np.asarray(preds[i], np.float32) for i in idx]))
        if pr.shape != t.shape:
            raise ValueError(f"{p.name}: predictions {tuple(pr.shape)} and depth {tuple(t.shape)} differ in size")
        metrics, scored = per_image_depth_metrics(pr, t, torch.as_tensor(m), min_depth=p.min_depth,
                                                  max_depth=p.max_depth)
        for k in per:
            per[k] += metrics[k][scored].tolist()
    return per


def _dense_report(per: dict[str, list], p: Protocol) -> dict:
    if not per["abs_rel"]:
        raise ValueError(f"{p.name}: no image has 2 or more valid pixels in {p.min_depth}..{p.max_depth} m "
                         f"inside the {p.crop or 'full'} crop")
    return {"abs_rel": float(np.mean(per["abs_rel"])), "delta1": float(np.mean(per["delta1"])),
            "n_images": len(per["abs_rel"]), "protocol": p.name}


def score_dense(preds: Sequence[np.ndarray], depth: Sequence[np.ndarray], mask: Sequence[np.ndarray] | None,
                benchmark: str) -> dict:
    """AbsRel / delta1 of disparity predictions against ground-truth depth under a benchmark's protocol.

    preds, depth, mask: per image (H_i, W_i) arrays (a prediction at its image's resolution); mask None means
    depth > 0. Returns {"abs_rel", "delta1", "n_images" (scored), "protocol"}. Hand-checkable: a prediction that
    is an affine map of the true disparity scores AbsRel 0 and delta1 1 on any protocol.
    """
    p = _protocol(benchmark)
    return _dense_report(_dense_per_image(preds, depth, mask, p), p)


def predict_each(model, images: Sequence[np.ndarray], *, input_size: int = 518, batch_size: int = 8) -> list:
    """Disparity of each (H_i, W_i, 3) uint8 image at its own size; images of one size share batches."""
    out: list = [None] * len(images)
    for idx in _groups([im.shape for im in images], batch_size):
        pred = predict_disparities(model, np.stack([images[i] for i in idx]), input_size=input_size,
                                   batch_size=batch_size)
        for j, i in enumerate(idx):
            out[i] = pred[j]
    return out


def _chunks(ds, columns: Sequence[str], size: int):
    """{column: [value per row]} for `size` rows at a time, decoded to numpy: memory stays one chunk (DA-2K
    images reach 4,800 px, and a prediction is kept at the image's size)."""
    view = ds.select_columns([c for c in columns if c in ds.column_names]).with_format("numpy")
    for start in range(0, len(view), size):
        rows = view[start:start + size]
        yield {c: list(rows[c]) for c in view.column_names}


def evaluate_benchmark(model, ds, benchmark: str, *, input_size: int = 518, batch_size: int = 8) -> dict:
    """Predict every image of a dense benchmark split (columns image, depth, mask) and score it as `score_dense`,
    `batch_size` images at a time.

    model: a DepthAnything or a function images -> disparities (`dalib.evaluate.predict_disparities`)."""
    p = _protocol(benchmark)
    per: dict[str, list] = {"abs_rel": [], "delta1": []}
    for rows in _chunks(ds, ("image", "depth", "mask"), batch_size):
        preds = predict_each(model, rows["image"], input_size=input_size, batch_size=batch_size)
        for k, v in _dense_per_image(preds, rows["depth"], rows.get("mask"), p).items():
            per[k] += v
    return _dense_report(per, p)


def da2k_correct(pred: np.ndarray, point1, point2, closer) -> np.ndarray:
    """(P,) bool: for each pair ([h, w] pixels of the image `pred` was predicted for), is the predicted disparity
    larger at the annotated closer point (closer = 1 or 2)? Ties count as wrong."""
    pred = np.asarray(pred, dtype=np.float64)
    h, w = pred.shape

    def at(points):
        pts = np.rint(np.asarray(points, dtype=np.float64).reshape(-1, 2)).astype(int)
        return pred[np.clip(pts[:, 0], 0, h - 1), np.clip(pts[:, 1], 0, w - 1)]

    d1, d2 = at(point1), at(point2)
    first = np.asarray(closer).reshape(-1) == 1
    return np.where(first, d1 > d2, d2 > d1)


def evaluate_da2k(model, ds, *, input_size: int = 518, batch_size: int = 8) -> dict:
    """DA-2K accuracy of a model on a split served by `load("da-2k", ...)`, `batch_size` images at a time:
    {"accuracy" (0..1, over all pairs), "n_pairs", "n_images", "per_scene": {scene: accuracy}}."""
    right, scenes, n_images = [], [], 0
    for rows in _chunks(ds, ("image", "point1", "point2", "closer", "scene"), batch_size):
        preds = predict_each(model, rows["image"], input_size=input_size, batch_size=batch_size)
        for i, pred in enumerate(preds):
            ok = da2k_correct(pred, rows["point1"][i], rows["point2"][i], rows["closer"][i])
            right.append(ok)
            scenes += [str(rows["scene"][i]) if "scene" in rows else ""] * len(ok)
        n_images += len(preds)
    right_all = np.concatenate(right) if right else np.zeros(0, bool)
    if right_all.size == 0:
        raise ValueError("evaluate_da2k: the split holds no annotated pair")
    scenes_arr = np.asarray(scenes)
    per_scene = {s: float(right_all[scenes_arr == s].mean()) for s in sorted(set(scenes)) if s}
    return {"accuracy": float(right_all.mean()), "n_pairs": int(right_all.size), "n_images": n_images,
            "per_scene": per_scene}


def zero_shot_table(rows: dict[str, dict], benchmarks: Sequence[str]) -> str:
    """Markdown table: our models (rows = {model: {benchmark: report}}) above the papers' published numbers
    (PAPER_TABLE2 for the dense benchmarks, PAPER_DA2K for DA-2K; '-' where a paper row has none)."""
    head = [f"{b} AbsRel | {b} δ1" if b != "da-2k" else "DA-2K acc. (%)" for b in benchmarks]
    n_cols = sum(2 if b != "da-2k" else 1 for b in benchmarks)
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---|" * n_cols]

    def cells(get):
        out = []
        for b in benchmarks:
            v = get(b)
            if b == "da-2k":
                out.append("-" if v is None else f"{v:.1f}")
            else:
                out += ["-", "-"] if v is None else [f"{v[0]:.3f}", f"{v[1]:.3f}"]
        return " | ".join(out)

    for name, reps in rows.items():
        def ours(b, reps=reps):
            r = reps.get(b)
            if r is None:
                return None
            return 100 * r["accuracy"] if b == "da-2k" else (r["abs_rel"], r["delta1"])
        lines.append(f"| {name} | {cells(ours)} |")
    for name in sorted(set(PAPER_TABLE2) | set(PAPER_DA2K)):
        lines.append(f"| paper: {name} | "
                     + cells(lambda b: PAPER_DA2K.get(name) if b == "da-2k" else PAPER_TABLE2.get(name, {}).get(b))
                     + " |")
    return "\n".join(lines)


def download_plan(names: Sequence[str], official: Sequence[str] = ()) -> list[str]:
    """One line per benchmark manifest and official checkpoint: what a zero-shot run fetches (repository,
    commit, files and sizes as the hub lists them, licence), or that a local copy is needed. Notebook 07."""
    lines = []
    for name in names:
        m = get_manifest(name)
        src = m["source"]
        if src["type"] != "hub":
            lines.append(f"{name}: no hub copy; a local copy ({m.get('homepage') or 'see its manifest'})")
            continue
        sizes = src.get("file_sizes") or {}
        files = ", ".join(f"{f} ({sizes.get(f, 'size not listed')})" for fs in src["files"].values() for f in fs)
        lines.append(f"{name}: {src['hub_id']} @ {src['revision'][:7]}: {files}; licence {m['license']}")
    for key in official:
        ref = OFFICIAL_WEIGHTS[key]
        lines.append(f"official {key}: {ref.repo_id} @ {ref.revision[:7]}: {ref.filename} ({ref.size}); "
                     f"licence {ref.license}")
    return lines


def run_zero_shot(models: dict, names: Sequence[str], *, n_eval: int | None = None, input_size: int = 518,
                  batch_size: int = 8, log=print) -> dict:
    """{model: {benchmark: report}} for every model over the first `n_eval` images of each benchmark manifest
    (`load(name, <its first split>, n=n_eval)`, which bounds the download), scored with the protocol its
    `benchmark` field names (`evaluate_benchmark` / `evaluate_da2k`). Notebook 07."""
    splits = {}
    for name in names:
        m = get_manifest(name)
        bench = m.get("benchmark")
        if bench is None:
            raise ValueError(f"{name}: its manifest names no 'benchmark' protocol, so it is no zero-shot benchmark")
        if bench in {b for b, _ in splits.values()}:
            raise ValueError(f"{name}: a second manifest for benchmark {bench!r}; score one per benchmark")
        splits[name] = (bench, load(name, next(iter(m["splits"])), n=n_eval))
    rows: dict[str, dict] = {}
    for model_name, model in models.items():
        rows[model_name] = {}
        for name, (bench, ds) in splits.items():
            t0 = time.perf_counter()
            kw = {"input_size": input_size, "batch_size": batch_size}
            rep = evaluate_da2k(model, ds, **kw) if bench == "da-2k" else evaluate_benchmark(model, ds, bench, **kw)
            rows[model_name][bench] = rep
            log(f"{model_name:22s} {name:8s} {len(ds):4d} images in {time.perf_counter() - t0:5.1f} s")
    return rows

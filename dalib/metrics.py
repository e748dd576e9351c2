"""Evaluation of relative depth (notebook 07_evaluation; first used in 04_teacher_training).

A relative-depth model is only defined up to scale and shift in disparity, so, as in the Depth
Anything / MiDaS evaluation, each prediction is aligned to the ground-truth disparity by least
squares before depth metrics are computed. Shapes: (B, H, W); masks bool.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dalib.disparity import masked_min_max, valid_depth_mask
from dalib.losses import lstsq_scale_shift

METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}


def _masked_mean(x: Tensor, m: Tensor, n: Tensor) -> Tensor:
    return torch.where(m, x, torch.zeros_like(x)).sum(dim=(1, 2)) / n


def align_disparity(pred_disp: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
    """s * pred_disp + b with (s, b) the least-squares fit to 1/gt_depth over mask, per image.

    An image whose prediction is constant over the mask gets s = 0 and b = mean GT disparity
    (the best constant), so a degenerate prediction is scored, not skipped.
    """
    gt_disp = torch.where(mask, 1.0 / torch.where(mask, gt_depth, torch.ones_like(gt_depth)), torch.zeros_like(gt_depth))
    s, b, ok = lstsq_scale_shift(pred_disp, gt_disp, mask)
    n = mask.sum(dim=(1, 2)).clamp_min(1).to(gt_disp.dtype)
    b = torch.where(ok, b, gt_disp.sum(dim=(1, 2)) / n)
    return s[:, None, None] * pred_disp + b[:, None, None]


@torch.no_grad()
def per_image_depth_metrics(
    pred_disp: Tensor,
    gt_depth: Tensor,
    mask: Tensor | None = None,
    *,
    min_depth: float | None = None,
    max_depth: float | None = None,
    region: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Metrics of each image, (B,) tensors keyed as METRIC_KEYS, and which images were scored (B,) bool.

    region: optional (B, H, W) bool; the alignment still uses every valid pixel, the metrics only the
    valid pixels inside the region (e.g. thin structures or glass); images with no such pixel are not scored.

    Valid pixels: `mask` & finite GT depth > 0 (& min_depth <= GT <= max_depth when those are given).
    The aligned disparity is clamped to [1/max_depth, 1/min_depth] (defaults: the image's own max and
    min valid GT depth), depth = 1 / disparity, then (p = prediction, t = GT, on valid pixels):
      abs_rel = mean |p - t| / t        sq_rel = mean (p - t)^2 / t     rmse = sqrt mean (p - t)^2
      rmse_log = sqrt mean (log p - log t)^2                            log10 = mean |log10 p - log10 t|
      silog = sqrt(mean g^2 - 0.5 (mean g)^2), g = log t - log p        delta_k = mean(max(t/p, p/t) < 1.25^k)
    """
    pred_disp, gt_depth, mask = _as_batch(pred_disp, gt_depth, mask)
    # float64: the metrics are sums of many small terms, and evaluation is not the hot path
    pred = pred_disp.detach().to(torch.float64)
    gt = gt_depth.detach().to(torch.float64)
    valid = valid_depth_mask(gt, mask) & torch.isfinite(pred)
    if min_depth is not None:
        valid &= gt >= min_depth
    if max_depth is not None:
        valid &= gt <= max_depth
    scored = valid.sum(dim=(1, 2)) >= 2
    if region is not None:
        if region.shape != gt.shape:
            raise ValueError(f"region {tuple(region.shape)} must have the shape of gt_depth {tuple(gt.shape)}")
        in_region = valid & region.to(device=gt.device, dtype=torch.bool)
        scored = scored & (in_region.sum(dim=(1, 2)) >= 1)
    p = _aligned_clamped_depth(pred, gt, valid, scored, min_depth, max_depth)
    t = torch.where(valid, gt, torch.ones_like(gt))
    return _metric_values(p, t, in_region if region is not None else valid), scored


def _as_batch(pred_disp: Tensor, gt_depth: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(H, W) inputs as a batch of one; ValueError naming the tensors when the shapes do not fit."""
    if pred_disp.dim() not in (2, 3) or gt_depth.dim() not in (2, 3):
        raise ValueError(f"pred_disp {tuple(pred_disp.shape)} and gt_depth {tuple(gt_depth.shape)}: expected (B, H, W) "
                         f"or (H, W) each (squeeze a channel axis of size 1 first)")
    if pred_disp.dim() == 2:
        pred_disp, gt_depth = pred_disp[None], gt_depth[None]
        mask = None if mask is None else mask[None]
    if pred_disp.shape != gt_depth.shape:
        raise ValueError(f"pred_disp {tuple(pred_disp.shape)} and gt_depth {tuple(gt_depth.shape)} must have one shape")
    if mask is not None and mask.shape != gt_depth.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of gt_depth {tuple(gt_depth.shape)}")
    return pred_disp, gt_depth, mask


def _aligned_clamped_depth(pred: Tensor, gt: Tensor, valid: Tensor, scored: Tensor, min_depth, max_depth) -> Tensor:
    """Depth 1 / d of the prediction aligned to GT disparity (`align_disparity`), d clamped to [1/max_depth,
    1/min_depth] (defaults: each image's own valid GT depth range)."""
    lo, hi = masked_min_max(gt, valid)
    dmax = hi[:, 0, 0] if max_depth is None else torch.full_like(lo[:, 0, 0], max_depth)
    dmin = lo[:, 0, 0] if min_depth is None else torch.full_like(lo[:, 0, 0], min_depth)
    dmax = torch.where(scored, dmax, torch.ones_like(dmax))
    dmin = torch.where(scored, dmin, torch.ones_like(dmin))
    aligned = align_disparity(torch.where(valid, pred, torch.zeros_like(pred)), gt, valid)
    aligned = torch.maximum(torch.minimum(aligned, (1.0 / dmin)[:, None, None]), (1.0 / dmax)[:, None, None])
    return 1.0 / aligned


def _metric_values(p: Tensor, t: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """The METRIC_KEYS of predicted depth p against GT depth t over each image's `valid` pixels, (B,) each."""
    nf = valid.sum(dim=(1, 2)).clamp_min(1).to(t.dtype)
    g = torch.log(t) - torch.log(p)
    ratio = torch.maximum(t / p, p / t)
    out = {
        "abs_rel": _masked_mean((p - t).abs() / t, valid, nf),
        "sq_rel": _masked_mean((p - t) ** 2 / t, valid, nf),
        "rmse": _masked_mean((p - t) ** 2, valid, nf).sqrt(),
        "rmse_log": _masked_mean(g**2, valid, nf).sqrt(),
        "log10": _masked_mean((torch.log10(p) - torch.log10(t)).abs(), valid, nf),
        "silog": (_masked_mean(g**2, valid, nf) - 0.5 * _masked_mean(g, valid, nf) ** 2).clamp_min(0).sqrt(),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = _masked_mean((ratio < 1.25**k).to(t.dtype), valid, nf)
    return out


def eval_depth(
    pred_disp: Tensor,
    gt_depth: Tensor,
    mask: Tensor | None = None,
    *,
    min_depth: float | None = None,
    max_depth: float | None = None,
    region: Tensor | None = None,
) -> dict[str, float]:
    """Affine-aligned depth metrics averaged over images (see `per_image_depth_metrics`). Notebook 07.

    pred_disp: (B, H, W) predicted relative disparity; gt_depth: (B, H, W) metres (0/NaN/inf invalid);
    mask: (B, H, W) bool or None; region: (B, H, W) bool or None, metrics restricted to it after aligning
    on the whole mask. Returns {abs_rel, sq_rel, rmse, rmse_log, log10, silog, delta1, delta2, delta3}
    as floats. Images with < 2 valid pixels (or none in the region) are skipped; ValueError if none remain.
    """
    per, scored = per_image_depth_metrics(
        pred_disp, gt_depth, mask, min_depth=min_depth, max_depth=max_depth, region=region
    )
    if not bool(scored.any()):
        raise ValueError("eval_depth: no image has 2 or more valid ground-truth pixels (check gt_depth and mask)")
    return {k: float(v[scored].mean()) for k, v in per.items()}


@torch.no_grad()
def ordinal_accuracy(
    pred_disp: Tensor,
    gt_depth: Tensor,
    mask: Tensor | None = None,
    *,
    pairs_per_image: int = 1000,
    min_ratio: float = 1.05,
    seed: int = 0,
) -> float:
    """DA-2K-style relative-depth accuracy: the share of sampled point pairs whose order (which point
    is closer) the prediction gets right. Notebook 07.

    Pairs are drawn uniformly among valid pixels of each image, keeping pairs whose GT depths differ by
    at least `min_ratio` (DA-2K annotates pairs with a clear order). Closer = larger disparity.
    Scale/shift-free, so no alignment is needed (a negative scale would flip every pair and is wrong).
    """
    if pred_disp.dim() == 2:
        pred_disp, gt_depth = pred_disp[None], gt_depth[None]
        mask = None if mask is None else mask[None]
    valid = valid_depth_mask(gt_depth, mask) & torch.isfinite(pred_disp)
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = gt_depth.shape[0]
    vf = valid.reshape(B, -1).cpu()
    counts = vf.sum(1)
    if int((counts >= 2).sum()) == 0:
        raise ValueError("ordinal_accuracy: no image has 2 or more valid ground-truth pixels")
    # draw ranks among valid pixels per image, then map ranks to flat indices
    u = torch.rand(B, pairs_per_image, 2, generator=g)
    ranks = (u * counts[:, None, None].clamp_min(1)).long().clamp_max((counts - 1).clamp_min(0)[:, None, None])
    order = torch.argsort((~vf).to(torch.int8), dim=1, stable=True)  # valid pixels first
    idx = order.gather(1, ranks.reshape(B, -1)).reshape(B, pairs_per_image, 2).to(gt_depth.device)
    t = gt_depth.reshape(B, -1).to(torch.float64)
    d = pred_disp.reshape(B, -1).to(torch.float64)
    ta, tb = t.gather(1, idx[..., 0]), t.gather(1, idx[..., 1])
    da, db = d.gather(1, idx[..., 0]), d.gather(1, idx[..., 1])
    use = (torch.maximum(ta, tb) >= min_ratio * torch.minimum(ta, tb)) & (counts >= 2).to(gt_depth.device)[:, None]
    correct = ((ta < tb) & (da > db)) | ((ta > tb) & (da < db))
    total = int(use.sum())
    if total == 0:
        raise ValueError(f"ordinal_accuracy: no sampled pair has a depth ratio >= {min_ratio}")
    return float((correct & use).sum()) / total


@torch.no_grad()
def aligned_depth(pred_disp: Tensor, gt_depth: Tensor, mask: Tensor | None = None) -> Tensor:
    """The depth a relative prediction stands for: `align_disparity` to GT on valid pixels, clamped to the
    image's valid GT depth range [min, max] (as `eval_depth` does by default), inverted. Notebook 07
    (error maps, point clouds, edges).

    pred_disp, gt_depth (metres): (B, H, W) or (H, W); mask: bool or None. Returns float64 depth in metres
    of the same shape, 0 where the GT is invalid (its pixels play no part in the fit).
    """
    pred = pred_disp.detach().to(torch.float64)
    gt = gt_depth.detach().to(torch.float64).to(pred.device)
    valid = valid_depth_mask(gt, None if mask is None else mask.to(pred.device)) & torch.isfinite(pred)
    squeeze = pred.dim() == 2
    if squeeze:
        pred, gt, valid = pred[None], gt[None], valid[None]
    lo, hi = masked_min_max(gt, valid)
    ok = torch.isfinite(lo) & torch.isfinite(hi)
    lo, hi = torch.where(ok, lo, torch.ones_like(lo)), torch.where(ok, hi, torch.ones_like(hi))
    aligned = align_disparity(torch.where(valid, pred, torch.zeros_like(pred)), gt, valid)
    depth = torch.where(valid, 1.0 / torch.maximum(torch.minimum(aligned, 1.0 / lo), 1.0 / hi), torch.zeros_like(gt))
    return depth[0] if squeeze else depth


def _pair_signs(depth: Tensor, valid: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Depth discontinuities between right and lower neighbours, per threshold.

    Returns (sign_x, sign_y) of shapes (T, B, H, W-1) and (T, B, H-1, W): +1 where the second pixel is
    farther than the first by more than the ratio, -1 where it is nearer, 0 otherwise or where a pixel is invalid.
    """
    signs = []
    for a, b, m in ((depth[..., :, :-1], depth[..., :, 1:], valid[..., :, :-1] & valid[..., :, 1:]),
                    (depth[..., :-1, :], depth[..., 1:, :], valid[..., :-1, :] & valid[..., 1:, :])):
        thr = thresholds.view(-1, *([1] * a.dim()))
        far = (b > thr * a) & m  # d(j) / d(i) > threshold
        near = (a > thr * b) & m
        signs.append(far.to(torch.int8) - near.to(torch.int8))
    return signs[0], signs[1]


@torch.no_grad()
def edge_precision_recall(
    pred_disp: Tensor,
    gt_depth: Tensor,
    mask: Tensor | None = None,
    *,
    thresholds: tuple[float, ...] = (1.05, 1.10, 1.25),
) -> dict[str, float]:
    """Depth-discontinuity (occlusion edge) precision, recall and F1. Notebook 07.

    In the spirit of Depth Pro's scale-invariant boundary metric (arXiv 2410.02073): two horizontally or
    vertically neighbouring valid pixels i, j form an edge at threshold r when d_j / d_i > r (or < 1/r); the
    edge also has a direction, which of the two is nearer. GT edges come from `gt_depth`; predicted edges
    from the prediction aligned to GT disparity by least squares (`align_disparity`, as in `eval_depth`,
    clamped to the image's GT depth range) and inverted to depth, so the metric is invariant to the scale
    and shift of `pred_disp`. A predicted edge is correct when GT has an edge of the same direction on the
    same pixel pair (no spatial tolerance). Per image and threshold:
        precision = TP / #predicted edges,  recall = TP / #GT edges,  F1 = 2 TP / (#predicted + #GT)
    averaged over thresholds and images, where (image, threshold) entries with no predicted edge are left
    out of precision and entries with no GT edge are left out of recall and F1 (an image that misses every GT
    edge scores F1 = 0). A value with no entry at all is NaN.

    pred_disp: (B, H, W) relative disparity; gt_depth: (B, H, W) metres (0/NaN/inf invalid); mask: (B, H, W)
    bool or None. Returns {"precision", "recall", "f1", "n_images"} (n_images: images with a GT edge).
    """
    if pred_disp.dim() == 2:
        pred_disp, gt_depth = pred_disp[None], gt_depth[None]
        mask = None if mask is None else mask[None]
    if pred_disp.dim() != 3 or pred_disp.shape != gt_depth.shape:
        raise ValueError(f"edge_precision_recall: pred_disp {tuple(pred_disp.shape)} and gt_depth "
                         f"{tuple(gt_depth.shape)} must both be (B, H, W)")
    if mask is not None and mask.shape != gt_depth.shape:
        raise ValueError(f"edge_precision_recall: mask {tuple(mask.shape)} must have the shape of gt_depth "
                         f"{tuple(gt_depth.shape)}")
    if not thresholds or min(thresholds) <= 1:
        raise ValueError(f"edge_precision_recall: thresholds must be depth ratios > 1, got {thresholds}")
    pred = pred_disp.detach().to(torch.float64)
    gt = gt_depth.detach().to(torch.float64).to(pred.device)
    valid = valid_depth_mask(gt, None if mask is None else mask.to(pred.device)) & torch.isfinite(pred)
    p = aligned_depth(pred, gt, valid)
    thr = torch.tensor(thresholds, dtype=torch.float64, device=pred.device)
    gx, gy = _pair_signs(gt, valid, thr)
    px, py = _pair_signs(p, valid, thr)
    n_gt = (gx != 0).sum(dim=(2, 3)) + (gy != 0).sum(dim=(2, 3))  # (T, B)
    n_pred = (px != 0).sum(dim=(2, 3)) + (py != 0).sum(dim=(2, 3))
    tp = ((px == gx) & (gx != 0)).sum(dim=(2, 3)) + ((py == gy) & (gy != 0)).sum(dim=(2, 3))
    n_gt, n_pred, tp = n_gt.to(torch.float64), n_pred.to(torch.float64), tp.to(torch.float64)

    def mean_where(x: Tensor, use: Tensor) -> float:
        return float(x[use].mean()) if bool(use.any()) else float("nan")

    has_gt, has_pred = n_gt > 0, n_pred > 0
    return {
        "precision": mean_where(tp / n_pred.clamp_min(1), has_pred),
        "recall": mean_where(tp / n_gt.clamp_min(1), has_gt),
        "f1": mean_where(2 * tp / (n_pred + n_gt).clamp_min(1), has_gt),
        "n_images": int(has_gt.any(dim=0).sum()),
    }

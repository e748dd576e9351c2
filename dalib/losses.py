"""Affine-invariant depth losses of MiDaS / Depth Anything (notebooks 02 and 03; used by `dalib.train`).

All maps are (B, H, W); `mask` is bool and selects the valid set V of each image. Every function is
batched (no Python loop over images), runs on CPU and CUDA, and never returns NaN/inf in value or
gradient, whatever the masked-out pixels hold. A NaN or inf target pixel counts as masked out.

    ssi_loss                scale-and-shift-invariant loss (V1 Eq. 1-3; MiDaS least-squares variant)
    gradient_matching_loss  multi-scale gradient matching on the aligned residual (MiDaS)
    depth_loss              ssi + 2 * gradient matching (V2), sharing one alignment
    cutmix_regions          a CutMix image as its two regions, each against its own label (V1)
    feature_alignment_loss  1 - cosine to a frozen encoder, with a tolerance margin (V1 Sec. 3.3)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGNS = ("median", "lstsq")


# ----------------------------------------------------------------------------- masked statistics
def _check(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    if pred.dim() != 3:
        raise ValueError(f"pred must be (B,H,W), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} must have one shape"
        )
    # One rule for non-finite labels: a NaN or +-inf target pixel is unlabelled, whatever the mask says
    # (as `dalib.evaluate` does). A non-finite *prediction* is left to propagate: the training loop stops on it.
    return mask.to(torch.bool) & torch.isfinite(target)


def _sorted_valid(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of x (B, N) sorted with the masked-out entries pushed to the end (+inf); valid counts (B,)."""
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    return torch.where(mask, x, inf).sort(dim=1).values, mask.sum(dim=1)


def _gather_rank(xs: Tensor, rank: Tensor) -> Tensor:
    """xs[b, rank[b]] with rank clamped into range (rows with no valid entry are discarded by callers)."""
    rank = rank.clamp(0, xs.shape[1] - 1).long()
    return xs.gather(1, rank[:, None]).squeeze(1)


def masked_median(x: Tensor, mask: Tensor) -> Tensor:
    """Median over the valid entries of each row (B, N) -> (B,); mean of the two middle values for even counts.

    Masked-out entries never enter it. Rows without valid entries give 0. One linear-time selection
    (`nanmedian`, which returns the lower middle value v_k, k = (n-1)//2) instead of a full sort; the
    upper middle value v_{k+1} is v_k again when more than k+1 entries are <= v_k, else the smallest
    entry above v_k.
    """
    nan = torch.tensor(float("nan"), dtype=x.dtype, device=x.device)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    n = mask.sum(dim=1)
    lower = torch.nanmedian(torch.where(mask, x, nan), dim=1).values
    at_or_below = (mask & (x <= lower[:, None])).sum(dim=1)
    above = torch.where(mask & (x > lower[:, None]), x, inf).amin(dim=1)
    upper = torch.where((n % 2 == 1) | (at_or_below > (n - 1) // 2 + 1), lower, above)
    med = 0.5 * (lower + upper)
    return torch.where(n > 0, med, torch.zeros_like(med))


def masked_quantile(x: Tensor, mask: Tensor, q: float) -> Tensor:
    """q-quantile over the valid entries of each row (B, N) -> (B,), linear interpolation between
    order statistics (as `numpy.quantile`'s default). Rows without valid entries give 0."""
    xs, n = _sorted_valid(x, mask)
    pos = q * (n - 1).clamp_min(0).to(x.dtype)
    lo = pos.floor()
    frac = pos - lo
    a, b = _gather_rank(xs, lo), _gather_rank(xs, lo + 1)
    b = torch.where(frac > 0, b, a)  # at an exact rank do not touch the (maybe +inf) next entry
    val = a + frac * (b - a)
    return torch.where(n > 0, val, torch.zeros_like(val))


# ----------------------------------------------------------------------------- alignment
def normalize_median_mad(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """x_hat = (x - med_V(x)) / mad_V(x), mad = mean_V |x - med_V(x)| (V1 Eq. 3), per image.

    x, mask: (B, H, W). Returns x_hat (0 outside V) and ok (B,): images with >= 2 valid pixels
    and mad > 0.
    """
    B = x.shape[0]
    mf = mask.reshape(B, -1)
    xf = x.reshape(B, -1).masked_fill(~mf, 0)  # masked NaN/inf never reach the math
    n = mf.sum(1)
    centred = (xf - masked_median(xf, mf)[:, None]).masked_fill(~mf, 0)
    mad = centred.abs().sum(1) / n.clamp_min(1)
    ok = (n >= 2) & (mad > 0)
    xh = centred / torch.where(ok, mad, torch.ones_like(mad))[:, None]
    return xh.reshape_as(x), ok


def lstsq_scale_shift(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image (s, b) = argmin sum_V (s * pred + b - target)^2, shapes (B,), plus ok (B,).

    Closed form of the 2x2 normal equations
        [sum p^2  sum p] [s]   [sum p t]
        [sum p    n    ] [b] = [sum t  ]
    written in centred form for float32 accuracy: s = cov(p, t) / var(p), b = mean t - s mean p.
    ok is False for images with < 2 valid pixels or a singular system (var(p) ~ 0); there s = 0, b = 0.
    """
    B = pred.shape[0]
    m = mask.reshape(B, -1)
    return _lstsq_fit(pred.reshape(B, -1).masked_fill(~m, 0), target.reshape(B, -1).masked_fill(~m, 0), m)[:3]


def _lstsq_fit(p: Tensor, t: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`lstsq_scale_shift` on flattened (B, N) maps that are already 0 outside the mask m.

    Also returns the centred maps pc = p - mean p, tc = t - mean t (0 outside m).
    """
    n = m.sum(1).to(p.dtype)
    nn_ = n.clamp_min(1)
    mp, mt = p.sum(1) / nn_, t.sum(1) / nn_
    pc = (p - mp[:, None]).masked_fill(~m, 0)
    tc = (t - mt[:, None]).masked_fill(~m, 0)
    var = torch.einsum("bn,bn->b", pc, pc)  # sum_V (p - mean p)^2, no (B, N) temporary
    cov = torch.einsum("bn,bn->b", pc, tc)
    # singular when the spread of p is at rounding level relative to its magnitude (sum p^2 = var + n mp^2)
    ok = (n >= 2) & (var > torch.finfo(p.dtype).eps * (var + n * mp * mp))
    safe_var = torch.where(ok, var, torch.ones_like(var))
    s = torch.where(ok, cov / safe_var, torch.zeros_like(var))
    b = torch.where(ok, mt - s * mp, torch.zeros_like(var))
    return s, b, ok, pc, tc


def aligned_residual(pred: Tensor, target: Tensor, mask: Tensor, align: str = "median") -> tuple[Tensor, Tensor]:
    """Signed residual R of aligned prediction minus aligned target, (B, H, W), 0 outside the mask.

    "median": R = pred_hat - target_hat (each normalised by median / MAD over V).
    "lstsq":  R = s * pred + b - target (s, b from `lstsq_scale_shift`).
    Returns R and the mask restricted to images that can be aligned (others contribute nothing).
    """
    if align == "median":
        ph, okp = normalize_median_mad(pred, mask)
        if target.requires_grad:
            th, okt = normalize_median_mad(target, mask)
        else:
            with torch.no_grad():  # the usual case: nothing to record for the target's normalisation
                th, okt = normalize_median_mad(target, mask)
        ok = okp & okt
        r = ph - th
    elif align == "lstsq":
        B = pred.shape[0]
        m = mask.reshape(B, -1)
        p, t = pred.reshape(B, -1).masked_fill(~m, 0), target.reshape(B, -1).masked_fill(~m, 0)
        s, _, ok, pc, tc = _lstsq_fit(p, t, m)
        # s p + b - t = s (p - mean p) - (t - mean t), since b = mean t - s mean p; 0 outside the mask
        r = torch.addcmul(-tc, s[:, None], pc).reshape_as(pred)
    else:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    mask = mask & ok[:, None, None]
    return r.masked_fill(~mask, 0), mask


# ----------------------------------------------------------------------------- losses
def _check_ssi_args(trim: float, reduction: str) -> None:
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    if reduction not in ("batch", "image"):
        raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")


def _weighted_image_mean(per_image: Tensor, used: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of per-image values over the used images; with weights, sum_i w_i v_i / sum_i w_i (used only)."""
    if weights is None:
        return torch.where(used, per_image, torch.zeros_like(per_image)).sum() / used.sum().clamp_min(1)
    w = torch.where(used, weights.to(per_image.dtype), torch.zeros_like(per_image))
    return (w * torch.where(used, per_image, torch.zeros_like(per_image))).sum() / w.sum().clamp_min(1e-12)


def _ssi_from_residual(R: Tensor, mask: Tensor, align: str, trim: float, reduction: str,
                       weights: Tensor | None = None) -> Tensor:
    r = R.abs() if align == "median" else R * R  # R is 0 outside the mask, so r is too
    B = r.shape[0]
    rf, mf = r.reshape(B, -1), mask.reshape(B, -1)
    if trim > 0:
        thr = masked_quantile(rf.detach(), mf, 1.0 - trim)
        mf = mf & (rf.detach() <= thr[:, None])
        rf = rf.masked_fill(~mf, 0)
    num, cnt = rf.sum(1), mf.sum(1)
    if reduction == "batch":
        return num.sum() / cnt.sum().clamp_min(1)
    return _weighted_image_mean(num / cnt.clamp_min(1), cnt > 0, weights)


def _gm_from_residual(R: Tensor, mask: Tensor, scales: int, reduction: str = "batch",
                      weights: Tensor | None = None) -> Tensor:
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    per_image = R.new_zeros(R.shape[0])  # sum over scales of S_k,i / C_k,i  ("image")
    total = R.new_zeros(())  # sum over scales of sum_i S_k,i / sum_i C_k,i  ("batch")
    for k in range(scales):  # loop over scales (4), not over images
        step = 2**k
        r, m = R[:, ::step, ::step], mask[:, ::step, ::step]
        mx = m[:, :, 1:] & m[:, :, :-1]
        my = m[:, 1:, :] & m[:, :-1, :]
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs().masked_fill(~mx, 0)
        gy = (r[:, 1:, :] - r[:, :-1, :]).abs().masked_fill(~my, 0)
        if reduction == "batch":
            total = total + (gx.sum() + gy.sum()) / m.sum().clamp_min(1)
        else:
            s_k = gx.sum(dim=(1, 2)) + gy.sum(dim=(1, 2))
            per_image = per_image + s_k / m.sum(dim=(1, 2)).clamp_min(1)
    if reduction == "batch":
        return total
    return _weighted_image_mean(per_image, mask.flatten(1).any(dim=1), weights)


def ssi_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    align: str = "median",
    trim: float = 0.0,
    reduction: str = "batch",
) -> Tensor:
    """Scale-and-shift-invariant loss (V1 Eq. 1-3; V2 uses trim=0.1 on pseudo-labels). Notebook 02.

    pred, target (B, H, W) disparity-like maps, mask (B, H, W) bool.
    align="median":  r = |pred_hat - target_hat|, x_hat = (x - med_V x) / mean_V |x - med_V x|
    align="lstsq":   r = (s * pred + b - target)^2 with (s, b) the per-image least-squares fit
    trim in [0, 1):  per image, drop valid pixels with r strictly above the (1 - trim) quantile of r
    reduction="batch": sum of kept r / number of kept pixels over the batch;
    reduction="image": mean over images of each image's mean kept r.
    Images with < 2 valid pixels, zero MAD or a singular fit contribute nothing; if none
    contributes the result is a differentiable 0.
    """
    mask = _check(pred, target, mask)
    _check_ssi_args(trim, reduction)
    R, mask = aligned_residual(pred, target, mask, align)
    return _ssi_from_residual(R, mask, align, trim, reduction)


def gradient_matching_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    scales: int = 4,
    align: str = "median",
    reduction: str = "batch",
) -> Tensor:
    """Multi-scale gradient matching on the aligned residual R (MiDaS Eq. 11). Notebook 03.

    For k = 0..scales-1, with R_k = R[:, ::2^k, ::2^k] and M_k likewise, S_k = sum |R_k[x+1] - R_k[x]|
    + sum |R_k[y+1] - R_k[y]|, each difference counted only where both pixels are valid, C_k = |M_k|:
    reduction="batch": sum_k (sum_i S_k,i) / (sum_i C_k,i)   (sums over the batch; MiDaS' default)
    reduction="image": mean over images with valid pixels of sum_k S_k,i / C_k,i (exact under DDP)
    pred, target (B, H, W), mask (B, H, W) bool.
    """
    mask = _check(pred, target, mask)
    if reduction not in ("batch", "image"):
        raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")
    R, mask = aligned_residual(pred, target, mask, align)
    return _gm_from_residual(R, mask, scales, reduction)


def depth_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    align: str = "median",
    trim: float = 0.0,
    gm_weight: float = 2.0,
    scales: int = 4,
    reduction: str = "batch",
    weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """L = ssi_loss + gm_weight * gradient_matching_loss (V2 uses 1:2), aligning each image once.

    Returns {"ssi", "gm", "total"}; "ssi" and "gm" equal `ssi_loss(...)` and
    `gradient_matching_loss(...)` with the same arguments (reduction applies to both). The trim
    applies to the SSI term. weights (B,) (reduction="image" only): a weighted mean over images,
    sum_i w_i L_i / sum_i w_i; the CutMix loss of notebook 06 weights each region by its area.
    Used by `dalib.train` (notebooks 04 and 06).
    """
    mask = _check(pred, target, mask)
    _check_ssi_args(trim, reduction)
    if weights is not None and (reduction != "image" or weights.shape != pred.shape[:1]):
        raise ValueError(f"weights {tuple(weights.shape)} need reduction='image' and one weight per image "
                         f"({pred.shape[0]}), got reduction={reduction!r}")
    R, mask = aligned_residual(pred, target, mask, align)
    ssi = _ssi_from_residual(R, mask, align, trim, reduction, weights)
    gm = _gm_from_residual(R, mask, scales, reduction, weights) if gm_weight else R.new_zeros(())
    return {"ssi": ssi, "gm": gm, "total": ssi + gm_weight * gm}


def cutmix_regions(pred: Tensor, target: Tensor, mask: Tensor, mixed: Sequence[tuple], shares: Sequence[int]):
    """Each CutMix image as its two regions, for `depth_loss` with per-entry weights (V1 Sec. 3.2). Notebook 06.

    pred, target, mask: (b, H, W); mixed: [(i, p, top, left, h, w)]: image i received the box (top, left, h, w)
    of image p; shares: images of each source, in batch order. A mixed image's loss is
        L_i = (1 - a) L(pred_i, target_i on mask_i outside the box) + a L(pred_i, target_p on mask_p inside the box),
    a = box area / image area: each region is aligned on its own, since the two labels have unrelated scale and
    shift. Returns (pred, target, mask, weights, shares) with one entry more per mixed image, placed after its
    source's entries so that sources stay contiguous; weights (entries,) float32, None when nothing is mixed.
    """
    shares = list(shares)
    if not mixed:
        return pred, target, mask, None, shares
    n, H, W = pred.shape
    weight = torch.ones(n, device=pred.device, dtype=torch.float32)
    ends = [sum(shares[:k + 1]) for k in range(len(shares))]
    in_box = torch.zeros(n, H, W, dtype=torch.bool, device=pred.device)
    extra: list[list] = [[] for _ in shares]
    for i, p, top, left, h, w in mixed:
        in_box[i, top:top + h, left:left + w] = True
        a = h * w / (H * W)
        weight[i] = 1.0 - a
        extra[next(k for k, e in enumerate(ends) if i < e)].append((i, p, a))
    outside = mask & ~in_box  # entry i keeps the region outside its box
    order, rows, masks, weights, new_shares = [], [], [], [], []
    start = 0
    for k, e in enumerate(ends):
        order += list(range(start, e))
        rows += list(range(start, e))
        masks.append(outside[start:e])
        weights.append(weight[start:e])
        for i, p, a in extra[k]:
            order.append(i)
            rows.append(p)
            masks.append(mask[p:p + 1] & in_box[i:i + 1])  # the partner's labelled pixels inside i's box
            weights.append(torch.full((1,), a, device=pred.device))
        new_shares.append(e - start + len(extra[k]))
        start = e
    order_t, rows_t = torch.tensor(order, device=pred.device), torch.tensor(rows, device=pred.device)
    return pred[order_t], target[rows_t], torch.cat(masks), torch.cat(weights), new_shares


def feature_alignment_loss(student_feats: Tensor, frozen_feats: Tensor, *, margin: float = 0.15) -> Tensor:
    """1 - mean cosine similarity between student and frozen-encoder tokens (V1 Eq. 5). Notebook 06.

    student_feats, frozen_feats: (B, N, C) patch tokens (channels last). Tokens already within the
    tolerance margin (1 - cos < margin; V1's alpha = 1 - margin = 0.85) are ignored, so the student
    keeps freedom where the frozen features are not depth-discriminative. Returns a differentiable 0
    when every token is within the margin. The frozen features get no gradient.
    """
    if student_feats.shape != frozen_feats.shape or student_feats.dim() != 3:
        raise ValueError(
            f"student_feats {tuple(student_feats.shape)} and frozen_feats {tuple(frozen_feats.shape)} "
            "must both be (B, N, C)"
        )
    dist = 1.0 - F.cosine_similarity(student_feats, frozen_feats.detach(), dim=-1, eps=1e-6)
    # margin <= 0 keeps every token (1 - cos can round to just below 0 for identical features)
    keep = dist.detach() >= margin if margin > 0 else torch.ones_like(dist, dtype=torch.bool)
    return torch.where(keep, dist, torch.zeros_like(dist)).sum() / keep.sum().clamp_min(1)

"""Straightforward per-image reference of the loss semantics: a Python loop over images, boolean
indexing, numpy-style median/quantile. Independent of dalib.losses' vectorised code; the tests
compare against it and benchmarks/bench_losses.py times against it."""
from __future__ import annotations

import torch


def _median(x):
    xs = x.sort().values
    n = xs.numel()
    return 0.5 * (xs[(n - 1) // 2] + xs[n // 2])


def _aligned(p, t, align):
    """Signed residual on the valid pixels of one image, or None when the image cannot be aligned."""
    if p.numel() < 2:
        return None
    if align == "median":
        mp, mt = _median(p), _median(t)
        sp, st = (p - mp).abs().mean(), (t - mt).abs().mean()
        if sp == 0 or st == 0:
            return None
        return (p - mp) / sp - (t - mt) / st
    A = torch.stack([p, torch.ones_like(p)], 1)
    M = A.T @ A  # 2x2 normal equations
    if torch.linalg.det(M).abs() <= torch.finfo(p.dtype).eps * M[0, 0] * M[1, 1]:
        return None
    s, b = torch.linalg.solve(M, A.T @ t)
    return s * p + b - t


def ssi_loss_loop(pred, target, mask, align="median", trim=0.0, reduction="batch"):
    nums, cnts = [], []
    for i in range(pred.shape[0]):
        m = mask[i]
        r = _aligned(pred[i][m], target[i][m], align)
        if r is None:
            continue
        r = r.abs() if align == "median" else r**2
        if trim > 0:
            thr = torch.quantile(r.detach(), 1 - trim)
            r = r[r.detach() <= thr]
        nums.append(r.sum())
        cnts.append(r.numel())
    if not nums:
        return (pred * 0).sum()
    if reduction == "batch":
        return torch.stack(nums).sum() / sum(cnts)
    return torch.stack([n / c for n, c in zip(nums, cnts)]).mean()


def gradient_matching_loss_loop(pred, target, mask, scales=4, align="median"):
    residuals = []  # aligned once per image, then subsampled per scale
    for i in range(pred.shape[0]):
        m = mask[i]
        r = _aligned(pred[i][m], target[i][m], align)
        if r is not None:
            residuals.append((torch.zeros_like(pred[i]).masked_scatter(m, r), m))
    total = pred.new_zeros(())
    for k in range(scales):
        step = 2**k
        num, cnt = pred.new_zeros(()), 0
        for R, m in residuals:
            R, mk = R[::step, ::step], m[::step, ::step]
            mx = mk[:, 1:] & mk[:, :-1]
            my = mk[1:, :] & mk[:-1, :]
            num = num + (R[:, 1:] - R[:, :-1]).abs()[mx].sum() + (R[1:, :] - R[:-1, :]).abs()[my].sum()
            cnt += int(mk.sum())
        if cnt:
            total = total + num / cnt
    return total

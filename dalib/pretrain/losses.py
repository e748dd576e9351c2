"""The self-supervised losses: DINO on CLS tokens, iBOT on masked patch tokens, KoLeo, MAE's pixel loss,
the teacher's targets (Sinkhorn-Knopp or centering) and the entropies that tell a learning teacher from a
uniform or collapsed one. Logits are (n, K) cosines from `DINOHead`; probabilities are rows summing to 1."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def sinkhorn_knopp(logits: Tensor, temp: float, iters: int = 3) -> Tensor:
    """Teacher targets (n, K): softmax(logits / temp) balanced so that every prototype receives 1/K of the
    batch's mass and every sample 1/n (SwAV; DINOv2's `sinkhorn_knopp_teacher`), rows rescaled to sum to 1.

    Q = exp(l / temp)^T (K, n); repeat: Q <- Q / rowsum / K, Q <- Q / colsum / n; return n Q^T.
    """
    q = torch.exp((logits.float() - logits.float().max()) / temp).t()  # the max only scales Q, undone below
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k  # each prototype (row) gets 1/K
        q = q / q.sum(dim=0, keepdim=True) / n  # each sample (column) gets 1/n
    return (q * n).t()


def centered_softmax(logits: Tensor, center: Tensor, temp: float) -> Tensor:
    """Teacher targets with DINO's centering: softmax((logits - center) / temp), center (1, K)."""
    return F.softmax((logits.float() - center) / temp, dim=-1)


@torch.no_grad()
def update_center(center: Tensor, logits: Tensor, momentum: float) -> None:
    """center <- m center + (1 - m) mean_i logits_i (in place; DINO's centre of the teacher's logits)."""
    if len(logits):
        center.mul_(momentum).add_(logits.float().mean(0, keepdim=True), alpha=1 - momentum)


def dino_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], temp: float) -> Tensor:
    """DINO's multi-crop cross-entropy, averaged over images and over view pairs.

    student: logits (B, K) of every view the student saw, the global crops first; teacher: targets (B, K) of
    the global crops, in the same order. For each pair (teacher view u, student view v), u != v:
    H(t_u, s_v) = -sum_k t_u,k log softmax(s_v / temp)_k.
    """
    total, pairs = 0.0, 0
    for v, s in enumerate(student):
        logp = F.log_softmax(s.float() / temp, dim=-1)
        for u, t in enumerate(teacher):
            if u == v:  # the same crop: nothing to predict
                continue
            total = total + (-(t * logp).sum(-1)).mean()
            pairs += 1
    return total / max(pairs, 1)


def ibot_loss(student: Tensor, teacher: Tensor, image: Tensor, temp: float) -> Tensor:
    """iBOT's masked-patch cross-entropy: mean over the images with masked patches of the mean over those
    patches of H(t, s) = -sum_k t_k log softmax(s / temp)_k.

    student: logits (M, K) of the masked patches (the student saw the mask token there); teacher: targets
    (M, K) from the unmasked crop at the same patches; image: (M,) long, which image each patch belongs to.
    """
    if len(student) == 0:
        return student.sum() * 0.0
    ce = -(teacher * F.log_softmax(student.float() / temp, dim=-1)).sum(-1)
    counts = torch.bincount(image)
    weight = 1.0 / counts[image].float()  # each image's patches share weight 1
    return (ce * weight).sum() / (counts > 0).sum()


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo regulariser (Sablayrolles et al. 2019; DINOv2): -mean_i log(min_{j != i} |z_i - z_j| + eps),
    z = x / |x|, x (n, C). Spreads the features of a batch apart."""
    z = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = z @ z.t()
        dots.fill_diagonal_(-2.0)  # never one's own neighbour
        nearest = dots.argmax(dim=1)
    dist = F.pairwise_distance(z, z[nearest], p=2, eps=eps)
    return -torch.log(dist + eps).mean()


def mae_loss(pred: Tensor, patches: Tensor, masked: Tensor) -> Tensor:
    """MAE's loss with normalised-pixel targets: mean over masked patches of mean_j (pred_j - y_j)^2, where
    y = (p - mean(p)) / sqrt(var(p) + 1e-6) per patch p of the input (`heads.patchify`).
    pred, patches (B, N, D); masked (B, N) bool, the patches the encoder did not see."""
    mean, var = patches.float().mean(-1, keepdim=True), patches.float().var(-1, keepdim=True)
    target = (patches.float() - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return per_patch[masked].mean()


@torch.no_grad()
def entropies(p: Tensor) -> tuple[float, float]:
    """(mean per-sample entropy, entropy of the batch-mean distribution) of probabilities p (n, K), nats.

    A uniform teacher gives (ln K, ln K); a collapsed one (0, 0); a useful one a low first and a high second.
    """
    p = p.float()
    per_sample = -torch.xlogy(p, p).sum(-1).mean()
    mean = p.mean(0)
    return float(per_sample), float(-torch.xlogy(mean, mean).sum())

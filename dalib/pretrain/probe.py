"""What a frozen encoder knows before any depth training (notebook 04_encoder_pretraining):

    tokens = patch_tokens(model, images, size=(84, 84))          # (N, h, w, C) final patch tokens, frozen
    rgb = pca_rgb(tokens)                                          # (N, h, w, 3): the DINOv2 paper's picture
    probe = linear_depth_probe(model, train, test, size=(84, 84))  # a linear map from tokens to disparity

`pca_rgb` projects the tokens of all images on their first three principal components (one PCA for all
images, so a colour means the same direction in every image): an encoder that has learnt parts gives the
parts of one surface one colour. `linear_depth_probe` fits a ridge regression from a token to the mean
normalised disparity of its 14 x 14 patch on training images and scores it on test images like a model
(`dalib.evaluate.input_dependence`: AbsRel against the image's own ground truth and against another image's).
A probe that reads the image loses when shuffled; one that learnt only the average layout does not.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dalib.disparity import depth_to_disparity, normalize_disparity
from dalib.evaluate import input_dependence
from dalib.images import PATCH, preprocess_batch, to_rgb_float
from dalib.model import evaluating


@torch.no_grad()
def patch_tokens(model, images: Sequence, size: tuple[int, int], batch_size: int = 32) -> torch.Tensor:
    """Final patch tokens (N, h, w, C) of `model`'s encoder for images resized to `size` (multiples of 14;
    bicubic, ImageNet-normalised as for inference), on the CPU in float32."""
    h, w = size[0] // PATCH, size[1] // PATCH
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(preprocess_batch([to_rgb_float(im) for im in images[i:i + batch_size]], size))
            t = model.encode_patch_tokens(x.to(device)).float().cpu()
            out.append(t.reshape(len(t), h, w, -1))
    return torch.cat(out)


def pca_rgb(tokens: torch.Tensor) -> np.ndarray:
    """(N, h, w, C) tokens -> (N, h, w, 3) in [0, 1]: the first three principal components of all tokens together
    (torch.pca_lowrank on the centred tokens), each scaled to [0, 1] over its 1st-99th percentile."""
    n, h, w, c = tokens.shape
    x = tokens.reshape(-1, c).double()
    x = x - x.mean(0)
    _, _, v = torch.pca_lowrank(x, q=3, center=False, niter=6)
    p = (x @ v).numpy()
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    return np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1).reshape(n, h, w, 3).astype(np.float32)


def patch_disparity(depth: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth on the token grid: depth (N, H, W) metres resized to `size` (nearest), each 14 x 14 patch's
    mean over its valid pixels of disparity 1 / depth -> (that disparity normalised per image to [0, 1], the probe's
    target (N, h, w); depth 1 / mean disparity, the score's ground truth, 0 where less than half the patch is
    valid)."""
    d = torch.as_tensor(np.asarray(depth, np.float32))[:, None]
    m = torch.as_tensor(np.asarray(mask, bool))[:, None].float()
    d = F.interpolate(d, size=size, mode="nearest")[:, 0]
    m = F.interpolate(m, size=size, mode="nearest")[:, 0] > 0.5
    m = m & (d > 0)
    frac = F.avg_pool2d(m[:, None].float(), PATCH)[:, 0]
    disp = F.avg_pool2d(depth_to_disparity(d, m)[:, None], PATCH)[:, 0] / frac.clamp_min(1e-6)
    valid = frac >= 0.5
    target = normalize_disparity(torch.where(valid, disp, torch.zeros_like(disp)), valid)
    patch_depth = torch.where(valid, 1.0 / disp.clamp_min(1e-6), torch.zeros_like(disp))
    return target.numpy(), patch_depth.numpy()


def linear_depth_probe(model, train: dict, test: dict, size: tuple[int, int], ridge: float = 1e-2) -> dict:
    """Ridge regression from frozen final patch tokens to per-patch normalised disparity (`patch_disparity`),
    fitted on `train` and scored on `test` ({"image", "depth", "mask"} arrays, as `dalib.evaluate.dataset_arrays`
    gives) with `input_dependence`: {"abs_rel", "abs_rel_shuffled", "gain", "n_images", "train_abs_rel"}.

    w = argmin |X w - y|^2 + ridge n |w|^2 over the valid training patches, X = [tokens, 1] standardised."""
    x_tr, x_te = patch_tokens(model, train["image"], size), patch_tokens(model, test["image"], size)
    y_tr, d_tr = patch_disparity(train["depth"], train["mask"], size)
    _, d_te = patch_disparity(test["depth"], test["mask"], size)
    valid = torch.as_tensor(d_tr > 0)
    x = x_tr[valid].double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    a = torch.cat([(x - mu) / sd, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = torch.as_tensor(y_tr)[valid].double()
    w = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=torch.float64), a.T @ y)

    def predict(tokens: torch.Tensor) -> np.ndarray:
        z = (tokens.double() - mu) / sd
        return (z @ w[:-1] + w[-1]).clamp_min(1e-3).float().numpy()  # disparity > 0 for the metrics

    out = input_dependence(predict(x_te), d_te, d_te > 0)
    out["train_abs_rel"] = input_dependence(predict(x_tr), d_tr, d_tr > 0)["abs_rel"]
    return out

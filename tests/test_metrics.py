"""dalib.metrics: hand-computed values and an independent numpy implementation of the definitions."""
import math

import numpy as np
import pytest
import torch

from dalib.metrics import METRIC_KEYS, edge_precision_recall, eval_depth, ordinal_accuracy, per_image_depth_metrics


def numpy_metrics(pred_disp, gt, valid):
    """The standard depth metrics (Eigen et al. 2014, as evaluated by MiDaS and Depth Anything; notebook 07),
    one image at a time, with numpy's least squares."""
    out = {k: [] for k in METRIC_KEYS}
    for p, t, m in zip(pred_disp, gt, valid):
        p, t = p[m].astype(np.float64), t[m].astype(np.float64)
        if p.size < 2:
            continue
        A = np.stack([p, np.ones_like(p)], 1)
        (s, b), *_ = np.linalg.lstsq(A, 1 / t, rcond=None)
        d = np.clip(s * p + b, 1 / t.max(), 1 / t.min())
        q = 1 / d
        g = np.log(t) - np.log(q)
        r = np.maximum(t / q, q / t)
        vals = dict(
            abs_rel=np.mean(np.abs(q - t) / t), sq_rel=np.mean((q - t) ** 2 / t), rmse=np.sqrt(np.mean((q - t) ** 2)),
            rmse_log=np.sqrt(np.mean(g**2)), log10=np.mean(np.abs(np.log10(q) - np.log10(t))),
            silog=np.sqrt(np.mean(g**2) - 0.5 * np.mean(g) ** 2),
            delta1=np.mean(r < 1.25), delta2=np.mean(r < 1.25**2), delta3=np.mean(r < 1.25**3),
        )
        for k, v in vals.items():
            out[k].append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_hand_computed_constant_prediction():
    gt = torch.tensor([[[1.0, 2.0]]])
    pred = torch.tensor([[[0.3, 0.3]]])  # no information: aligned to the mean GT disparity 0.75 -> depth 4/3
    m = eval_depth(pred, gt)
    assert m["abs_rel"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 18))
    assert m["delta1"] == 0.0 and m["delta2"] == 1.0 and m["delta3"] == 1.0


def test_perfect_up_to_affine_disparity():
    gt = torch.rand(3, 12, 14, dtype=torch.float64) * 20 + 1
    m = eval_depth(2.5 / gt + 0.7, gt, torch.ones_like(gt, dtype=torch.bool))
    assert m["abs_rel"] < 1e-9 and m["rmse"] < 1e-8 and m["delta1"] == 1.0 and m["silog"] < 1e-6


def test_matches_independent_numpy_definitions():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 16, 16, generator=g) * 30 + 0.5
    gt[0, :3] = 0  # invalid GT
    gt[1, 0, 0] = float("nan")
    pred = 1 / gt.nan_to_num(1.0).clamp_min(0.5) + 0.2 * torch.rand(4, 16, 16, generator=g)
    mask = torch.rand(4, 16, 16, generator=g) > 0.2
    got = eval_depth(pred, gt, mask)
    valid = (torch.isfinite(gt) & (gt > 0) & mask).numpy()
    want = numpy_metrics(pred.numpy(), gt.numpy(), valid)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k


def test_clamping_and_explicit_depth_range():
    gt = torch.tensor([[[1.0, 2.0, 4.0, 100.0]]])
    pred = torch.tensor([[[4.0, 1.0, 0.0, -50.0]]])  # aligns to negative disparity at the far pixel
    per, _ = per_image_depth_metrics(pred, gt)
    assert all(math.isfinite(v.item()) for v in per.values())
    # with max_depth 10 the 100 m pixel leaves the evaluation and the clamp is at 1/10
    a = eval_depth(pred, gt, max_depth=10.0)
    b = eval_depth(pred[..., :3], gt[..., :3], min_depth=None, max_depth=10.0)
    assert a == pytest.approx(b)


def test_skips_images_without_two_valid_pixels_and_errors_when_none():
    gt = torch.ones(2, 3, 3) * 2
    gt[1] = 0
    gt[1, 0, 0] = 3.0
    pred = torch.rand(2, 3, 3)
    both = eval_depth(pred, gt)
    first = eval_depth(pred[:1], gt[:1])
    assert both == pytest.approx(first)
    with pytest.raises(ValueError, match="2 or more valid"):
        eval_depth(pred, torch.zeros_like(gt))


def test_ordinal_accuracy():
    gt = torch.rand(2, 20, 20, dtype=torch.float64) * 10 + 1
    assert ordinal_accuracy(1 / gt, gt) == 1.0
    assert ordinal_accuracy(-1 / gt, gt) == 0.0
    acc = ordinal_accuracy(torch.rand(2, 20, 20, dtype=torch.float64), gt, pairs_per_image=4000)
    assert 0.4 < acc < 0.6
    with pytest.raises(ValueError):
        ordinal_accuracy(gt, torch.zeros_like(gt))


def test_region_metrics_align_on_the_whole_image():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 10, 10, generator=g, dtype=torch.float64) * 5 + 1
    pred = 1 / gt
    region = torch.zeros(2, 10, 10, dtype=torch.bool)
    region[:, :3] = True
    pred_bad = pred.clone()
    pred_bad[:, :3] = 0.5  # wrong only inside the region
    whole = eval_depth(pred_bad, gt)
    inside = eval_depth(pred_bad, gt, region=region)
    outside = eval_depth(pred_bad, gt, region=~region)
    assert inside["abs_rel"] > whole["abs_rel"] > outside["abs_rel"] > 0
    # same numbers as the independent implementation when the region is everything
    assert eval_depth(pred_bad, gt, region=torch.ones_like(region)) == pytest.approx(whole)
    region[1] = False  # the second image has no region pixel: skipped
    first_only = eval_depth(pred_bad, gt, region=region)
    assert first_only == pytest.approx(eval_depth(pred_bad[:1], gt[:1], region=region[:1]))
    with pytest.raises(ValueError):
        eval_depth(pred_bad, gt, region=torch.zeros_like(region))


def steps_scene(B=2, H=24, W=30):
    """Piecewise-constant depth: a far wall with two nearer boxes (sharp depth edges), some invalid pixels."""
    gt = torch.full((B, H, W), 8.0, dtype=torch.float64)
    gt[:, 4:12, 5:14] = 3.0
    gt[:, 14:22, 16:27] = 5.0
    gt[-1, 2:20, 2:6] = 1.5
    gt[:, 0, :] = 0  # invalid row (sky)
    return gt


def test_edges_perfect_and_affine_invariant():
    gt = steps_scene()
    disp = 1 / gt.clamp_min(1e-6)
    for pred in (disp, 3.0 * disp + 0.2, 1e-3 * disp - 5.0):
        r = edge_precision_recall(pred, gt)
        assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0) and r["f1"] == pytest.approx(1.0)
    assert r["n_images"] == 2


def test_edges_constant_and_flipped_predictions():
    gt = steps_scene()
    r = edge_precision_recall(torch.ones_like(gt), gt)
    assert r["recall"] == 0.0 and r["f1"] == 0.0 and math.isnan(r["precision"])  # no predicted edge at all
    # depth instead of disparity: the alignment flips the sign, the edges are still found...
    flipped = edge_precision_recall(gt, gt)
    assert flipped["recall"] < 1.0  # ...but not all of them with the right depth ratio and direction


def test_edges_blur_loses_precision_or_recall():
    gt = steps_scene()
    disp = (1 / gt.clamp_min(1e-6)).float()
    blurred = torch.nn.functional.avg_pool2d(disp[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    r = edge_precision_recall(blurred, gt, gt > 0)
    assert r["precision"] < 0.9 or r["recall"] < 0.9
    assert r["f1"] < 0.9


def test_edges_counts_by_hand_and_thresholds():
    gt = torch.tensor([[[1.0, 1.0, 2.0]]], dtype=torch.float64)  # one edge, between pixels 1 and 2
    r = edge_precision_recall(1 / gt, gt, thresholds=(1.5,))
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0)
    # a threshold above the ratio 2: no GT edge in any image -> recall and F1 undefined
    r = edge_precision_recall(1 / gt, gt, thresholds=(2.5,))
    assert math.isnan(r["recall"]) and math.isnan(r["f1"]) and r["n_images"] == 0
    with pytest.raises(ValueError, match="ratios > 1"):
        edge_precision_recall(1 / gt, gt, thresholds=(0.9,))


def test_edges_mask_excludes_pairs():
    gt = steps_scene(B=1)
    m = torch.ones_like(gt, dtype=torch.bool)
    m[:, :, 10:] = False  # right part unlabelled: its edges neither count nor hurt
    noisy = 1 / gt.clamp_min(1e-6)
    noisy[:, :, 10:] = torch.rand(noisy[:, :, 10:].shape, dtype=torch.float64)
    r = edge_precision_recall(noisy, gt, m)
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0)


def test_edges_shape_errors_are_named():
    gt = steps_scene()
    with pytest.raises(ValueError, match="pred_disp .* gt_depth"):
        edge_precision_recall(gt[:, :, :-1], gt)
    with pytest.raises(ValueError, match="mask"):
        edge_precision_recall(gt, gt, torch.ones(2, 3, 3, dtype=torch.bool))
    single = edge_precision_recall(1 / gt[0].clamp_min(1e-6), gt[0])  # (H, W) works as a batch of one
    assert single["f1"] == pytest.approx(1.0)


def test_aligned_depth_inverts_the_alignment_and_clamps():
    from dalib.metrics import aligned_depth

    gt = steps_scene()
    d = aligned_depth(2.0 / gt.clamp_min(1e-6) + 1.0, gt)
    valid = gt > 0
    assert torch.allclose(d[valid], gt[valid]) and (d[~valid] == 0).all()
    far = aligned_depth(torch.tensor([[4.0, 1.0, 0.0, -50.0]]), torch.tensor([[1.0, 2.0, 4.0, 100.0]]))
    assert far.shape == (1, 4) and float(far.min()) >= 1.0 and float(far.max()) <= 100.0


# ----------------------------------------------------------------------------- bad inputs: one clear error each
def test_eval_depth_names_tensors_with_a_channel_axis():
    gt = 1.0 + torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"pred_disp \(2, 1, 8, 8\) and gt_depth \(2, 1, 8, 8\): expected \(B, H, W\)"):
        eval_depth(1 / gt, gt, torch.ones(2, 1, 8, 8, dtype=torch.bool))

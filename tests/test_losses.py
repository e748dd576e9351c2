"""dalib.losses: hand-computed values, the per-image reference, invariances (hypothesis), gradients."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dalib.losses import (
    depth_loss,
    feature_alignment_loss,
    gradient_matching_loss,
    masked_median,
    masked_quantile,
    ssi_loss,
)
from loop_reference import gradient_matching_loss_loop, ssi_loss_loop

ALIGNS = ["median", "lstsq"]


def t(vals, dtype=torch.float64):
    return torch.tensor(vals, dtype=dtype)


# ----------------------------------------------------------------------------- hand-computed values
def test_ssi_median_hand_computed():
    pred = t([[[1.0, 2.0], [3.0, 10.0]]])
    target = t([[[0.0, 1.0], [2.0, 3.0]]])
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    # pred: med 2.5, mad 2.5 -> [-0.6, -0.2, 0.2, 3.0]; target: med 1.5, mad 1 -> [-1.5, -0.5, 0.5, 1.5]
    # r = [0.9, 0.3, 0.3, 1.5], mean 0.75
    assert ssi_loss(pred, target, mask).item() == pytest.approx(0.75, abs=1e-12)
    # trim 0.25: 0.75-quantile of r = 0.9 + 0.25 * (1.5 - 0.9) = 1.05 -> keep [0.9, 0.3, 0.3], mean 0.5
    assert ssi_loss(pred, target, mask, trim=0.25).item() == pytest.approx(0.5, abs=1e-12)
    # masking the outlier leaves [1,2,3] vs [0,1,2]: an exact shift, loss 0
    mask[0, 1, 1] = False
    assert ssi_loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_ssi_lstsq_hand_computed():
    pred = t([[[0.0, 1.0], [2.0, 3.0]]])
    target = t([[[1.0, 3.0], [5.0, 10.0]]])
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    # s = cov/var = 14.5/5 = 2.9, b = 4.75 - 2.9*1.5 = 0.4; residuals [-0.6, 0.3, 1.2, -0.9]; mean square 0.675
    assert ssi_loss(pred, target, mask, align="lstsq").item() == pytest.approx(0.675, abs=1e-12)


def test_gradient_matching_hand_computed():
    target = t([[[0.0, 1.0], [2.0, 3.0]]])
    pred = t([[[1.0, 0.0], [1.0, 4.0]]])  # target + [1,-1,-1,1]
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    # lstsq: s = 5/9, b = 2/3, R = [[11, -3], [-7, -1]] / 9
    # gx: 14/9, 6/9; gy: 18/9, 2/9 -> 40/9 over 4 valid pixels = 10/9; the 2x-subsampled scale has no pairs
    for scales in (1, 2):
        got = gradient_matching_loss(pred, target, mask, align="lstsq", scales=scales)
        assert got.item() == pytest.approx(10 / 9, abs=1e-12)
    assert ssi_loss(pred, target, mask, align="lstsq").item() == pytest.approx(180 / 324, abs=1e-12)


def test_gradient_matching_counts_only_pairs_of_valid_pixels():
    target = torch.zeros(1, 1, 4, dtype=torch.float64)
    pred = t([[[0.0, 1.0, 0.0, 5.0]]])
    mask = t([[[1, 1, 0, 1]]]).bool()
    # median align of pred over valid {0,1,5}: med 1, mad (1+0+4)/3; target is constant -> mad 0 -> no contribution
    assert gradient_matching_loss(pred, target, mask, scales=1).item() == 0.0
    target = t([[[0.0, 2.0, 9.0, 4.0]]])  # valid target {0,2,4}: med 2, mad 4/3 -> [-1.5, 0, 1.5]
    # pred valid {0,1,5}: med 1, mad 5/3 -> [-0.6, 0, 2.4]; R = [0.9, 0, *, 0.9]; only pair (0,1) is valid: 0.9
    got = gradient_matching_loss(pred, target, mask, scales=1)
    assert got.item() == pytest.approx(0.9 / 3, abs=1e-12)


def test_masked_median_and_quantile_match_numpy_definitions():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 51, generator=g, dtype=torch.float64)
    m = torch.rand(6, 51, generator=g) > 0.5
    m[0] = False
    m[1] = False
    m[1, 3] = True  # a single valid entry
    med = masked_median(x, m)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        qs = masked_quantile(x, m, q)
        for i in range(6):
            v = x[i][m[i]].numpy()
            if v.size:
                assert qs[i].item() == pytest.approx(np.quantile(v, q), abs=1e-12)
    for i in range(6):
        v = x[i][m[i]].numpy()
        assert med[i].item() == (pytest.approx(np.median(v), abs=1e-12) if v.size else 0.0)


# ----------------------------------------------------------------------------- against the per-image loop
@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("trim", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_matches_per_image_loop(align, trim, reduction):
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(5, 13, 17, generator=g, dtype=torch.float64)
    target = torch.rand(5, 13, 17, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 13, 17, generator=g) > 0.3
    mask[2] = False  # empty image
    mask[3] = False
    mask[3, 0, 0] = True  # one valid pixel
    target[4] = 0.5  # constant target -> zero mad / no variation
    a = ssi_loss(pred, target, mask, align=align, trim=trim, reduction=reduction)
    b = ssi_loss_loop(pred, target, mask, align=align, trim=trim, reduction=reduction)
    assert a.item() == pytest.approx(b.item(), rel=1e-10)
    ga = gradient_matching_loss(pred, target, mask, align=align)
    gb = gradient_matching_loss_loop(pred, target, mask, align=align)
    assert ga.item() == pytest.approx(gb.item(), rel=1e-10)


# ----------------------------------------------------------------------------- properties
maps = st.integers(min_value=0, max_value=2**31 - 1)


def _random_case(seed, b=3, h=9, w=11):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, h, w, generator=g, dtype=torch.float64) + 0.1
    target = torch.rand(b, h, w, generator=g, dtype=torch.float64) + 0.1
    mask = torch.rand(b, h, w, generator=g) > 0.25
    return pred, target, mask


@settings(max_examples=25, deadline=None)
@given(seed=maps, a=st.floats(0.05, 20.0), shift=st.floats(-5.0, 5.0), align=st.sampled_from(ALIGNS))
def test_invariant_to_affine_change_of_prediction(seed, a, shift, align):
    pred, target, mask = _random_case(seed)
    for loss in (ssi_loss, gradient_matching_loss):
        base = loss(pred, target, mask, align=align)
        moved = loss(a * pred + shift, target, mask, align=align)
        assert moved.item() == pytest.approx(base.item(), rel=1e-7, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=maps, align=st.sampled_from(ALIGNS), trim=st.sampled_from([0.0, 0.1]))
def test_unchanged_when_masked_out_pixels_change(seed, align, trim):
    pred, target, mask = _random_case(seed)
    g = torch.Generator().manual_seed(seed + 1)
    junk = torch.randn(pred.shape, generator=g, dtype=torch.float64) * 1e3
    p2 = torch.where(mask, pred, junk)
    t2 = torch.where(mask, target, -junk)
    assert ssi_loss(p2, t2, mask, align=align, trim=trim).item() == ssi_loss(pred, target, mask, align=align, trim=trim).item()
    assert gradient_matching_loss(p2, t2, mask, align=align).item() == gradient_matching_loss(pred, target, mask, align=align).item()


@settings(max_examples=25, deadline=None)
@given(seed=maps, a=st.floats(0.05, 20.0), shift=st.floats(-5.0, 5.0), align=st.sampled_from(ALIGNS))
def test_zero_when_prediction_is_affine_in_target(seed, a, shift, align):
    _, target, mask = _random_case(seed)
    pred = a * target + shift
    assert ssi_loss(pred, target, mask, align=align).item() == pytest.approx(0.0, abs=1e-9)
    assert gradient_matching_loss(pred, target, mask, align=align).item() == pytest.approx(0.0, abs=1e-8)


@settings(max_examples=20, deadline=None)
@given(seed=maps, align=st.sampled_from(ALIGNS), trim=st.sampled_from([0.0, 0.1]))
def test_batch_and_image_reductions_agree_with_equal_valid_counts(seed, align, trim):
    pred, target, _ = _random_case(seed)
    g = torch.Generator().manual_seed(seed)
    # the same number of valid pixels in every image, at different places
    mask = torch.stack([torch.randperm(99, generator=g) < 70 for _ in range(3)]).reshape(3, 9, 11)
    a = ssi_loss(pred, target, mask, align=align, trim=trim, reduction="batch")
    b = ssi_loss(pred, target, mask, align=align, trim=trim, reduction="image")
    assert a.item() == pytest.approx(b.item(), rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=maps, align=st.sampled_from(ALIGNS), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       n_bad=st.integers(1, 40), trim=st.sampled_from([0.0, 0.1]))
def test_non_finite_targets_count_as_unlabelled(seed, align, bad, n_bad, trim):
    """A NaN/inf target pixel inside the mask gives exactly the loss and gradient of masking it out."""
    pred, target, mask = _random_case(seed)
    g = torch.Generator().manual_seed(seed + 7)
    where = torch.zeros(target.numel(), dtype=torch.bool)
    where[torch.randperm(target.numel(), generator=g)[:n_bad]] = True
    where = where.reshape(target.shape)
    poisoned = target.masked_fill(where, bad)
    for loss in (ssi_loss, gradient_matching_loss, lambda *a, **k: depth_loss(*a, **k)["total"]):
        kw = dict(align=align) if loss is gradient_matching_loss else dict(align=align, trim=trim)
        p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
        got = loss(p1, poisoned, mask, **kw)
        want = loss(p2, target, mask & ~where, **kw)
        (g1,), (g2,) = torch.autograd.grad(got, p1), torch.autograd.grad(want, p2)
        assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
        assert torch.isfinite(g1).all() and torch.allclose(g1, g2, rtol=1e-10, atol=1e-12)


def test_trim_drops_the_top_share_of_residuals():
    pred, target, mask = _random_case(3, b=4, h=40, w=40)
    full = ssi_loss(pred, target, mask)
    trimmed = ssi_loss(pred, target, mask, trim=0.1)
    assert trimmed < full
    # kept share per image ~ 90%: compare with the reference that counts explicitly
    assert trimmed.item() == pytest.approx(ssi_loss_loop(pred, target, mask, trim=0.1).item(), rel=1e-10)


@pytest.mark.parametrize("align", ALIGNS)
def test_gradcheck_float64(align):
    pred, target, mask = _random_case(7, b=2, h=6, w=7)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: ssi_loss(p, target, mask, align=align, trim=0.1), (pred,))
    assert torch.autograd.gradcheck(lambda p: gradient_matching_loss(p, target, mask, align=align), (pred,))
    assert torch.autograd.gradcheck(
        lambda p: ssi_loss(p, target, mask, align=align, reduction="image"), (pred,)
    )


# ----------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("align", ALIGNS)
def test_nan_and_inf_under_the_mask_never_leak(align):
    pred, target, mask = _random_case(11)
    p2, t2 = pred.clone(), target.clone()
    p2[~mask] = float("nan")
    t2[~mask] = float("inf")
    p2.requires_grad_(True)
    for loss in (ssi_loss, gradient_matching_loss):
        val = loss(p2, t2, mask, align=align)
        (grad,) = torch.autograd.grad(val, p2)
        assert torch.isfinite(val) and torch.isfinite(grad).all()
        assert val.item() == pytest.approx(loss(pred, target, mask, align=align).item(), rel=1e-12)
        assert (grad[~mask] == 0).all()


@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_empty_mask_and_constant_target_give_differentiable_zero(align, reduction):
    pred = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 5, 5, dtype=torch.float64)
    empty = torch.zeros(2, 5, 5, dtype=torch.bool)
    for loss in (
        lambda p, tt, m: ssi_loss(p, tt, m, align=align, reduction=reduction, trim=0.1),
        lambda p, tt, m: gradient_matching_loss(p, tt, m, align=align),
    ):
        val = loss(pred, target, empty)
        assert val.item() == 0.0 and val.requires_grad
        (grad,) = torch.autograd.grad(val, pred)
        assert (grad == 0).all()
    const = torch.full_like(target, 2.0)
    full = torch.ones(2, 5, 5, dtype=torch.bool)
    if align == "median":  # zero MAD of the target: the image contributes nothing
        assert ssi_loss(pred, const, full, align=align, reduction=reduction).item() == 0.0
    const_pred = torch.full_like(pred, 0.3).requires_grad_(True)  # singular fit / zero MAD of the prediction
    val = ssi_loss(const_pred, target, full, align=align, reduction=reduction)
    (grad,) = torch.autograd.grad(val, const_pred)
    assert val.item() == 0.0 and torch.isfinite(grad).all()


def test_one_bad_image_does_not_change_the_others():
    pred, target, mask = _random_case(5)
    mask2 = mask.clone()
    mask2[1] = False
    mask2[1, 0, 0] = True
    only = ssi_loss(pred[[0, 2]], target[[0, 2]], mask[[0, 2]])
    assert ssi_loss(pred, target, mask2).item() == pytest.approx(only.item(), rel=1e-12)


def test_float32_large_batch_is_finite_and_close_to_float64():
    pred, target, mask = _random_case(9, b=4, h=64, w=64)
    for align in ALIGNS:
        a = ssi_loss(pred.float(), target.float(), mask, align=align)
        b = ssi_loss(pred, target, mask, align=align)
        assert math.isfinite(a.item()) and a.item() == pytest.approx(b.item(), rel=1e-4)


def test_bad_arguments_are_named():
    p = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="align"):
        ssi_loss(p, p, p > 0, align="mean")
    with pytest.raises(ValueError, match="trim"):
        ssi_loss(p, p, p > 0, trim=1.0)
    with pytest.raises(ValueError, match="reduction"):
        ssi_loss(p, p, p > 0, reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        ssi_loss(p, p[:, :3], p > 0)
    with pytest.raises(ValueError, match=r"\(B,H,W\)"):
        gradient_matching_loss(p[0], p[0], p[0] > 0)


# ----------------------------------------------------------------------------- feature alignment
def test_feature_alignment_margin_and_gradients():
    g = torch.Generator().manual_seed(0)
    frozen = torch.randn(2, 10, 8, generator=g)
    student = frozen.clone()
    student[0, :5] = -frozen[0, :5]  # 1 - cos = 2 on 5 tokens; the other 15 tokens are identical (1 - cos = 0)
    student.requires_grad_(True)
    loss = feature_alignment_loss(student, frozen, margin=0.15)
    assert loss.item() == pytest.approx(2.0, abs=1e-5)  # mean over the 5 tokens outside the margin only
    no_margin = feature_alignment_loss(student, frozen, margin=0.0)
    assert no_margin.item() == pytest.approx(10 / 20, abs=1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[1].abs().sum() == 0
    same = feature_alignment_loss(frozen.clone().requires_grad_(True), frozen)
    assert same.item() == 0.0 and same.requires_grad
    with pytest.raises(ValueError, match="B, N, C"):
        feature_alignment_loss(student[0], frozen[0])


@pytest.mark.parametrize("align", ALIGNS)
def test_depth_loss_combines_the_two_terms(align):
    pred, target, mask = _random_case(13)
    out = depth_loss(pred, target, mask, align=align, trim=0.1, gm_weight=2.0)
    ssi = ssi_loss(pred, target, mask, align=align, trim=0.1)
    gm = gradient_matching_loss(pred, target, mask, align=align)
    assert out["ssi"].item() == pytest.approx(ssi.item(), rel=1e-12)
    assert out["gm"].item() == pytest.approx(gm.item(), rel=1e-12)
    assert out["total"].item() == pytest.approx(ssi.item() + 2 * gm.item(), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=maps, levels=st.integers(1, 5))
def test_masked_median_with_ties_matches_numpy(seed, levels):
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (4, 13), generator=g).double()  # many ties
    m = torch.rand(4, 13, generator=g) > 0.3
    med = masked_median(x, m)
    for i in range(4):
        v = x[i][m[i]].numpy()
        assert med[i].item() == (np.median(v) if v.size else 0.0)


@pytest.mark.parametrize("align", ALIGNS)
def test_gradient_matching_image_reduction_is_the_mean_of_single_images(align):
    pred, target, mask = _random_case(17, b=4, h=16, w=20)
    mask[1] = False  # an image without valid pixels is left out of the mean
    per = [gradient_matching_loss(pred[i:i + 1], target[i:i + 1], mask[i:i + 1], align=align) for i in (0, 2, 3)]
    got = gradient_matching_loss(pred, target, mask, align=align, reduction="image")
    assert got.item() == pytest.approx(sum(p.item() for p in per) / 3, rel=1e-12)
    full = torch.ones_like(mask)  # equal valid counts at every scale: both reductions agree
    a = gradient_matching_loss(pred, target, full, align=align, reduction="image")
    b = gradient_matching_loss(pred, target, full, align=align, reduction="batch")
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    out = depth_loss(pred, target, mask, align=align, reduction="image")
    assert out["gm"].item() == pytest.approx(got.item(), rel=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        gradient_matching_loss(pred, target, mask, reduction="sum")

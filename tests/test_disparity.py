"""dalib.disparity: inversion, validity, per-image normalisation."""
import torch

from dalib.disparity import depth_to_disparity, disparity_to_depth, normalize_disparity, valid_depth_mask


def test_depth_to_disparity_values_and_invalid_pixels():
    depth = torch.tensor([[[2.0, 4.0, 0.0], [float("nan"), float("inf"), -1.0]]])
    d = depth_to_disparity(depth)
    assert torch.equal(d, torch.tensor([[[0.5, 0.25, 0.0], [0.0, 0.0, 0.0]]]))
    valid = torch.tensor([[[True, False, True], [True, True, True]]])
    assert torch.equal(depth_to_disparity(depth, valid), torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]]))
    assert torch.equal(valid_depth_mask(depth), torch.tensor([[[True, True, False], [False, False, False]]]))


def test_round_trip_and_gradient_is_finite():
    depth = (torch.rand(2, 5, 6, dtype=torch.float64) * 50 + 0.5).requires_grad_(True)
    assert torch.allclose(disparity_to_depth(depth_to_disparity(depth)), depth)
    bad = depth.detach().clone()
    bad[0, 0, 0] = 0.0
    bad.requires_grad_(True)
    depth_to_disparity(bad).sum().backward()
    assert torch.isfinite(bad.grad).all() and bad.grad[0, 0, 0] == 0


def test_normalize_disparity_per_image():
    disp = torch.tensor([[[1.0, 2.0], [3.0, 5.0]], [[7.0, 7.0], [7.0, 100.0]], [[0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[[True, True], [True, True]], [[True, True], [True, False]], [[False, False], [False, False]]])
    n = normalize_disparity(disp, valid)
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(n[1], torch.zeros(2, 2))  # all valid values equal -> 0, no NaN; masked 100 ignored
    assert torch.equal(n[2], torch.zeros(2, 2))  # no valid pixel
    assert n.min() >= 0 and n.max() <= 1


def test_normalize_is_affine_invariant_and_ignores_masked_values():
    g = torch.Generator().manual_seed(0)
    disp = torch.rand(3, 8, 8, generator=g)
    valid = torch.rand(3, 8, 8, generator=g) > 0.3
    junk = torch.where(valid, disp, torch.full_like(disp, float("nan")))
    a = normalize_disparity(disp, valid)
    assert torch.allclose(normalize_disparity(4.0 * disp + 3.0, valid), a, atol=1e-6)
    assert torch.equal(normalize_disparity(junk, valid), a)
    assert (a[~valid] == 0).all()
    for i in range(3):
        v = a[i][valid[i]]
        assert v.max().item() == 1.0 and v.min().item() == 0.0

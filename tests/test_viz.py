"""dalib.viz: pinhole back-projection and the point-cloud plot (notebook 07)."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch

from dalib.viz import backproject, plot_point_cloud


def test_backproject_by_hand():
    depth = np.full((2, 4), 2.0, np.float32)
    depth[0, 0] = 0  # invalid
    pts = backproject(depth, fx=2.0, fy=4.0, cx=2.0, cy=1.0)
    assert pts.shape == (2, 4, 3)
    assert np.isnan(pts[0, 0]).all()
    # pixel (u=3, v=1): centre (3.5, 1.5) -> X = (3.5 - 2) * 2 / 2 = 1.5, Y = (1.5 - 1) * 2 / 4 = 0.25, Z = 2
    np.testing.assert_allclose(pts[1, 3], [1.5, 0.25, 2.0])
    # default principal point: the image centre, so the cloud is symmetric about the optical axis
    sym = backproject(np.ones((3, 4)), fx=1.0)
    np.testing.assert_allclose(sym[..., 0], -sym[..., ::-1, 0])
    np.testing.assert_allclose(sym[..., 1], -sym[::-1, :, 1])


def test_backproject_is_consistent_with_projection_and_batched():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 5, 6, generator=g) * 4 + 1
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[1, 2, 3] = False
    pts = backproject(depth, fx=7.0, fy=6.0, cx=3.1, cy=2.4, mask=mask)
    assert pts.shape == (2, 5, 6, 3) and np.isnan(pts[1, 2, 3]).all()
    u = pts[..., 0] / pts[..., 2] * 7.0 + 3.1 - 0.5  # project back
    np.testing.assert_allclose(u[0], np.broadcast_to(np.arange(6), (5, 6)), atol=1e-4)


def test_plot_point_cloud_runs_headless():
    pts = backproject(np.random.default_rng(0).uniform(1, 3, (8, 10)), fx=8.0)
    colors = np.zeros((8, 10, 3), np.uint8)
    fig = plot_point_cloud(pts, colors, max_points=30, title="t")
    ax = fig.axes[0]
    assert ax.collections and len(ax.collections[0].get_offsets()) <= 30
    import matplotlib.pyplot as plt

    plt.close(fig)

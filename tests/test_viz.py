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


def test_colorize_by_hand():
    import matplotlib

    from dalib.viz import colorize

    d = np.linspace(0.0, 1.0, 101, dtype=np.float32).reshape(1, 101)
    mask = np.ones_like(d, bool)
    mask[0, 50] = False
    d[0, 60] = np.nan
    rgb = colorize(d, mask, cmap="viridis", vmin=0.0, vmax=1.0)
    assert rgb.shape == (1, 101, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 50] == 0).all() and (rgb[0, 60] == 0).all()  # masked and non-finite pixels are black
    want = (matplotlib.colormaps["viridis"](np.array([0.0, 0.25, 1.0]))[:, :3] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb[0, [0, 25, 100]], want)
    # default range: 2nd..98th percentile of the valid pixels, so the ends saturate and the middle is mid-colour
    auto = colorize(torch.arange(100.0).reshape(10, 10), cmap="viridis")
    low, high = (matplotlib.colormaps["viridis"]([0.0, 1.0])[:, :3] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(auto[0, 0], low)
    np.testing.assert_array_equal(auto[9, 9], high)
    # near is warm with the default map: the largest disparity is redder than the smallest
    warm = colorize(np.array([[0.0, 1.0]]))
    assert int(warm[0, 1, 0]) - int(warm[0, 1, 2]) > int(warm[0, 0, 0]) - int(warm[0, 0, 2])
    assert (colorize(np.full((2, 2), np.nan)) == 0).all()  # nothing valid: all black, no warning


def test_show_grid_layout_titles_and_colour_maps():
    import matplotlib.pyplot as plt

    from dalib.viz import show_grid

    ims = [np.zeros((4, 5)), np.ones((4, 5, 3)), torch.rand(4, 5), np.zeros((4, 5))]
    fig = show_grid(ims, titles=["a", "b", "c", "d"], ncols=3, cmap="magma")
    axes = fig.axes
    assert len(axes) == 6 and fig.get_size_inches().tolist() == [9.0, 6.0]  # 2 rows x 3 columns of 3 inches
    assert [ax.get_title() for ax in axes[:4]] == ["a", "b", "c", "d"]
    assert [len(ax.images) for ax in axes] == [1, 1, 1, 1, 0, 0]  # the two spare cells stay empty
    assert axes[0].images[0].get_cmap().name == "magma"  # 2-D maps use the colour map
    assert axes[1].images[0].get_array().shape == (4, 5, 3)  # RGB shown as is
    plt.close(fig)

"""Pictures of depth: colourised disparity, image grids, widgets that degrade to static plots.

Used by every notebook and by `python -m dalib predict`. Nothing here is needed for training.
"""
from __future__ import annotations

import os
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    """Tensor (any device/dtype) or array -> float numpy array (a no-op for numpy input)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def colorize(disp, mask=None, cmap: str = "Spectral_r", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H, W) disparity -> (H, W, 3) uint8 RGB; near (large disparity) is warm with "Spectral_r".

    The range is the 2nd..98th percentile of valid pixels unless vmin/vmax are given; invalid
    pixels (mask False or non-finite) are black.
    """

    d = to_numpy(disp).astype(np.float64)
    valid = np.isfinite(d) if mask is None else (to_numpy(mask).astype(bool) & np.isfinite(d))
    if valid.any():
        lo = np.percentile(d[valid], 2) if vmin is None else vmin
        hi = np.percentile(d[valid], 98) if vmax is None else vmax
    else:
        lo, hi = 0.0, 1.0
    x = np.clip((np.where(valid, d, lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = matplotlib.colormaps[cmap](x)[..., :3]
    rgb[~valid] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


def show_grid(images, titles=None, ncols: int | None = None, size: float = 3.0, cmap: str | None = None):
    """Plot a list of (H, W) or (H, W, 3) arrays in a grid; returns the matplotlib figure."""

    images = [to_numpy(im) for im in images]
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            im = images[i]
            ax.imshow(im, cmap=cmap if im.ndim == 2 else None)
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def has_widget_frontend() -> bool:
    """True inside a live Jupyter front end that can show ipywidgets; False under papermill/nbval/scripts."""
    try:
        from IPython import get_ipython  # local import: IPython only inside a notebook kernel

        ip = get_ipython()
        if ip is None or "IPKernelApp" not in ip.config:
            return False

        # papermill and nbval execute headless; they set no front end. JPY_SESSION_NAME is set by
        # JupyterLab / Notebook servers for kernels they start.
        return bool(os.environ.get("JPY_SESSION_NAME")) and not os.environ.get("DALIB_HEADLESS")
    except Exception:
        return False


SLIDER_WIDTH = "520px"   # width of the sliders made by interactive_or_static


def show_markdown(text: str) -> None:
    """Show Markdown (a results table, a list of claims) rendered in a notebook; print it elsewhere.

    In a Jupyter kernel (JupyterLab, papermill, nbval) the output is `IPython.display.Markdown`, which
    JupyterLab draws as an HTML table or list and which keeps `text` as its `text/markdown` form; outside
    IPython the text is printed as it is. Notebooks 00, 04, 05 and 07.
    """
    try:
        from IPython import get_ipython  # local import: IPython only inside a notebook kernel
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def interactive_or_static(plot: Callable[..., None], static_values: dict, **sliders) -> None:
    """Show `plot(**values)` with ipywidgets sliders when a front end exists, else once with `static_values`.

    `sliders` map argument names to ipywidgets (or `(min, max, step)` tuples); the same cell works in
    JupyterLab (interactive) and under papermill/nbval (a static plot).
    """
    if has_widget_frontend():
        import ipywidgets as widgets  # local import: ipywidgets only inside a notebook kernel

        controls = {}
        for name, spec in sliders.items():
            if isinstance(spec, tuple):
                # wide sliders: at the default ~125 px a small drag jumps across the whole range
                spec = widgets.FloatSlider(value=static_values[name], min=spec[0], max=spec[1], step=spec[2],
                                           description=name, layout=widgets.Layout(width=SLIDER_WIDTH),
                                           style={"description_width": "initial"})
            controls[name] = spec
        widgets.interact(plot, **controls)
    else:
        plot(**static_values)


def plot_residual_scales(residual, mask, scales: int = 4, size: float = 2.8, title: str | None = None):
    """Show what gradient matching looks at: the residual R and |dR/dx| + |dR/dy| at strides 1, 2, 4, ...

    residual, mask: (H, W) (e.g. one image of `dalib.losses.aligned_residual`). Row 1: R subsampled with
    stride 2**k; row 2: the per-pixel sum of absolute differences to the right and lower neighbour,
    counted only where both pixels are valid, as `dalib.losses.gradient_matching_loss` sums them (the loss
    values themselves come from dalib.losses). Notebook 03. Returns the matplotlib figure.
    """

    R = torch.as_tensor(to_numpy(residual))
    M = torch.as_tensor(to_numpy(mask)).bool()
    lim = float(R[M].abs().quantile(0.99)) if M.any() else 1.0
    fig, axes = plt.subplots(2, scales, figsize=(size * scales, size * 1.6), squeeze=False)
    for k in range(scales):
        r, m = R[:: 2**k, :: 2**k], M[:: 2**k, :: 2**k]
        g = torch.zeros_like(r)
        mx, my = m[:, 1:] & m[:, :-1], m[1:, :] & m[:-1, :]
        g[:, :-1] += torch.where(mx, (r[:, 1:] - r[:, :-1]).abs(), torch.zeros(()))
        g[:-1, :] += torch.where(my, (r[1:, :] - r[:-1, :]).abs(), torch.zeros(()))
        axes[0, k].imshow(np.where(m.numpy(), r.numpy(), np.nan), cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[0, k].set_title(f"R, stride {2**k} ({r.shape[0]}x{r.shape[1]})", fontsize=9)
        axes[1, k].imshow(g.numpy(), cmap="magma", vmin=0, vmax=max(lim, 1e-12))
        axes[1, k].set_title(f"|dR/dx| + |dR/dy|, stride {2**k}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def backproject(depth, fx: float, fy: float | None = None, cx: float | None = None, cy: float | None = None,
                mask=None) -> np.ndarray:
    """Pinhole back-projection of planar depth to camera-frame points. Notebook 07 (point clouds).

    depth: (..., H, W) metres along the optical axis; fx, fy: focal lengths in pixels (fy defaults to fx);
    cx, cy: principal point in pixels (defaults: the image centre). Pixel (u, v) has its centre at
    (u + 1/2, v + 1/2), as in `dalib.synth` (whose `meta` column stores fx, fy, cx, cy). Returns (..., H, W, 3)
    float32 points X = (u + 1/2 - cx) z / fx (right), Y = (v + 1/2 - cy) z / fy (down), Z = z (forward);
    NaN where the depth is invalid (not finite, <= 0, or False in `mask`).
    """
    z = to_numpy(depth).astype(np.float32)
    H, W = z.shape[-2:]
    fy = fx if fy is None else fy
    cx = W / 2 if cx is None else cx
    cy = H / 2 if cy is None else cy
    valid = np.isfinite(z) & (z > 0)
    if mask is not None:
        valid &= to_numpy(mask).astype(bool)
    z = np.where(valid, z, np.nan)
    u = (np.arange(W, dtype=np.float32) + 0.5 - cx) / fx
    v = (np.arange(H, dtype=np.float32) + 0.5 - cy) / fy
    return np.stack([z * u[None, :], z * v[:, None], z], axis=-1)


def plot_point_cloud(points, colors=None, *, ax=None, max_points: int = 6000, size: float = 2.0,
                     title: str | None = None, elev: float = 20.0, azim: float = -70.0):
    """3-D scatter of (H, W, 3) or (N, 3) camera-frame points (NaN rows skipped), coloured by (.., 3) uint8
    colours when given. Drawn with Z (depth) into the screen and -Y up, so the scene stands upright;
    a regular subsample keeps at most `max_points`. Returns the matplotlib figure."""

    p = to_numpy(points).reshape(-1, 3)
    keep = np.isfinite(p).all(axis=1)
    c = None if colors is None else (to_numpy(colors).reshape(-1, 3)[keep] / 255.0)
    p = p[keep]
    step = max(1, int(np.ceil(len(p) / max_points)))
    p = p[::step]
    c = None if c is None else c[::step]
    if ax is None:
        fig = plt.figure(figsize=(5, 4))
        ax = fig.add_subplot(projection="3d")
    fig = ax.figure
    ax.scatter(p[:, 0], p[:, 2], -p[:, 1], c=c, s=size, depthshade=False, linewidths=0)
    ax.set(xlabel="X (m)", ylabel="Z, depth (m)", zlabel="-Y (m)")
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title, fontsize=9)
    return fig

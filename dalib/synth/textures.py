"""Texture atlas for the synthetic scenes (notebook 00_depth_data).

One atlas holds every texture as linear-RGB albedo, shape (K, S, S, 3) float32, S = 128, plus a
mip pyramid (levels S, S/2, ..., S/16) so that distant surfaces do not alias. Textures 0..K_p-1 are
procedural (value noise, stripes / planks, checkers, bricks, tiles, flat); the rest are crops of the
photographs bundled with scikit-image (`skimage.data`), used by the `"photo"` style as a proxy for
real-world appearance. Everything is generated from a fixed seed, so the atlas is identical in
every process.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import skimage.data
import torch

TEX_SIZE = 128  # texels per side of one texture (level 0)
MIP_LEVELS = 5  # 128, 64, 32, 16, 8

# name of every procedural texture, in atlas order
PROCEDURAL = ("flat", "noise_fine", "noise_coarse", "planks", "checker", "bricks", "tiles", "stripes",
              "marble", "speckle")
# skimage.data photographs (all bundled with the package, no download) used as photo crops
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
           "retina", "brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "clock",
           "cat")
CROPS_PER_PHOTO = 2


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable value noise in [0, 1], (size, size): bilinear interpolation of a cells x cells lattice."""
    lat = rng.random((cells, cells))
    x = np.arange(size) * cells / size
    i0 = np.floor(x).astype(int)
    f = x - i0
    f = f * f * (3 - 2 * f)  # smoothstep fade
    i1 = (i0 + 1) % cells
    rows = lat[i0][:, i0] * (1 - f)[None, :] + lat[i0][:, i1] * f[None, :]
    rows1 = lat[i1][:, i0] * (1 - f)[None, :] + lat[i1][:, i1] * f[None, :]
    return rows * (1 - f)[:, None] + rows1 * f[:, None]


def _fbm(rng: np.random.Generator, size: int, base: int, octaves: int) -> np.ndarray:
    """Fractal (multi-octave) value noise in [0, 1]."""
    out = np.zeros((size, size))
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        out += amp * _value_noise(rng, size, base * 2 ** o)
        tot += amp
        amp *= 0.5
    return out / tot


def _procedural(rng: np.random.Generator, name: str, s: int) -> np.ndarray:
    """One greyscale-ish pattern in [0, 1], (s, s, 3); colour comes from the primitive's albedo."""
    y, x = np.mgrid[0:s, 0:s] / s
    n = _fbm(rng, s, 4, 4)
    if name == "flat":
        g = np.full((s, s), 0.9)
    elif name == "noise_fine":
        g = 0.55 + 0.45 * _fbm(rng, s, 16, 3)
    elif name == "noise_coarse":
        g = 0.35 + 0.65 * n
    elif name == "planks":  # wooden floor: 4 planks with grain and dark joints
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (x * 3 + 0.6 * _fbm(rng, s, 8, 2)) * 4)
        joint = (np.mod(y * 4, 1.0) < 0.04)
        g = 0.6 + 0.3 * grain * (0.7 + 0.3 * n)
        g[joint] = 0.25
    elif name == "checker":
        g = np.where((np.floor(x * 4) + np.floor(y * 4)) % 2 == 0, 0.95, 0.3)
    elif name == "bricks":
        row = np.floor(y * 8)
        xs = x * 4 + 0.5 * (row % 2)
        mortar = (np.mod(y * 8, 1.0) < 0.12) | (np.mod(xs, 1.0) < 0.06)
        g = np.where(mortar, 0.95, 0.55 + 0.35 * n)
    elif name == "tiles":
        line = (np.mod(x * 4, 1.0) < 0.05) | (np.mod(y * 4, 1.0) < 0.05)
        g = np.where(line, 0.3, 0.85 + 0.1 * n)
    elif name == "stripes":
        g = np.where(np.mod(x * 8, 1.0) < 0.5, 0.9, 0.45)
    elif name == "marble":
        g = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * (x + y + 1.5 * n)))
    elif name == "speckle":
        g = np.where(rng.random((s, s)) < 0.08, 0.2, 0.8) * (0.8 + 0.2 * n)
    else:  # pragma: no cover - the names are fixed above
        raise ValueError(name)
    g = np.clip(g, 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)


def _photo_crops(rng: np.random.Generator, s: int) -> list[np.ndarray]:
    """Random square crops of the bundled skimage photographs, resized to (s, s, 3), linear RGB."""

    crops = []
    for name in _PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        img = img[..., :3].astype(np.float64) / 255.0
        h, w = img.shape[:2]
        for _ in range(CROPS_PER_PHOTO):
            c = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
            y0 = int(rng.integers(0, h - c + 1))
            x0 = int(rng.integers(0, w - c + 1))
            crop = cv2.resize(img[y0:y0 + c, x0:x0 + c], (s, s), interpolation=cv2.INTER_AREA)
            crops.append(crop ** 2.2)  # sRGB-ish -> linear
    return crops


@functools.lru_cache(maxsize=1)
def atlas_numpy() -> tuple[np.ndarray, int]:
    """(K, S, S, 3) float32 linear albedo in [0, 1], and the number of procedural textures."""
    rng = np.random.default_rng(20240615)
    tex = [_procedural(rng, name, TEX_SIZE) for name in PROCEDURAL]
    tex += _photo_crops(rng, TEX_SIZE)
    return np.stack(tex).astype(np.float32), len(PROCEDURAL)


def _mips(atlas: np.ndarray) -> np.ndarray:
    """Flattened mip pyramid: levels concatenated along texels, (sum_l K*S_l*S_l, 3)."""
    levels, cur = [], atlas
    for _ in range(MIP_LEVELS):
        levels.append(cur.reshape(-1, 3))
        k, s = cur.shape[:2]
        cur = cur.reshape(k, s // 2, 2, s // 2, 2, 3).mean(axis=(2, 4))
    return np.concatenate(levels).astype(np.float32)


_DEVICE_CACHE: dict[str, torch.Tensor] = {}


def atlas_tensor(device: torch.device | str) -> torch.Tensor:
    """The flattened mip pyramid on `device`, cached."""
    key = str(device)
    if key not in _DEVICE_CACHE:
        _DEVICE_CACHE[key] = torch.from_numpy(_mips(atlas_numpy()[0])).to(device)
    return _DEVICE_CACHE[key]


def num_textures() -> tuple[int, int]:
    """(number of procedural textures, number of photo crops)."""
    atlas, n_proc = atlas_numpy()
    return n_proc, atlas.shape[0] - n_proc


_LUT_CACHE: dict[str, tuple] = {}


def sample_texel(tex_id: torch.Tensor, u: torch.Tensor, v: torch.Tensor, level: torch.Tensor,
                 device: torch.device | str) -> torch.Tensor:
    """Nearest-texel lookup with wrap-around. tex_id, level (float holding integers), u, v (texture repeats)
    all the same shape (...) -> (..., 3).

    Mip level l has S_l = S / 2^l texels per side; texel (floor(frac(v) S_l), floor(frac(u) S_l)) with
    frac(u) = u - floor(u) (the texture repeats every unit). The flat index is computed in float32,
    exact because the atlas has fewer than 2^24 texels."""
    flat = atlas_tensor(device)
    key = str(device)
    if key not in _LUT_CACHE:
        k = atlas_numpy()[0].shape[0]
        sizes = [TEX_SIZE >> lev for lev in range(MIP_LEVELS)]
        offsets = np.cumsum([0] + [k * s * s for s in sizes[:-1]])
        _LUT_CACHE[key] = (torch.tensor(sizes, dtype=torch.float32, device=device),
                           torch.tensor(offsets, dtype=torch.float32, device=device))
    sizes, offsets = _LUT_CACHE[key]
    lev = level.long()
    s = sizes[lev]
    iu = torch.minimum(torch.floor((u - torch.floor(u)) * s), s - 1)
    iv = torch.minimum(torch.floor((v - torch.floor(v)) * s), s - 1)
    idx = offsets[lev] + (tex_id * s + iv) * s + iu
    return flat[idx.long()]

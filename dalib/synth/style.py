"""Appearance styles: linear radiance -> 8-bit sRGB image (notebook 00_depth_data).

- "clean": the synthetic domain the teacher trains on: exact linear colour -> sRGB, nothing else.
- "photo": a held-out proxy for real cameras, applied per sample with its own random parameters:
  white-balance gains, lens vignetting  V(r) = 1 / (1 + k r^2)^2  (cos^4-like fall-off), Gaussian optical
  blur, auto-exposure, signal-dependent sensor noise  sigma^2 = a x + b  (shot + read noise), sRGB tone
  curve, then JPEG compression at a random quality.
  Auto-exposure meters the light on the sensor as a camera does and scales it so that the log-average
  luminance  L_avg = exp(mean log(delta + L))  lands on the key value AE_KEY (Reinhard et al. 2002,
  "Photographic tone reproduction"), times a random exposure compensation (`exposure`, about +-1/2 stop),
  with the gain capped at AE_MAX_GAIN (a camera's longest exposure / highest ISO): very dark scenes stay
  dark. The ranges of `photo_params` are calibrated so that, at 128 px, the median brightness, contrast and
  noise of `photo` images match the offline real photographs (`dalib.imagestats.real_reference_images`):
  see notebook 00 section 5 and tests/test_synth.py.
Only exactly rounded tensor ops are used per pixel, the metering is a float64 numpy reduction of one
sample at a time and the sRGB curve is a lookup table, so a sample's image does not depend on the batch it
was rendered in.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

_LUT_SIZE = 4096
#: bump a style's number whenever the pixels it renders for the same seed change (built datasets become stale)
STYLE_VERSIONS = {"clean": 1, "photo": 2}
AE_KEY = 0.15  # linear log-average luminance the auto-exposure aims for (sRGB about 108 of 255)
AE_MAX_GAIN = 16.0  # largest auto-exposure gain (4 stops)
_AE_DELTA = 1e-4  # keeps log() finite on black pixels
_LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 / sRGB primaries, linear light


@functools.lru_cache(maxsize=None)
def _srgb_lut_np() -> np.ndarray:
    """uint8 sRGB encoding of linear values x = i / (LUT_SIZE - 1):
    12.92 x for x <= 0.0031308, else 1.055 x^(1/2.4) - 0.055."""
    x = np.arange(_LUT_SIZE) / (_LUT_SIZE - 1)
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


_LUT_CACHE: dict[str, torch.Tensor] = {}


def to_srgb8(lin: torch.Tensor) -> torch.Tensor:
    """Linear [0, 1] float (any shape) -> uint8 sRGB via the lookup table (values clipped to [0, 1])."""
    key = str(lin.device)
    if key not in _LUT_CACHE:
        _LUT_CACHE[key] = torch.from_numpy(_srgb_lut_np()).to(lin.device)
    idx = torch.floor(torch.clamp(lin, 0.0, 1.0) * (_LUT_SIZE - 1) + 0.5).long()
    return _LUT_CACHE[key][idx]


def photo_params(rng: np.random.Generator) -> dict:
    """Random camera-pipeline parameters of one "photo" sample (JSON-serialisable).

    exposure: compensation factor on top of the auto-exposure (0.71..1.41, +-1/2 stop, log-uniform);
    wb: per-channel white-balance gains; vignette: k of V(r); blur_sigma: px at the working size;
    shot, read: a and b of the noise variance a x + b (x linear, 1 = white); jpeg_quality: OpenCV quality."""
    return dict(
        exposure=float(np.exp(rng.uniform(np.log(2 ** -0.5), np.log(2 ** 0.5)))),
        wb=[float(x) for x in rng.uniform(0.8, 1.2, 3)],
        vignette=float(rng.uniform(0.15, 0.6)),
        blur_sigma=float(rng.uniform(0.4, 1.2)),
        shot=float(rng.uniform(0.003, 0.01)),
        read=float(rng.uniform(0.00001, 0.0001)),
        jpeg_quality=int(rng.integers(60, 93)),
        noise_seed=int(rng.integers(2**31 - 1)),
    )


def auto_exposure_gain(x: torch.Tensor) -> np.ndarray:
    """Auto-exposure gains of a batch of linear images x (n, H, W, 3) -> float64 (n,):
    g = min(AE_KEY / L_avg, AE_MAX_GAIN), L_avg = exp(mean log(delta + L)), L = 0.2126 R + 0.7152 G + 0.0722 B.
    One sample at a time in float64 numpy, so a gain does not depend on the batch."""
    gains = np.empty(len(x))
    for i in range(len(x)):
        rgb = x[i].detach().cpu().numpy().astype(np.float64)
        lum = _LUMINANCE[0] * rgb[..., 0] + _LUMINANCE[1] * rgb[..., 1] + _LUMINANCE[2] * rgb[..., 2]
        l_avg = np.exp(np.mean(np.log(_AE_DELTA + np.maximum(lum, 0.0))))
        gains[i] = min(AE_KEY / l_avg, AE_MAX_GAIN)
    return gains


def _blur_weights(sigma: float, radius: int = 2) -> np.ndarray:
    x = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def apply_photo(lin: torch.Tensor, params: list[dict]) -> np.ndarray:
    """Camera-pipeline simulation. lin (n, H, W, 3) linear float -> uint8 numpy (n, H, W, 3)."""

    n, H, W, _ = lin.shape
    dev = lin.device
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float64), dtype=torch.float32, device=dev)  # noqa: E731
    x = lin * f32([p["wb"] for p in params])[:, None, None, :]
    # vignetting V = 1 / (1 + k r^2)^2, r = distance from the centre / half diagonal
    yy = (torch.arange(H, device=dev, dtype=torch.float32) + 0.5 - H / 2) / (0.5 * (H * H + W * W) ** 0.5)
    xx = (torch.arange(W, device=dev, dtype=torch.float32) + 0.5 - W / 2) / (0.5 * (H * H + W * W) ** 0.5)
    r2 = yy[:, None] ** 2 + xx[None, :] ** 2
    k = f32([p["vignette"] for p in params])[:, None, None]
    q = 1.0 + k * r2[None]
    x = x / (q * q)[..., None]
    # separable Gaussian blur (5 taps, edge-replicated), as a fixed-order sum of shifted copies
    w = f32(np.stack([_blur_weights(p["blur_sigma"]) for p in params]))  # (n, 5)
    xp = torch.cat([x[:, :1], x[:, :1], x, x[:, -1:], x[:, -1:]], 1)
    x = sum(w[:, i, None, None, None] * xp[:, i:i + H] for i in range(5))
    xp = torch.cat([x[:, :, :1], x[:, :, :1], x, x[:, :, -1:], x[:, :, -1:]], 2)
    x = sum(w[:, i, None, None, None] * xp[:, :, i:i + W] for i in range(5))
    # exposure: auto-exposure gain (metered on the light reaching the sensor) times the compensation
    gain = auto_exposure_gain(x) * np.array([p["exposure"] for p in params])
    x = x * f32(gain)[:, None, None, None]
    # sensor noise: x + sqrt(a x + b) * N(0, 1), one generator per sample
    noise = torch.stack([torch.randn(H, W, 3, generator=torch.Generator().manual_seed(p["noise_seed"]))
                         for p in params]).to(dev)
    a = f32([p["shot"] for p in params])[:, None, None, None]
    b = f32([p["read"] for p in params])[:, None, None, None]
    x = x + torch.sqrt(a * torch.clamp(x, min=0.0) + b) * noise
    img = to_srgb8(x).cpu().numpy()
    out = np.empty_like(img)
    for i, p in enumerate(params):  # JPEG round trip (OpenCV stores BGR)
        ok, buf = cv2.imencode(".jpg", img[i, ..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, p["jpeg_quality"]])
        if not ok:  # pragma: no cover
            raise RuntimeError("JPEG encoding failed")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out

"""Sensor-label simulation: what a real stereo rig, LiDAR or RGB-D camera would have recorded for a
scene whose exact depth we know (notebook 00_depth_data; the V1-vs-V2 label argument).

All functions take planar depth in metres (0 = invalid), material ids (index into MATERIALS) and, where
it matters, `apparent_depth` (depth along the visible light path: background behind glass, reflected
path for mirrors). They return a float32 label of the same shape with 0 = no measurement (hole).
Arrays are (H, W) or (n, H, W); randomness comes only from the given numpy Generator.

stereo  disparity d = f B / z; measured d + N(0, sigma_d^2) -> depth noise std ~ z^2 sigma_d / (f B)
        (grows with depth squared); holes where the left pixel is occluded in the right view
        (running-min test on x - d(x)), where it leaves the right image, where the disparity is below
        the matcher's resolution, on the sky and (with `image`) on textureless patches; foreground
        fattening at depth edges (the matching window takes the nearer disparity); glass reports the
        background and mirrors the reflected path (apparent depth).
lidar   `beams` scan lines (image rows), each point returned with probability 1 - dropout, range
        limited to [min_range, max_range], N(0, sigma) range noise; the beam goes through glass and is
        reflected by mirrors (apparent depth).
rgbd    structured-light / ToF style: range [0.5, 10] m, holes on glass, mirrors, sky, dark surfaces
        (with `image`) and occlusion edges, noise sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 m
        (Kinect model of Nguyen et al. 2012), measured at 1/`scale` resolution and upsampled
        (a low-res pixel is valid only if its whole block is).
"""
from __future__ import annotations

import numpy as np

import cv2
from .scenes import MAT_ID

SENSOR_KINDS = ("stereo", "lidar", "rgbd")
_GLASS, _MIRROR, _SKY = MAT_ID["glass"], MAT_ID["mirror"], MAT_ID["sky"]


def _as_batch(name, x, dtype=None):
    a = np.asarray(x)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (n, H, W), got {a.shape}")
    a = a[None] if a.ndim == 2 else a
    return a.astype(dtype) if dtype is not None else a


def _luminance(image, shape):
    img = np.asarray(image)
    if img.shape[:-1] != shape or img.shape[-1] != 3:
        raise ValueError(f"image must have shape {shape + (3,)} (RGB matching depth), got {img.shape}")
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def _seen_depth(depth, material, apparent):
    """What an active/passive sensor sees: apparent depth on glass and mirrors (when known)."""
    if apparent is None:
        return depth.copy()
    return np.where((material == _GLASS) | (material == _MIRROR), apparent, depth).astype(np.float32)


def stereo(depth, material, rng, *, apparent_depth=None, image=None, focal_px=None, baseline=0.25,
           sigma_disp=0.15, min_disp=0.25, fatten_px=2, hole_prob=0.01):
    """Stereo-matching label (see module doc). focal_px defaults to the image width (about 53 deg FOV)."""
    n, H, W = depth.shape
    fB = (W if focal_px is None else focal_px) * baseline  # f B in pixel-metres: d = f B / z
    z = _seen_depth(depth, material, apparent_depth)
    valid = (z > 0) & (material != _SKY)
    disp = np.where(valid, fB / np.where(valid, z, 1.0), 0.0).astype(np.float32)
    # foreground fattening: near a depth edge the window's nearer (larger) disparity wins
    if fatten_px > 0:
        k = np.ones((1, 2 * fatten_px + 1), np.uint8)
        dmax = np.stack([cv2.dilate(d, k) for d in disp])
        edge = (dmax - disp) > 0.1 * np.maximum(dmax, 1e-6)
        disp = np.where(edge & (rng.random(disp.shape) < 0.8), dmax, disp)
    # occlusion (left reference): x is hidden in the right view if some x' > x lands at or left of it,
    # i.e. min_{x' > x} (x' - d(x')) < x - d(x)
    xs = np.arange(W, dtype=np.float32)
    proj = np.where(disp > 0, xs - disp, np.inf)
    right_min = np.minimum.accumulate(proj[..., ::-1], axis=-1)[..., ::-1]
    right_min = np.concatenate([right_min[..., 1:], np.full((n, H, 1), np.inf, np.float32)], -1)
    occluded = right_min < proj - 0.5
    hole = occluded | (proj < 0) | (disp < min_disp) | (rng.random(disp.shape) < hole_prob)
    if image is not None:  # textureless patches: local luminance std below 1% -> no match

        lum = _luminance(image, depth.shape)
        m1 = np.stack([cv2.blur(x, (5, 5)) for x in lum])
        m2 = np.stack([cv2.blur(x * x, (5, 5)) for x in lum])
        flat = np.sqrt(np.maximum(m2 - m1 * m1, 0)) < 0.01
        hole |= flat & (rng.random(disp.shape) < 0.7)
    noisy = disp + rng.normal(0.0, sigma_disp, disp.shape).astype(np.float32)
    ok = valid & ~hole & (noisy > min_disp)
    return np.where(ok, fB / np.where(ok, noisy, 1.0), 0.0).astype(np.float32)


def lidar(depth, material, rng, *, apparent_depth=None, image=None, beams=32, max_range=100.0, min_range=0.5,
          sigma=0.02, dropout=0.1):
    """LiDAR label: `beams` evenly spaced scan rows (random phase per image), sparse returns (see module doc)."""
    n, H, W = depth.shape
    z = _seen_depth(depth, material, apparent_depth)
    rows = np.zeros((n, H), bool)
    b = min(beams, H)
    for i in range(n):
        phase = rng.uniform(0, H / b)
        rows[i, np.minimum((phase + np.arange(b) * (H / b)).astype(int), H - 1)] = True
    ok = rows[:, :, None] & (z >= min_range) & (z <= max_range) & (material != _SKY)
    ok &= rng.random(z.shape) >= dropout
    if image is not None:  # dark surfaces return too little light half of the time
        ok &= ~((_luminance(image, depth.shape) < 0.05) & (rng.random(z.shape) < 0.5))
    noisy = z + rng.normal(0.0, sigma, z.shape).astype(np.float32)
    return np.where(ok & (noisy > 0), noisy, 0.0).astype(np.float32)


def rgbd(depth, material, rng, *, apparent_depth=None, image=None, min_range=0.5, max_range=10.0, scale=4,
         dark=0.08, hole_prob=0.02, upsample="nearest"):
    """RGB-D label: measured at 1/scale resolution with holes, upsampled (see module doc)."""
    n, H, W = depth.shape
    valid = (depth >= min_range) & (depth <= max_range)
    valid &= (material != _GLASS) & (material != _MIRROR) & (material != _SKY)
    if image is not None:
        valid &= ~((_luminance(image, depth.shape) < dark) & (rng.random(depth.shape) < 0.8))
    # occlusion-edge holes: the projector and camera see around depth edges differently
    pad = np.pad(depth, ((0, 0), (0, 0), (1, 1)), mode="edge")
    jump = np.abs(pad[..., 2:] - pad[..., :-2]) > 0.05 * np.maximum(depth, 1e-3)
    valid &= ~jump
    # low resolution: block of scale x scale; valid only if every pixel of the block is, value at its centre
    Hl, Wl = -(-H // scale), -(-W // scale)
    vp = np.zeros((n, Hl * scale, Wl * scale), bool)
    vp[:, :H, :W] = valid
    v_low = vp.reshape(n, Hl, scale, Wl, scale).all(axis=(2, 4))
    cy = np.minimum(np.arange(Hl) * scale + scale // 2, H - 1)
    cx = np.minimum(np.arange(Wl) * scale + scale // 2, W - 1)
    z_low = depth[:, cy][:, :, cx]
    sig = 0.0012 + 0.0019 * (z_low - 0.4) ** 2
    z_low = z_low + sig * rng.standard_normal(z_low.shape)
    v_low &= rng.random(z_low.shape) >= hole_prob
    if upsample == "nearest":
        z_up = np.repeat(np.repeat(np.where(v_low, z_low, 0), scale, 1), scale, 2)[:, :H, :W]
    elif upsample == "bilinear":
        zs = np.stack([cv2.resize(np.where(v, z, 0).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
                       for v, z in zip(v_low, z_low)])
        vs = np.stack([cv2.resize(v.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) for v in v_low])
        z_up = np.where(vs > 0.999, zs / np.maximum(vs, 1e-6), 0)  # only where all neighbours were valid
    else:
        raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
    return z_up.astype(np.float32)


_KINDS = {"stereo": stereo, "lidar": lidar, "rgbd": rgbd}


def simulate_sensor(depth, material, kind, rng, *, apparent_depth=None, image=None, **params):
    """Label a real `kind` sensor ("stereo" | "lidar" | "rgbd") would record. Notebook 00_depth_data.

    depth, material, apparent_depth: (H, W) or (n, H, W); image: matching (..., 3) uint8 RGB (optional,
    used for textureless / dark-surface holes); rng: numpy Generator; extra keyword `params` go to the
    sensor model (e.g. beams=64, max_range=120.0 for lidar). Returns float32 depth, 0 = no measurement."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {SENSOR_KINDS}, got {kind!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    squeeze = np.asarray(depth).ndim == 2
    d = _as_batch("depth", depth, np.float32)
    m = _as_batch("material", material)
    if m.shape != d.shape:
        raise ValueError(f"material has shape {np.shape(material)}, expected the depth's {np.shape(depth)}")
    a = None
    if apparent_depth is not None:
        a = _as_batch("apparent_depth", apparent_depth, np.float32)
        if a.shape != d.shape:
            raise ValueError(f"apparent_depth has shape {np.shape(apparent_depth)}, expected {np.shape(depth)}")
    img = None
    if image is not None:
        img = np.asarray(image)
        img = img[None] if squeeze else img
    out = _KINDS[kind](d, m, rng, apparent_depth=a, image=img, **params)
    return out[0] if squeeze else out

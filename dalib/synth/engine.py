"""`generate` / `iter_generate`: deterministic, chunked sample generation (notebook 00_depth_data).

Sample i of (kind, style, seed) is drawn from its own random stream
    numpy.random.default_rng(SeedSequence([seed, kind_id, style_id, i]))
and rendered with batch-independent arithmetic, so it is the same whether it is generated alone, in a
batch, as part of a shard starting at `start_index`, or in a worker process. `iter_generate` yields
chunks (memory independent of N) and can render them in worker processes (`workers=`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .samplers import sample
from .scenes import MATERIALS, SCENE_KINDS, STYLES, Scene
from .style import apply_photo, photo_params, to_srgb8
from dalib.synth.batch import pack
from dalib.synth.render import render_batch

_STREAM_SCENE, _STREAM_STYLE = 0, 1


def _rng(kind: str, style: str, seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed), SCENE_KINDS.index(kind), STYLES.index(style), int(index), stream]))


def _check(kind, n, seed, height, width, style, start_index):
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    for name, v, lo in (("n", n, 0), ("height", height, 1), ("width", width, 1), ("start_index", start_index, 0),
                        ("seed", seed, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def default_chunk(height: int, width: int) -> int:
    """Images rendered together: about 2^17 rays per chunk (bounded memory, cache-friendly temporaries)."""
    return int(max(1, min(64, (1 << 17) // (height * width))))


def _meta(s: Scene, kind, style, seed, index, height, width, extra=None) -> dict:
    fx, fy, cx, cy = s.intrinsics(height, width)
    counts = {m: 0 for m in MATERIALS[:-1]}
    for p in s.prims:
        counts[MATERIALS[p["material"]]] += 1
    m = dict(kind=kind, style=style, seed=int(seed), index=int(index), height=int(height), width=int(width),
             fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
             cam_pos=[float(x) for x in s.cam_pos], cam_rot=np.asarray(s.cam_rot, float).tolist(),
             light_dir=[float(x) for x in np.asarray(s.light_dir) / np.linalg.norm(s.light_dir)],
             light_rgb=[float(x) for x in s.light_rgb], ambient_rgb=[float(x) for x in s.ambient_rgb],
             n_prims=len(s.prims), prims_by_material=counts)
    if extra:
        m["camera_pipeline"] = extra
    return m


def render_scenes(scenes: list[Scene], height: int, width: int, *, style: str = "clean", style_params=None,
                  device="cpu") -> dict:
    """Render explicit `Scene`s (e.g. analytic test scenes) -> the same arrays as `generate` minus "meta".

    style_params: one dict per scene from `style.photo_params` when style == "photo"."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not scenes or not all(isinstance(s, Scene) for s in scenes):
        raise ValueError("scenes must be a non-empty list of dalib.synth.Scene")
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    out = render_batch(pack(scenes, height, width, device))
    if style == "photo":
        if style_params is None or len(style_params) != len(scenes):
            raise ValueError("style_params must hold one dict per scene for style='photo'")
        image = apply_photo(out["rgb"], style_params)
    else:
        image = to_srgb8(out["rgb"]).cpu().numpy()
    depth = out["depth"].cpu().numpy().astype(np.float32)
    return dict(image=image, depth=depth, mask=depth > 0, material=out["material"].to(torch.uint8).cpu().numpy(),
                apparent_depth=out["apparent_depth"].cpu().numpy().astype(np.float32))


def _render_chunk(kind, style, seed, height, width, device, idx) -> dict:
    scenes = [sample(kind, _rng(kind, style, seed, i, _STREAM_SCENE), style) for i in idx]
    params = [photo_params(_rng(kind, style, seed, i, _STREAM_STYLE)) for i in idx] if style == "photo" else None
    out = render_scenes(scenes, height, width, style=style, style_params=params, device=device)
    out["meta"] = [_meta(s, kind, style, seed, i, height, width, params[j] if params else None)
                   for j, (s, i) in enumerate(zip(scenes, idx))]
    return out


class _Chunks(torch.utils.data.Dataset):
    """Chunk j of a generation job, for DataLoader worker processes."""

    def __init__(self, args, ranges):
        self.args, self.ranges = args, ranges

    def __len__(self):
        return len(self.ranges)

    def __getitem__(self, j):
        return _render_chunk(*self.args, self.ranges[j])


def _identity(x):
    return x


def iter_generate(kind: str, n: int, *, seed: int, height: int, width: int, style: str = "clean",
                  start_index: int = 0, device="cpu", chunk: int | None = None, workers: int = 0) -> Iterator[dict]:
    """Like `generate`, but yields the samples in order, in chunks of `chunk` images (default
    `default_chunk`), so that building N samples streams with memory independent of N.

    workers > 0 renders chunks in that many worker processes (torch DataLoader, one thread each, CPU only);
    the samples are identical to workers=0."""
    _check(kind, n, seed, height, width, style, start_index)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    chunk = chunk or default_chunk(height, width)
    ranges = [range(i0, min(start_index + n, i0 + chunk)) for i0 in range(start_index, start_index + n, chunk)]
    args = (kind, style, seed, height, width, device)
    if workers == 0 or str(device) != "cpu" or len(ranges) < 2:
        for idx in ranges:
            yield _render_chunk(*args, idx)
        return
    loader = torch.utils.data.DataLoader(_Chunks(args, ranges), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(ranges)), collate_fn=_identity,
                                         prefetch_factor=2)
    yield from loader


def generate(kind: str, n: int, *, seed: int, height: int, width: int, style: str = "clean", start_index: int = 0,
             device="cpu", workers: int = 0) -> dict:
    """Render n procedural scenes with exact labels. Notebook 00_depth_data.

    Returns numpy arrays: "image" uint8 (n, H, W, 3) RGB; "depth" float32 (n, H, W) planar depth in metres
    (0 = invalid / sky); "mask" bool (n, H, W); "material" uint8 (n, H, W) index into MATERIALS;
    "apparent_depth" float32 (n, H, W) planar depth along the visible light path (background behind glass,
    reflected path for mirrors, 0 for sky); "meta": list of n JSON-serialisable dicts.
    Sample i depends only on (kind, style, seed, start_index + i); `workers` > 0 renders in worker processes."""
    _check(kind, n, seed, height, width, style, start_index)
    out = dict(image=np.zeros((n, height, width, 3), np.uint8), depth=np.zeros((n, height, width), np.float32),
               mask=np.zeros((n, height, width), bool), material=np.zeros((n, height, width), np.uint8),
               apparent_depth=np.zeros((n, height, width), np.float32), meta=[])
    pos = 0
    for part in iter_generate(kind, n, seed=seed, height=height, width=width, style=style,
                              start_index=start_index, device=device, workers=workers):
        k = len(part["meta"])
        for key in ("image", "depth", "mask", "material", "apparent_depth"):
            out[key][pos:pos + k] = part[key]
        out["meta"] += part["meta"]
        pos += k
    return out

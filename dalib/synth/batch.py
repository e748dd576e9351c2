"""Scenes packed for the ray caster: a `Batch` of padded tensors (n scenes x P primitive slots) and the
constants the caster shares (notebook 00_depth_data).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .scenes import BOX, CYLINDER, MAT_ID, QUAD, SPHERE, Scene

EPS = 1e-4  # minimum ray parameter of a hit (m)
BG_ID = 254  # primitive id of the background (room shell or ground)
NO_ID = 255  # no hit (sky)
KEY_SHIFT = 8
CHUNK_ELEMS = 1 << 20  # candidate rays intersected per step (bounds temporary memory)
GLASS, MIRROR, THIN, PLAIN, SKY = MAT_ID["glass"], MAT_ID["mirror"], MAT_ID["thin"], MAT_ID["plain"], MAT_ID["sky"]
SHELL, GROUND = 4, 5  # background "primitive" types (slot P of the table)


@dataclass
class Batch:
    """Scenes packed into padded tensors: n scenes x P primitive slots (type -1 = empty slot)."""

    n: int
    H: int
    W: int
    ts: int
    Ty: int
    Tx: int
    origin: torch.Tensor  # (n, 3) camera centre, world
    right: torch.Tensor  # (n, 3) camera axes in world coordinates
    up: torch.Tensor
    fwd: torch.Tensor
    fx: torch.Tensor  # (n,) pixels
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    light: torch.Tensor  # (n, 3) unit vector towards the light
    light_rgb: torch.Tensor  # (n, 3)
    ambient: torch.Tensor  # (n, 3)
    sky_top: torch.Tensor  # (n, 3)
    sky_hor: torch.Tensor  # (n, 3)
    bg_type: torch.Tensor  # (n,) 0 none, 1 shell, 2 ground
    shell: torch.Tensor  # (n, 6) xmin xmax ymin ymax zmin zmax
    road: torch.Tensor  # (n,)
    max_depth: torch.Tensor  # (n,)
    bg_tex: torch.Tensor  # (n, 3) long
    bg_scale: torch.Tensor  # (n, 3)
    bg_alb: torch.Tensor  # (n, 3, 3)
    ptype: torch.Tensor  # (n, P) long
    center: torch.Tensor  # (n, P, 3)
    size: torch.Tensor  # (n, P, 3)
    cs: torch.Tensor  # (n, P) cos(yaw)
    sn: torch.Tensor  # (n, P) sin(yaw)
    mat: torch.Tensor  # (n, P) long
    tex: torch.Tensor  # (n, P) long
    tscale: torch.Tensor  # (n, P)
    alb: torch.Tensor  # (n, P, 3)
    cut: torch.Tensor  # (n, P, 3) slat period, duty, rail half width
    ext: torch.Tensor  # (n, P, 3) half extents of the world axis-aligned bounding box (with a margin)
    caster: torch.Tensor  # (n, P) bool
    device: torch.device
    types_present: frozenset = frozenset()  # primitive / background type codes used by any scene


def pack(scenes: list[Scene], height: int, width: int, device, tile: int = 16) -> Batch:
    """Pack scene descriptions into a `Batch` (all per-scene maths in float64 numpy, then float32)."""
    n = len(scenes)
    P = max(1, max(len(s.prims) for s in scenes))
    ptype = -np.ones((n, P), np.int64)
    center = np.zeros((n, P, 3))
    size = np.zeros((n, P, 3))
    yaw = np.zeros((n, P))
    mat = np.zeros((n, P), np.int64)
    tex = np.zeros((n, P), np.int64)
    tscale = np.ones((n, P))
    alb = np.zeros((n, P, 3))
    cut = np.tile(np.array([0.0, 1.0, 0.0]), (n, P, 1))
    ext = np.zeros((n, P, 3))
    caster = np.zeros((n, P), bool)
    for i, s in enumerate(scenes):
        for j, p in enumerate(s.prims):
            ptype[i, j] = p["type"]
            center[i, j], size[i, j], yaw[i, j] = p["center"], p["size"], p["yaw"]
            q = p["yaw"] / (math.pi / 2)
            if p["type"] == BOX and abs(q - round(q)) < 1e-9:  # quarter turns: an axis-aligned box
                if round(q) % 2:
                    size[i, j] = (p["size"][2], p["size"][1], p["size"][0])
                yaw[i, j] = 0.0
            mat[i, j], tex[i, j], tscale[i, j] = p["material"], p["tex"], p["tex_scale"]
            alb[i, j], cut[i, j], caster[i, j] = p["albedo"], p["cut"], p["caster"]
            sz = p["size"]
            c, sw = abs(math.cos(p["yaw"])), abs(math.sin(p["yaw"]))
            ext[i, j] = {BOX: (c * sz[0] + sw * sz[2], sz[1], sw * sz[0] + c * sz[2]), SPHERE: (sz[0],) * 3,
                         CYLINDER: (sz[0], sz[1], sz[0]), QUAD: (c * sz[0], sz[1], sw * sz[0])}[p["type"]]
    intr = np.array([s.intrinsics(height, width) for s in scenes], np.float64)
    rot = np.stack([np.asarray(s.cam_rot, np.float64) for s in scenes])
    light = np.array([s.light_dir for s in scenes], np.float64)
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float64), dtype=torch.float32, device=device)  # noqa: E731
    i64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64, device=device)  # noqa: E731
    bgt = [{"none": 0, "shell": 1, "ground": 2}[s.background] for s in scenes]
    return Batch(
        n=n, H=height, W=width, ts=tile, Ty=-(-height // tile), Tx=-(-width // tile),
        origin=f32([s.cam_pos for s in scenes]), right=f32(rot[:, :, 0]), up=f32(rot[:, :, 1]), fwd=f32(rot[:, :, 2]),
        fx=f32(intr[:, 0]), fy=f32(intr[:, 1]), cx=f32(intr[:, 2]), cy=f32(intr[:, 3]),
        light=f32(light), light_rgb=f32([s.light_rgb for s in scenes]), ambient=f32([s.ambient_rgb for s in scenes]),
        sky_top=f32([s.sky_top for s in scenes]), sky_hor=f32([s.sky_horizon for s in scenes]),
        bg_type=i64(bgt), shell=f32([s.shell for s in scenes]), road=f32([s.road_half for s in scenes]),
        max_depth=f32([s.max_depth for s in scenes]), bg_tex=i64([s.bg_tex for s in scenes]),
        bg_scale=f32([s.bg_scale for s in scenes]), bg_alb=f32([s.bg_albedo for s in scenes]),
        ptype=i64(ptype), center=f32(center), size=f32(size), cs=f32(np.cos(yaw)), sn=f32(np.sin(yaw)),
        mat=i64(mat), tex=i64(tex), tscale=f32(tscale), alb=f32(alb), cut=f32(cut),
        ext=f32(ext * 1.01 + 1e-3),
        caster=torch.as_tensor(caster, device=device), device=torch.device(device),
        types_present=frozenset(int(x) for x in np.unique(ptype) if x >= 0)
        | frozenset({1: SHELL, 2: GROUND}[b] for b in bgt if b),
    )


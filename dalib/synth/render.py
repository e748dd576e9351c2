"""Batched torch ray caster for the analytic scenes of `scenes.py` (notebook 00_depth_data).

Every pixel casts one primary ray o + t d with d = R (x_c, y_c, 1): the camera-frame direction has
z = 1, so the ray parameter t of a hit *is* the planar depth z (metres along the optical axis).

Speed comes from doing the same arithmetic for all rays at once and from tile binning: pixels are
grouped in ts x ts tiles, each primitive's world bounding box is tested against each tile's frustum
(4 planes through the camera centre), and only (tile, primitive) pairs that can overlap are
intersected; shadow and mirror rays are culled with a ray-versus-grown-box test. The nearest hit
per ray is a min over int64 keys (float bits of t) << 8 | primitive id (t > 0, so float order =
integer order), reduced with `scatter_reduce(amin)`: exact and order-free,
hence deterministic whatever the batch composition. Only exactly rounded ops (+ - * / sqrt floor
min max) touch per-pixel values, so a sample renders bit-identically alone or inside any batch.

Shading: Lambert with ambient + one directional light, shadow rays towards the light (binned per
tile), textured albedo (mip-mapped nearest lookup). Glass panes are see-through
(tinted background + a faint Fresnel sky reflection), mirrors trace a reflected ray; the depth
label is the pane/mirror surface, `apparent_depth` is what a sensor would measure along the light path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .scenes import BOX, CYLINDER, MAT_ID, QUAD, SPHERE, Scene
from .textures import TEX_SIZE, sample_texel

EPS = 1e-4  # minimum ray parameter of a hit (m)
BG_ID = 254  # primitive id of the background (room shell or ground)
NO_ID = 255  # no hit (sky)
_KEY_SHIFT = 8
_CHUNK_ELEMS = 1 << 20  # candidate rays intersected per step (bounds temporary memory)
GLASS, MIRROR, THIN, PLAIN, SKY = MAT_ID["glass"], MAT_ID["mirror"], MAT_ID["thin"], MAT_ID["plain"], MAT_ID["sky"]


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
        | frozenset({1: _SHELL, 2: _GROUND}[b] for b in bgt if b),
    )


# ---------------------------------------------------------------------------------------------
# ray / primitive intersections. o*, d*: broadcastable tensors (k, S) or (k, 1); params (k, 1).
# Each returns t (inf where the ray misses or t <= EPS).
# ---------------------------------------------------------------------------------------------
def _slab(o, d, h):
    """Slab [-h, h] on one axis: entry/exit parameters t = (+-h - o) / d, ordered. d = 0 gives +-inf
    (or NaN when o is exactly on the boundary); NaN fails every later comparison, i.e. counts as a miss."""
    inv = 1.0 / d
    t1 = (-h - o) * inv
    t2 = (h - o) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _local(B, s, p, ox, oy, oz, dx, dy, dz):
    """World -> primitive frame (translate by -c, rotate by -yaw): x' = cos x - sin z, z' = sin x + cos z."""
    c = B.center[s, p]
    cs, sn = B.cs[s, p][:, None], B.sn[s, p][:, None]
    px, py, pz = ox - c[:, 0:1], oy - c[:, 1:2], oz - c[:, 2:3]
    return (cs * px - sn * pz, py, sn * px + cs * pz), (cs * dx - sn * dz, dy, sn * dx + cs * dz)


def _inf(t):
    return torch.full_like(t, float("inf"))


def _t_box(B, s, p, O, D):
    """Oriented box, slab method: t_near = max_axis min(t1, t2), t_far = min_axis max(t1, t2);
    hit if t_near <= t_far."""
    (lx, ly, lz), (ex, ey, ez) = _local(B, s, p, *O, *D)
    h = B.size[s, p]
    a0, b0 = _slab(lx, ex, h[:, 0:1])
    a1, b1 = _slab(ly, ey, h[:, 1:2])
    a2, b2 = _slab(lz, ez, h[:, 2:3])
    tn = torch.maximum(torch.maximum(a0, a1), a2)
    tf = torch.minimum(torch.minimum(b0, b1), b2)
    hit = (tn <= tf) & (tn > EPS)
    return tn.masked_fill_(~hit, float("inf"))


def _t_aabb(B, s, p, O, D):
    """Axis-aligned box (yaw 0): the slab test without the rotation to the box frame."""
    c, h = B.center[s, p], B.size[s, p]
    a0, b0 = _slab(O[0] - c[:, 0:1], D[0], h[:, 0:1])
    a1, b1 = _slab(O[1] - c[:, 1:2], D[1], h[:, 1:2])
    a2, b2 = _slab(O[2] - c[:, 2:3], D[2], h[:, 2:3])
    tn = torch.maximum(torch.maximum(a0, a1), a2)
    tf = torch.minimum(torch.minimum(b0, b1), b2)
    hit = (tn <= tf) & (tn > EPS)
    return tn.masked_fill_(~hit, float("inf"))


def _t_sphere(B, s, p, O, D):
    """|o + t d - c|^2 = r^2  ->  a t^2 + 2 b t + c' = 0, a = d.d, b = (o-c).d, c' = |o-c|^2 - r^2;
    nearest root t = (-b - sqrt(b^2 - a c')) / a."""
    c = B.center[s, p]
    r = B.size[s, p][:, 0:1]
    qx, qy, qz = O[0] - c[:, 0:1], O[1] - c[:, 1:2], O[2] - c[:, 2:3]
    a = D[0] * D[0] + D[1] * D[1] + D[2] * D[2]
    b = qx * D[0] + qy * D[1] + qz * D[2]
    cc = qx * qx + qy * qy + qz * qz - r * r
    disc = b * b - a * cc
    t = (-b - torch.sqrt(torch.clamp(disc, min=0.0))) / a
    hit = (disc >= 0) & (t > EPS)
    return t.masked_fill_(~hit, float("inf"))


def _t_cyl(B, s, p, O, D):
    """Vertical cylinder = infinite cylinder (x-cx)^2 + (z-cz)^2 <= r^2 intersected with the slab |y-cy| <= hh.
    Side roots t = (-b -+ sqrt(b^2 - a c')) / a with a = dx^2+dz^2, b = qx dx + qz dz, c' = qx^2+qz^2-r^2."""
    c = B.center[s, p]
    r, hh = B.size[s, p][:, 0:1], B.size[s, p][:, 1:2]
    qx, qy, qz = O[0] - c[:, 0:1], O[1] - c[:, 1:2], O[2] - c[:, 2:3]
    a = D[0] * D[0] + D[2] * D[2]
    b = qx * D[0] + qz * D[2]
    cc = qx * qx + qz * qz - r * r
    disc = b * b - a * cc
    sq = torch.sqrt(torch.clamp(disc, min=0.0))
    a_s = torch.clamp(a, min=1e-20)
    vertical = a < 1e-20  # ray parallel to the axis: inside the disc for all t, or never
    ts0 = torch.where(vertical, torch.where(cc <= 0, -_inf(a), _inf(a)), (-b - sq) / a_s)
    ts1 = torch.where(vertical, torch.where(cc <= 0, _inf(a), -_inf(a)), (-b + sq) / a_s)
    ty0, ty1 = _slab(qy, D[1], hh)
    tn = torch.maximum(ts0, ty0)
    tf = torch.minimum(ts1, ty1)
    hit = (disc >= 0) & (tn <= tf) & (tn > EPS)
    return tn.masked_fill_(~hit, float("inf"))


def _quad_hit(B, s, p, O, D):
    """Plane z' = 0 of the quad frame: t = -o'_z / d'_z, hit point (x', y') inside |x'| <= hw, |y'| <= hh,
    minus the fence cut-out: keep frac(x'/period) < duty (slats) or |y' - 0.6 hh| < rail or |y' + 0.5 hh| < rail."""
    (lx, ly, lz), (ex, ey, ez) = _local(B, s, p, *O, *D)
    t = -lz / ez  # ez = 0: inf or NaN, rejected by the bounds test
    x = lx + t * ex
    y = ly + t * ey
    sz, cut = B.size[s, p], B.cut[s, p]
    hw, hh = sz[:, 0:1], sz[:, 1:2]
    period, duty, rail = cut[:, 0:1], cut[:, 1:2], cut[:, 2:3]
    q = x / torch.where(period > 0, period, torch.ones_like(period)) + 1000.0
    slat = (q - torch.floor(q)) < duty
    rails = ((y - 0.6 * hh).abs() < rail) | ((y + 0.5 * hh).abs() < rail)
    keep = (period <= 0) | slat | rails
    hit = (x.abs() <= hw) & (y.abs() <= hh) & (t > EPS) & keep
    return t, hit, x, y


def _t_quad(B, s, p, O, D):
    t, hit, _, _ = _quad_hit(B, s, p, O, D)
    return t.masked_fill_(~hit, float("inf"))


_T_FUNCS = ((BOX, _t_box), (SPHERE, _t_sphere), (CYLINDER, _t_cyl), (QUAD, _t_quad))


def _key(t, pid):
    """Sortable int64 key: (float32 bits of t >= 0) << 8 | id; +inf bits sort after every finite t."""
    return (t.contiguous().view(torch.int32).to(torch.int64) << _KEY_SHIFT) | pid


def _decode(key):
    """Key -> (t, id); rays whose best t is +inf (no hit) get id NO_ID whatever primitive missed last."""
    t = (key >> _KEY_SHIFT).to(torch.int32).view(torch.float32)
    return t, (key & ((1 << _KEY_SHIFT) - 1)).masked_fill_(torch.isinf(t), NO_ID)


def _trace(B, O, D, g_scene, cand_g, cand_p, key):
    """Nearest hit of ray groups against candidate primitives; updates `key` (G, S) in place.

    O, D: 3-tuples of (G, S) or (G, 1) tensors; g_scene (G,) scene of each group; cand_g, cand_p (k,)
    the (group, primitive) pairs to test. Axis-aligned boxes skip the rotation into the box frame."""
    S = key.shape[1]
    sc_all = g_scene[cand_g]
    pt_all = B.ptype[sc_all, cand_p]
    aligned = (pt_all == BOX) & (B.sn[sc_all, cand_p] == 0)
    step = max(1, _CHUNK_ELEMS // S)
    jobs = [(_t_box, (pt_all == BOX) & ~aligned), (_t_aabb, aligned)]
    jobs += [(fn, pt_all == code) for code, fn in _T_FUNCS if code != BOX]
    for fn, mask in jobs:
        sel = mask.nonzero().squeeze(1)
        for i0 in range(0, sel.numel(), step):
            idx = sel[i0:i0 + step]
            g, s, p = cand_g[idx], sc_all[idx], cand_p[idx]
            t = fn(B, s, p, tuple(x[g] for x in O), tuple(x[g] for x in D)).expand(len(idx), S)
            k = _key(t, p[:, None])  # a miss (t = inf) sorts after every hit; `_decode` maps it to NO_ID
            key.scatter_reduce_(0, g[:, None].expand(-1, S), k, reduce="amin")
    return key


def _background_t(B, s, O, D):
    """Background hit parameter per ray (inf = sky). s: scene per row (m,), O/D tensors (m, S) or (m, 1).

    shell (room seen from inside): t = min over axes of max((lo - o)/d, (hi - o)/d)  (the exit face);
    ground plane y = 0: t = -o_y / d_y for d_y < 0, beyond max_depth -> sky."""
    bt = B.bg_type[s][:, None]
    t = _inf(D[0] + O[0])
    if bool((bt == 1).any()):
        sh = B.shell[s]
        t_shell = None
        for a in range(3):
            inv = 1.0 / D[a]
            lo, hi = sh[:, 2 * a:2 * a + 1], sh[:, 2 * a + 1:2 * a + 2]
            ta = torch.maximum((lo - O[a]) * inv, (hi - O[a]) * inv)
            t_shell = ta if t_shell is None else torch.minimum(t_shell, ta)
        t = torch.where(bt == 1, t_shell, t)
    if bool((bt == 2).any()):
        dy = D[1]
        t_ground = torch.where(dy < 0, -O[1] / dy, _inf(dy))
        t_ground = torch.where(t_ground > B.max_depth[s][:, None], _inf(dy), t_ground)
        t = torch.where(bt == 2, t_ground, t)
    return torch.where(t > EPS, t, _inf(t))


# ---------------------------------------------------------------------------------------------
# culling
# ---------------------------------------------------------------------------------------------
def _frustum_candidates(B, prim_mask):
    """(scene, tile, prim) triples whose bounding box may touch the tile's frustum, as (group, prim).

    Tile side planes through the camera centre, inward normals in the camera frame:
    left (1, 0, -a0), right (-1, 0, a1), top (0, -1, b0), bottom (0, 1, -b1), with a = (u - cx)/fx and
    b = -(v - cy)/fy at the tile edges; in world coordinates n_w = R n. An axis-aligned box (centre c,
    half extents e) lies fully outside a plane through o when n_w.(c - o) + sum_i |n_w,i| e_i < 0."""
    dev = B.device
    ts = B.ts
    u0 = torch.arange(B.Tx, device=dev, dtype=torch.float32) * ts
    v0 = torch.arange(B.Ty, device=dev, dtype=torch.float32) * ts
    a0 = (u0[None] - B.cx[:, None]) / B.fx[:, None]  # (n, Tx)
    a1 = (u0[None] + ts - B.cx[:, None]) / B.fx[:, None]
    b0 = -(v0[None] - B.cy[:, None]) / B.fy[:, None]  # (n, Ty)
    b1 = -(v0[None] + ts - B.cy[:, None]) / B.fy[:, None]
    rel = B.center - B.origin[:, None, :]  # (n, P, 3)
    e = B.ext
    R, U, F = B.right[:, None], B.up[:, None], B.fwd[:, None]  # (n, 1, 3)

    def inside(nw):  # nw (n, T, 3) world plane normals -> (n, T, P) "not fully outside"
        return torch.einsum("nti,npi->ntp", nw, rel) + torch.einsum("nti,npi->ntp", nw.abs(), e) >= 0

    col = inside(R - a0[..., None] * F) & inside(-R + a1[..., None] * F)
    row = inside(-U + b0[..., None] * F) & inside(U - b1[..., None] * F)
    front = (rel * B.fwd[:, None]).sum(-1) + (e * B.fwd[:, None].abs()).sum(-1) > 0
    ok = row[:, :, None, :] & col[:, None, :, :] & (front & prim_mask)[:, None, None, :]  # (n, Ty, Tx, P)
    s, ty, tx, p = ok.nonzero(as_tuple=True)
    return (s * B.Ty + ty) * B.Tx + tx, p


def _capsule_candidates(B, g_scene, ctr, radius, L, prim_mask):
    """(group, prim) pairs where a group of rays (origins within a sphere ctr (G,3), radius (G,)) heading
    along L (G,3) may hit the primitive: the half-line ctr + s L (s >= 0) meets the primitive's box grown
    by the radius (slab test: max_i t_near,i <= min_i t_far,i and t_far >= 0)."""
    c, e = B.center[g_scene], B.ext[g_scene] + radius[:, None, None]  # (G, P, 3)
    Ls = torch.where(L.abs() < 1e-9, 1e-9, L)[:, None, :]
    t1 = (c - e - ctr[:, None, :]) / Ls
    t2 = (c + e - ctr[:, None, :]) / Ls
    tn = torch.minimum(t1, t2).amax(-1)
    tf = torch.maximum(t1, t2).amin(-1)
    ok = (tn <= tf) & (tf >= 0) & prim_mask[g_scene]
    return ok.nonzero(as_tuple=True)


# ---------------------------------------------------------------------------------------------
# surfaces and shading
# ---------------------------------------------------------------------------------------------
_F = 18  # per-primitive fields gathered for every hit: centre 3, half size 3, cos, sin, type, material,
#          texture, texture scale, albedo 3, 1 / half size 3 (1 where the size is 0)
_SHELL, _GROUND = 4, 5  # background "primitive" types (slot P of the table)


def _prim_table(B) -> torch.Tensor:
    """(_F, n * (P + 1)) fields of every primitive, field-major (so a gather gives contiguous fields);
    slot P of each scene describes its background (shell / ground)."""
    if getattr(B, "_table", None) is None:
        f = lambda x: x.to(torch.float32)[..., None]  # noqa: E731
        inv = torch.where(B.size > 0, 1.0 / torch.where(B.size > 0, B.size, 1.0), 1.0)
        prims = torch.cat([B.center, B.size, f(B.cs), f(B.sn), f(B.ptype), f(B.mat), f(B.tex), f(B.tscale), B.alb,
                           inv], -1)
        sh = B.shell
        ctr = torch.stack([sh[:, 0] + sh[:, 1], sh[:, 2] + sh[:, 3], sh[:, 4] + sh[:, 5]], 1) * 0.5
        half = torch.stack([sh[:, 1] - sh[:, 0], sh[:, 3] - sh[:, 2], sh[:, 5] - sh[:, 4]], 1) * 0.5
        is_shell = (B.bg_type == 1)[:, None]
        half = torch.where(is_shell, half, 1.0)
        z = torch.zeros(B.n, 1, device=B.device)
        bgtype = torch.where(B.bg_type == 1, _SHELL, torch.where(B.bg_type == 2, _GROUND, -1)).float()[:, None]
        bg = torch.cat([torch.where(is_shell, ctr, 0.0), half, z + 1, z, bgtype,
                        z + PLAIN, z, z + 1, z + 0.5, z + 0.5, z + 0.5, 1.0 / half], 1)
        B._table = torch.cat([prims, bg[:, None]], 1).reshape(-1, _F).t().contiguous()
    return B._table


def _sel(conds_vals, default):
    """Nested torch.where: first matching (condition, value) wins."""
    out = default
    for c, v in reversed(conds_vals):
        out = torch.where(c, v, out)
    return out


def _surface(B, s_row, pid, O, D, t, t_path):
    """World hit point, unit normal facing the ray, linear albedo and material id of hits.

    Rays are 2-D (A, C) tensors whose row a belongs to scene s_row[a] (camera rays: A = n scenes,
    C = pixels; scattered rays: C = 1). pid: primitive id per ray (BG_ID background, NO_ID none)."""
    A, C = pid.shape
    Pn = B.ptype.shape[1]
    slot = torch.where(pid >= BG_ID, Pn, pid)
    rows = s_row[:, None] * (Pn + 1) + slot
    g = _prim_table(B).index_select(1, rows.view(-1)).view(_F, A, C)  # contiguous (A, C) per field
    typ = g[8]
    cs, sn = g[6], g[7]
    P = [O[a] + t * D[a] for a in range(3)]
    qx, qy, qz = P[0] - g[0], P[1] - g[1], P[2] - g[2]
    lx, ly, lz = cs * qx - sn * qz, qy, sn * qx + cs * qz  # primitive frame
    ax, ay, az = (lx * g[15]).abs(), (ly * g[16]).abs(), (lz * g[17]).abs()  # |p'/h|
    zero, one = torch.zeros_like(lx), torch.ones_like(lx)
    present = B.types_present
    is_box = (typ == BOX) | (typ == _SHELL)
    isy = None
    nx_, ny_, nz_, u_, v_ = [], [], [], [], []  # (condition, value) lists; only types present are computed
    if present & {BOX, _SHELL}:
        # boxes and the room shell: face = axis of the largest |p'/h|, normal = the coordinate's sign on it
        isx = (ax >= ay) & (ax >= az)
        isy = ~isx & (ay >= az)
        isz = ~isx & ~isy
        nx_.append((is_box, torch.where(isx, torch.sign(lx), zero)))
        ny_.append((is_box, torch.where(isy, torch.sign(ly), zero)))
        nz_.append((is_box, torch.where(isz, torch.sign(lz), zero)))
        u_.append((is_box, torch.where(isx, lz, lx)))
        v_.append((is_box, torch.where(isy, lz, ly)))
    if SPHERE in present:
        is_sph, ir = typ == SPHERE, g[15]  # n = (p - c) / r
        nx_.append((is_sph, lx * ir))
        ny_.append((is_sph, ly * ir))
        nz_.append((is_sph, lz * ir))
        sph_xy = ax >= ay
        u_.append((is_sph, torch.where(sph_xy, lz, lx)))
        v_.append((is_sph, torch.where(sph_xy, ly, lz)))
    if CYLINDER in present:
        # cap when |y'|/hh > rho/r; side normal (x', 0, z') / rho
        is_cyl = typ == CYLINDER
        rho = torch.sqrt(lx * lx + lz * lz)
        irho = 1.0 / torch.clamp(rho, min=1e-12)
        cap = ay > rho * g[15]
        nx_.append((is_cyl, torch.where(cap, zero, lx * irho)))
        ny_.append((is_cyl, torch.where(cap, torch.sign(ly), zero)))
        nz_.append((is_cyl, torch.where(cap, zero, lz * irho)))
        pa = torch.where(lx >= 0, 1.0 - lz * irho, 3.0 + lz * irho)  # pseudo-angle in [0, 4) (no atan2)
        u_.append((is_cyl, torch.where(cap, lx, pa * g[3] * (math.pi / 2))))
        v_.append((is_cyl, torch.where(cap, lz, ly)))
    if QUAD in present:
        nz_.append((typ == QUAD, one))
    is_gnd = typ == _GROUND
    if _GROUND in present:
        ny_.append((is_gnd, one))
        u_.append((is_gnd, lx))
        v_.append((is_gnd, lz))
    nlx, nly, nlz = _sel(nx_, zero), _sel(ny_, zero), _sel(nz_, zero)
    u, v = _sel(u_, lx), _sel(v_, ly)  # quads: (x', y')
    # normal back to world: x = cos x' + sin z', z = -sin x' + cos z'; then face the incoming ray
    N = [cs * nlx + sn * nlz, nly, -sn * nlx + cs * nlz]
    facing = N[0] * D[0] + N[1] * D[1] + N[2] * D[2]
    flip = torch.where(facing > 0, -1.0, 1.0)
    N = [x * flip for x in N]
    # material, texture, albedo; the background picks one of its three slots
    tex, tsc, mat = g[10], g[11], g[9]
    alb = g[12:15].permute(1, 2, 0)
    bg = (typ == _SHELL) | is_gnd
    if bool(bg.any()):
        face_y = isy if isy is not None else torch.zeros_like(bg)
        slot_bg = torch.where(typ == _SHELL, torch.where(face_y, torch.where(ly < 0, 0, 2), 1),
                              torch.where(P[0].abs() < B.road[s_row][:, None], 0, 1))
        bt, bs, ba = B.bg_tex[s_row].float(), B.bg_scale[s_row], B.bg_alb[s_row]  # (A, 3), (A, 3), (A, 3, 3)
        pick = lambda x: _sel([(slot_bg == 0, x[:, 0:1]), (slot_bg == 1, x[:, 1:2])], x[:, 2:3])  # noqa: E731
        tex = torch.where(bg, pick(bt), tex)
        tsc = torch.where(bg, pick(bs), tsc)
        alb = torch.where(bg[..., None], torch.stack([pick(ba[:, :, c]) for c in range(3)], -1), alb)
    # mip level from the pixel footprint in texels, t |d| / (fx cos) / scale * S (threshold tests, no log)
    dn = torch.sqrt(D[0] * D[0] + D[1] * D[1] + D[2] * D[2])
    cosf = torch.clamp(facing.abs() / dn, min=0.15)
    texels = t_path * dn / (B.fx[s_row][:, None] * cosf) / tsc * TEX_SIZE
    level = (texels > 1.5).float() + (texels > 3.0).float() + (texels > 6.0).float() + (texels > 12.0).float()
    col = sample_texel(tex, u / tsc, v / tsc, level, B.device) * alb
    return P, N, col, mat.long()


def _sky(B, s_row, D):
    """Sky colour (A, C, 3): horizon -> zenith blend by the ray elevation e = max(d_y, 0) / |d|, weight sqrt(e)."""
    dn = torch.sqrt(D[0] * D[0] + D[1] * D[1] + D[2] * D[2])
    e = torch.sqrt(torch.clamp(D[1] / dn, min=0.0))[..., None]
    hor, top = B.sky_hor[s_row][:, None], B.sky_top[s_row][:, None]
    return hor + (top - hor) * e


_INF_KEY = (0x7F800000 << _KEY_SHIFT) | NO_ID
_INF_T_KEY = 0x7F800000 << _KEY_SHIFT  # keys below this have a finite t


def _shadowed(B, g_scene, P, N, need, t):
    """Shadow rays towards the light for points P (G, S) with normals N; True where an occluder (a
    caster primitive, not the background) lies between the point and the light."""
    G, S = need.shape
    L = B.light[g_scene]  # (G, 3)
    off = 1e-3 + 1e-4 * t
    O = tuple(P[a] + N[a] * off for a in range(3))
    D = tuple(L[:, a:a + 1] for a in range(3))
    # bounding sphere of the group's shadow-ray origins (min/max box: exact and order-free)
    lo = torch.stack([torch.where(need, O[a], 1e9).amin(1) for a in range(3)], 1)
    hi = torch.stack([torch.where(need, O[a], -1e9).amax(1) for a in range(3)], 1)
    any_need = need.any(1)
    ctr = torch.where(any_need[:, None], 0.5 * (lo + hi), 0.0)
    radius = torch.where(any_need, 0.5 * torch.sqrt(((hi - lo) ** 2).sum(1)), 0.0)
    mask = B.caster & (B.ptype >= 0)
    cg, cp = _capsule_candidates(B, g_scene, ctr, radius, L, mask)
    keep = any_need[cg]
    cg, cp = cg[keep], cp[keep]
    key = torch.full((G, S), _INF_KEY, dtype=torch.int64, device=B.device)
    _trace(B, O, D, g_scene, cg, cp, key)
    return (key < _INF_T_KEY) & need


def _shade(B, s_row, P, N, col, t, hit, groups):
    """Lambert: albedo * (ambient + light * max(0, n.l) * visible), rays (A, C). `groups` = (G, S)
    reshape used by the shadow pass (tiles for camera rays, (m, 1) for scattered rays)."""
    L = B.light[s_row][:, None]  # (A, 1, 3)
    ndl = torch.clamp(N[0] * L[..., 0] + N[1] * L[..., 1] + N[2] * L[..., 2], min=0.0)
    need = hit & (ndl > 0)
    G, S = groups
    A, C = hit.shape
    g_scene = s_row.repeat_interleave(G // A)
    v = lambda x: x.reshape(G, S)  # noqa: E731
    sh = _shadowed(B, g_scene, tuple(map(v, P)), tuple(map(v, N)), v(need), v(t)).view(A, C)
    direct = torch.where(sh, 0.0, ndl)[..., None]
    return col * (B.ambient[s_row][:, None] + B.light_rgb[s_row][:, None] * direct)


# ---------------------------------------------------------------------------------------------
# full render
# ---------------------------------------------------------------------------------------------
def _camera_rays(B):
    """Primary rays in tile order, each (n, T, S): d = right * x_c + up * y_c + fwd, x_c = (u + 1/2 - cx)/fx,
    y_c = -(v + 1/2 - cy)/fy (pixel centres; image rows go down, camera y goes up)."""
    dev, ts = B.device, B.ts
    sy, sx = torch.meshgrid(torch.arange(ts, device=dev), torch.arange(ts, device=dev), indexing="ij")
    ty, tx = torch.meshgrid(torch.arange(B.Ty, device=dev), torch.arange(B.Tx, device=dev), indexing="ij")
    u = (tx.reshape(-1, 1) * ts + sx.reshape(1, -1)).float() + 0.5  # (T, S)
    v = (ty.reshape(-1, 1) * ts + sy.reshape(1, -1)).float() + 0.5
    xc = (u[None] - B.cx[:, None, None]) / B.fx[:, None, None]
    yc = -(v[None] - B.cy[:, None, None]) / B.fy[:, None, None]
    return tuple(B.right[:, a, None, None] * xc + B.up[:, a, None, None] * yc + B.fwd[:, a, None, None]
                 for a in range(3))


def _untile(B, x):
    """(n, T, S, ...) tile order -> (n, H, W, ...) image order (crop the padding)."""
    ts = B.ts
    rest = x.shape[3:]
    x = x.reshape(B.n, B.Ty, B.Tx, ts, ts, *rest).transpose(2, 3).reshape(B.n, B.Ty * ts, B.Tx * ts, *rest)
    return x[:, :B.H, :B.W]


def _bg_key(t_bg):
    return _key(t_bg, BG_ID)


@torch.no_grad()
def render_batch(B: Batch) -> dict:
    """Render packed scenes. Returns tensors (n, H, W[, 3]): "rgb" linear float, "depth" (0 = sky),
    "material" (int64 index into MATERIALS), "apparent_depth"."""
    n, dev = B.n, B.device
    T, S = B.Ty * B.Tx, B.ts * B.ts
    G = n * T
    D = tuple(d.reshape(G, S) for d in _camera_rays(B))
    g_scene = torch.arange(n, device=dev).repeat_interleave(T)
    O = tuple(B.origin[g_scene, a][:, None] for a in range(3))  # (G, 1)
    # background, then opaque primitives (tile-binned), then glass / mirror panes
    key = _bg_key(_background_t(B, g_scene, O, D))
    active = B.ptype >= 0
    special = (B.mat == GLASS) | (B.mat == MIRROR)
    cg, cp = _frustum_candidates(B, active & ~special)
    _trace(B, O, D, g_scene, cg, cp, key)
    t_op, pid = _decode(key.view(n, T * S))
    key_sp = None
    if bool(special.any()):
        key_sp = torch.full((G, S), _INF_KEY, dtype=torch.int64, device=dev)
        cg, cp = _frustum_candidates(B, active & special)
        _trace(B, O, D, g_scene, cg, cp, key_sp)
    # per scene rows (n, T*S)
    scenes = torch.arange(n, device=dev)
    Dr = tuple(d.view(n, T * S) for d in D)
    Or = tuple(B.origin[:, a:a + 1] for a in range(3))
    hit = pid != NO_ID
    t_safe = torch.where(hit, t_op, 0.0)
    P, Nn, alb, mat = _surface(B, scenes, pid, Or, Dr, t_safe, t_safe)
    rgb = _shade(B, scenes, P, Nn, alb, t_safe, hit, (G, S))
    rgb = torch.where(hit[..., None], rgb, _sky(B, scenes, Dr))
    mat = torch.where(hit, mat, SKY)
    depth = t_safe
    apparent = depth
    if key_sp is not None:
        t_sp, pid_sp = _decode(key_sp.view(n, T * S))
        sp_hit = (pid_sp != NO_ID) & (t_sp < t_op)
        if bool(sp_hit.any()):
            rgb, mat, depth, apparent = _panes(B, sp_hit, pid_sp, t_sp, t_op, hit, Or, Dr, rgb, mat, depth)
    out = dict(rgb=rgb.view(n, T, S, 3), depth=depth.view(n, T, S), material=mat.view(n, T, S),
               apparent_depth=apparent.view(n, T, S))
    return {k: _untile(B, v) for k, v in out.items()}


def _panes(B, sp_hit, pid_sp, t_sp, t_op, hit, Or, Dr, rgb, mat, depth):
    """Glass and mirror pixels (rows (n, R)). Glass: (1 - F) tint * background + F * sky-ish reflection with
    a Fresnel-like F = 0.04 + 0.5 (1 - cos)^5; mirror: tint * colour along the reflected ray."""
    n, R = sp_hit.shape
    s_idx, r_idx = sp_hit.nonzero(as_tuple=True)
    pid = pid_sp[s_idx, r_idx]
    pmat = B.mat[s_idx, pid]
    tint = B.alb[s_idx, pid]
    d = tuple(x[s_idx, r_idx] for x in Dr)
    o = tuple(x[s_idx, 0] for x in Or)
    t1 = t_sp[s_idx, r_idx]
    cs, sn = B.cs[s_idx, pid], B.sn[s_idx, pid]
    new_rgb = rgb[s_idx, r_idx]
    t_behind = torch.where(hit[s_idx, r_idx], t_op[s_idx, r_idx], 0.0)
    app = t_behind.clone()
    gl = pmat == GLASS
    if bool(gl.any()):
        dn = torch.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        cosi = (sn * d[0] + cs * d[2]).abs() / dn  # quad normal in world = (sin yaw, 0, cos yaw)
        k = 1.0 - cosi
        fres = (0.04 + 0.5 * k * k * k * k * k)[:, None]
        refl = B.sky_hor[s_idx] * 0.8 + 0.2
        new_rgb = torch.where(gl[:, None], (1 - fres) * tint * new_rgb + fres * refl, new_rgb)
    mi = (pmat == MIRROR).nonzero().squeeze(1)
    if mi.numel():
        sub = lambda x: x[mi]  # noqa: E731
        rgb_m, app_m = _mirror(B, s_idx[mi], pid[mi], tuple(map(sub, o)), tuple(map(sub, d)), t1[mi])
        new_rgb[mi] = tint[mi] * rgb_m
        app[mi] = app_m
    rgb = rgb.index_put((s_idx, r_idx), new_rgb)
    mat = mat.index_put((s_idx, r_idx), pmat)
    depth2 = depth.index_put((s_idx, r_idx), t1)
    apparent = depth.index_put((s_idx, r_idx), app)
    return rgb, mat, depth2, apparent


def _mirror(B, s, pid, O, D, t1):
    """Reflect rays at mirror hits: r = d - 2 (d.n) n (|r| = |d|, so the virtual point's planar depth is
    t1 + t2), trace the opaque scene, shade (with shadows). Returns linear colour (m, 3), apparent depth (m,)."""
    m = s.shape[0]
    nx, nz = B.sn[s, pid], B.cs[s, pid]  # quad normal = local z axis in world (unit)
    P = tuple(O[a] + t1 * D[a] for a in range(3))
    dn = D[0] * nx + D[2] * nz
    R = (D[0] - 2 * dn * nx, D[1], D[2] - 2 * dn * nz)
    Rg = tuple(x[:, None] for x in R)
    Pg = tuple(x[:, None] for x in P)
    key = _bg_key(_background_t(B, s, Pg, Rg))
    mask = (B.ptype >= 0) & (B.mat != GLASS) & (B.mat != MIRROR)
    L = torch.stack(R, 1)
    L = L / torch.sqrt((L * L).sum(1, keepdim=True))
    cg, cp = _capsule_candidates(B, s, torch.stack(P, 1), torch.zeros(m, device=B.device), L, mask)
    _trace(B, Pg, Rg, s, cg, cp, key)
    t2, pid2 = _decode(key)
    hit = pid2 != NO_ID
    t2s = torch.where(hit, t2, 0.0)
    P2, N2, alb, _ = _surface(B, s, pid2, Pg, Rg, t2s, t1[:, None] + t2s)
    rgb = _shade(B, s, P2, N2, alb, t2s, hit, (m, 1))
    rgb = torch.where(hit[..., None], rgb, _sky(B, s, Rg))[:, 0]
    return rgb, torch.where(hit[:, 0], t1 + t2s[:, 0], 0.0)

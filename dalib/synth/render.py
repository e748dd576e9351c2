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

Packing lives in `batch`, intersections and culling in `intersect`; this module shades and renders.
"""
from __future__ import annotations

import math

import torch

from .batch import BG_ID, GLASS, GROUND, MIRROR, NO_ID, PLAIN, SHELL, SKY, Batch
from .intersect import (INF_KEY, INF_T_KEY, background_t, capsule_candidates, decode_key, frustum_candidates,
                        hit_key, trace)
from .scenes import BOX, CYLINDER, QUAD, SPHERE
from .textures import TEX_SIZE, sample_texel


# ---------------------------------------------------------------------------------------------
# surfaces and shading
# ---------------------------------------------------------------------------------------------
_F = 18  # per-primitive fields gathered for every hit: centre 3, half size 3, cos, sin, type, material,
#          texture, texture scale, albedo 3, 1 / half size 3 (1 where the size is 0)


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
        bgtype = torch.where(B.bg_type == 1, SHELL, torch.where(B.bg_type == 2, GROUND, -1)).float()[:, None]
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
    cs, sn = g[6], g[7]
    P = [O[a] + t * D[a] for a in range(3)]
    qx, qy, qz = P[0] - g[0], P[1] - g[1], P[2] - g[2]
    local = (cs * qx - sn * qz, qy, sn * qx + cs * qz)  # primitive frame
    (nlx, nly, nlz), (u, v), isy = _local_normal_and_uv(B, g, *local)
    # normal back to world: x = cos x' + sin z', z = -sin x' + cos z'; then face the incoming ray
    N = [cs * nlx + sn * nlz, nly, -sn * nlx + cs * nlz]
    facing = N[0] * D[0] + N[1] * D[1] + N[2] * D[2]
    flip = torch.where(facing > 0, -1.0, 1.0)
    N = [x * flip for x in N]
    tex, tsc, alb = _texture_and_albedo(B, g, s_row, P, local[1], isy)
    # mip level from the pixel footprint in texels, t |d| / (fx cos) / scale * S (threshold tests, no log)
    dn = torch.sqrt(D[0] * D[0] + D[1] * D[1] + D[2] * D[2])
    cosf = torch.clamp(facing.abs() / dn, min=0.15)
    texels = t_path * dn / (B.fx[s_row][:, None] * cosf) / tsc * TEX_SIZE
    level = (texels > 1.5).float() + (texels > 3.0).float() + (texels > 6.0).float() + (texels > 12.0).float()
    col = sample_texel(tex, u / tsc, v / tsc, level, B.device) * alb
    return P, N, col, g[9].long()


def _local_normal_and_uv(B, g, lx, ly, lz):
    """Normal (x', y', z') and texture coordinates (u, v) of hit points (lx, ly, lz) in their primitive's frame,
    per primitive type; only the types present in the batch are computed. Returns (normal, uv, isy): isy marks
    box / shell hits on a y face (None without boxes), which the room shell's floor / ceiling slot needs."""
    typ = g[8]
    ax, ay, az = (lx * g[15]).abs(), (ly * g[16]).abs(), (lz * g[17]).abs()  # |p'/h|
    zero, one = torch.zeros_like(lx), torch.ones_like(lx)
    present = B.types_present
    is_box = (typ == BOX) | (typ == SHELL)
    isy = None
    nx_, ny_, nz_, u_, v_ = [], [], [], [], []  # (condition, value) lists
    if present & {BOX, SHELL}:
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
    if GROUND in present:
        is_gnd = typ == GROUND
        ny_.append((is_gnd, one))
        u_.append((is_gnd, lx))
        v_.append((is_gnd, lz))
    normal = (_sel(nx_, zero), _sel(ny_, zero), _sel(nz_, zero))
    return normal, (_sel(u_, lx), _sel(v_, ly)), isy  # quads: (u, v) = (x', y')


def _texture_and_albedo(B, g, s_row, P, ly, isy):
    """Texture id, texture scale (m per repeat) and linear albedo (A, C, 3) of hits; the background (room shell,
    ground) picks one of its three slots: floor / walls / ceiling, or road / pavement."""
    typ = g[8]
    tex, tsc = g[10], g[11]
    alb = g[12:15].permute(1, 2, 0)
    bg = (typ == SHELL) | (typ == GROUND)
    if bool(bg.any()):
        face_y = isy if isy is not None else torch.zeros_like(bg)
        slot_bg = torch.where(typ == SHELL, torch.where(face_y, torch.where(ly < 0, 0, 2), 1),
                              torch.where(P[0].abs() < B.road[s_row][:, None], 0, 1))
        bt, bs, ba = B.bg_tex[s_row].float(), B.bg_scale[s_row], B.bg_alb[s_row]  # (A, 3), (A, 3), (A, 3, 3)
        pick = lambda x: _sel([(slot_bg == 0, x[:, 0:1]), (slot_bg == 1, x[:, 1:2])], x[:, 2:3])  # noqa: E731
        tex = torch.where(bg, pick(bt), tex)
        tsc = torch.where(bg, pick(bs), tsc)
        alb = torch.where(bg[..., None], torch.stack([pick(ba[:, :, c]) for c in range(3)], -1), alb)
    return tex, tsc, alb


def _sky(B, s_row, D):
    """Sky colour (A, C, 3): horizon -> zenith blend by the ray elevation e = max(d_y, 0) / |d|, weight sqrt(e)."""
    dn = torch.sqrt(D[0] * D[0] + D[1] * D[1] + D[2] * D[2])
    e = torch.sqrt(torch.clamp(D[1] / dn, min=0.0))[..., None]
    hor, top = B.sky_hor[s_row][:, None], B.sky_top[s_row][:, None]
    return hor + (top - hor) * e


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
    cg, cp = capsule_candidates(B, g_scene, ctr, radius, L, mask)
    keep = any_need[cg]
    cg, cp = cg[keep], cp[keep]
    key = torch.full((G, S), INF_KEY, dtype=torch.int64, device=B.device)
    trace(B, O, D, g_scene, cg, cp, key)
    return (key < INF_T_KEY) & need


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
    return hit_key(t_bg, BG_ID)


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
    key = _bg_key(background_t(B, g_scene, O, D))
    active = B.ptype >= 0
    special = (B.mat == GLASS) | (B.mat == MIRROR)
    cg, cp = frustum_candidates(B, active & ~special)
    trace(B, O, D, g_scene, cg, cp, key)
    t_op, pid = decode_key(key.view(n, T * S))
    key_sp = None
    if bool(special.any()):
        key_sp = torch.full((G, S), INF_KEY, dtype=torch.int64, device=dev)
        cg, cp = frustum_candidates(B, active & special)
        trace(B, O, D, g_scene, cg, cp, key_sp)
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
        t_sp, pid_sp = decode_key(key_sp.view(n, T * S))
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
    key = _bg_key(background_t(B, s, Pg, Rg))
    mask = (B.ptype >= 0) & (B.mat != GLASS) & (B.mat != MIRROR)
    L = torch.stack(R, 1)
    L = L / torch.sqrt((L * L).sum(1, keepdim=True))
    cg, cp = capsule_candidates(B, s, torch.stack(P, 1), torch.zeros(m, device=B.device), L, mask)
    trace(B, Pg, Rg, s, cg, cp, key)
    t2, pid2 = decode_key(key)
    hit = pid2 != NO_ID
    t2s = torch.where(hit, t2, 0.0)
    P2, N2, alb, _ = _surface(B, s, pid2, Pg, Rg, t2s, t1[:, None] + t2s)
    rgb = _shade(B, s, P2, N2, alb, t2s, hit, (m, 1))
    rgb = torch.where(hit[..., None], rgb, _sky(B, s, Rg))[:, 0]
    return rgb, torch.where(hit[:, 0], t1 + t2s[:, 0], 0.0)

"""Ray casting against the packed primitives: analytic ray / primitive intersections, the nearest hit per
ray as a min over int64 keys (float bits of t << 8 | primitive id; exact and order-free), and the culling
of (ray group, primitive) pairs by tile frustum or capsule. Used by `render` (notebook 00_depth_data).
"""
from __future__ import annotations

import torch

from .batch import CHUNK_ELEMS, EPS, KEY_SHIFT, NO_ID
from .scenes import BOX, CYLINDER, QUAD, SPHERE

INF_KEY = (0x7F800000 << KEY_SHIFT) | NO_ID
INF_T_KEY = 0x7F800000 << KEY_SHIFT  # keys below this have a finite t


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


def hit_key(t, pid):
    """Sortable int64 key: (float32 bits of t >= 0) << 8 | id; +inf bits sort after every finite t."""
    return (t.contiguous().view(torch.int32).to(torch.int64) << KEY_SHIFT) | pid


def decode_key(key):
    """Key -> (t, id); rays whose best t is +inf (no hit) get id NO_ID whatever primitive missed last."""
    t = (key >> KEY_SHIFT).to(torch.int32).view(torch.float32)
    return t, (key & ((1 << KEY_SHIFT) - 1)).masked_fill_(torch.isinf(t), NO_ID)


def trace(B, O, D, g_scene, cand_g, cand_p, key):
    """Nearest hit of ray groups against candidate primitives; updates `key` (G, S) in place.

    O, D: 3-tuples of (G, S) or (G, 1) tensors; g_scene (G,) scene of each group; cand_g, cand_p (k,)
    the (group, primitive) pairs to test. Axis-aligned boxes skip the rotation into the box frame."""
    S = key.shape[1]
    sc_all = g_scene[cand_g]
    pt_all = B.ptype[sc_all, cand_p]
    aligned = (pt_all == BOX) & (B.sn[sc_all, cand_p] == 0)
    step = max(1, CHUNK_ELEMS // S)
    jobs = [(_t_box, (pt_all == BOX) & ~aligned), (_t_aabb, aligned)]
    jobs += [(fn, pt_all == code) for code, fn in _T_FUNCS if code != BOX]
    for fn, mask in jobs:
        sel = mask.nonzero().squeeze(1)
        for i0 in range(0, sel.numel(), step):
            idx = sel[i0:i0 + step]
            g, s, p = cand_g[idx], sc_all[idx], cand_p[idx]
            t = fn(B, s, p, tuple(x[g] for x in O), tuple(x[g] for x in D)).expand(len(idx), S)
            k = hit_key(t, p[:, None])  # a miss (t = inf) sorts after every hit; `decode_key` maps it to NO_ID
            key.scatter_reduce_(0, g[:, None].expand(-1, S), k, reduce="amin")
    return key


def background_t(B, s, O, D):
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
def frustum_candidates(B, prim_mask):
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


def capsule_candidates(B, g_scene, ctr, radius, L, prim_mask):
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



"""Scene descriptions and the procedural scene samplers (notebook 00_depth_data).

A `Scene` is a plain description in metres, world y up: a pinhole camera (relative intrinsics, pose),
lights, a background (an indoor room shell seen from inside, or an outdoor ground plane under a sky
at infinity) and a list of analytic primitives:

    box       centre c, half sizes h, yaw about y            (furniture, buildings, cars, legs, wires)
    sphere    centre c, radius r                              (balls, lamps, tree crowns)
    cylinder  vertical axis through c, radius r, half height  (columns, poles, trunks, chair legs)
    quad      vertical rectangle, centre c, half width / half height, yaw; optional slat cut-out
              (fences), or material glass / mirror (see-through / reflecting panes)

`sample_indoor` and `sample_outdoor` draw a random Hypersim-like room or Virtual-KITTI-like street
from a numpy Generator; `style` changes the scene-parameter distribution (the `"photo"` domain uses
other field-of-view, camera-height, light and clutter ranges, and photo textures).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .textures import PROCEDURAL, num_textures

MATERIALS = ("plain", "glass", "mirror", "thin", "sky")  # material id = index into this tuple
SCENE_KINDS = ("indoor", "outdoor")
STYLES = ("clean", "photo")
BOX, SPHERE, CYLINDER, QUAD = 0, 1, 2, 3
PRIM_TYPES = ("box", "sphere", "cylinder", "quad")
MAT_ID = {m: i for i, m in enumerate(MATERIALS)}


def _tex(name: str) -> int:
    return PROCEDURAL.index(name)


@dataclass
class Scene:
    """One scene. Build it with the `add_*` methods, or draw one with `sample_indoor/sample_outdoor`.

    Intrinsics are relative to the image size: fx = fx_rel * W, fy = fy_rel * W (square pixels when
    equal), cx = cx_rel * W, cy = cy_rel * H, so one scene renders at any resolution.
    """

    fx_rel: float = 0.8
    fy_rel: float = 0.8
    cx_rel: float = 0.5
    cy_rel: float = 0.5
    cam_pos: tuple = (0.0, 1.5, 0.0)
    cam_rot: np.ndarray = field(default_factory=lambda: np.eye(3))  # columns: right, up, forward (world)
    light_dir: tuple = (0.3, 0.8, -0.4)  # towards the light, normalised on use
    light_rgb: tuple = (0.9, 0.9, 0.9)
    ambient_rgb: tuple = (0.35, 0.35, 0.35)
    sky_top: tuple = (0.25, 0.45, 0.85)
    sky_horizon: tuple = (0.7, 0.8, 0.95)
    background: str = "none"  # "shell" (room seen from inside), "ground" (plane y=0 and sky), "none"
    shell: tuple = (-1.0, 1.0, 0.0, 1.0, -1.0, 1.0)  # xmin, xmax, ymin, ymax, zmin, zmax
    road_half: float = 0.0  # ground: |x| < road_half uses background texture 0, else texture 1
    bg_tex: tuple = (0, 0, 0)  # shell: floor, walls, ceiling; ground: road, pavement, (unused)
    bg_scale: tuple = (1.0, 1.0, 1.0)  # metres per texture repeat
    bg_albedo: tuple = ((0.6, 0.6, 0.6), (0.7, 0.7, 0.7), (0.8, 0.8, 0.8))
    max_depth: float = 1000.0  # ground hits farther than this (near the horizon) count as sky
    prims: list = field(default_factory=list)

    # camera -------------------------------------------------------------------------------
    def look(self, pos, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> "Scene":
        """Place the camera at `pos` (m) with yaw (about y, 0 = looking along +z), pitch, roll (radians).

        forward f = (sin(yaw) cos(pitch), sin(pitch), cos(yaw) cos(pitch)), right r = (cos(yaw), 0, -sin(yaw)),
        up u = f x r; roll rotates r and u about f.
        """
        f = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        r = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        u = np.cross(f, r)
        cr, sr = math.cos(roll), math.sin(roll)
        r, u = cr * r + sr * u, -sr * r + cr * u
        self.cam_pos = tuple(float(x) for x in pos)
        self.cam_rot = np.stack([r, u, f], axis=1)
        return self

    def set_fov(self, fov_x_deg: float) -> "Scene":
        """Horizontal field of view in degrees -> fx_rel = fy_rel = 1 / (2 tan(fov/2))."""
        self.fx_rel = self.fy_rel = 0.5 / math.tan(math.radians(fov_x_deg) / 2)
        return self

    # primitives ----------------------------------------------------------------------------
    def _add(self, ptype, center, size, yaw, material, tex, tex_scale, albedo, cut=(0.0, 1.0, 0.0), caster=None):
        if material not in MAT_ID or material == "sky":
            raise ValueError(f"material must be one of {MATERIALS[:-1]}, got {material!r}")
        if material in ("glass", "mirror") and ptype != QUAD:
            raise ValueError(f"material {material!r} is only supported on quads")
        if caster is None:
            caster = material not in ("glass", "mirror")
        self.prims.append(dict(type=ptype, center=tuple(map(float, center)), size=tuple(map(float, size)),
                               yaw=float(yaw), material=MAT_ID[material], tex=int(tex), tex_scale=float(tex_scale),
                               albedo=tuple(map(float, albedo)), cut=tuple(map(float, cut)), caster=bool(caster)))
        return self

    def add_box(self, center, size, yaw=0.0, material="plain", tex=0, tex_scale=1.0, albedo=(0.7, 0.7, 0.7)):
        """Box with full side lengths `size` (m) centred at `center`, rotated by `yaw` about y."""
        return self._add(BOX, center, tuple(0.5 * s for s in size), yaw, material, tex, tex_scale, albedo)

    def add_sphere(self, center, radius, material="plain", tex=0, tex_scale=1.0, albedo=(0.7, 0.7, 0.7)):
        return self._add(SPHERE, center, (radius, 0.0, 0.0), 0.0, material, tex, tex_scale, albedo)

    def add_cylinder(self, base, radius, height, material="plain", tex=0, tex_scale=1.0, albedo=(0.7, 0.7, 0.7)):
        """Vertical cylinder standing on `base` (x, y, z of the bottom centre)."""
        c = (base[0], base[1] + 0.5 * height, base[2])
        return self._add(CYLINDER, c, (radius, 0.5 * height, 0.0), 0.0, material, tex, tex_scale, albedo)

    def add_quad(self, center, width, height, yaw=0.0, material="plain", tex=0, tex_scale=1.0,
                 albedo=(0.7, 0.7, 0.7), slats=None):
        """Vertical rectangle; at yaw 0 it spans x and y and faces +-z. `slats=(period, duty, rail)`
        (m, fraction, m) cuts it into a fence: vertical slats of width duty*period plus two rails."""
        cut = (0.0, 1.0, 0.0) if slats is None else tuple(float(x) for x in slats)
        return self._add(QUAD, center, (0.5 * width, 0.5 * height, 0.0), yaw, material, tex, tex_scale, albedo, cut)

    def room(self, xmin, xmax, ymin, ymax, zmin, zmax, tex=(0, 0, 0), scale=(1, 1, 1), albedo=None) -> "Scene":
        """Axis-aligned room shell seen from inside (floor, four walls, ceiling)."""
        self.background = "shell"
        self.shell = tuple(float(x) for x in (xmin, xmax, ymin, ymax, zmin, zmax))
        self.bg_tex, self.bg_scale = tuple(int(t) for t in tex), tuple(float(s) for s in scale)
        if albedo is not None:
            self.bg_albedo = tuple(tuple(map(float, a)) for a in albedo)
        return self

    def ground(self, road_half=0.0, tex=(0, 0, 0), scale=(1, 1, 1), albedo=None) -> "Scene":
        """Ground plane y = 0 with the sky at infinity (depth 0, material sky) above the horizon."""
        self.background = "ground"
        self.road_half = float(road_half)
        self.bg_tex, self.bg_scale = tuple(int(t) for t in tex), tuple(float(s) for s in scale)
        if albedo is not None:
            self.bg_albedo = tuple(tuple(map(float, a)) for a in albedo)
        return self

    def intrinsics(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels for an image of `height` x `width`."""
        return self.fx_rel * width, self.fy_rel * width, self.cx_rel * width, self.cy_rel * height


# ---------------------------------------------------------------------------------------------
# random scene samplers
# ---------------------------------------------------------------------------------------------
def _colour(rng, sat_lo=0.1, sat_hi=0.6, lo=0.15, hi=0.85):
    """Random linear albedo: a grey level pushed towards a random hue by a saturation factor."""
    g = rng.uniform(lo, hi)
    c = rng.uniform(lo, hi, 3)
    s = rng.uniform(sat_lo, sat_hi)
    return tuple(np.clip(g + s * (c - g), 0.03, 0.95))


class _Textures:
    """Which texture ids a style draws from: clean -> procedural only; photo -> mostly photo crops."""

    def __init__(self, rng, style):
        self.rng, self.photo = rng, style == "photo"
        self.n_proc, self.n_photo = num_textures()

    def pick(self, names):
        if self.photo and self.rng.random() < 0.8:
            return self.n_proc + int(self.rng.integers(self.n_photo))
        return _tex(names[int(self.rng.integers(len(names)))])


def _free(pos_xz, cam_xz, r, others, clear=0.6):
    """True if a footprint circle (centre, radius r) keeps `clear` m from the camera and others."""
    if math.hypot(pos_xz[0] - cam_xz[0], pos_xz[1] - cam_xz[1]) < r + clear:
        return False
    return all(math.hypot(pos_xz[0] - o[0], pos_xz[1] - o[1]) >= r + o[2] for o in others)


def sample_indoor(rng: np.random.Generator, style: str = "clean") -> Scene:
    """A Hypersim-like room: shell, box furniture, a table and chairs with thin legs, spheres,
    cylinders (columns, lamps, vases), sometimes a glass partition and a wall mirror."""
    photo = style == "photo"
    tx = _Textures(rng, style)
    s = Scene()
    W = rng.uniform(2.8, 6.0) if photo else rng.uniform(3.0, 8.0)
    D = rng.uniform(3.0, 7.0) if photo else rng.uniform(3.5, 10.0)
    Hh = rng.uniform(2.3, 3.0) if photo else rng.uniform(2.4, 3.4)
    x0, x1, z0, z1 = -W / 2, W / 2, -D / 2, D / 2
    s.room(x0, x1, 0.0, Hh, z0, z1,
           tex=(tx.pick(["planks", "tiles", "checker", "noise_coarse", "marble"]),
                tx.pick(["flat", "noise_fine", "stripes", "bricks", "speckle"]),
                tx.pick(["flat", "noise_fine", "tiles"])),
           scale=(rng.uniform(0.8, 3.0), rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0)),
           albedo=(_colour(rng), _colour(rng, 0.0, 0.4, 0.5, 0.9), _colour(rng, 0.0, 0.2, 0.7, 0.95)))
    cam = (rng.uniform(x0 + 0.4, x1 - 0.4), rng.uniform(1.3, 1.8) if photo else rng.uniform(1.0, 1.7),
           rng.uniform(z0 + 0.3, z0 + 0.45 * D))
    yaw = rng.uniform(-1, 1) * math.radians(60 if photo else 50)
    pitch = math.radians(rng.uniform(-15, 10) if photo else rng.uniform(-25, 5))
    roll = math.radians(rng.uniform(-5, 5) if photo else rng.uniform(-2, 2))
    s.look(cam, yaw, pitch, roll)
    s.set_fov(rng.uniform(45, 70) if photo else rng.uniform(55, 85))
    s.cx_rel, s.cy_rel = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)
    s.fy_rel = s.fx_rel * (1 + rng.uniform(-0.01, 0.01))
    el, az = math.radians(rng.uniform(35, 80)), rng.uniform(0, 2 * math.pi)
    s.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    warm = np.array([1.0, 0.82, 0.62]) if photo else np.ones(3)
    s.light_rgb = tuple(rng.uniform(0.6, 0.95) * warm * rng.uniform(0.9, 1.1, 3))
    s.ambient_rgb = tuple(rng.uniform(0.25, 0.45) * (0.5 + 0.5 * warm) * np.ones(3))
    cam_xz = (cam[0], cam[2])
    placed: list[tuple] = []

    def spot(r, margin=0.05, tries=20):
        for _ in range(tries):
            p = (rng.uniform(x0 + r + margin, x1 - r - margin), rng.uniform(z0 + r + margin, z1 - r - margin))
            if _free(p, cam_xz, r, placed):
                placed.append((p[0], p[1], r))
                return p
        return None

    # box furniture (cabinets, sofas, beds, shelves): against a wall or free-standing
    for _ in range(int(rng.integers(2, 7) if photo else rng.integers(1, 6))):
        w, h, d = rng.uniform(0.5, 2.0), rng.uniform(0.4, 2.0), rng.uniform(0.4, 1.0)
        r = 0.5 * math.hypot(w, d)
        p = spot(r)
        if p is None:
            continue
        yaw_b = rng.choice([0.0, math.pi / 2]) if rng.random() < 0.6 else rng.uniform(0, math.pi)
        s.add_box((p[0], h / 2, p[1]), (w, h, d), yaw_b, tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.3, 1.5),
                  albedo=_colour(rng))
    # table with four thin legs
    table = None
    if rng.random() < 0.75:
        w, d, h, th = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78), 0.04
        p = spot(0.5 * math.hypot(w, d))
        if p is not None:
            ty = rng.uniform(0, math.pi)
            table = (p, ty, w, d, h)
            alb, tid, leg = _colour(rng), tx.pick(["planks", "flat", "marble"]), rng.uniform(0.02, 0.035)
            s.add_box((p[0], h - th / 2, p[1]), (w, th, d), ty, tex=tid, tex_scale=rng.uniform(0.5, 1.5), albedo=alb)
            c, sn = math.cos(ty), math.sin(ty)
            for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                ax, az_ = lx * (w / 2 - 0.06), lz * (d / 2 - 0.06)
                # local -> world: x = c*lx + s*lz, z = -s*lx + c*lz (yaw about y)
                s.add_box((p[0] + c * ax + sn * az_, (h - th) / 2, p[1] - sn * ax + c * az_),
                          (2 * leg, h - th, 2 * leg), ty, material="thin", tex=tid, albedo=alb)
    # chairs: seat, back, four thin cylindrical legs
    for _ in range(int(rng.integers(0, 4))):
        sw, sh = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48)
        p = spot(0.4)
        if p is None:
            continue
        cy_ = rng.uniform(0, 2 * math.pi)
        c, sn = math.cos(cy_), math.sin(cy_)
        alb, tid = _colour(rng), tx.pick(["flat", "planks", "noise_fine"])
        s.add_box((p[0], sh, p[1]), (sw, 0.04, sw), cy_, tex=tid, albedo=alb)
        bx, bz = 0.0, -sw / 2 + 0.015
        s.add_box((p[0] + c * bx + sn * bz, sh + 0.25, p[1] - sn * bx + c * bz), (sw, 0.45, 0.03), cy_,
                  tex=tid, albedo=alb)
        lr = rng.uniform(0.012, 0.022)
        for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            ax, az_ = lx * (sw / 2 - 0.03), lz * (sw / 2 - 0.03)
            s.add_cylinder((p[0] + c * ax + sn * az_, 0.0, p[1] - sn * ax + c * az_), lr, sh - 0.02,
                           material="thin", tex=tid, albedo=alb)
    # spheres on the floor or on the table
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(0.08, 0.4)
        if table is not None and rng.random() < 0.4 and r < 0.2:
            (tp, ty, w, d, h) = table
            c, sn = math.cos(ty), math.sin(ty)
            ax, az_ = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.3) * d
            s.add_sphere((tp[0] + c * ax + sn * az_, h + r, tp[1] - sn * ax + c * az_), r,
                         tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.1, 0.5), albedo=_colour(rng, 0.3, 0.9))
            continue
        p = spot(r)
        if p is not None:
            s.add_sphere((p[0], r, p[1]), r, tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.1, 0.6),
                         albedo=_colour(rng, 0.3, 0.9))
    # cylinders: columns, floor lamps (thin pole + shade), vases
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.choice(["column", "lamp", "vase"])
        if kind == "column":
            r = rng.uniform(0.1, 0.3)
            p = spot(r)
            if p is not None:
                s.add_cylinder((p[0], 0.0, p[1]), r, Hh, tex=tx.pick(["flat", "marble", "noise_fine"]),
                               tex_scale=rng.uniform(0.5, 1.5), albedo=_colour(rng, 0.0, 0.3, 0.5, 0.9))
        elif kind == "lamp":
            p = spot(0.2)
            if p is not None:
                hl = rng.uniform(1.2, 1.7)
                s.add_cylinder((p[0], 0.0, p[1]), rng.uniform(0.01, 0.02), hl, material="thin",
                               albedo=_colour(rng, 0.0, 0.2, 0.1, 0.4))
                s.add_sphere((p[0], hl + 0.12, p[1]), rng.uniform(0.12, 0.2), albedo=_colour(rng, 0.0, 0.3, 0.7, 0.95))
        else:
            r = rng.uniform(0.05, 0.12)
            p = spot(r)
            if p is not None:
                s.add_cylinder((p[0], 0.0, p[1]), r, rng.uniform(0.2, 0.6), tex=tx.pick(PROCEDURAL),
                               tex_scale=0.3, albedo=_colour(rng, 0.3, 0.9))
    # glass partition somewhere in front of the camera
    if rng.random() < (0.5 if photo else 0.35):
        gw, gh = rng.uniform(0.8, 2.0), rng.uniform(1.6, min(2.2, Hh))
        dist = rng.uniform(1.0, max(1.2, 0.6 * D))
        f = s.cam_rot[:, 2]
        gx, gz = cam[0] + f[0] * dist, cam[2] + f[2] * dist
        gx, gz = float(np.clip(gx, x0 + 0.3, x1 - 0.3)), float(np.clip(gz, z0 + 0.3, z1 - 0.3))
        if math.hypot(gx - cam[0], gz - cam[2]) > 0.8:
            s.add_quad((gx, gh / 2, gz), gw, gh, yaw + rng.uniform(-0.7, 0.7), material="glass",
                       albedo=(rng.uniform(0.8, 0.9), rng.uniform(0.88, 0.97), rng.uniform(0.85, 0.95)))
    # mirror on a wall, facing into the room
    if rng.random() < (0.5 if photo else 0.35):
        mw, mh = rng.uniform(0.6, 1.8), rng.uniform(0.8, min(1.8, Hh - 0.5))
        my = float(np.clip(rng.uniform(1.1, 1.5), mh / 2 + 0.05, Hh - mh / 2 - 0.05))
        wall = rng.choice(["far", "left", "right"])
        if wall == "far":
            s.add_quad((rng.uniform(x0 + mw / 2, x1 - mw / 2), my, z1 - 0.01), mw, mh, 0.0, material="mirror",
                       albedo=(0.9, 0.9, 0.9))
        else:
            xw = x0 + 0.01 if wall == "left" else x1 - 0.01
            s.add_quad((xw, my, rng.uniform(z0 + mw / 2, z1 - mw / 2)), mw, mh, math.pi / 2, material="mirror",
                       albedo=(0.9, 0.9, 0.9))
    return s


def sample_outdoor(rng: np.random.Generator, style: str = "clean") -> Scene:
    """A Virtual-KITTI-like street: ground with road and pavements, building blocks on both sides,
    car-sized boxes, poles with wires, trees, fences, sometimes a glass shelter and a mirror facade;
    the sky (no hit) is at infinity."""
    photo = style == "photo"
    tx = _Textures(rng, style)
    s = Scene()
    road = rng.uniform(3.0, 5.0) if photo else rng.uniform(3.5, 6.0)
    walk = rng.uniform(1.5, 4.0)
    face = road + walk  # building facades at x = +-face
    s.ground(road, tex=(tx.pick(["noise_fine", "speckle", "noise_coarse"]),
                        tx.pick(["tiles", "bricks", "noise_coarse"]), 0),
             scale=(rng.uniform(1.0, 4.0), rng.uniform(0.5, 2.0), 1.0),
             albedo=(_colour(rng, 0.0, 0.1, 0.08, 0.3), _colour(rng, 0.0, 0.3, 0.3, 0.7), (0.5, 0.5, 0.5)))
    cam = (rng.uniform(-road + 1.0, road - 1.0), rng.uniform(1.2, 1.7) if photo else rng.uniform(1.5, 2.0), 0.0)
    yaw = math.radians(rng.uniform(-30, 30) if photo else rng.uniform(-20, 20))
    pitch = math.radians(rng.uniform(-8, 3))
    s.look(cam, yaw, pitch, math.radians(rng.uniform(-3, 3) if photo else rng.uniform(-1.5, 1.5)))
    s.set_fov(rng.uniform(50, 80) if photo else rng.uniform(70, 100))
    s.cx_rel, s.cy_rel = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)
    s.fy_rel = s.fx_rel * (1 + rng.uniform(-0.01, 0.01))
    el = math.radians(rng.uniform(10, 50) if photo else rng.uniform(25, 70))
    az = rng.uniform(0, 2 * math.pi)
    s.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    if photo:  # hazier, warmer, sometimes overcast
        over = rng.uniform(0.0, 1.0)
        s.light_rgb = tuple((1.1 - 0.7 * over) * np.array([1.0, 0.9, 0.75]))
        s.ambient_rgb = tuple((0.3 + 0.25 * over) * np.array([0.9, 0.95, 1.0]))
        s.sky_top = tuple((0.45 + 0.3 * over) * np.array([0.8, 0.9, 1.0]))
        s.sky_horizon = tuple((0.7 + 0.2 * over) * np.array([0.95, 0.95, 0.95]))
    else:
        s.light_rgb = tuple(rng.uniform(0.85, 1.1) * np.ones(3))
        s.ambient_rgb = tuple(rng.uniform(0.3, 0.45) * np.array([0.85, 0.92, 1.0]))
        s.sky_top = tuple(np.array([0.2, 0.4, 0.85]) * rng.uniform(0.8, 1.1))
        s.sky_horizon = tuple(np.array([0.65, 0.78, 0.95]) * rng.uniform(0.9, 1.05))
    # building blocks along both sides
    for side in (-1, 1):
        z = rng.uniform(-30, -10)
        for _ in range(9):
            if z > 160:
                break
            length = rng.uniform(8, 30)
            if rng.random() < 0.85:
                h = rng.uniform(8, 40) if photo else rng.uniform(5, 30)
                d = rng.uniform(8, 15)
                setback = rng.uniform(0, 2.0)
                s.add_box((side * (face + setback + d / 2), h / 2, z + length / 2), (d, h, length), 0.0,
                          tex=tx.pick(["bricks", "tiles", "stripes", "noise_coarse", "flat"]),
                          tex_scale=rng.uniform(2.0, 8.0), albedo=_colour(rng, 0.0, 0.5, 0.3, 0.85))
            z += length + rng.uniform(0, 6)
    # cars: body + cabin, in two lanes ahead
    lanes: list[tuple] = []
    for _ in range(int(rng.integers(2, 7) if photo else rng.integers(0, 6))):
        lane_x = rng.choice([-road / 2, road / 2]) + rng.uniform(-0.3, 0.3)
        cz = rng.uniform(5, 70)
        if abs(lane_x - cam[0]) < 1.3 and cz < 7:
            continue
        if any(abs(lane_x - lx) < 2.0 and abs(cz - lz) < 6.0 for lx, lz in lanes):
            continue
        lanes.append((lane_x, cz))
        cyaw = rng.uniform(-0.08, 0.08)
        alb = _colour(rng, 0.3, 0.9)
        s.add_box((lane_x, 0.3 + 0.4, cz), (1.8, 0.8, 4.3), cyaw, tex=_tex("flat"), albedo=alb)
        s.add_box((lane_x, 1.1 + 0.3, cz - 0.2), (1.6, 0.6, 2.2), cyaw, tex=_tex("flat"),
                  albedo=tuple(0.4 * np.array(alb)))
    # poles with wires between them (thin structures)
    for side in (-1, 1):
        if rng.random() < 0.25:
            continue
        px = side * (road + 0.4)
        spacing, z = rng.uniform(15, 30), rng.uniform(4, 15)
        hp = rng.uniform(6, 9)
        prev = None
        for _ in range(3):
            s.add_cylinder((px, 0.0, z), rng.uniform(0.08, 0.15), hp, material="thin",
                           albedo=_colour(rng, 0.0, 0.2, 0.2, 0.5))
            if prev is not None and rng.random() < 0.8:
                thick = rng.uniform(0.015, 0.035)
                s.add_box((px, hp - 0.3, (prev + z) / 2), (thick, thick, z - prev), 0.0, material="thin",
                          albedo=(0.05, 0.05, 0.05))
            prev = z
            z += spacing
        if rng.random() < 0.3:  # a wire across the street
            thick = rng.uniform(0.015, 0.035)
            s.add_box((0.0, hp - 0.5, prev), (2 * road + 0.8, thick, thick), 0.0, material="thin",
                      albedo=(0.05, 0.05, 0.05))
    # trees: trunk + crown
    for _ in range(int(rng.integers(0, 5))):
        side = rng.choice([-1, 1])
        tz, tr = rng.uniform(3, 80), rng.uniform(0.12, 0.25)
        th = rng.uniform(2.0, 3.5)
        tx_ = side * (road + walk * rng.uniform(0.4, 0.7))
        s.add_cylinder((tx_, 0.0, tz), tr, th, tex=_tex("noise_fine"), tex_scale=0.5,
                       albedo=_colour(rng, 0.0, 0.3, 0.1, 0.3))
        cr = rng.uniform(1.2, 2.5)
        if math.dist((tx_, th + cr * 0.8, tz), cam) < cr + 0.5:  # never put the camera inside a crown
            continue
        s.add_sphere((tx_, th + cr * 0.8, tz), cr, tex=tx.pick(["speckle", "noise_coarse", "noise_fine"]),
                     tex_scale=rng.uniform(0.5, 1.5),
                     albedo=(rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.45), rng.uniform(0.03, 0.12)))
    # fences along the pavement (slat cut-out quads)
    for _ in range(int(rng.integers(0, 3))):
        side = rng.choice([-1, 1])
        fl, fh = rng.uniform(6, 20), rng.uniform(1.0, 1.8)
        fz = rng.uniform(3, 50)
        s.add_quad((side * (face - 0.3), fh / 2, fz + fl / 2), fl, fh, math.pi / 2, material="thin",
                   albedo=_colour(rng, 0.0, 0.4, 0.2, 0.7),
                   slats=(rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.5), rng.uniform(0.02, 0.05)))
    # glass bus shelter pane
    if rng.random() < (0.45 if photo else 0.3):
        side = rng.choice([-1, 1])
        s.add_quad((side * (road + 1.2), 1.2, rng.uniform(6, 25)), rng.uniform(2, 4), rng.uniform(2.0, 2.4),
                   math.pi / 2, material="glass", albedo=(0.82, 0.92, 0.9))
    # mirror-like facade panel
    if rng.random() < (0.35 if photo else 0.25):
        side = rng.choice([-1, 1])
        mh = rng.uniform(3, 8)
        s.add_quad((side * (face - 0.05), mh / 2 + 0.5, rng.uniform(10, 50)), rng.uniform(4, 12), mh, math.pi / 2,
                   material="mirror", albedo=(0.85, 0.88, 0.9))
    return s


def sample(kind: str, rng: np.random.Generator, style: str = "clean") -> Scene:
    """Draw one scene of `kind` ("indoor" | "outdoor")."""
    if kind == "indoor":
        return sample_indoor(rng, style)
    if kind == "outdoor":
        return sample_outdoor(rng, style)
    raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")

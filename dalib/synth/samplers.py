"""The procedural scene samplers (notebook 00_depth_data): `sample_indoor` draws a random Hypersim-like room,
`sample_outdoor` a Virtual-KITTI-like street, from a numpy Generator; `style` changes the scene-parameter
distribution (the `"photo"` domain uses other field-of-view, camera-height, light and clutter ranges, and photo
textures). Each sampler is a sequence of named stages (room, camera and light, furniture, ...) that draw from
the one generator in a fixed order, so a seed gives the same scene every time.
"""
from __future__ import annotations

import math

import numpy as np

from .scenes import SCENE_KINDS, Scene, tex_id
from .textures import PROCEDURAL, num_textures

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
        return tex_id(names[int(self.rng.integers(len(names)))])


def _free(pos_xz, cam_xz, r, others, clear=0.6):
    """True if a footprint circle (centre, radius r) keeps `clear` m from the camera and others."""
    if math.hypot(pos_xz[0] - cam_xz[0], pos_xz[1] - cam_xz[1]) < r + clear:
        return False
    return all(math.hypot(pos_xz[0] - o[0], pos_xz[1] - o[1]) >= r + o[2] for o in others)


class _Floor:
    """Free floor space of a room: `spot(r)` finds a footprint circle of radius r (m) that keeps clear of the
    camera and of everything placed before, and reserves it (None after `tries` failed draws)."""

    def __init__(self, rng, bounds, cam_xz):
        self.rng, self.bounds, self.cam_xz, self.placed = rng, bounds, cam_xz, []

    def spot(self, r, margin=0.05, tries=20):
        x0, x1, z0, z1 = self.bounds
        for _ in range(tries):
            p = (self.rng.uniform(x0 + r + margin, x1 - r - margin), self.rng.uniform(z0 + r + margin, z1 - r - margin))
            if _free(p, self.cam_xz, r, self.placed):
                self.placed.append((p[0], p[1], r))
                return p
        return None


def _on_yawed(centre, yaw, ax, az):
    """World (x, z) of the point (ax, az) in the frame of an object at `centre` turned by `yaw` about y."""
    c, sn = math.cos(yaw), math.sin(yaw)
    return centre[0] + c * ax + sn * az, centre[1] - sn * ax + c * az


def _indoor_room(s: Scene, rng, tx: _Textures, photo: bool) -> tuple:
    """The shell: width W, depth D, height Hh (m), textures and albedos; returns (x0, x1, z0, z1, Hh)."""
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
    return x0, x1, z0, z1, Hh


def _indoor_camera_and_light(s: Scene, rng, room: tuple, photo: bool) -> tuple:
    """Camera in the near half of the room (pose, field of view, principal point) and a warm (photo) or white
    key light; returns the camera position and yaw."""
    x0, x1, z0, z1, _ = room
    cam = (rng.uniform(x0 + 0.4, x1 - 0.4), rng.uniform(1.3, 1.8) if photo else rng.uniform(1.0, 1.7),
           rng.uniform(z0 + 0.3, z0 + 0.45 * (z1 - z0)))
    yaw = rng.uniform(-1, 1) * math.radians(60 if photo else 50)
    pitch = math.radians(rng.uniform(-15, 10) if photo else rng.uniform(-25, 5))
    roll = math.radians(rng.uniform(-5, 5) if photo else rng.uniform(-2, 2))
    s.look(cam, yaw, pitch, roll)
    s.set_fov(rng.uniform(45, 70) if photo else rng.uniform(55, 85))
    _jitter_intrinsics(s, rng)
    el, az = math.radians(rng.uniform(35, 80)), rng.uniform(0, 2 * math.pi)
    s.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    warm = np.array([1.0, 0.82, 0.62]) if photo else np.ones(3)
    s.light_rgb = tuple(rng.uniform(0.6, 0.95) * warm * rng.uniform(0.9, 1.1, 3))
    s.ambient_rgb = tuple(rng.uniform(0.25, 0.45) * (0.5 + 0.5 * warm) * np.ones(3))
    return cam, yaw


def _jitter_intrinsics(s: Scene, rng) -> None:
    """Principal point within 2% of the centre, fy within 1% of fx (real calibrations are never exact)."""
    s.cx_rel, s.cy_rel = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)
    s.fy_rel = s.fx_rel * (1 + rng.uniform(-0.01, 0.01))


def _add_furniture(s: Scene, rng, tx: _Textures, floor: _Floor, photo: bool) -> None:
    """Box furniture (cabinets, sofas, beds, shelves): against a wall or free-standing."""
    for _ in range(int(rng.integers(2, 7) if photo else rng.integers(1, 6))):
        w, h, d = rng.uniform(0.5, 2.0), rng.uniform(0.4, 2.0), rng.uniform(0.4, 1.0)
        p = floor.spot(0.5 * math.hypot(w, d))
        if p is None:
            continue
        yaw_b = rng.choice([0.0, math.pi / 2]) if rng.random() < 0.6 else rng.uniform(0, math.pi)
        s.add_box((p[0], h / 2, p[1]), (w, h, d), yaw_b, tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.3, 1.5),
                  albedo=_colour(rng))


def _add_table(s: Scene, rng, tx: _Textures, floor: _Floor) -> tuple | None:
    """A table top on four thin legs (75%); returns (centre, yaw, w, d, h) or None."""
    if rng.random() >= 0.75:
        return None
    w, d, h, th = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78), 0.04
    p = floor.spot(0.5 * math.hypot(w, d))
    if p is None:
        return None
    ty = rng.uniform(0, math.pi)
    alb, tid, leg = _colour(rng), tx.pick(["planks", "flat", "marble"]), rng.uniform(0.02, 0.035)
    s.add_box((p[0], h - th / 2, p[1]), (w, th, d), ty, tex=tid, tex_scale=rng.uniform(0.5, 1.5), albedo=alb)
    for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        x, z = _on_yawed(p, ty, lx * (w / 2 - 0.06), lz * (d / 2 - 0.06))
        s.add_box((x, (h - th) / 2, z), (2 * leg, h - th, 2 * leg), ty, material="thin", tex=tid, albedo=alb)
    return p, ty, w, d, h


def _add_chairs(s: Scene, rng, tx: _Textures, floor: _Floor) -> None:
    """Chairs: seat, back, four thin cylindrical legs."""
    for _ in range(int(rng.integers(0, 4))):
        sw, sh = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48)
        p = floor.spot(0.4)
        if p is None:
            continue
        cy_ = rng.uniform(0, 2 * math.pi)
        alb, tid = _colour(rng), tx.pick(["flat", "planks", "noise_fine"])
        s.add_box((p[0], sh, p[1]), (sw, 0.04, sw), cy_, tex=tid, albedo=alb)
        bx, bz = _on_yawed(p, cy_, 0.0, -sw / 2 + 0.015)
        s.add_box((bx, sh + 0.25, bz), (sw, 0.45, 0.03), cy_, tex=tid, albedo=alb)
        lr = rng.uniform(0.012, 0.022)
        for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            x, z = _on_yawed(p, cy_, lx * (sw / 2 - 0.03), lz * (sw / 2 - 0.03))
            s.add_cylinder((x, 0.0, z), lr, sh - 0.02, material="thin", tex=tid, albedo=alb)


def _add_spheres(s: Scene, rng, tx: _Textures, floor: _Floor, table) -> None:
    """Spheres on the floor, or small ones on the table."""
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(0.08, 0.4)
        if table is not None and rng.random() < 0.4 and r < 0.2:
            tp, ty, w, d, h = table
            x, z = _on_yawed(tp, ty, rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.3) * d)
            s.add_sphere((x, h + r, z), r, tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.1, 0.5),
                         albedo=_colour(rng, 0.3, 0.9))
            continue
        p = floor.spot(r)
        if p is not None:
            s.add_sphere((p[0], r, p[1]), r, tex=tx.pick(PROCEDURAL), tex_scale=rng.uniform(0.1, 0.6),
                         albedo=_colour(rng, 0.3, 0.9))


def _add_cylinders(s: Scene, rng, tx: _Textures, floor: _Floor, height: float) -> None:
    """Columns up to the ceiling, floor lamps (a thin pole and a shade), vases."""
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.choice(["column", "lamp", "vase"])
        if kind == "column":
            r = rng.uniform(0.1, 0.3)
            p = floor.spot(r)
            if p is not None:
                s.add_cylinder((p[0], 0.0, p[1]), r, height, tex=tx.pick(["flat", "marble", "noise_fine"]),
                               tex_scale=rng.uniform(0.5, 1.5), albedo=_colour(rng, 0.0, 0.3, 0.5, 0.9))
        elif kind == "lamp":
            p = floor.spot(0.2)
            if p is not None:
                hl = rng.uniform(1.2, 1.7)
                s.add_cylinder((p[0], 0.0, p[1]), rng.uniform(0.01, 0.02), hl, material="thin",
                               albedo=_colour(rng, 0.0, 0.2, 0.1, 0.4))
                s.add_sphere((p[0], hl + 0.12, p[1]), rng.uniform(0.12, 0.2), albedo=_colour(rng, 0.0, 0.3, 0.7, 0.95))
        else:
            r = rng.uniform(0.05, 0.12)
            p = floor.spot(r)
            if p is not None:
                s.add_cylinder((p[0], 0.0, p[1]), r, rng.uniform(0.2, 0.6), tex=tx.pick(PROCEDURAL),
                               tex_scale=0.3, albedo=_colour(rng, 0.3, 0.9))


def _add_indoor_glass_and_mirror(s: Scene, rng, room: tuple, cam, yaw: float, photo: bool) -> None:
    """Sometimes a glass partition in front of the camera and a mirror on a wall, facing into the room."""
    x0, x1, z0, z1, Hh = room
    if rng.random() < (0.5 if photo else 0.35):
        gw, gh = rng.uniform(0.8, 2.0), rng.uniform(1.6, min(2.2, Hh))
        dist = rng.uniform(1.0, max(1.2, 0.6 * (z1 - z0)))
        f = s.cam_rot[:, 2]
        gx, gz = cam[0] + f[0] * dist, cam[2] + f[2] * dist
        gx, gz = float(np.clip(gx, x0 + 0.3, x1 - 0.3)), float(np.clip(gz, z0 + 0.3, z1 - 0.3))
        if math.hypot(gx - cam[0], gz - cam[2]) > 0.8:
            s.add_quad((gx, gh / 2, gz), gw, gh, yaw + rng.uniform(-0.7, 0.7), material="glass",
                       albedo=(rng.uniform(0.8, 0.9), rng.uniform(0.88, 0.97), rng.uniform(0.85, 0.95)))
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


def sample_indoor(rng: np.random.Generator, style: str = "clean") -> Scene:
    """A Hypersim-like room: shell, box furniture, a table and chairs with thin legs, spheres,
    cylinders (columns, lamps, vases), sometimes a glass partition and a wall mirror."""
    photo = style == "photo"
    tx = _Textures(rng, style)
    s = Scene()
    room = _indoor_room(s, rng, tx, photo)
    cam, yaw = _indoor_camera_and_light(s, rng, room, photo)
    floor = _Floor(rng, room[:4], (cam[0], cam[2]))
    _add_furniture(s, rng, tx, floor, photo)
    table = _add_table(s, rng, tx, floor)
    _add_chairs(s, rng, tx, floor)
    _add_spheres(s, rng, tx, floor, table)
    _add_cylinders(s, rng, tx, floor, room[4])
    _add_indoor_glass_and_mirror(s, rng, room, cam, yaw, photo)
    return s


def _outdoor_street(s: Scene, rng, tx: _Textures, photo: bool) -> tuple:
    """Ground with a road of half width `road` and pavements of width `walk` (m); returns (road, walk, face),
    face = road + walk: the building facades stand at x = +-face."""
    road = rng.uniform(3.0, 5.0) if photo else rng.uniform(3.5, 6.0)
    walk = rng.uniform(1.5, 4.0)
    s.ground(road, tex=(tx.pick(["noise_fine", "speckle", "noise_coarse"]),
                        tx.pick(["tiles", "bricks", "noise_coarse"]), 0),
             scale=(rng.uniform(1.0, 4.0), rng.uniform(0.5, 2.0), 1.0),
             albedo=(_colour(rng, 0.0, 0.1, 0.08, 0.3), _colour(rng, 0.0, 0.3, 0.3, 0.7), (0.5, 0.5, 0.5)))
    return road, walk, road + walk


def _outdoor_camera_and_light(s: Scene, rng, road: float, photo: bool) -> tuple:
    """A camera on the road looking along it, the sun, and the sky: hazier, warmer and sometimes overcast in
    the photo style. Returns the camera position."""
    cam = (rng.uniform(-road + 1.0, road - 1.0), rng.uniform(1.2, 1.7) if photo else rng.uniform(1.5, 2.0), 0.0)
    yaw = math.radians(rng.uniform(-30, 30) if photo else rng.uniform(-20, 20))
    pitch = math.radians(rng.uniform(-8, 3))
    s.look(cam, yaw, pitch, math.radians(rng.uniform(-3, 3) if photo else rng.uniform(-1.5, 1.5)))
    s.set_fov(rng.uniform(50, 80) if photo else rng.uniform(70, 100))
    _jitter_intrinsics(s, rng)
    el = math.radians(rng.uniform(10, 50) if photo else rng.uniform(25, 70))
    az = rng.uniform(0, 2 * math.pi)
    s.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    if photo:
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
    return cam


def _add_buildings(s: Scene, rng, tx: _Textures, face: float, photo: bool) -> None:
    """Building blocks along both sides of the street, with gaps and setbacks."""
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


def _add_cars(s: Scene, rng, road: float, cam, photo: bool) -> None:
    """Cars (a body and a cabin) in the two lanes ahead, never on the camera or on each other."""
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
        s.add_box((lane_x, 0.3 + 0.4, cz), (1.8, 0.8, 4.3), cyaw, tex=tex_id("flat"), albedo=alb)
        s.add_box((lane_x, 1.1 + 0.3, cz - 0.2), (1.6, 0.6, 2.2), cyaw, tex=tex_id("flat"),
                  albedo=tuple(0.4 * np.array(alb)))


def _add_poles_and_wires(s: Scene, rng, road: float) -> None:
    """Thin structures: rows of poles along the kerbs with wires between them, sometimes one across the street."""
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
        if rng.random() < 0.3:
            thick = rng.uniform(0.015, 0.035)
            s.add_box((0.0, hp - 0.5, prev), (2 * road + 0.8, thick, thick), 0.0, material="thin",
                      albedo=(0.05, 0.05, 0.05))


def _add_trees(s: Scene, rng, tx: _Textures, road: float, walk: float, cam) -> None:
    """Trees on the pavements: a trunk and a crown (never around the camera)."""
    for _ in range(int(rng.integers(0, 5))):
        side = rng.choice([-1, 1])
        tz, tr = rng.uniform(3, 80), rng.uniform(0.12, 0.25)
        th = rng.uniform(2.0, 3.5)
        tx_ = side * (road + walk * rng.uniform(0.4, 0.7))
        s.add_cylinder((tx_, 0.0, tz), tr, th, tex=tex_id("noise_fine"), tex_scale=0.5,
                       albedo=_colour(rng, 0.0, 0.3, 0.1, 0.3))
        cr = rng.uniform(1.2, 2.5)
        if math.dist((tx_, th + cr * 0.8, tz), cam) < cr + 0.5:
            continue
        s.add_sphere((tx_, th + cr * 0.8, tz), cr, tex=tx.pick(["speckle", "noise_coarse", "noise_fine"]),
                     tex_scale=rng.uniform(0.5, 1.5),
                     albedo=(rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.45), rng.uniform(0.03, 0.12)))


def _add_fences_glass_and_mirror(s: Scene, rng, road: float, face: float, photo: bool) -> None:
    """Fences along the pavement (slat cut-out quads), sometimes a glass bus-shelter pane and a mirror-like
    facade panel."""
    for _ in range(int(rng.integers(0, 3))):
        side = rng.choice([-1, 1])
        fl, fh = rng.uniform(6, 20), rng.uniform(1.0, 1.8)
        fz = rng.uniform(3, 50)
        s.add_quad((side * (face - 0.3), fh / 2, fz + fl / 2), fl, fh, math.pi / 2, material="thin",
                   albedo=_colour(rng, 0.0, 0.4, 0.2, 0.7),
                   slats=(rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.5), rng.uniform(0.02, 0.05)))
    if rng.random() < (0.45 if photo else 0.3):
        side = rng.choice([-1, 1])
        s.add_quad((side * (road + 1.2), 1.2, rng.uniform(6, 25)), rng.uniform(2, 4), rng.uniform(2.0, 2.4),
                   math.pi / 2, material="glass", albedo=(0.82, 0.92, 0.9))
    if rng.random() < (0.35 if photo else 0.25):
        side = rng.choice([-1, 1])
        mh = rng.uniform(3, 8)
        s.add_quad((side * (face - 0.05), mh / 2 + 0.5, rng.uniform(10, 50)), rng.uniform(4, 12), mh, math.pi / 2,
                   material="mirror", albedo=(0.85, 0.88, 0.9))


def sample_outdoor(rng: np.random.Generator, style: str = "clean") -> Scene:
    """A Virtual-KITTI-like street: ground with road and pavements, building blocks on both sides,
    car-sized boxes, poles with wires, trees, fences, sometimes a glass shelter and a mirror facade;
    the sky (no hit) is at infinity."""
    photo = style == "photo"
    tx = _Textures(rng, style)
    s = Scene()
    road, walk, face = _outdoor_street(s, rng, tx, photo)
    cam = _outdoor_camera_and_light(s, rng, road, photo)
    _add_buildings(s, rng, tx, face, photo)
    _add_cars(s, rng, road, cam, photo)
    _add_poles_and_wires(s, rng, road)
    _add_trees(s, rng, tx, road, walk, cam)
    _add_fences_glass_and_mirror(s, rng, road, face, photo)
    return s


def sample(kind: str, rng: np.random.Generator, style: str = "clean") -> Scene:
    """Draw one scene of `kind` ("indoor" | "outdoor")."""
    if kind == "indoor":
        return sample_indoor(rng, style)
    if kind == "outdoor":
        return sample_outdoor(rng, style)
    raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")

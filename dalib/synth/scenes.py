"""Scene descriptions (notebook 00_depth_data).

A `Scene` is a plain description in metres, world y up: a pinhole camera (relative intrinsics, pose),
lights, a background (an indoor room shell seen from inside, or an outdoor ground plane under a sky
at infinity) and a list of analytic primitives:

    box       centre c, half sizes h, yaw about y            (furniture, buildings, cars, legs, wires)
    sphere    centre c, radius r                              (balls, lamps, tree crowns)
    cylinder  vertical axis through c, radius r, half height  (columns, poles, trunks, chair legs)
    quad      vertical rectangle, centre c, half width / half height, yaw; optional slat cut-out
              (fences), or material glass / mirror (see-through / reflecting panes)

Random scenes come from `dalib.synth.samplers` (`sample_indoor`, `sample_outdoor`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .textures import PROCEDURAL

MATERIALS = ("plain", "glass", "mirror", "thin", "sky")  # material id = index into this tuple
SCENE_KINDS = ("indoor", "outdoor")
STYLES = ("clean", "photo")
BOX, SPHERE, CYLINDER, QUAD = 0, 1, 2, 3
PRIM_TYPES = ("box", "sphere", "cylinder", "quad")
MAT_ID = {m: i for i, m in enumerate(MATERIALS)}


def tex_id(name: str) -> int:
    """Texture id of a procedural texture (`dalib.synth.textures.PROCEDURAL`) by name."""
    return PROCEDURAL.index(name)


@dataclass
class Scene:
    """One scene. Build it with the `add_*` methods, or draw one with `dalib.synth.samplers`.

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

"""Compose a look's scene parts into one connector image through the 3-D camera.

Three flat layers are drawn once per product in the plane frame (:mod:`.frame`) and cached (the
reference and the test of one sample share them): the housing top with its socket openings and
the pins' cast shadows (height 0), the socket floors and inner walls (height ``-depth``), and the
good pins' faces (height ``+height``). Each shot warps every layer with the homography of its own
height (``cv2.warpPerspective``), so parallax between pin tops, the housing and the socket floors
is exact; the side walls of the housing and of the pin shafts are the projected prisms between
two heights (filled convex polygons); a bent tip and a short face, which stand at heights of their
own, are evaluated per pixel through their height's homography. The bench lies under the housing
at ``-thickness`` and does not move with the product.

``Rendered.pose`` is the homography of height 0: the exact map of canonical coordinates of the
housing top (where the socket centres ``geo.pin_center(p)`` are) to image pixels.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from dataset_tools.looks import bench as bench_part
from dataset_tools.looks import housing as housing_part
from dataset_tools.looks import pins as pins_part
from dataset_tools.looks.camera import Projector, cv_matrix, develop
from dataset_tools.looks.defects import (
    SHORT_FACE,
    SHORT_LIGHT,
    bent_tip,
    defect_box,
    pin_height,
    short_height,
    socket_depth,
)
from dataset_tools.looks.frame import PlaneFrame, paste, plane_frame, sprite_grid
from dataset_tools.looks.look import Look, Product
from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Finding, Position

_Defects = tuple[tuple[Position, DefectKind, object], ...]


def _key(findings: tuple[Finding, ...]) -> _Defects:
    return tuple((f.position, f.kind, f.direction) for f in findings)


def _thickness(geo: ConnectorGeometry, product: Product) -> float:
    x1, y1, x2, y2 = geo.housing_box
    return product.housing.thickness * (y2 - y1)


@lru_cache(maxsize=16)
def _layers(product: Product, geo: ConnectorGeometry, defects: _Defects):
    """The product's flat layers in the plane frame (read-only): housing top (premultiplied RGBA,
    sockets cut out), socket holes (coverage), floors (RGB), good pin faces (premultiplied RGBA)."""
    frame = plane_frame(geo)
    h_, p_, light = product.housing, product.pins, product.light
    rgb, cover = housing_part.top_layer(h_, light, frame)
    kinds = {pos: (kind, direction) for pos, kind, direction in defects}
    _cast_shadows(rgb, frame, product, kinds)
    socket_half = geo.socket_size / 2
    pin_half = geo.pin_size * p_.size / 2
    dx, dy = sprite_grid(frame, socket_half * (1 + p_.chamfer) + 2)
    shade, hole = pins_part.socket_lip(p_, light, dx, dy, socket_half, frame.scale, p_.shape)
    face = pins_part.face(p_, light, dx, dy, pin_half, frame.scale)
    wall = h_.rgb * 0.42 * light.ambient + 6.0
    floor_rgb = h_.rgb * 0.30 * light.ambient + 4.0
    floor_sprite = pins_part.socket_floor(
        floor_rgb, wall, dx, dy, socket_half, p_, frame.scale, p_.shape, pin_half
    )
    holes = np.zeros(cover.shape, np.float32)
    floor = np.empty((*cover.shape, 3), np.float32)
    floor[:] = wall
    tops = np.zeros((*cover.shape, 4), np.float32)
    for position in ALL_POSITIONS:
        col, row = frame.site_index(position)
        paste(rgb, shade[..., None], col, row, "mul")
        paste(holes, hole, col, row, "set")
        sprite = floor_sprite
        kind = kinds.get(position, (None,))[0]
        if kind is DefectKind.SHORT:  # the socket walls shade the floor around the sunk pin
            r = np.hypot(dx, dy) / (pin_half * 1.6)
            ring = 1.0 - 0.65 * np.clip(1.6 - r, 0.0, 1.0)
            sprite = floor_sprite * ring[..., None]
        paste(floor, sprite, col, row, "set")
        if kind is None:
            paste(tops, face, col, row, "set")
    holes *= cover
    top = np.concatenate([rgb * (cover - holes)[..., None], (cover - holes)[..., None]], axis=-1)
    out = (top.astype(np.float32), holes, floor, tops)
    for a in out:
        a.setflags(write=False)
    return out


def _cast_shadows(rgb: np.ndarray, frame: PlaneFrame, product: Product, kinds: dict) -> None:
    """Darken the housing top where the pins' shadows fall (a directional lamp casts them; soft
    light only darkens a faint halo around each pin)."""
    geo = frame.geo
    light, p_ = product.light, product.pins
    half = geo.pin_size * p_.size / 2
    height = pin_height(geo, p_)
    sx, sy = light.shadow_shift
    strength = light.shadow_strength
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for position in ALL_POSITIONS:
        kind, direction = kinds.get(position, (None, None))
        if kind in (DefectKind.MISSING, DefectKind.SHORT):
            continue
        cx, cy = geo.pin_center(position)
        base = pins_part.outline(p_.shape, cx, cy, half)
        if kind is DefectKind.BENT:
            tx, ty, tz = bent_tip(geo, p_, Finding(position, kind, direction))
            tip = pins_part.outline(p_.shape, tx + sx * tz, ty + sy * tz, half)
        else:
            tip = base + np.array([sx, sy]) * height
        if strength == 0:  # soft light: a halo around the base only
            tip = base
        pts = frame.to_plane(np.concatenate([base, tip]))
        hull = cv2.convexHull(np.round((pts - 0.5) * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, 4)
    soft = cv2.GaussianBlur(mask.astype(np.float32) * (1 / 255), (0, 0), 1.0 if strength else 3.0)
    dark = strength * 0.8 if strength else 0.25
    rgb *= (1.0 - dark * soft)[..., None]


def _composite_polys(img: np.ndarray, polys: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Fill convex polygons (continuous image coordinates, one colour each, later over earlier)
    anti-aliased over ``img`` (float RGB), in place."""
    if not polys:
        return
    h, w = img.shape[:2]
    allpts = np.concatenate([p for p, _ in polys])
    x0 = max(int(allpts[:, 0].min()) - 2, 0)
    y0 = max(int(allpts[:, 1].min()) - 2, 0)
    x1 = min(int(allpts[:, 0].max()) + 3, w)
    y1 = min(int(allpts[:, 1].max()) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    origin = np.array([x0 + 0.5, y0 + 0.5])
    for pts, colour in polys:
        p = np.round((pts - origin) * 16).astype(np.int32)
        c = tuple(int(v) for v in np.clip(colour, 0, 255))
        cv2.fillConvexPoly(canvas, p, c, cv2.LINE_AA, 4)
        cv2.fillConvexPoly(mask, p, 255, cv2.LINE_AA, 4)
    a = mask.astype(np.float32) * np.float32(1 / 255)
    block = img[y0:y1, x0:x1]
    block *= (1.0 - a)[..., None]
    block += canvas


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _prisms(product, geo, proj, sites, z0, z1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Side faces of upright pin shafts between heights ``z0`` and ``z1`` (per site), as seen."""
    p_, light = product.pins, product.light
    half = geo.pin_size * p_.size / 2 * 0.98
    polys = []
    if not sites:
        return polys
    centres = np.array([geo.pin_center(s) for s in sites])
    towards = proj.direction_to_camera(centres)
    for i, (cx, cy) in enumerate(centres):
        ring = pins_part.outline(p_.shape, cx, cy, half)
        a = proj.project(ring, z0[i])
        b = proj.project(ring, z1[i])
        if p_.shape == "round":
            colour = pins_part.shaft_colour(p_, light, tuple(towards[i]))
            polys.append((_hull(np.concatenate([a, b])), colour))
            continue
        n = len(ring)
        for j in range(n):
            k = (j + 1) % n
            mid = (ring[j] + ring[k]) / 2 - (cx, cy)
            normal = mid / (np.linalg.norm(mid) + 1e-9)
            if normal @ towards[i] <= 0:
                continue
            quad = np.array([a[j], a[k], b[k], b[j]])
            polys.append((quad, pins_part.shaft_colour(p_, light, tuple(normal))))
    return polys


def _face_at(img, product, geo, proj, cx, cy, z, half, dim, scale) -> None:
    """Draw a pin face centred at canonical ``(cx, cy)`` at height ``z`` straight in the image:
    every pixel is mapped back through that height's homography (exact for any camera)."""
    h, w = img.shape[:2]
    box = np.array(
        [
            [cx - half, cy - half],
            [cx + half, cy - half],
            [cx - half, cy + half],
            [cx + half, cy + half],
        ]
    )
    p = proj.project(box, z)
    x0, y0 = max(int(p[:, 0].min()) - 2, 0), max(int(p[:, 1].min()) - 2, 0)
    x1, y1 = min(int(p[:, 0].max()) + 3, w), min(int(p[:, 1].max()) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    inv = np.linalg.inv(proj.homography(z))
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    gx, gy = np.meshgrid(xs, ys)
    d = inv[2, 0] * gx + inv[2, 1] * gy + inv[2, 2]
    u = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) / d - cx
    v = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) / d - cy
    rgba = pins_part.face(
        product.pins, product.light, u.astype(np.float32), v.astype(np.float32), half, scale, dim
    )
    block = img[y0:y1, x0:x1]
    block *= 1.0 - rgba[..., 3:]
    block += rgba[..., :3]


def _warp(layer: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpPerspective(
        layer,
        cv_matrix(m),
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def render_look(
    spec,
    geo: ConnectorGeometry,
    look: Look,
    rng: np.random.Generator,
    *,
    box_pad: float = 2.0,
    pose=None,
):
    """Render ``spec``'s defects on ``look`` (its product and this shot's camera).

    ``spec.housing`` and ``spec.pins`` are the classic renderer's and are not used (the look says
    what the housing and pins are); ``pose`` (a :class:`~dataset_tools.render.Pose`) replaces the
    look's placement of the product. ``rng`` draws only the sensor noise.
    """
    from dataset_tools.render import Rendered, _noise_bank

    product, cam = look.product, look.camera
    if pose is not None:
        cam = replace(cam, dx=pose.dx, dy=pose.dy, roll=pose.angle, scale=pose.scale)
    size = (geo.width, geo.height)
    frame = plane_frame(geo)
    proj = Projector(cam, geo)
    top, holes, floor, tops = _layers(product, geo, _key(spec.findings))
    p_, light, h_ = product.pins, product.light, product.housing
    depth, height = socket_depth(geo, p_), pin_height(geo, p_)
    thick = _thickness(geo, product)
    a = frame.to_canonical

    # the bench, seen by the rig's camera (the product's placement does not move it)
    rig = Projector(cam, geo, placed=False)
    img = bench_part.draw(product.bench, rig.homography(-thick), *size)
    # the housing: drop shadow on the bench, then its side walls
    radius = housing_part.corner_radius(geo)
    rim = housing_part.outline(geo.housing_box, radius)
    sx, sy = light.shadow_shift
    shift = np.array([sx, sy]) * thick if light.shadow_strength else np.zeros(2)
    shadow = proj.project(rim + shift, -thick)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round((shadow - 0.5) * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    blur = 2.0 if light.shadow_strength else 7.0
    soft = cv2.GaussianBlur(mask, (0, 0), blur).astype(np.float32) * np.float32(h_.shadow / 255)
    img *= (1.0 - soft)[..., None]
    upper, lower = proj.project(rim, 0.0), proj.project(rim, -thick)
    towards = proj.direction_to_camera(rim.mean(axis=0, keepdims=True))[0]
    walls = []
    n = len(rim)
    for j in range(n):
        k = (j + 1) % n
        edge = rim[k] - rim[j]
        normal = np.array([edge[1], -edge[0]]) / (np.linalg.norm(edge) + 1e-9)
        if normal @ towards <= 0:
            continue
        quad = np.array([upper[j], upper[k], lower[k], lower[j]])
        walls.append((quad, housing_part.wall_shade(h_, light, normal)))
    _composite_polys(img, walls)

    # inside the sockets: floors and inner walls, the shafts below the top, short pins' faces
    below = _warp(floor, proj.homography(-depth) @ a, size)
    kinds = {f.position: f for f in spec.findings}
    standing = [s for s in ALL_POSITIONS if s not in kinds or kinds[s].kind is DefectKind.BENT]
    shorts = [s for s in ALL_POSITIONS if s in kinds and kinds[s].kind is DefectKind.SHORT]
    zs = short_height(geo, p_)
    polys = _prisms(product, geo, proj, standing, [-depth] * len(standing), [0.0] * len(standing))
    polys += _prisms(product, geo, proj, shorts, [-depth] * len(shorts), [zs] * len(shorts))
    _composite_polys(below, polys)
    half = geo.pin_size * p_.size / 2
    for s in shorts:
        cx, cy = geo.pin_center(s)
        _face_at(below, product, geo, proj, cx, cy, zs, half * SHORT_FACE, SHORT_LIGHT, cam.scale)
    # the housing top over it (the socket openings let the layer below show)
    hole = _warp(holes, proj.homography(0.0) @ a, size)
    top_img = _warp(top, proj.homography(0.0) @ a, size)
    alpha = top_img[..., 3] + hole
    img *= (1.0 - alpha)[..., None]
    img += top_img[..., :3]
    img += below * hole[..., None]
    # the pins above the top: shafts, then faces
    good = [s for s in ALL_POSITIONS if s not in kinds]
    polys = _prisms(product, geo, proj, good, [0.0] * len(good), [height] * len(good))
    bent = [kinds[s] for s in ALL_POSITIONS if s in kinds and kinds[s].kind is DefectKind.BENT]
    for f in bent:
        cx, cy = geo.pin_center(f.position)
        tx, ty, tz = bent_tip(geo, p_, f)
        base = pins_part.outline(p_.shape, cx, cy, half * 0.9)
        tip = pins_part.outline(p_.shape, tx, ty, half * 0.9)
        lean = np.concatenate([proj.project(base, 0.0), proj.project(tip, tz)])
        d = np.array([tx - cx, ty - cy])
        colour = pins_part.shaft_colour(p_, light, tuple(-d / (np.linalg.norm(d) + 1e-9)))
        polys.append((_hull(lean), colour))
    _composite_polys(img, polys)
    faces = _warp(tops, proj.homography(height) @ a, size)
    img *= 1.0 - faces[..., 3:]
    img += faces[..., :3]
    for f in bent:
        tx, ty, tz = bent_tip(geo, p_, f)
        _face_at(img, product, geo, proj, tx, ty, tz, half, 1.0, cam.scale)

    # the sensor
    h, w = img.shape[:2]
    bank = _noise_bank()
    offset = int(rng.integers(0, bank.size - h * w * 3))
    noise = bank[offset : offset + h * w * 3].reshape(h, w, 3)
    focus = None
    if cam.tilt > 0.5 and cam.dof > 0.25:
        ang = math.radians(cam.tilt_axis)
        nx, ny = -math.sin(ang), math.cos(ang)
        xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) * np.float32(nx / (w / 2))
        ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) * np.float32(ny / (w / 2))
        focus = np.clip(np.abs(xs[None, :] + ys[:, None]) * np.float32(cam.tilt / 10), 0, 1)
    out = develop(img, cam, noise, focus)
    pose_m = proj.homography(0.0)
    findings = tuple(replace(f, box=defect_box(geo, p_, f, proj, box_pad)) for f in spec.findings)
    pose_m.setflags(write=False)
    return Rendered(out, findings, pose_m, replace(look, camera=cam))

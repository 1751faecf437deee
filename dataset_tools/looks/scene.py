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

from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from dataset_tools.looks import bench as bench_part
from dataset_tools.looks import housing as housing_part
from dataset_tools.looks import kernels
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
from dataset_tools.looks.frame import PlaneFrame, paste, plane_frame, sprite_grid, tile
from dataset_tools.looks.look import Look, Product
from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Finding, Position

_Defects = tuple[tuple[Position, DefectKind, object], ...]


def _key(findings: tuple[Finding, ...]) -> _Defects:
    return tuple((f.position, f.kind, f.direction) for f in findings)


def _thickness(geo: ConnectorGeometry, product: Product) -> float:
    x1, y1, x2, y2 = geo.housing_box
    return product.housing.thickness * (y2 - y1)


@lru_cache(maxsize=8)
def _base(product: Product, geo: ConnectorGeometry) -> dict:
    """The good product's flat layers in the plane frame, before any cast shadow (read-only):
    the housing top's colour with its socket lips (``rgb``) and coverage with the openings cut
    out (``alpha``), the openings (``holes``), the socket floors and walls (``floor``) and the
    pin faces (``tops``, premultiplied RGBA); and the sprites a defect redraws a site with."""
    frame = plane_frame(geo)
    h_, p_, light = product.housing, product.pins, product.light
    rgb, cover = housing_part.top_layer(h_, light, frame)
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
    where, block = tile(frame, shade, 1.0)
    rgb[where] *= block[..., None]
    holes[where] = tile(frame, hole, 0.0)[1]
    floor[where] = tile(frame, floor_sprite, wall)[1]
    tops[where] = tile(frame, face, 0.0)[1]
    holes *= cover
    r = np.hypot(dx, dy) / (pin_half * 1.6)  # the socket walls shade the floor round a sunk pin
    short_floor = floor_sprite * (1.0 - 0.65 * np.clip(1.6 - r, 0.0, 1.0))[..., None]
    out = {
        "rgb": rgb,
        "alpha": cover - holes,
        "holes": holes,
        "floor": floor,
        "tops": tops,
        "short_floor": short_floor.astype(np.float32),
        "blank": np.zeros_like(face),
    }
    for a in out.values():
        a.setflags(write=False)
    return out


@lru_cache(maxsize=16)
def _layers(product: Product, geo: ConnectorGeometry, defects: _Defects):
    """The product's flat layers with ``defects`` (read-only): housing top (premultiplied RGBA,
    sockets cut out, pins' shadows cast on it), socket holes (coverage), floors (RGB), standing
    pins' faces (premultiplied RGBA)."""
    frame = plane_frame(geo)
    base = _base(product, geo)
    kinds = {pos: (kind, direction) for pos, kind, direction in defects}
    alpha = base["alpha"]
    lit = alpha * _shadow_factor(frame, product, kinds)
    top = np.empty((*alpha.shape, 4), np.float32)
    np.multiply(base["rgb"], lit[..., None], out=top[..., :3])
    top[..., 3] = alpha
    floor, tops = base["floor"], base["tops"]
    if kinds:
        tops = tops.copy()
        if any(kind is DefectKind.SHORT for kind, _ in kinds.values()):
            floor = floor.copy()
        for position, (kind, _) in kinds.items():
            col, row = frame.site_index(position)
            paste(tops, base["blank"], col, row, "set")
            if kind is DefectKind.SHORT:
                paste(floor, base["short_floor"], col, row, "set")
    top.setflags(write=False)
    floor.setflags(write=False)
    tops.setflags(write=False)
    return top, base["holes"], floor, tops


def _shadow_factor(frame: PlaneFrame, product: Product, kinds: dict) -> np.ndarray:
    """How much light the housing top gets where the pins' shadows fall (a directional lamp casts
    them; soft light only darkens a faint halo around each pin): (h, w) float32 in (0, 1].

    A standing pin's shadow is the same polygon at every site (the frame's pitch is whole
    pixels): it is built once and moved; a bent pin's leans with it."""
    geo = frame.geo
    light, p_ = product.light, product.pins
    half = geo.pin_size * p_.size / 2
    height = pin_height(geo, p_)
    sx, sy = light.shadow_shift
    strength = light.shadow_strength
    mask = np.zeros((frame.height, frame.width), np.uint8)

    def hull(base: np.ndarray, tip: np.ndarray) -> np.ndarray:
        pts = frame.to_plane(np.concatenate([base, tip]))
        return cv2.convexHull(np.round((pts - 0.5) * 16).astype(np.int32))

    x1, y1 = geo.pin_center(ALL_POSITIONS[0])
    base = pins_part.outline(p_.shape, x1, y1, half)
    standing = hull(base, base + np.array([sx, sy]) * height if strength else base)
    for position in ALL_POSITIONS:
        kind, direction = kinds.get(position, (None, None))
        if kind in (DefectKind.MISSING, DefectKind.SHORT):
            continue
        if kind is DefectKind.BENT:
            cx, cy = geo.pin_center(position)
            tx, ty, tz = bent_tip(geo, p_, Finding(position, kind, direction))
            own = pins_part.outline(p_.shape, cx, cy, half)
            tip = pins_part.outline(p_.shape, tx + sx * tz, ty + sy * tz, half)
            cv2.fillConvexPoly(mask, hull(own, tip if strength else own), 255, cv2.LINE_AA, 4)
            continue
        step = ((position.column - 1) * frame.step_u * 16, position.row_index * frame.step_v * 16)
        cv2.fillConvexPoly(mask, standing + np.array(step, np.int32), 255, cv2.LINE_AA, 4)
    dark = strength * 0.8 if strength else 0.25
    soft = cv2.GaussianBlur(mask, (0, 0), 1.0 if strength else 3.0)
    return 1.0 - soft.astype(np.float32) * np.float32(dark / 255)


def _composite_polys(img: np.ndarray, polys: list, offset: tuple[int, int] = (0, 0)) -> None:
    """Fill convex polygons (continuous image coordinates, one colour each, later over earlier)
    anti-aliased over ``img`` (float RGB, whose pixel (0, 0) is image pixel ``offset``), in
    place: drawn on a premultiplied RGBA canvas (its alpha blends like its colour)."""
    if not polys:
        return
    h, w = img.shape[:2]
    allpts = np.concatenate([p for p, _ in polys]) - offset
    x0 = max(int(allpts[:, 0].min()) - 2, 0)
    y0 = max(int(allpts[:, 1].min()) - 2, 0)
    x1 = min(int(allpts[:, 0].max()) + 3, w)
    y1 = min(int(allpts[:, 1].max()) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    canvas = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    origin = np.array([x0 + 0.5 + offset[0], y0 + 0.5 + offset[1]])
    fixed = np.round((allpts + offset - origin) * 16).astype(np.int32)  # all at once
    start = 0
    for pts, colour in polys:
        cv2.fillConvexPoly(canvas, fixed[start : start + len(pts)], colour, cv2.LINE_AA, 4)
        start += len(pts)
    kernels.over_u8(img, canvas, y0, x0)


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _rgb(colour) -> tuple[int, int, int, int]:
    """A polygon colour for :func:`_composite_polys` (opaque)."""
    return (*(int(v) for v in np.clip(np.round(colour), 0, 255)), 255)


def _prisms(product, geo, proj, sites, z0: float, z1: float, faces: bool = True) -> list:
    """Side faces of upright pin shafts between heights ``z0`` and ``z1`` at ``sites``, as seen
    (a square shaft's faces that face the camera, each lit by its own normal; a round shaft's,
    or any shaft's without ``faces``, silhouette in one shade)."""
    p_, light = product.pins, product.light
    if not sites:
        return []
    half = geo.pin_size * p_.size / 2 * 0.98
    centres = np.array([geo.pin_center(s) for s in sites])
    ring = pins_part.outline(p_.shape, 0.0, 0.0, half)
    n = len(ring)
    pts = (centres[:, None, :] + ring[None, :, :]).reshape(-1, 2)
    a = proj.project(pts, z0).reshape(len(sites), n, 2)
    b = proj.project(pts, z1).reshape(len(sites), n, 2)
    towards = proj.direction_to_camera(centres)
    polys = []
    if p_.shape == "round" or not faces:
        colour = _rgb(pins_part.shaft_colour(p_, light, tuple(towards.mean(axis=0))))
        for i in range(len(sites)):
            polys.append((_hull(np.concatenate([a[i], b[i]])), colour))
        return polys
    mids = (ring + np.roll(ring, -1, axis=0)) / 2
    normals = mids / np.linalg.norm(mids, axis=1, keepdims=True)
    colours = [_rgb(pins_part.shaft_colour(p_, light, tuple(nv))) for nv in normals]
    facing = towards @ normals.T > 0  # (sites, faces)
    for i in range(len(sites)):
        for j in np.flatnonzero(facing[i]):
            k = (j + 1) % n
            polys.append((np.array([a[i, j], a[i, k], b[i, k], b[i, j]]), colours[j]))
    return polys


def _face_at(img, product, geo, proj, cx, cy, z, half, dim, scale, offset=(0, 0)) -> None:
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
    p = proj.project(box, z) - offset
    x0, y0 = max(int(p[:, 0].min()) - 2, 0), max(int(p[:, 1].min()) - 2, 0)
    x1, y1 = min(int(p[:, 0].max()) + 3, w), min(int(p[:, 1].max()) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    inv = np.linalg.inv(proj.homography(z))
    xs = np.arange(x0, x1) + 0.5 + offset[0]
    ys = np.arange(y0, y1) + 0.5 + offset[1]
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


def _warp(layer: np.ndarray, m: np.ndarray, size: tuple[int, int], origin=(0, 0)) -> np.ndarray:
    """``layer`` warped by ``m`` (plane to image, continuous) into an image of ``size`` whose
    pixel (0, 0) is image pixel ``origin`` (a window of the image)."""
    if origin != (0, 0):
        m = np.array([[1, 0, -origin[0]], [0, 1, -origin[1]], [0, 0, 1.0]]) @ m
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

    # the bench, seen by the rig's camera (the product's placement does not move it), with the
    # housing's drop shadow (drawn and blurred at a quarter of the size: a soft shadow has no
    # detail to lose)
    radius = housing_part.corner_radius(geo)
    rim = housing_part.outline(geo.housing_box, radius)
    sx, sy = light.shadow_shift
    shift = np.array([sx, sy]) * thick if light.shadow_strength else np.zeros(2)
    shadow = proj.project(rim + shift, -thick)
    small = np.zeros(((geo.height + 3) // 4, (geo.width + 3) // 4), np.uint8)
    cv2.fillConvexPoly(
        small, np.round((shadow / 4 - 0.5) * 16).astype(np.int32), 255, cv2.LINE_AA, 4
    )
    small = cv2.GaussianBlur(small, (0, 0), 0.5 if light.shadow_strength else 1.75)
    soft = cv2.resize(
        small, (small.shape[1] * 4, small.shape[0] * 4), interpolation=cv2.INTER_LINEAR
    )
    soft = np.ascontiguousarray(soft[: geo.height, : geo.width])
    rig = Projector(cam, geo, placed=False)
    img = bench_part.draw(product.bench, rig.homography(-thick), *size, soft, h_.shadow)
    # the housing's side walls
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
        walls.append((quad, _rgb(housing_part.wall_shade(h_, light, tuple(normal)))))
    _composite_polys(img, walls)

    # inside the sockets: floors and inner walls, the shafts below the top, short pins' faces
    # the window of the image the sockets and pins can reach: the floors and faces are warped
    # into it only
    x1g, y1g = geo.pin_center(ALL_POSITIONS[0])
    x2g, y2g = geo.pin_center(ALL_POSITIONS[-1])
    reach = geo.socket_size * 0.75 + geo.pin_size
    corners = np.array(
        [
            [x1g - reach, y1g - reach],
            [x2g + reach, y1g - reach],
            [x1g - reach, y2g + reach],
            [x2g + reach, y2g + reach],
        ]
    )
    seen = np.concatenate([proj.project(corners, z) for z in (-depth, height)])
    wx0, wy0 = max(int(seen[:, 0].min()) - 2, 0), max(int(seen[:, 1].min()) - 2, 0)
    wx1 = min(int(seen[:, 0].max()) + 3, geo.width)
    wy1 = min(int(seen[:, 1].max()) + 3, geo.height)
    window, origin = (wx1 - wx0, wy1 - wy0), (wx0, wy0)
    below = _warp(floor, proj.homography(-depth) @ a, window, origin)
    kinds = {f.position: f for f in spec.findings}
    standing = [s for s in ALL_POSITIONS if s not in kinds or kinds[s].kind is DefectKind.BENT]
    shorts = [s for s in ALL_POSITIONS if s in kinds and kinds[s].kind is DefectKind.SHORT]
    zs = short_height(geo, p_)
    # (in the dark of a socket one shade is enough)
    polys = _prisms(product, geo, proj, standing, -depth, 0.0, faces=False)
    polys += _prisms(product, geo, proj, shorts, -depth, zs, faces=False)
    _composite_polys(below, polys, origin)
    half = geo.pin_size * p_.size / 2
    for s in shorts:
        cx, cy = geo.pin_center(s)
        _face_at(
            below, product, geo, proj, cx, cy, zs, half * SHORT_FACE, SHORT_LIGHT, cam.scale, origin
        )
    # the housing top over it (the socket openings let the layer below show)
    # (inside the housing's outline, what the top does not cover is an opening)
    top_img = _warp(top, proj.homography(0.0) @ a, size)
    x1, y1, x2, y2 = geo.housing_box
    inner = proj.project(housing_part.outline((x1 + 4, y1 + 4, x2 - 4, y2 - 4), radius), 0.0)
    interior = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(interior, np.round((inner - 0.5) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    kernels.housing_over(img, top_img, interior, below, wy0, wx0)
    # the pins above the top: shafts, then faces
    good = [s for s in ALL_POSITIONS if s not in kinds]
    polys = _prisms(product, geo, proj, good, 0.0, height)
    bent = [kinds[s] for s in ALL_POSITIONS if s in kinds and kinds[s].kind is DefectKind.BENT]
    for f in bent:
        cx, cy = geo.pin_center(f.position)
        tx, ty, tz = bent_tip(geo, p_, f)
        base = pins_part.outline(p_.shape, cx, cy, half * 0.9)
        tip = pins_part.outline(p_.shape, tx, ty, half * 0.9)
        lean = np.concatenate([proj.project(base, 0.0), proj.project(tip, tz)])
        d = np.array([tx - cx, ty - cy])
        colour = pins_part.shaft_colour(p_, light, tuple(-d / (np.linalg.norm(d) + 1e-9)))
        polys.append((_hull(lean), _rgb(colour)))
    _composite_polys(img, polys)
    faces = _warp(tops, proj.homography(height) @ a, window, origin)
    kernels.layer_over(img, faces, wy0, wx0)
    for f in bent:
        tx, ty, tz = bent_tip(geo, p_, f)
        _face_at(img, product, geo, proj, tx, ty, tz, half, 1.0, cam.scale)

    # the sensor
    h, w = img.shape[:2]
    bank = _noise_bank()
    offset = int(rng.integers(0, bank.size - h * w * 3))
    noise = bank[offset : offset + h * w * 3].reshape(h, w, 3)
    out = develop(img, cam, noise)
    pose_m, top_m = proj.homography(0.0), proj.homography(height)
    findings = tuple(replace(f, box=defect_box(geo, p_, f, proj, box_pad)) for f in spec.findings)
    pose_m.setflags(write=False)
    top_m.setflags(write=False)
    return Rendered(out, findings, pose_m, replace(look, camera=cam), top_m)

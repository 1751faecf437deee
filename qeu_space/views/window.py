"""Registration step 3, the window: which 3 x 9 block of a periodic grid is the connector's pins.

A grid of sites is periodic, so a fit one column off is as tight as the right one; only the ends
tell them apart. The step therefore reads the ends, and answers only when they agree:

1. *Extent.* Rows holding a good share of the sites, and columns holding sites in most of those
   rows, make the block of sites seen (``found``). More than 3 rows or 9 columns is another
   product: refused, ``not a 3 x 9 connector (found 3 x 10)``.
2. *Candidates.* A block smaller than 3 x 9 (a column out of view, or another product) leaves
   several windows that hold it. A window is ruled out when a row or column it adds is in view
   and shows no sites there (``not a 3 x 9 connector (found 3 x 8)`` when none is left).
3. *Evidence beyond the sites.* The windows left are scored by the housing outline where the
   window puts the housing's ends (a straight edge all along the side, in either polarity) and by
   the rig's placement range (a product is framed near the centre); when the best two are close,
   the step refuses with both, never answering on a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qeu_space.geometry import ConnectorGeometry
from qeu_space.views.lattice import Lattice
from qeu_space.views.likeness import LIKE, visible_likeness
from qeu_space.views.no_connector import NoConnectorError
from qeu_space.views.sites import SiteCandidates
from qeu_space.vocabulary import ALL_POSITIONS

__all__ = ["ROWS_COLS", "Window", "choose_window", "lattice_extent", "window_matrix"]

ROWS_COLS = (3, 9)
MIN_MARGIN = 0.7
"""Least score margin between the best and the second window (a factor of 2 in outline
contrast, or a pitch of placement): below it the step refuses."""
RIG_RANGE = 0.55
"""Product shift (pitches, from the image centre) a rig gives: beyond it a window is less likely."""
_EMPTY = 0.35  # site energy (of the found sites' median) below which a node shows no site
_OUTLINE = np.linspace(0.3, 0.75, 7)  # where a housing end may lie past the end sites, pitches
_AN_END = 1.0  # log outline contrast that shows a housing end
_NO_END = 0.3  # below it, no housing end is seen
_PAST = 0.6  # site energy (of the found sites' median) that shows sites past the window's end
_CLEARLY = 0.3  # likeness by which every kept line must beat every cut one (when not all alike)


@dataclass(frozen=True)
class Window:
    """The 3 x 9 block of the grid taken as the connector's pins.

    Attributes:
        column: lattice ``u`` of column 1.
        row: lattice ``v`` of row U.
        found: ``(rows, columns)`` of the block of sites seen.
        candidates: windows that held the block and were not ruled out.
        margin: score margin over the second candidate (``inf`` when alone).
    """

    column: int
    row: int
    found: tuple[int, int]
    candidates: int
    margin: float


def window_matrix(lattice: Lattice, geo: ConnectorGeometry, column: int, row: int) -> np.ndarray:
    """3 x 3 canonical-to-image homography that puts pin ``U1`` on node ``(column, row)``."""
    px, py = geo.pitch
    x0, y0 = geo.pin_center(ALL_POSITIONS[0])
    to_uv = np.array([[1 / px, 0, column - x0 / px], [0, 1 / py, row - y0 / py], [0, 0, 1]])
    return lattice.homography @ to_uv


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of ``True`` in ``flags``."""
    out, start = [], None
    for i, f in enumerate([*flags.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


def _trim(keep: range, like: np.ndarray, size: int) -> range:
    """``keep`` (lines of a block) without end lines unlike the product's sites, while the block
    is longer than ``size`` (grain or clutter lined up with the grid past the connector).

    Only when every line left looks like the product's, or clearly more than every line cut
    (by :data:`_CLEARLY`: a lamp from one side makes the far column of pins less like the median
    pin, 0.4-0.55, while the housing's shaded edge past it scores 0): a pattern whose lines all
    differ (a checkerboard, whose nodes alternate) is not cut down to a connector."""
    start, stop = keep.start, keep.stop
    while stop - start > size:
        first, last = like[start], like[stop - 1]
        if min(first, last) >= LIKE:
            break
        if first <= last:
            start += 1
        else:
            stop -= 1
    if (start, stop) == (keep.start, keep.stop):
        return keep
    kept = like[start:stop]
    cut = np.concatenate([like[keep.start : start], like[stop : keep.stop]])
    if (kept < LIKE).any() and kept.min() < cut.max() + _CLEARLY:
        return keep
    return range(start, stop)


def _line_likeness(counts: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    """Median likeness of the nodes of each line (rows for ``axis`` 1, columns for 0); -1 for a
    line with none. One sort for every line (``np.median`` per line cost 12 calls a panel)."""
    held = counts > 0
    values = np.sort(np.where(held, like, np.inf), axis=axis)  # the held ones first
    n = held.sum(axis)
    lo, hi = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)
    pick = (lambda k: values[k, np.arange(len(k))]) if axis == 0 else (
        lambda k: values[np.arange(len(k)), k])  # fmt: skip
    middle = 0.5 * (pick(lo) + pick(hi))
    return np.where(n > 0, middle, -1.0)


def lattice_extent(lattice: Lattice) -> tuple[range, range]:
    """``(rows v, columns u)`` of the block of sites seen (largest contiguous block).

    Where the block is longer than 3 x 9, end rows or columns whose sites do not look like the
    product's (:mod:`.likeness`) are left out: grain or clutter, not another row of pins.
    """
    keep = lattice.strength >= 0.5 * np.median(lattice.strength)
    nodes = lattice.nodes[keep]
    u0, v0 = nodes.min(0)
    counts = np.zeros(tuple(nodes.max(0) - nodes.min(0) + 1)[::-1], int)  # (v, u)
    counts[nodes[:, 1] - v0, nodes[:, 0] - u0] = 1
    like = np.ones(counts.shape)
    if lattice.likeness is not None:
        like[nodes[:, 1] - v0, nodes[:, 0] - u0] = lattice.likeness[keep]
    per_row = counts.sum(1)
    rows_ok = per_row >= max(3, 0.6 * per_row.max())  # a row of a plate, not bench clutter
    runs = _runs(rows_ok)
    if not runs:
        return range(0), range(0)
    r0, r1 = max(runs, key=lambda r: per_row[r[0] : r[1]].sum())
    trimmed = _trim(range(r0, r1), _line_likeness(counts, like, 1), ROWS_COLS[0])
    r0, r1 = trimmed.start, trimmed.stop
    block = counts[r0:r1]
    per_col = block.sum(0)
    cols_ok = per_col >= max(1, math.ceil(0.5 * (r1 - r0)))
    # a column of missing pins between two held columns (black plastic shows no empty socket)
    # does not split the block
    cols_ok[1:-1] |= cols_ok[:-2] & cols_ok[2:]
    runs = _runs(cols_ok)
    c0, c1 = max(runs, key=lambda r: per_col[r[0] : r[1]].sum())
    trimmed = _trim(range(c0, c1), _line_likeness(block, like[r0:r1], 0), ROWS_COLS[1])
    c0, c1 = trimmed.start, trimmed.stop
    return range(v0 + r0, v0 + r1), range(u0 + c0, u0 + c1)


def _in_view(lattice: Lattice, uv: np.ndarray, size: tuple[int, int], pad: float = 0.3
             ) -> np.ndarray:  # fmt: skip
    """Whether a site at each node ``(n, 2)`` lies wholly inside the image."""
    corners = uv[:, None] + np.array([[-pad, -pad], [pad, -pad], [-pad, pad], [pad, pad]])
    xy = lattice.to_image(corners)
    w, h = size
    return ((xy[..., 0] >= 0) & (xy[..., 0] <= w) & (xy[..., 1] >= 0) & (xy[..., 1] <= h)).all(1)


def _line_contrast(lattice: Lattice, sites: SiteCandidates, size: tuple[int, int], axis: int,
                   at: float, span: tuple[float, float], level: float) -> float | None:  # fmt: skip
    """Outline contrast of the straight line ``u = at`` (axis 0) or ``v = at`` (axis 1): the
    lower quartile of the gradient magnitude along it over the housing's level (None: not seen)."""
    t = np.linspace(span[0], span[1], 24)
    uv = (
        np.stack([np.full_like(t, at), t], 1)
        if axis == 0
        else np.stack([t, np.full_like(t, at)], 1)
    )
    xy = lattice.to_image(uv)
    w, h = size
    ok = (xy[:, 0] >= 1) & (xy[:, 0] < w - 1) & (xy[:, 1] >= 1) & (xy[:, 1] < h - 1)
    if ok.mean() < 0.6:
        return None
    xi, yi = xy[ok, 0].astype(int), xy[ok, 1].astype(int)
    return float(np.percentile(sites.energy[yi, xi], 25)) / level


def _housing_level(lattice: Lattice, sites: SiteCandidates, size: tuple[int, int]) -> float:
    """Gradient magnitude of the plain housing: between the sites found (median)."""
    inner = lattice.nodes + 0.5
    xy = inner[_in_view(lattice, inner.astype(float), size, 0.0)]
    if len(xy) == 0:
        return 1.0
    pts = lattice.to_image(xy)
    return float(np.median(sites.energy[pts[:, 1].astype(int), pts[:, 0].astype(int)])) + 1.0


def _end(lattice: Lattice, sites: SiteCandidates, size: tuple[int, int], level: float,
         axis: int, base: float, sign: int, span: tuple[float, float],
         whole: bool = False) -> float | None:  # fmt: skip
    """Evidence (log contrast, 0..3) of a housing end past lattice line ``base`` (a column for
    ``axis`` 0, a row for 1) on side ``sign``; ``None`` when that stretch is out of view.

    ``whole``: "no end" is only said of a stretch seen whole (``None`` otherwise): a connector
    framed so tightly that the image border runs between its outer pins and its housing's end
    shows flat housing up to the border, and its end lies beyond it."""
    lines = [_line_contrast(lattice, sites, size, axis, base + sign * d, span, level)
             for d in _OUTLINE]  # fmt: skip
    seen = [v for v in lines if v is not None]
    if not seen:
        return None
    e = min(max(math.log(max(max(seen), 1e-9)), 0.0), 3.0)  # a flat stretch: no end
    if whole and e < _NO_END and len(seen) < len(lines):
        return None
    return e


def _ends(column: int, row: int) -> tuple[tuple[int, int, int, tuple[float, float]], ...]:
    """``(axis, line, side, span)`` of the four ends of the window at ``(column, row)``."""
    rows, cols = ROWS_COLS
    across, down = (row - 0.4, row + rows - 0.6), (column - 0.4, column + cols - 0.6)
    return ((0, column, -1, across), (0, column + cols - 1, 1, across),
            (1, row, -1, down), (1, row + rows - 1, 1, down))  # fmt: skip


def _ruled_out(lattice: Lattice, sites: SiteCandidates, size: tuple[int, int], level: float,
               typical: float, vr: range, ur: range, column: int, row: int) -> bool:  # fmt: skip
    """Whether the window at ``(column, row)``, which adds rows or columns to the block of sites
    seen, is contradicted by the image.

    An added row or column must be unseen, not seen empty (a site's energy below
    :data:`_EMPTY` of the found sites' at its nodes in view); it must not lie past a housing end
    seen beyond the block; and an end of the window that coincides with the block's end and is
    in view must show the housing's end (else the block's end is not the connector's).
    """
    rows, cols = ROWS_COLS
    added = []
    for c in range(column, column + cols):
        if c not in ur:
            added.append(np.array([[c, v] for v in range(row, row + rows)], float))
    for v in range(row, row + rows):
        if v not in vr:
            added.append(np.array([[c, v] for c in range(column, column + cols)], float))
    for line in added:
        seen = _in_view(lattice, line, size)
        if seen.sum() >= 2:
            like = sites.energy_at(lattice.to_image(line[seen])) / typical
            if np.median(like) < _EMPTY:
                return True
    for axis, base, sign, span in _ends(column, row):
        block = ur if axis == 0 else vr
        if len(block) == (cols if axis == 0 else rows):
            continue  # nothing added along this axis: its ends need not show
        last = block.start if sign < 0 else block.stop - 1
        if base == last:  # this end of the window is the block's: the housing must end there
            e = _end(lattice, sites, size, level, axis, base, sign, span, whole=True)
            if e is not None and e < _NO_END:
                return True
        else:  # rows or columns added on this side: no housing end before the window's end
            for line in range(last, base, sign):
                e = _end(lattice, sites, size, level, axis, line, sign, span)
                if e is not None and e >= _AN_END:
                    return True
    return False


def _no_sites_past_the_ends(lattice: Lattice, sites: SiteCandidates, size: tuple[int, int],
                            typical: float, column: int, row: int, found: tuple[int, int],
                            gray: np.ndarray | None = None) -> None:  # fmt: skip
    """Refuse when the row or column just past an end of the window holds sites, even cut by
    the image's border (another product: a longer connector framed to its middle).

    With ``gray`` (the image the lattice was found in), a cut node counts only when the part
    of it in the image also looks like the product's sites (:func:`.visible_likeness`): under a
    steep tilt and a low lamp, the tips of the end row's shadows reach the border with a pin's
    blob energy."""
    rows, cols = ROWS_COLS
    lines = (("column", [[column - 1, v] for v in range(row, row + rows)]),
             ("column", [[column + cols, v] for v in range(row, row + rows)]),
             ("row", [[c, row - 1] for c in range(column, column + cols)]),
             ("row", [[c, row + rows] for c in range(column, column + cols)]))  # fmt: skip
    w, h = size
    like = np.ones(len(lattice.nodes)) if lattice.likeness is None else lattice.likeness
    # a node holds a site of the product's when it looks like the others (not grain, clutter)
    have = {(int(u), int(v)) for (u, v), k in zip(lattice.nodes, like, strict=True) if k >= LIKE}
    edge = 0.3 * lattice.pitch
    for what, nodes in lines:
        xy = lattice.to_image(np.array(nodes, float))
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        # a site cut by the border has no maximum of its own (the site step drops those):
        # there its energy tells; further in, a site found on the node does
        cut = inside & ((xy[:, 0] < edge) | (xy[:, 0] > w - edge) | (xy[:, 1] < edge)
                        | (xy[:, 1] > h - edge))  # fmt: skip
        like = sites.energy_at(xy) / typical
        found_there = np.array([tuple(n) in have for n in nodes])
        at_border = like >= _PAST
        if gray is not None and (cut & at_border).any():
            seen = visible_likeness(gray, lattice, np.array(nodes, float))
            at_border &= np.isnan(seen) | (seen >= LIKE)  # NaN: too little in view to tell
        present = np.where(cut, at_border, found_there) & inside
        if inside.sum() >= 0.6 * len(nodes) and present.sum() >= 0.6 * inside.sum():
            more = (found[0] + (what == "row"), found[1] + (what == "column"))
            raise NoConnectorError(
                f"not a 3 x 9 connector (found {more[0]} x {more[1]} or more pin sites: a "
                f"{what} of sites past the end of the 3 x 9)"
            )


def choose_window(lattice: Lattice, sites: SiteCandidates, geo: ConnectorGeometry,
                  size: tuple[int, int], gray: np.ndarray | None = None) -> Window:  # fmt: skip
    """The window of ``lattice`` that is the connector's 3 x 9 pins (``gray``: the image the
    lattice was found in, to tell a cut site past an end from a shadow or grain).

    Raises:
        NoConnectorError: another lattice (``not a 3 x 9 connector (found R x C)``), or two
            windows fit almost equally.
    """
    rows, cols = ROWS_COLS
    vr, ur = lattice_extent(lattice)
    found = (len(vr), len(ur))
    if found[0] > rows or found[1] > cols:
        raise NoConnectorError(
            f"not a 3 x 9 connector (found {found[0]} x {found[1]} pin sites in a lattice)"
        )
    if found[0] == 0 or found[1] == 0:
        raise NoConnectorError("the sites do not form a lattice")
    typical = float(np.median(lattice.strength))
    level = _housing_level(lattice, sites, size)
    full = found == (rows, cols)
    candidates = []
    for row in range(vr.stop - rows, vr.start + 1):
        for column in range(ur.stop - cols, ur.start + 1):
            if not full and _ruled_out(lattice, sites, size, level, typical, vr, ur, column, row):
                continue
            candidates.append((column, row))
    if not candidates:
        raise NoConnectorError(
            f"not a 3 x 9 connector (found {found[0]} x {found[1]} pin sites; the rows or "
            "columns that would complete 3 x 9 are in view and empty, or past the housing's end)"
        )
    if len(candidates) == 1:
        column, row = candidates[0]
        _no_sites_past_the_ends(lattice, sites, size, typical, column, row, found, gray)
        return Window(column, row, found, 1, math.inf)
    w, h = size
    centre = np.array([[w / 2, h / 2]])
    scored = []
    for column, row in candidates:
        m = window_matrix(lattice, geo, column, row)
        mid = _apply(m, np.array([[geo.width / 2, geo.height / 2]]))
        shift = float(np.linalg.norm(mid - centre)) / lattice.pitch
        ends = [_end(lattice, sites, size, level, *e) for e in _ends(column, row)]
        score = sum(e for e in ends if e is not None)
        score -= 2.0 * max(0.0, shift - RIG_RANGE)
        scored.append((score, column, row))
    scored.sort(reverse=True)
    (best, column, row), (second, c2, r2) = scored[0], scored[1]
    if best - second < MIN_MARGIN:
        raise NoConnectorError(
            f"two lattice windows fit almost equally: pin U1 at lattice column {column}, row "
            f"{row} (score {best:.2f}) or column {c2}, row {r2} (score {second:.2f}); "
            f"{found[0]} x {found[1]} pin sites seen: frame the whole connector with a margin"
        )
    return Window(column, row, found, len(candidates), best - second)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = pts @ m[:2, :2].T + m[:2, 2]
    return q / (pts @ m[2, :2] + m[2, 2])[:, None]

"""Surface elements of a binary 3D mask and the "within tolerance" test behind NSD.

The definition is Nikolov et al.'s (and DeepMind ``surface-distance``'s): the surface lives on
the corner lattice between voxels. Every corner looks at its 2x2x2 voxel neighbourhood, an
8-bit *neighbour code*; a corner whose neighbourhood is neither all out nor all in is a surface
point, and it carries the area of the marching-cubes triangles of its code, in mm^2 under the
voxel spacing. A surface point of one mask "agrees" with the other mask when the nearest surface
point of the other mask lies within the tolerance (Euclidean, in mm, on the same lattice).

The area table is built here from first principles rather than copied:

* bit ``b`` of a code is the voxel at offset ``corner_offset(b)`` from the corner;
* the in-voxels (or, when more than four are in, the out-voxels: marching cubes treats a code
  and its complement alike) split into groups connected along cube edges; each group is cut
  off by one polygon through the midpoints of the cube edges that leave it (ambiguous faces
  are thus resolved by separating the minority side);
* each polygon is triangulated in the way that maximises its area (for the non-planar pentagons
  and hexagons the triangulation matters: 1.1495 vs 1.1217 voxel faces for the L-shaped code);
* a triangle's area at spacing ``(s0, s1, s2)`` is the norm of its unit-cube normal scaled by
  ``(s1*s2, s0*s2, s0*s1)``.

This reproduces ``surface-distance``'s table for every code and every spacing (checked in the
tests), so NSD here equals its ``compute_surface_dice_at_tolerance`` up to float summation order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

#: Above this many lattice offsets in the tolerance ball, the within-tolerance test falls back to
#: one Euclidean distance transform of the crop instead of probing every offset.
MAX_BALL_OFFSETS = 512


def corner_offset(bit: int) -> tuple[int, int, int]:
    """Voxel offset (0 = the lower voxel, 1 = the upper one, per axis) that ``bit`` encodes."""
    return (1 - ((bit >> 2) & 1), 1 - ((bit >> 1) & 1), 1 - (bit & 1))


_CUBE_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a, b)
    for a in range(8)
    for b in range(a + 1, 8)
    if sum(x != y for x, y in zip(corner_offset(a), corner_offset(b))) == 1
)


def _edge_connected_groups(bits: set[int]) -> list[set[int]]:
    groups: list[set[int]] = []
    left = set(bits)
    while left:
        stack = [left.pop()]
        group = set(stack)
        while stack:
            u = stack.pop()
            for a, b in _CUBE_EDGES:
                v = b if a == u else a if b == u else None
                if v is not None and v in left:
                    left.discard(v)
                    group.add(v)
                    stack.append(v)
        groups.append(group)
    return groups


def _polygon(group: set[int]) -> np.ndarray:
    """Cyclically ordered edge midpoints (k, 3) around ``group`` (unit-cube coordinates)."""
    crossing = [e for e in _CUBE_EDGES if (e[0] in group) != (e[1] in group)]
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {e: [] for e in crossing}
    for axis, value in itertools.product(range(3), (0, 1)):
        on_face = [e for e in crossing if corner_offset(e[0])[axis] == value and corner_offset(e[1])[axis] == value]
        if on_face:
            # With at most four voxels per group, a face meets a group in one contiguous run,
            # so the polygon crosses it exactly once.
            assert len(on_face) == 2, (group, on_face)
            neighbours[on_face[0]].append(on_face[1])
            neighbours[on_face[1]].append(on_face[0])
    cycle = [crossing[0], neighbours[crossing[0]][0]]
    while True:
        a, b = neighbours[cycle[-1]]
        nxt = a if a != cycle[-2] else b
        if nxt == cycle[0]:
            break
        cycle.append(nxt)
    assert len(cycle) == len(crossing)
    return np.array([(np.add(corner_offset(a), corner_offset(b))) / 2.0 for a, b in cycle], dtype=np.float64)


def _triangulations(idx: tuple[int, ...]):
    """Every triangulation of the convex-position polygon ``idx`` (Catalan many)."""
    if len(idx) < 3:
        yield []
        return
    first, last = idx[0], idx[-1]
    for k in range(1, len(idx) - 1):
        for left in _triangulations(idx[: k + 1]):
            for right in _triangulations(idx[k:]):
                yield left + right + [(first, idx[k], last)]


def _max_area_triangle_normals(points: np.ndarray) -> list[np.ndarray]:
    best: list[np.ndarray] = []
    best_area = -1.0
    for tris in _triangulations(tuple(range(len(points)))):
        normals = [0.5 * np.cross(points[j] - points[i], points[k] - points[i]) for i, j, k in tris]
        area = float(sum(np.linalg.norm(n) for n in normals))
        if area > best_area + 1e-12:
            best, best_area = normals, area
    return best


@lru_cache(maxsize=1)
def _code_normals() -> np.ndarray:
    """(256, T, 3) unit-cube triangle normals per neighbour code, zero-padded; |n| = area."""
    per_code: list[list[np.ndarray]] = []
    for code in range(256):
        bits = {b for b in range(8) if (code >> b) & 1}
        if len(bits) > 4:
            bits = set(range(8)) - bits
        normals: list[np.ndarray] = []
        for group in _edge_connected_groups(bits):
            normals.extend(_max_area_triangle_normals(_polygon(group)))
        per_code.append(normals)
    out = np.zeros((256, max(len(n) for n in per_code), 3), dtype=np.float64)
    for code, normals in enumerate(per_code):
        if normals:
            out[code, : len(normals)] = normals
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def _area_table_cached(spacing: tuple[float, float, float]) -> np.ndarray:
    s0, s1, s2 = spacing
    scaled = _code_normals() * np.array([s1 * s2, s0 * s2, s0 * s1])
    table = np.linalg.norm(scaled, axis=2).sum(axis=1)
    table.setflags(write=False)
    return table


def surfel_area_table(spacing_mm: Sequence[float]) -> np.ndarray:
    """Surface area in mm^2 of each of the 256 neighbour codes at this (z, y, x) spacing.

    Codes 0 and 255 (all out / all in) have area 0; every other code has a positive area.
    """
    return _area_table_cached(tuple(float(s) for s in spacing_mm))


def neighbour_codes(mask: np.ndarray, margin: Sequence[int] | np.ndarray = (0, 0, 0)) -> np.ndarray:
    """Neighbour code of every corner of ``mask`` (bool, (Z, Y, X)), as uint8 (Z+1+2m, ...).

    The mask is zero-padded by one voxel plus ``margin`` on each side, so corner ``i`` of the
    result (after the margin) lies between voxels ``i-1`` and ``i``. The margin leaves room for
    the tolerance-ball offsets of :func:`within_tolerance`.
    """
    pad = [(1 + int(m), 1 + int(m)) for m in margin]
    p = np.pad(mask.astype(np.uint8, copy=False), pad)
    # Separable build: 1 bit along x, then 2 along y, then 4 along z (bit b <-> corner_offset(b)).
    t = (p[:, :, :-1] << 1) | p[:, :, 1:]
    t = (t[:, :-1, :] << 2) | t[:, 1:, :]
    return (t[:-1] << 4) | t[1:]


def ball_offsets(spacing_mm: Sequence[float], tolerance_mm: float) -> np.ndarray:
    """Lattice offsets (K, 3) within ``tolerance_mm``, with the distance arithmetic of
    ``scipy.ndimage.distance_transform_edt`` (so ``<=`` decides exactly as it would)."""
    s = np.asarray(spacing_mm, dtype=np.float64)
    radius = np.floor(tolerance_mm / s).astype(int) + 1
    axes = [np.arange(-r, r + 1) for r in radius]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    d = grid.astype(np.float64)
    for i in range(3):
        d[i] *= s[i]
    np.multiply(d, d, d)
    dist = np.sqrt(np.add.reduce(d, axis=0))
    return grid[:, dist <= tolerance_mm].T


def surface_agreement(
    pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], tolerance_mm: float
) -> tuple[float, float, float, float]:
    """Surface areas (mm^2) of two non-empty-or-empty bool masks and the parts within tolerance.

    Returns ``(ref_area, ref_area_within, pred_area, pred_area_within)``. The masks may be any
    crop that contains all their foreground: the result does not depend on the crop.
    """
    spacing = tuple(float(s) for s in spacing_mm)
    table = surfel_area_table(spacing)
    # The ball's bounding box bounds its size: skip enumerating a huge ball at all.
    box = np.prod(2 * (np.floor(tolerance_mm / np.asarray(spacing)) + 1) + 1)
    offsets = ball_offsets(spacing, tolerance_mm) if box <= 64 * MAX_BALL_OFFSETS else None
    use_ball = offsets is not None and len(offsets) <= MAX_BALL_OFFSETS
    margin = np.abs(offsets).max(axis=0) if use_ball and offsets is not None else np.zeros(3, dtype=int)

    ref_codes = neighbour_codes(ref, margin)
    pred_codes = neighbour_codes(pred, margin)
    ref_idx = np.flatnonzero((ref_codes != 0) & (ref_codes != 255))
    pred_idx = np.flatnonzero((pred_codes != 0) & (pred_codes != 255))
    ref_areas = table[ref_codes.ravel()[ref_idx]]
    pred_areas = table[pred_codes.ravel()[pred_idx]]
    if ref_idx.size == 0 or pred_idx.size == 0:
        return float(ref_areas.sum()), 0.0, float(pred_areas.sum()), 0.0

    shape = ref_codes.shape
    volume = float(np.prod(shape))
    # Probing K offsets per surface point beats a distance transform of the whole crop unless
    # the surfaces are dense and the ball big.
    if use_ball and offsets is not None and len(offsets) * (ref_idx.size + pred_idx.size) > 8 * volume:
        use_ball = False
    if use_ball:
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        flat_offsets = offsets @ strides
        ref_within = _any_at_offsets(pred_idx, shape, ref_idx, flat_offsets)
        pred_within = _any_at_offsets(ref_idx, shape, pred_idx, flat_offsets)
    else:
        ref_within = _edt_within(pred_idx, shape, ref_idx, spacing, tolerance_mm)
        pred_within = _edt_within(ref_idx, shape, pred_idx, spacing, tolerance_mm)
    return (
        float(ref_areas.sum()),
        float(ref_areas[ref_within].sum()),
        float(pred_areas.sum()),
        float(pred_areas[pred_within].sum()),
    )


def _any_at_offsets(
    target_idx: np.ndarray, shape: tuple[int, ...], query_idx: np.ndarray, flat_offsets: np.ndarray
) -> np.ndarray:
    """For each query corner: is any target corner at one of the offsets? (margins keep the
    probes inside the array)."""
    target = np.zeros(int(np.prod(shape)), dtype=bool)
    target[target_idx] = True
    hit = np.zeros(query_idx.size, dtype=bool)
    for off in flat_offsets:
        hit |= target[query_idx + off]
    return hit


def _edt_within(
    target_idx: np.ndarray,
    shape: tuple[int, ...],
    query_idx: np.ndarray,
    spacing: tuple[float, ...],
    tolerance_mm: float,
) -> np.ndarray:
    not_target = np.ones(int(np.prod(shape)), dtype=bool)
    not_target[target_idx] = False
    dist = ndimage.distance_transform_edt(not_target.reshape(shape), sampling=spacing)
    return dist.ravel()[query_idx] <= tolerance_mm

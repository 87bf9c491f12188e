"""Figures (cylinder, box, sphere) -> SHIELD-HIT12A bodies (RCC, BOX, SPH).

Positions are centres; rotations are the editor's three.js Euler angles in degrees, order
'XYZ': R = Rx(a) Ry(b) Rz(c), applied to the figure's own axes. A cylinder's axis is R (0, 0,
depth), its base the centre minus half the axis. A box's edges are R (width, 0, 0),
R (0, height, 0), R (0, 0, depth), its corner the centre minus half their sum. A cylinder with
an inner radius (a tube) has no single body: it is two RCC bodies, the outer minus the inner.
Sizes below MIN_SIZE are refused: geo.dat's fields show 7 decimals, so a smaller one would lose
its digits or be written as 0 (a body holding no space: a silently different simulation).
"""

import math
from dataclasses import dataclass

from server.editor.project import ConversionError, Json, number, positive, section, text, vector

Vector = tuple[float, float, float]
CYLINDER, BOX, SPHERE = "HollowCylinderGeometry", "BoxGeometry", "SphereGeometry"
MIN_SIZE = 1e-5  # cm: written with at least 3 significant digits in a 10-character field


@dataclass(frozen=True)
class Body:
    code: str  # RCC, BOX or SPH
    numbers: tuple[float, ...]
    item: str  # the project item it comes from, for messages


@dataclass(frozen=True)
class Shape:
    """A figure's geometry, read and checked."""

    kind: str
    centre: Vector
    rotation: Vector  # degrees
    sizes: tuple[float, ...]  # cylinder: radius, depth, inner radius; box: w, h, d; sphere: r
    item: str


def rotation_matrix(degrees: Vector) -> tuple[Vector, Vector, Vector]:
    """Rx(a) Ry(b) Rz(c) as rows (three.js Euler order 'XYZ')."""
    ca, cb, cc = (math.cos(math.radians(angle)) for angle in degrees)
    sa, sb, sc = (math.sin(math.radians(angle)) for angle in degrees)
    return (
        (cb * cc, -cb * sc, sb),
        (ca * sc + sa * sb * cc, ca * cc - sa * sb * sc, -sa * cb),
        (sa * sc - ca * sb * cc, sa * cc + ca * sb * sc, ca * cb),
    )


def rotate(degrees: Vector, vector: Vector) -> Vector:
    rows = rotation_matrix(degrees)
    x, y, z = (sum(a * b for a, b in zip(row, vector, strict=True)) for row in rows)
    return x, y, z


def _plus(a: Vector, b: Vector, scale: float = 1.0) -> Vector:
    return a[0] + scale * b[0], a[1] + scale * b[1], a[2] + scale * b[2]


def read_shape(figure: Json, item: str, *, solid: bool = False) -> Shape:
    """The shape of a figure or of the world zone (`solid`: a cylinder's hole is ignored)."""
    geometry = section(figure, "geometryData", item)
    kind = text(geometry, "geometryType", item)
    centre = vector(geometry, "position", item)
    rotation = vector(geometry, "rotation", item)
    parameters = section(geometry, "parameters", item)
    if kind == CYLINDER:
        radius = _size(parameters, "radius", item)
        depth = _size(parameters, "depth", item)
        inner = 0.0 if solid else _inner_radius(parameters, radius, item)
        sizes: tuple[float, ...] = (radius, depth, inner)
    elif kind == BOX:
        sizes = tuple(_size(parameters, key, item) for key in ("width", "height", "depth"))
    elif kind == SPHERE:
        sizes = (_size(parameters, "radius", item),)
    else:
        raise ConversionError(item, f"figures of type {kind!r} cannot be converted")
    return Shape(kind, centre, rotation, sizes, item)


def _size(parameters: Json, key: str, item: str) -> float:
    size = positive(parameters, key, item)
    _check_size(size, key, item)
    return size


def _check_size(size: float, key: str, item: str) -> None:
    if size < MIN_SIZE:
        raise ConversionError(
            item, f"'{key}' must be at least {MIN_SIZE:g} cm (got {size:g}): geo.dat cannot show it"
        )


def _inner_radius(parameters: Json, radius: float, item: str) -> float:
    if parameters.get("innerRadius") is None:
        return 0.0
    inner = number(parameters, "innerRadius", item, minimum=0)
    if inner:
        _check_size(inner, "innerRadius", item)
    if inner >= radius:
        raise ConversionError(item, f"'innerRadius' ({inner:g}) must be smaller than 'radius'")
    return inner


def grown(shape: Shape, margin: float) -> Shape:
    """The same shape `margin` larger on every side (the world's wrapper)."""
    if shape.kind == CYLINDER:
        sizes: tuple[float, ...] = (shape.sizes[0] + margin, shape.sizes[1] + 2 * margin, 0.0)
    elif shape.kind == BOX:
        sizes = tuple(size + 2 * margin for size in shape.sizes)
    else:
        sizes = (shape.sizes[0] + margin,)
    return Shape(shape.kind, shape.centre, shape.rotation, sizes, shape.item)


def bodies(shape: Shape) -> list[Body]:
    """One body, or two for a tube (the outer cylinder, then the inner one)."""
    if shape.kind == SPHERE:
        return [Body("SPH", (*shape.centre, shape.sizes[0]), shape.item)]
    if shape.kind == BOX:
        return [_box(shape)]
    radius, depth, inner = shape.sizes
    axis = rotate(shape.rotation, (0.0, 0.0, depth))
    base = _plus(shape.centre, axis, -0.5)
    outer = Body("RCC", (*base, *axis, radius), shape.item)
    return [outer, Body("RCC", (*base, *axis, inner), shape.item)] if inner > 0 else [outer]


def _box(shape: Shape) -> Body:
    width, height, depth = shape.sizes
    edges = [rotate(shape.rotation, edge) for edge in _diagonal(width, height, depth)]
    corner = shape.centre
    for edge in edges:
        corner = _plus(corner, edge, -0.5)
    return Body("BOX", (*corner, *edges[0], *edges[1], *edges[2]), shape.item)


def _diagonal(width: float, height: float, depth: float) -> list[Vector]:
    return [(width, 0.0, 0.0), (0.0, height, 0.0), (0.0, 0.0, depth)]

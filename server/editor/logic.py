"""Zones as unions of intersections of signed bodies, and the algebra the converter needs.

A term is an intersection of signed body numbers (`+k` inside body k, `-k` outside); a region
is a union of terms. Negating a region (for "minus this zone" and the world zone) and
intersecting two regions distribute one over the other, which can grow exponentially: every
step drops terms holding both `+k` and `-k` (empty) and terms absorbed by a smaller one
(A and B is inside A), and a region past `limit` terms is refused by the caller.
"""

from collections.abc import Iterable

CANDIDATES = 10_000  # most terms one distribution may produce before reduction
Term = tuple[int, ...]  # signed body numbers, in the order they were added
Region = list[Term]


class TooComplex(Exception):
    """The expansion passed its limit of terms."""


def term(literals: Iterable[int]) -> Term:
    """A term without repeated literals, keeping their first order."""
    return tuple(dict.fromkeys(literals))


def is_empty(literals: Term) -> bool:
    return any(-literal in literals for literal in literals)


def simplify(region: Region, limit: int | None = None) -> Region:
    """Without empty terms, repeated terms and terms absorbed by another; TooComplex as soon
    as more than `limit` terms remain."""
    kept: list[Term] = []
    sets: list[frozenset[int]] = []
    for candidate in sorted(dict.fromkeys(region), key=len):  # stable: equal lengths keep order
        literals = frozenset(candidate)
        if is_empty(candidate) or any(smaller <= literals for smaller in sets):
            continue
        kept.append(candidate)
        sets.append(literals)
        if limit is not None and len(kept) > limit:
            raise TooComplex
    order = {candidate: index for index, candidate in enumerate(region)}
    return sorted(kept, key=order.__getitem__)


def intersect(left: Region, right: Region, limit: int) -> Region:
    """left AND right, distributed into a union of terms (at most `limit` of them)."""
    if len(left) * len(right) > CANDIDATES:
        raise TooComplex
    return simplify([term(a + b) for a in left for b in right], limit)


def subtract(region: Region, removed: Region, limit: int) -> Region:
    """region AND NOT removed: each term of `removed` negated is a union of single literals."""
    for literals in removed:
        region = intersect(region, [(-literal,) for literal in literals], limit)
        if not region:
            break
    return region

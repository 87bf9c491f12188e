"""Zones as unions of intersections of signed bodies, and the algebra the converter needs.

A term is an intersection of signed body numbers (`+k` inside body k, `-k` outside); a region
is a union of terms. Negating a region (for "minus this zone" and the world zone) and
intersecting two regions distribute one over the other, which can grow exponentially: every
step drops terms holding both `+k` and `-k` (empty) and terms absorbed by a smaller one
(A and B is inside A), and a region past `limit` terms is refused by the caller. A region can
stay small while each step compares thousands of long terms, so the steps of one conversion
also share a `Budget` of the literals they may read.
"""

import threading
from collections.abc import Iterable

CANDIDATES = 10_000  # most terms one distribution may produce before reduction
CANDIDATE_LITERALS = 4_000_000  # and most literals (about 32 MB of them while reduced)
WORK = 100_000_000  # most literals the reductions of one conversion may read (seconds of CPU)
Term = tuple[int, ...]  # signed body numbers, in the order they were added
Region = list[Term]


class TooComplex(Exception):
    """The expansion passed its limit of terms (or, with a message, its budget)."""


class Stopped(Exception):
    """The conversion was told to stop (the server is stopping)."""


class Budget:
    """The literals one conversion's reductions may still read (an upper bound of their work),
    and whether it has been told to stop: a thread cannot be cancelled, it stops here."""

    def __init__(self, work: int = WORK, stop: threading.Event | None = None) -> None:
        self.left = work
        self.stop = stop

    def spend(self, work: int) -> None:
        self.left -= work
        if self.left < 0:
            raise TooComplex(f"expanding the zones takes more than {WORK} steps")
        if self.stop is not None and self.stop.is_set():
            raise Stopped


def term(literals: Iterable[int]) -> Term:
    """A term without repeated literals, keeping their first order."""
    return tuple(dict.fromkeys(literals))


def is_empty(literals: frozenset[int]) -> bool:
    """Whether a term holds both +k and -k (a set: a long term's check stays linear)."""
    return any(-literal in literals for literal in literals)


def simplify(region: Region, limit: int | None = None, budget: Budget | None = None) -> Region:
    """Without empty terms, repeated terms and terms absorbed by another; TooComplex as soon
    as more than `limit` terms remain (or the `budget` is spent)."""
    kept: list[Term] = []
    sets: list[frozenset[int]] = []
    compared = 0  # literals of the kept terms: the most one absorption check reads
    for candidate in sorted(dict.fromkeys(region), key=len):  # stable: equal lengths keep order
        if budget is not None:
            budget.spend(len(candidate) + compared)
        literals = frozenset(candidate)
        if is_empty(literals) or any(smaller <= literals for smaller in sets):
            continue
        kept.append(candidate)
        sets.append(literals)
        compared += len(literals)
        if limit is not None and len(kept) > limit:
            raise TooComplex
    order = {candidate: index for index, candidate in enumerate(region)}
    return sorted(kept, key=order.__getitem__)


def intersect(left: Region, right: Region, limit: int, budget: Budget) -> Region:
    """left AND right, distributed into a union of terms (at most `limit` of them). What the
    distribution would build is counted first: 5,000 terms of 5,000 bodies were 25 million
    literals (270 MB) built before the budget refused to reduce them."""
    if len(left) * len(right) > CANDIDATES:
        raise TooComplex
    literals = len(right) * sum(map(len, left)) + len(left) * sum(map(len, right))
    if literals > CANDIDATE_LITERALS:
        raise TooComplex(f"expanding the zones builds more than {CANDIDATE_LITERALS} literals")
    return simplify([term(a + b) for a in left for b in right], limit, budget)


def subtract(region: Region, removed: Region, limit: int, budget: Budget) -> Region:
    """region AND NOT removed: each term of `removed` negated is a union of single literals."""
    for literals in removed:
        region = intersect(region, [(-literal,) for literal in literals], limit, budget)
        if not region:
            break
    return region

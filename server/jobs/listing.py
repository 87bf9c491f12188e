"""Query parameters of `GET /user/simulations`: paging, sort order and state filter.

Every parameter is optional (the defaults are the seed's); a value given but not valid is 400
naming the parameter, never silently replaced by the default.
"""

import re
from collections.abc import Callable
from typing import TypeVar

from multidict import MultiMapping

from server.errors import BadRequest
from server.jobs.states import JOB_STATES
from server.models import Listing
from server.values import one

MAX_PAGE_SIZE = 100
ORDER_BY = ("start_time", "end_time")
ORDER_TYPES = ("ascend", "descend")
_DIGITS = re.compile(r"[0-9]+")  # fullmatch: no "$" before a newline
_MAX_DIGITS = 1000  # far past any real page, short of int()'s conversion limit
T = TypeVar("T")


def _param(query: MultiMapping[str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """`parse` of the parameter's value, or `default` when it is absent."""
    value = one(query, name)
    return default if value is None else parse(value)


def _integer(name: str, low: int, high: int | None) -> Callable[[str], int]:
    bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
    problem = f"Invalid {name}: must be an integer {bounds}"

    def parse(text: str) -> int:
        # Only ASCII digits: int() would also take " 5", "+5", "5_0" and other scripts' digits.
        if not _DIGITS.fullmatch(text) or len(text) > _MAX_DIGITS:
            raise BadRequest(problem)
        value = int(text)
        if value < low or (high is not None and value > high):
            raise BadRequest(problem)
        return value

    return parse


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise BadRequest(f"Invalid {name}: must be one of {', '.join(choices)}")
        return text

    return parse


def _states(text: str) -> tuple[str, ...]:
    states = text.split(",")
    if not all(state in JOB_STATES for state in states):
        raise BadRequest(
            f"Invalid job_state: must be a comma-separated list of {', '.join(JOB_STATES)}"
        )
    return tuple(sorted(set(states)))


_PAGE_SIZE = _integer("page_size", 1, MAX_PAGE_SIZE)
_PAGE_IDX = _integer("page_idx", 1, None)
_ORDER_BY = _choice("order_by", ORDER_BY)
_ORDER_TYPE = _choice("order_type", ORDER_TYPES)


def parse_listing(query: MultiMapping[str]) -> Listing:
    """The listing asked for by the query string; 400 naming the first invalid parameter."""
    default = Listing()
    return Listing(
        page_size=_param(query, "page_size", default.page_size, _PAGE_SIZE),
        page_idx=_param(query, "page_idx", default.page_idx, _PAGE_IDX),
        order_by=_param(query, "order_by", default.order_by, _ORDER_BY),
        descending=_param(query, "order_type", "descend", _ORDER_TYPE) == "descend",
        states=_param(query, "job_state", default.states, _states),
    )

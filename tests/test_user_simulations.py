"""`GET /user/simulations`: the seed's examples, paging, both sort keys and orders, ties, state
filters, page_count edge cases and every 400."""

import math
from typing import Any

import pytest

from tests.helpers import EDITOR, FLUKA_FILES, login, set_simulation, submit, switch_user, utc

# The seed's two list items, without their job_ids (the server makes those).
SEED_ITEMS = [
    {
        "title": "Water phantom dose",
        "start_time": "2024-01-15T10:00:00Z",
        "end_time": "2024-01-15T10:05:23Z",
        "job_state": "COMPLETED",
        "sim_type": "shieldhit",
        "input_type": "editor",
        "platform": "direct",
        "ntasks": 10,
    },
    {
        "title": "Carbon beam spread",
        "start_time": "2024-01-14T14:00:00Z",
        "end_time": "2024-01-14T15:30:00Z",
        "job_state": "COMPLETED",
        "sim_type": "shieldhit",
        "input_type": "editor",
        "platform": "batch",
        "ntasks": 100,
    },
]
STATES = ["COMPLETED", "FAILED", "RUNNING", "PENDING", "CANCELED", "MERGING_QUEUED"]


async def make(client, conn, item: dict[str, Any], payload: str = FLUKA_FILES) -> dict[str, Any]:
    """Submit a simulation and give it `item`'s listed values; the item as it should be listed."""
    job_id = await submit(client, payload)
    times = {k: utc(item[k]) if item[k] else None for k in ("start_time", "end_time")}
    await set_simulation(
        conn,
        job_id,
        title=item["title"],
        job_state=item["job_state"],
        platform=item["platform"],
        ntasks=item["ntasks"],
        **times,
    )
    return {"job_id": job_id, **item}


def filler(index: int, **changes: Any) -> dict[str, Any]:
    """An item for a fluka files submission, started `index` minutes into 2024-01-01."""
    state = STATES[index % len(STATES)]
    item = {
        "title": f"Simulation {index}",
        "start_time": f"2024-01-01T{index // 60:02d}:{index % 60:02d}:00Z",
        "end_time": f"2024-01-02T00:{59 - index % 60:02d}:07Z" if state != "RUNNING" else None,
        "job_state": state,
        "sim_type": "fluka",
        "input_type": "files",
        "platform": "direct",
        "ntasks": 4,
    }
    return {**item, **changes}


def ordered(items: list[dict], order_by: str = "start_time", descending: bool = True) -> list:
    """The listing order: the key (a missing end_time is later than any), then job_id bytes."""

    def key(item: dict) -> tuple:
        moment = item[order_by]
        return (moment is None, moment or "", item["job_id"].encode())

    result = sorted(items, key=key)
    return result[::-1] if descending else result


def page_body(items: list[dict], page_size: int, page_idx: int, total: int | None = None) -> dict:
    total = len(items) if total is None else total
    return {
        "message": "User simulations",
        "simulations": items[(page_idx - 1) * page_size : page_idx * page_size],
        "page_count": math.ceil(total / page_size),
        "simulations_count": total,
    }


async def get_list(client, query: str = "") -> tuple[int, dict]:
    response = await client.get(f"/user/simulations{query}")
    return response.status, await response.json()


async def test_seed_example_two_simulations(client, conn):
    await login(client)
    items = [await make(client, conn, item, EDITOR) for item in SEED_ITEMS]
    assert await get_list(client, "?page_size=10&page_idx=1") == (
        200,
        {
            "message": "User simulations",
            "simulations": items,
            "page_count": 1,
            "simulations_count": 2,
        },
    )


async def test_seed_example_47_simulations(client, conn):
    """The seed's counts: 47 simulations, pages of 10 -> page_count 5, newest (the seed's) first."""
    await login(client)
    items = [await make(client, conn, item, EDITOR) for item in SEED_ITEMS]
    items += [await make(client, conn, filler(i)) for i in range(45)]
    status, body = await get_list(client, "?page_size=10&page_idx=1")
    assert (status, body) == (200, page_body(ordered(items), 10, 1))
    assert body["page_count"] == 5 and body["simulations_count"] == 47
    assert body["simulations"][:2] == items[:2]
    assert await get_list(client, "?page_size=10&page_idx=5") == (
        200,
        page_body(ordered(items), 10, 5),
    )
    assert len(body["simulations"]) == 10


async def test_seed_example_state_filter(client, conn):
    await login(client)
    items = [await make(client, conn, filler(i)) for i in range(9)]
    status, body = await get_list(client, "?job_state=COMPLETED,FAILED")
    kept = [item for item in items if item["job_state"] in ("COMPLETED", "FAILED")]
    assert len(kept) == 4
    assert (status, body) == (200, page_body(ordered(kept), 6, 1))


async def test_defaults(client, conn):
    """page_size 6, page_idx 1, start_time descend."""
    await login(client)
    items = [await make(client, conn, filler(i)) for i in range(7)]
    assert await get_list(client) == (200, page_body(ordered(items), 6, 1))
    assert await get_list(client, "?page_idx=2") == (200, page_body(ordered(items), 6, 2))


@pytest.mark.parametrize("order_by", ["start_time", "end_time"])
@pytest.mark.parametrize("order_type", ["ascend", "descend"])
async def test_pages_in_every_order(client, conn, order_by, order_type):
    """Ties in the sort key (equal start and end times, several unfinished) are broken by job_id:
    the pages put together are the whole ordered list, with no overlap and nothing skipped."""
    await login(client)
    same_start = {"start_time": "2024-01-01T00:03:00Z"}
    same_end = {"end_time": "2024-01-03T00:00:00Z"}
    specs = [
        filler(0),
        filler(1, **same_start, **same_end),
        filler(2, **same_start, end_time=None),
        filler(3, **same_start, **same_end),
        filler(4, **same_start),
        filler(5, end_time=None),
        filler(6, **same_end),
        filler(7, end_time=None),
        filler(8),
    ]
    items = [await make(client, conn, spec) for spec in specs]
    expected = ordered(items, order_by, order_type == "descend")
    pages = []
    for page_idx in (1, 2, 3, 4):
        query = f"?page_size=3&page_idx={page_idx}&order_by={order_by}&order_type={order_type}"
        status, body = await get_list(client, query)
        assert (status, body) == (200, page_body(expected, 3, page_idx))
        pages += body["simulations"]
    assert pages == expected
    assert len({item["job_id"] for item in pages}) == 9


async def test_ascend_is_descend_reversed_and_null_end_times(client, conn):
    """Decided: a simulation without an end_time sorts as later than every finished one."""
    await login(client)
    specs = [filler(i, end_time=None) if i % 2 else filler(i) for i in range(6)]
    items = [await make(client, conn, spec) for spec in specs]
    _, down = await get_list(client, "?order_by=end_time&order_type=descend")
    _, up = await get_list(client, "?order_by=end_time&order_type=ascend")
    assert down["simulations"] == ordered(items, "end_time", descending=True)
    assert down["simulations"] == up["simulations"][::-1]
    unfinished = sum(spec["end_time"] is None for spec in specs)
    assert unfinished == 4  # three odd ones and the RUNNING filler(2)
    assert all(item["end_time"] is None for item in down["simulations"][:unfinished])
    assert all(item["end_time"] for item in up["simulations"][: 6 - unfinished])


@pytest.mark.parametrize(
    ("query", "states"),
    [
        ("?job_state=RUNNING", {"RUNNING"}),
        ("?job_state=PENDING,MERGING_QUEUED,CANCELED", {"PENDING", "MERGING_QUEUED", "CANCELED"}),
        ("?job_state=COMPLETED,COMPLETED", {"COMPLETED"}),
        ("?job_state=UNKNOWN", set()),
    ],
)
async def test_state_filters(client, conn, query, states):
    await login(client)
    items = [await make(client, conn, filler(i)) for i in range(12)]
    kept = [item for item in items if item["job_state"] in states]
    assert await get_list(client, query + "&page_size=3") == (200, page_body(ordered(kept), 3, 1))


async def test_no_simulations(client, conn):
    await login(client)
    expected = {
        "message": "User simulations",
        "simulations": [],
        "page_count": 0,
        "simulations_count": 0,
    }
    assert await get_list(client) == (200, expected)
    assert await get_list(client, "?page_idx=3") == (200, expected)


async def test_page_count_edges(client, conn):
    """An exact multiple of page_size, the last page, and pages past it (counts still given)."""
    await login(client)
    items = ordered([await make(client, conn, filler(i)) for i in range(6)])
    assert await get_list(client, "?page_size=3") == (200, page_body(items, 3, 1))
    assert (await get_list(client, "?page_size=3"))[1]["page_count"] == 2
    assert await get_list(client, "?page_size=3&page_idx=2") == (200, page_body(items, 3, 2))
    for page_idx in (3, 4, 10**30):
        assert await get_list(client, f"?page_size=3&page_idx={page_idx}") == (
            200,
            {
                "message": "User simulations",
                "simulations": [],
                "page_count": 2,
                "simulations_count": 6,
            },
        )
    assert await get_list(client, "?page_size=6") == (200, page_body(items, 6, 1))
    assert await get_list(client, "?page_size=100") == (200, page_body(items, 100, 1))
    assert await get_list(client, "?page_size=1&page_idx=6") == (200, page_body(items, 1, 6))
    assert await get_list(client, "?page_size=4&job_state=FAILED&page_idx=2") == (
        200,
        {"message": "User simulations", "simulations": [], "page_count": 1, "simulations_count": 1},
    )


async def test_only_own_simulations(client, conn):
    await login(client)
    mine = [await make(client, conn, filler(i)) for i in range(3)]
    await switch_user(client, "bob")
    theirs = [await make(client, conn, filler(i)) for i in range(2)]
    assert await get_list(client) == (200, page_body(ordered(theirs), 6, 1))
    await switch_user(client, "alice")
    assert await get_list(client) == (200, page_body(ordered(mine), 6, 1))


SIZE = "Invalid page_size: must be an integer from 1 to 100"
IDX = "Invalid page_idx: must be an integer of 1 or more"
STATE = (
    "Invalid job_state: must be a comma-separated list of UNKNOWN, PENDING, RUNNING, "
    "MERGING_QUEUED, MERGING_RUNNING, COMPLETED, FAILED, CANCELED"
)


BAD_QUERIES = [
    ("?page_size=0", SIZE),
    ("?page_size=101", SIZE),
    ("?page_size=-1", SIZE),
    ("?page_size=abc", SIZE),
    ("?page_size=1.5", SIZE),
    ("?page_size=", SIZE),
    ("?page_size=+5", SIZE),
    ("?page_size=%205", SIZE),
    ("?page_size=5%0A", SIZE),  # a trailing newline
    ("?page_idx=1%0A", IDX),
    ("?page_size=%D9%A3", SIZE),  # an Arabic-Indic digit three
    ("?page_size=" + "9" * 5000, SIZE),
    ("?page_size=5&page_size=6", "Invalid page_size: given more than once"),
    ("?page_idx=0", IDX),
    ("?page_idx=-2", IDX),
    ("?page_idx=x", IDX),
    ("?page_idx=", IDX),
    ("?order_by=title", "Invalid order_by: must be one of start_time, end_time"),
    ("?order_by=", "Invalid order_by: must be one of start_time, end_time"),
    ("?order_by=START_TIME", "Invalid order_by: must be one of start_time, end_time"),
    ("?order_type=desc", "Invalid order_type: must be one of ascend, descend"),
    ("?order_type=", "Invalid order_type: must be one of ascend, descend"),
    ("?job_state=DONE", STATE),
    ("?job_state=completed", STATE),
    ("?job_state=", STATE),
    ("?job_state=COMPLETED,", STATE),
    ("?job_state=COMPLETED,,FAILED", STATE),
    ("?job_state=COMPLETED, FAILED", STATE),
]


async def test_bad_parameters(client, conn):
    """Every invalid value is 400 naming its parameter (one login for all: hashing is slow)."""
    await login(client)
    for query, message in BAD_QUERIES:
        assert (query, *await get_list(client, query)) == (query, 400, {"message": message})


async def test_needs_login(client):
    assert await get_list(client) == (401, {"message": "No token provided"})

"""Model-based (hypothesis stateful) tests of a simulation's life cycle, driving a real server
(the app on a real port, aiohttp, the real PostgreSQL) with random sequences of worker and user
requests for one or two simulations of 1-3 tasks, with `runner.kind = "none"` so that only these
requests act as the worker (the update key is taken from the dispatcher, as tests/helpers.py
does).

The rules, from api.md, the seeds and README ("API", "Results", "Runner and worker"):

Task states: PENDING -> RUNNING -> COMPLETED | FAILED (also PENDING -> COMPLETED | FAILED, as the
seed's POST /tasks example); any non-terminal -> CANCELED; repeating
the current state is accepted (202, idempotent); any other move 409. A report without a state
("progress") is accepted in any task state; for a task that has ended it changes nothing. Sent
fields (simulated_primaries, requested_primaries, estimated_time, start_time, end_time) are
written by every accepted update (last acknowledged one wins); start_time is set when the task
turns RUNNING and end_time when it turns terminal, unless sent.

Job state, recomputed with every task move and results upload: all tasks PENDING -> PENDING;
any task not terminal -> RUNNING; all terminal with a COMPLETED one: COMPLETED if results are
stored, else MERGING_QUEUED (MERGING_RUNNING, once set by POST /jobs, stays until results come);
all terminal, none COMPLETED: FAILED if any FAILED (ASSUMED: api.md only says "all FAILED"),
CANCELED when all are CANCELED (ASSUMED: api.md does not say).

POST /jobs: MERGING_QUEUED -> MERGING_RUNNING, any non-terminal -> FAILED, repeating the current
state accepted; anything else 409. ASSUMED (as README/server do): a job FAILED this way leaves
its unfinished tasks CANCELED.

Worker endpoints: 404 unknown (or deleted) simulation, 403 wrong key, 409 once the job is
terminal (nothing changed), 404 unknown task; 202 with {"message": "Task updated" | "Job
updated" | "Results saved" | "Logfiles saved"}. POST /results upserts by (estimator name, page
number), new estimators after the stored ones (upload order), estimator fields replaced by the
latest upload (ASSUMED); POST /logfiles merges by name.

User endpoints (owner): GET /jobs/direct 200 with the model's job and tasks; DELETE /jobs/direct
200 "Job cancelled" (job and every unfinished task CANCELED) or 409 when terminal; DELETE
/user/simulations 200 when terminal, 409 otherwise; GET /results and /estimators 404 "Results
not available" until something is stored; GET /logfiles 404 until logs are stored; GET /inputs
200 always; GET /user/simulations lists it with the model's state. Once deleted, every one of
these (and every worker endpoint) is 404 for ever.

An acknowledged (2xx) update is never lost or reordered: every later read shows it until a
later acknowledged update replaces it. Concurrent updates must give an outcome some serial
order of them gives (statuses and final state).
"""

import asyncio
import copy
import itertools
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from server.app import create_app
from server.eventloop import new_event_loop
from server.jobs.states import JOB_STATES, TERMINAL_STATES
from server.limits.serving import handler_settings
from tests import servers
from tests.helpers import payload, record_jobs

TERMINAL = TERMINAL_STATES
STATES = list(JOB_STATES)  # the contract's vocabulary (api.md)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SET = "<set>"  # a time the server sets itself: any timestamp
INPUT = payload()["input_files"]


# --- the harness: the app on a real port, served by an event loop in a thread --------------


class Harness:
    def __init__(self, database_url: str, config: Any) -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.database_url = database_url
        self.config = config
        self.run(self._start())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        await conn.execute(
            "TRUNCATE users, login_attempts, pending_scancels RESTART IDENTITY CASCADE"
        )
        await conn.close()
        app = create_app(self.config)
        self.recorder = record_jobs(app)
        self.runner = web.AppRunner(
            app, handler_cancellation=False, **handler_settings(self.config)
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        await self._sign_in()

    async def _sign_in(self) -> None:
        creds = {"username": "alice", "password": "password1"}
        status, _ = await self.request("PUT", "/auth/register", json=creds)
        assert status == 201
        status, _ = await self.request("POST", "/auth/login", json=creds)
        assert status == 202

    async def key(self, job_id: str) -> str:
        return self.recorder.key(job_id)

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kwargs) as response:
            raw = await response.read()
            assert response.status < 500, (method, path, response.status, raw[:500])
            assert response.content_type == "application/json", (path, raw[:200])

            body = orjson.loads(raw)
            assert isinstance(body, dict) and isinstance(body.get("message"), str), body
            if response.status >= 400:
                assert set(body) == {"message"}, body
            return response.status, body

    async def _stop(self) -> None:
        await self.http.close()
        await self.runner.cleanup()

    def close(self) -> None:
        async def stop() -> None:
            await self._stop()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class ProcessHarness(Harness):
    """`run.py --workers 2` (two server processes on one port, SO_REUSEPORT, one database):
    every request on a new connection, so requests land on either process; keys from
    `run.py job-key`, as an external dispatcher gets them."""

    async def _start(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        await conn.execute(
            "TRUNCATE users, login_attempts, pending_scancels RESTART IDENTITY CASCADE"
        )
        await conn.close()
        self.port = servers.free_port()
        self.data_dir = self.config
        self.process = servers.start(
            self.database_url,
            self.data_dir,
            self.port,
            YAPTIDE_SERVER_WORKERS="2",
            YAPTIDE_JOBS_MAX_UNFINISHED="0",
        )
        self.base = f"http://127.0.0.1:{self.port}"
        connector = aiohttp.TCPConnector(force_close=True)
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector
        )
        await servers.wait_ready(self.http, self.base, self.process)
        await self._sign_in()

    async def key(self, job_id: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")}
        env |= {
            "DATABASE_URL": self.database_url,
            "YAPTIDE_DATABASE_DATA_DIR": str(self.data_dir),
            "YAPTIDE_RUNNER_KIND": "none",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            servers.RUN_PY,
            "job-key",
            job_id,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err
        return out.decode().strip()

    async def _stop(self) -> None:
        await self.http.close()
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 30)


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Any:
    data = tmp_path / "data"
    data.mkdir()
    h = ProcessHarness(database_url, data)
    yield h
    h.close()


@pytest.fixture
def harness(database_url: str, make_config: Any) -> Any:
    h = Harness(database_url, make_config(jobs={"max_unfinished": 0}))
    yield h
    h.close()


# --- the model ---------------------------------------------------------------------------------


def new_sim(job_id: str, key: str, tasks: list[dict]) -> dict:
    return {
        "job_id": job_id,
        "key": key,
        "deleted": False,
        "job": "PENDING",
        "tasks": {
            t["task_id"]: {
                "task_state": "PENDING",
                "simulated_primaries": t["simulated_primaries"],
                "requested_primaries": t["requested_primaries"],
                "estimated_time": t["estimated_time"],
                "start_time": None,
                "end_time": None,
            }
            for t in tasks
        },
        "results": [],  # [name, fields, {page_number: page}] in display order
        "logs": {},
    }


def derive(sim: dict) -> str:
    states = [t["task_state"] for t in sim["tasks"].values()]
    if all(s == "PENDING" for s in states):
        return "PENDING"
    if any(s not in TERMINAL for s in states):
        return "RUNNING"
    if "COMPLETED" in states:
        if sim["results"]:
            return "COMPLETED"
        return "MERGING_RUNNING" if sim["job"] == "MERGING_RUNNING" else "MERGING_QUEUED"
    if "FAILED" in states:
        return "FAILED"
    return "CANCELED"


def task_move_ok(current: str, new: str) -> bool:
    if new == current:
        return True
    if current in ("PENDING", "RUNNING") and new in ("RUNNING", "COMPLETED", "FAILED"):
        return True  # PENDING -> COMPLETED | FAILED: a worker reporting only the task's end
    return new == "CANCELED" and current not in TERMINAL


def write_fields(task: dict, fields: dict, new_state: str | None) -> None:
    for name in ("simulated_primaries", "requested_primaries", "estimated_time"):
        if name in fields:
            task[name] = fields[name]
    if "start_time" in fields:
        task["start_time"] = fields["start_time"]
    elif task["start_time"] is None and new_state in ("RUNNING", "COMPLETED", "FAILED"):
        task["start_time"] = SET
    if "end_time" in fields:
        task["end_time"] = fields["end_time"]
    elif task["end_time"] is None and new_state in TERMINAL:
        task["end_time"] = SET
    if new_state is not None:
        task["task_state"] = new_state


def page_number_of(page: dict) -> int:
    return (
        int(page["page_number"]) if "page_number" in page else int(page["metadata"]["page_number"])
    )


def end_job(sim: dict, state: str) -> None:
    """The job ends in `state`; its unfinished tasks are CANCELED."""
    sim["job"] = state
    for task in sim["tasks"].values():
        if task["task_state"] not in TERMINAL:
            task["task_state"] = "CANCELED"
            if task["end_time"] is None:
                task["end_time"] = SET


def apply(sims: list[dict], op: tuple) -> int:
    """Apply `op` to the model (in place); the status the server must answer."""
    kind, index = op[0], op[1]
    sim = sims[index]
    if sim["deleted"]:
        return 404
    job = sim["job"]
    if kind == "badkey":
        return 403
    if kind in ("task", "job", "results", "logs") and job in TERMINAL:
        return 409
    if kind == "task":
        _, _, task_id, state, fields = op
        task = sim["tasks"].get(task_id)
        if task is None:
            return 404
        current = task["task_state"]
        if not task_move_ok(current, state or current):
            return 409
        if state is None and current in TERMINAL:
            return 202  # a late progress report: nothing changes
        write_fields(task, fields, state)
        sim["job"] = derive(sim)
        return 202
    if kind == "job":
        state = op[2]
        if state == job:
            return 202
        if (job, state) == ("MERGING_QUEUED", "MERGING_RUNNING"):
            sim["job"] = state
            return 202
        if state == "FAILED":
            end_job(sim, "FAILED")
            return 202
        return 409
    if kind == "results":
        for estimator in op[2]:
            found = next((e for e in sim["results"] if e[0] == estimator["name"]), None)
            fields = {k: v for k, v in estimator.items() if k not in ("name", "pages")}
            if found is None:
                found = [estimator["name"], fields, {}]
                sim["results"].append(found)
            found[1] = fields
            for page in estimator["pages"]:
                found[2][page_number_of(page)] = page
        sim["job"] = derive(sim)
        return 202
    if kind == "logs":
        # README/api.md say nothing of NUL; PostgreSQL text cannot hold it: U+FFFD (ASSUMED)
        sim["logs"].update({k: v.replace("\0", "\ufffd") for k, v in op[2].items()})
        return 202
    if kind == "cancel":
        if job in TERMINAL:
            return 409
        end_job(sim, "CANCELED")
        return 200
    if kind == "delete":
        if job not in TERMINAL:
            return 409
        sim["deleted"] = True
        return 200
    raise AssertionError(op)


OK_MESSAGES = {
    "task": "Task updated",
    "job": "Job updated",
    "results": "Results saved",
    "logs": "Logfiles saved",
    "cancel": "Job cancelled",
    "delete": "Simulation deleted",
}


async def send(h: Harness, sims: list[dict], op: tuple) -> tuple[int, dict]:
    kind, sim = op[0], sims[op[1]]
    ident = {"simulation_id": sim["job_id"], "update_key": sim["key"]}
    if kind == "task":
        body = {**ident, "task_id": op[2], "update_dict": dict(op[4])}
        if op[3] is not None:
            body["update_dict"]["task_state"] = op[3]
        return await h.request("POST", "/tasks", json=body)
    if kind == "job":
        return await h.request("POST", "/jobs", json={**ident, "job_state": op[2]})
    if kind == "results":
        return await h.request("POST", "/results", json={**ident, "estimators": op[2]})
    if kind == "logs":
        return await h.request("POST", "/logfiles", json={**ident, "logfiles": op[2]})
    if kind == "badkey":
        body = {**ident, "update_key": "not-the-key", "task_id": 1, "update_dict": {}}
        return await h.request("POST", "/tasks", json=body)
    params = {"job_id": sim["job_id"]}
    if kind == "cancel":
        return await h.request("DELETE", "/jobs/direct", params=params)
    if kind == "delete":
        return await h.request("DELETE", "/user/simulations", params=params)
    raise AssertionError(op)


def check_answer(op: tuple, expected: int, got: tuple[int, dict]) -> None:
    status, body = got
    assert status == expected, (op, expected, status, body)
    if status < 300:
        assert body == {"message": OK_MESSAGES[op[0]]}, body


def times_match(expected: Any, got: Any) -> bool:
    if expected is None:
        return got is None
    if got is None or not ISO.match(got):
        return False
    return expected in (SET, got)


def expected_results(sim: dict) -> list[dict]:
    return [
        {"name": name, **fields, "pages": [pages[n] for n in sorted(pages)]}
        for name, fields, pages in sim["results"]
    ]


def page_name(page: dict) -> str:
    return page["name"] if "name" in page else page.get("metadata", {}).get("name", "")


def expected_estimators(sim: dict) -> list[dict]:
    return [
        {
            "name": name,
            "pages": [
                {
                    "page_number": n,
                    "name": page_name(pages[n]),
                    "dimensions": [len(pages[n]["data"]["values"])],
                }
                for n in sorted(pages)
            ],
        }
        for name, _, pages in sim["results"]
    ]


async def observe(h: Harness, sim: dict) -> dict:
    params = {"job_id": sim["job_id"]}
    out = {}
    for path in ("/jobs/direct", "/results", "/estimators", "/logfiles", "/inputs"):
        out[path] = await h.request("GET", path, params=params)
    return out


def mismatches(sim: dict, seen: dict) -> list[str]:
    """How what the server shows differs from the model (empty: it agrees)."""
    bad = []
    if sim["deleted"]:
        for path, (status, body) in seen.items():
            if status != 404:
                bad.append(f"{path}: deleted simulation answered {status} {body}")
        return bad
    status, body = seen["/jobs/direct"]
    if status != 200:
        return [f"/jobs/direct: {status} {body}"]
    if set(body) != {"message", "job_state", "job_tasks_status"} or body["message"] != "Job status":
        bad.append(f"status shape {body}")
    if body["job_state"] != sim["job"]:
        bad.append(f"job_state {body['job_state']} != model {sim['job']}")
    got_tasks = body["job_tasks_status"]
    if [t["task_id"] for t in got_tasks] != sorted(sim["tasks"]):
        bad.append(f"task ids {got_tasks}")
    for got in got_tasks:
        want = sim["tasks"].get(got["task_id"])
        if want is None:
            continue
        keys = {"task_id", *want}
        if set(got) != keys:
            bad.append(f"task shape {got}")
        for name, value in want.items():
            if name in ("start_time", "end_time"):
                if not times_match(value, got.get(name)):
                    bad.append(f"task {got['task_id']} {name} {got.get(name)} != model {value}")
            elif got.get(name) != value:
                bad.append(f"task {got['task_id']} {name} {got.get(name)} != model {value}")
    if sim["results"]:
        want = {"message": "Results", "estimators": expected_results(sim)}
        if seen["/results"] != (200, want):
            bad.append(f"/results {seen['/results']} != {want}")
        want = {"message": "Estimators", "estimators": expected_estimators(sim)}
        if seen["/estimators"] != (200, want):
            bad.append(f"/estimators {seen['/estimators']} != {want}")
    else:
        for path in ("/results", "/estimators"):
            if seen[path] != (404, {"message": "Results not available"}):
                bad.append(f"{path} without results: {seen[path]}")
    if sim["logs"]:
        if seen["/logfiles"] != (200, {"message": "Logfiles", "logfiles": sim["logs"]}):
            bad.append(f"/logfiles {seen['/logfiles']} != {sim['logs']}")
    elif seen["/logfiles"][0] != 404:
        bad.append(f"/logfiles without logs: {seen['/logfiles']}")
    want = (200, {"message": "Inputs", "input_type": "files", "input": INPUT})
    if seen["/inputs"] != want:
        bad.append(f"/inputs {seen['/inputs'][0]}")
    return bad


async def check_listing(h: Harness, sims: list[dict]) -> None:
    status, body = await h.request("GET", "/user/simulations", params={"page_size": "100"})
    assert status == 200, body
    assert set(body) == {"message", "simulations", "page_count", "simulations_count"}, body
    listed = {item["job_id"]: item for item in body["simulations"]}
    assert body["simulations_count"] == len(listed) or body["simulations_count"] > 100
    for sim in sims:
        item = listed.get(sim["job_id"])
        if sim["deleted"]:
            assert item is None, f"deleted simulation listed: {item}"
            continue
        assert item is not None, sim["job_id"]
        assert set(item) == {
            "job_id",
            "title",
            "start_time",
            "end_time",
            "job_state",
            "sim_type",
            "input_type",
            "platform",
            "ntasks",
        }, item
        assert item["job_state"] == sim["job"], (item, sim["job"])
        assert item["ntasks"] == len(sim["tasks"])
        assert ISO.match(item["start_time"]), item
        assert (item["end_time"] is not None) == (sim["job"] in TERMINAL), item
        assert item["end_time"] is None or ISO.match(item["end_time"]), item


async def submit(h: Harness, ntasks: int) -> dict:
    body = {**payload(), "ntasks": ntasks}
    status, answer = await h.request("POST", "/jobs/direct", json=body)
    assert status == 202, answer
    job_id = answer["job_id"]
    status, answer = await h.request("GET", "/jobs/direct", params={"job_id": job_id})
    assert status == 200, answer
    assert answer["job_state"] == "PENDING"
    tasks = answer["job_tasks_status"]
    assert [t["task_state"] for t in tasks] == ["PENDING"] * ntasks
    assert all(t["start_time"] is None and t["end_time"] is None for t in tasks)
    return new_sim(job_id, await h.key(job_id), tasks)


async def run_serially(h: Harness, sims: list[dict], ops: list[tuple]) -> None:
    """Apply each op to the model and the server, checking the answer and every read after."""
    for op in ops:
        expected = apply(sims, op)
        check_answer(op, expected, await send(h, sims, op))
        for sim in sims:
            assert not (bad := mismatches(sim, await observe(h, sim))), (op, bad)
    await check_listing(h, sims)


async def run_concurrently(h: Harness, sims: list[dict], ops: list[tuple]) -> list[dict]:
    """Send `ops` at once; the outcome must be one that some serial order gives. The model of
    the matching order is returned."""
    answers = await asyncio.gather(*(send(h, sims, op) for op in ops))
    seen = [await observe(h, sim) for sim in sims]
    tried = []
    for order in itertools.permutations(range(len(ops))):
        model = copy.deepcopy(sims)
        statuses = [0] * len(ops)
        for i in order:
            statuses[i] = apply(model, ops[i])
        if statuses != [a[0] for a in answers]:
            tried.append((order, statuses, "statuses"))
            continue
        bad = [m for sim, s in zip(model, seen, strict=False) for m in mismatches(sim, s)]
        if not bad:
            for op, status, answer in zip(ops, statuses, answers, strict=False):
                check_answer(op, status, answer)
            return model
        tried.append((order, statuses, bad))
    raise AssertionError(
        f"no serial order explains {[a for a in answers]} for {ops}: tried {tried}"
    )


# --- strategies ---------------------------------------------------------------------------------

TIMES = ["2024-01-15T10:00:00Z", "2024-01-15T11:30:05Z"]
fields_st = st.fixed_dictionaries(
    {},
    optional={
        "simulated_primaries": st.integers(0, 10**7),
        "requested_primaries": st.integers(0, 10**7),
        "estimated_time": st.integers(0, 10**5),
        "start_time": st.sampled_from(TIMES),
        "end_time": st.sampled_from(TIMES),
    },
)
task_state_st = st.sampled_from(
    [
        None,
        None,
        "RUNNING",
        "RUNNING",
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "CANCELED",
        "PENDING",
        "UNKNOWN",
        "MERGING_QUEUED",
    ]
)


@st.composite
def page_st(draw: Any, number: int) -> dict:
    values = draw(st.lists(st.integers(-1000, 1000), max_size=4))
    data = {"values": values, "unit": draw(st.sampled_from(["Gy", "cm"]))}
    if draw(st.booleans()):
        return {"page_number": number, "name": f"p{number}", "data": data}
    return {"metadata": {"page_number": str(number), "name": f"m{number}"}, "data": data}


@st.composite
def estimators_st(draw: Any) -> list[dict]:
    names = draw(
        st.lists(st.sampled_from(["dose", "fluence", "let"]), min_size=1, max_size=2, unique=True)
    )
    out = []
    for name in names:
        numbers = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
        estimator = {"name": name, "pages": [draw(page_st(n)) for n in numbers]}
        if draw(st.booleans()):
            estimator["metadata"] = {"unit": draw(st.sampled_from(["a", "b"]))}
        out.append(estimator)
    return out


logs_st = st.dictionaries(
    st.sampled_from(["stdout", "stderr", "task_1"]), st.text(max_size=8), min_size=1, max_size=2
)


def op_st(nsims: int) -> Any:
    sim = st.integers(0, nsims - 1)
    return st.one_of(
        st.tuples(st.just("task"), sim, st.integers(1, 4), task_state_st, fields_st),
        st.tuples(st.just("task"), sim, st.integers(1, 3), task_state_st, fields_st),
        st.tuples(st.just("job"), sim, st.sampled_from(STATES)),
        st.tuples(st.just("results"), sim, estimators_st()),
        st.tuples(st.just("logs"), sim, logs_st),
        st.tuples(st.just("cancel"), sim),
        st.tuples(st.just("delete"), sim),
        st.tuples(st.just("badkey"), sim),
    )


# --- the state machine -----------------------------------------------------------------------------


class LifeCycle(RuleBasedStateMachine):
    harness: Harness

    @initialize(ntasks=st.lists(st.integers(1, 3), min_size=1, max_size=2))
    def submit(self, ntasks: list[int]) -> None:
        h = self.harness
        self.sims = [h.run(submit(h, n)) for n in ntasks]
        self.trace: list[Any] = []

    @rule(data=st.data())
    def step(self, data: Any) -> None:
        op = data.draw(op_st(len(self.sims)))
        self.trace.append(op)
        h = self.harness
        expected = apply(self.sims, op)
        check_answer(op, expected, h.run(send(h, self.sims, op)))

    @rule(data=st.data())
    def concurrent(self, data: Any) -> None:
        ops = data.draw(st.lists(op_st(len(self.sims)), min_size=2, max_size=4))
        self.trace.append(("concurrently", ops))
        h = self.harness
        self.sims = h.run(run_concurrently(h, self.sims, ops))

    @rule(
        data=st.data(),
        estimator=st.sampled_from([None, "dose", "fluence", "let"]),
        numbers=st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=1, max_size=3)),
        gzip=st.booleans(),
    )
    def filtered_results(self, data: Any, estimator: Any, numbers: Any, gzip: bool) -> None:
        sim = self.sims[data.draw(st.integers(0, len(self.sims) - 1))]
        h = self.harness
        params = {"job_id": sim["job_id"]}
        if estimator is not None:
            params["estimator_name"] = estimator
        if numbers is not None:
            params["page_numbers"] = ",".join(map(str, numbers))
        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        got = h.run(h.request("GET", "/results", params=params, headers=headers))
        if sim["deleted"]:
            assert got[0] == 404, got
            return
        if not sim["results"]:
            assert got == (404, {"message": "Results not available"}), got
            return
        names = [e[0] for e in sim["results"]]
        if estimator is not None and estimator not in names:
            assert got[0] == 404, got
            return
        want = []
        for entry in expected_results(sim):
            if estimator is not None and entry["name"] != estimator:
                continue
            pages = [p for p in entry["pages"] if numbers is None or page_number_of(p) in numbers]
            if pages:
                want.append({**entry, "pages": pages})
        assert got == (200, {"message": "Results", "estimators": want}), (params, got, want)

    @rule()
    def listing(self) -> None:
        self.harness.run(check_listing(self.harness, self.sims))

    @invariant()
    def server_agrees(self) -> None:
        if not hasattr(self, "sims"):
            return
        h = self.harness
        for sim in self.sims:
            bad = mismatches(sim, h.run(observe(h, sim)))
            assert not bad, bad

    def teardown(self) -> None:
        """Leave the user's list empty for the next example."""
        h = self.harness

        async def clean() -> None:
            for sim in getattr(self, "sims", []):
                if not sim["deleted"]:
                    params = {"job_id": sim["job_id"]}
                    await h.request("DELETE", "/jobs/direct", params=params)
                    await h.request("DELETE", "/user/simulations", params=params)

        h.run(clean())


def run_machine(harness: Harness, examples: int) -> None:
    LifeCycle.harness = harness
    run_state_machine_as_test(
        LifeCycle,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize="STATEFUZZ_RANDOM" not in os.environ,
            database=None,
        ),
    )


def test_life_cycle_state_machine(harness: Harness) -> None:
    run_machine(harness, int(os.environ.get("STATEFUZZ_EXAMPLES", "60")))


def test_life_cycle_state_machine_two_processes(processes: ProcessHarness) -> None:
    """The same, against `run.py --workers 2`: requests land on either process."""
    run_machine(processes, int(os.environ.get("STATEFUZZ_PROCESS_EXAMPLES", "15")))

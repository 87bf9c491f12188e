"""The benchmark's pure parts: wrk command lines and output, /proc accounting, targets, report.

wrk itself is never run here (the benchmark is `python -m bench`)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import paired, procstat, report, server, targets, workloads, wrk
from bench.scenario import Scenario

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:5000
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    48.04ms   12.43ms  94.51ms   71.20%
  311 requests in 1.00s, 94.35MB read
BENCH_JSON {"requests":312,"duration_us":1002000,"bytes":99000000,"errors":{"connect":1,"read":2,"write":0,"timeout":3,"status":7},"latency_us":{"p50":47980,"p90":68920,"p99":94510,"max":99000,"mean":48040.5}}
"""


def test_parse_reads_the_result_line():
    result = wrk.parse(WRK_OUTPUT)
    assert result == wrk.WrkResult(
        requests=312,
        duration_s=1.002,
        bytes=99000000,
        non_2xx=7,
        socket_errors=6,
        p50_ms=47.98,
        p90_ms=68.92,
        p99_ms=94.51,
        max_ms=99.0,
        mean_ms=48.0405,
    )
    assert result.rps == pytest.approx(311.377, abs=0.001)
    assert result.as_dict()["rps"] == result.rps


def test_parse_without_result_line_fails():
    with pytest.raises(wrk.WrkError, match="no result line"):
        wrk.parse("unable to connect to 127.0.0.1:5000 Connection refused\n")


@pytest.mark.parametrize(("connections", "threads"), [(1, "-t1"), (16, "-t2")])
def test_command(connections, threads):
    line = wrk.command(
        "/usr/bin/wrk",
        "http://127.0.0.1:5000",
        connections=connections,
        duration=5,
        script=Path("/tmp/paths.lua"),
        args=["/results?job_id=a", "/results?job_id=b"],
    )
    assert line == [
        "/usr/bin/wrk",
        threads,
        f"-c{connections}",
        "-d5s",
        "--timeout=10s",
        "-s",
        "/tmp/paths.lua",
        "http://127.0.0.1:5000",
        "--",
        "/results?job_id=a",
        "/results?job_id=b",
    ]


def test_secrets_go_to_wrk_in_its_environment():
    """The access cookie and the update key were on wrk's command line, which every account of
    the host reads (ps): they are in its environment, which only its own account can read."""
    env = wrk.environment({"Cookie": "access_token=t", "Accept-Encoding": "gzip"}, "k" * 43)
    assert env["BENCH_HEADERS"] == "Cookie: access_token=t\nAccept-Encoding: gzip"
    assert (env["BENCH_UPDATE_KEY"], env["PATH"]) == ("k" * 43, os.environ["PATH"])


@pytest.mark.parametrize("kind", ["paths", "tasks"])
def test_write_script_appends_the_report(tmp_path, kind):
    text = wrk.write_script(kind, tmp_path).read_text()
    assert "function request()" in text
    assert "function done(summary, latency, requests)" in text
    assert wrk.MARKER in text


def test_cpu_seconds_of_this_process_grows_with_work():
    before = procstat.cpu_seconds(os.getpid())
    deadline = time.monotonic() + 5
    while procstat.cpu_seconds(os.getpid()) - before < 0.05 and time.monotonic() < deadline:
        sum(range(10_000))
    assert procstat.cpu_seconds(os.getpid()) - before >= 0.05
    assert procstat.tree_cpu_seconds(os.getpid()) >= procstat.cpu_seconds(os.getpid())
    assert procstat.tree_cpu_seconds(None) == 0.0
    assert procstat.busy_seconds() >= procstat.cpu_seconds(os.getpid())
    assert procstat.cpu_seconds(2**22 + 1) == 0.0  # no such process: nothing, no error


@pytest.fixture
def child():
    """A child process whose command line looks like a postmaster's."""
    line = [sys.executable, "-c", "import time; time.sleep(60)", "-D", "/tmp/bench-test-pgdata"]
    process = subprocess.Popen(line)
    deadline = time.monotonic() + 5
    while b"-D" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def test_tree_holds_children(child):
    assert procstat.tree(os.getpid())[0] == os.getpid()
    assert child.pid in procstat.tree(os.getpid())
    assert procstat.tree(child.pid) == [child.pid]


def test_find_postmaster_by_data_dir(child):
    assert procstat.find_postmaster(Path("/tmp/bench-test-pgdata")) == child.pid
    assert procstat.find_postmaster(Path("/tmp/bench-test-elsewhere")) is None


def test_usage_between_two_readings():
    start = procstat.Usage.now(os.getpid(), None)
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)  # a reaped child
    used = procstat.Usage.now(os.getpid(), None) - start
    assert used.client > 0
    assert used.server >= 0 and used.postgres == 0
    assert used.machine >= 0 and used.others >= 0
    assert procstat.Usage(5, 1, 2, 10) - procstat.Usage(1, 1, 1, 1) == procstat.Usage(4, 0, 1, 9)
    assert procstat.Usage(4, 0, 1, 9).others == 4


def test_memory_of_this_process():
    assert procstat.memory_kib(os.getpid(), "VmHWM") >= procstat.memory_kib(os.getpid(), "VmRSS")
    assert procstat.memory_kib(os.getpid(), "VmRSS") > 0


def test_rss_sampler_sees_growth():
    with procstat.RssSampler([os.getpid()]) as sampler:
        block = b"x" * (64 * procstat.MIB)  # written, so resident
    assert sampler.peak - sampler.before >= 48
    assert sampler.after >= sampler.before
    del block


def test_listening_pids():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert procstat.listening_pids(port, [os.getpid()]) == set()
        sock.listen()
        assert procstat.listening_pids(port, [os.getpid()]) == {os.getpid()}


def row(workload: str, connections: int, rps: float, p99: float, non_2xx: int = 0) -> dict:
    return {
        "workload": workload,
        "title": workload,
        "connections": connections,
        "requests": int(rps * 5),
        "rps": rps,
        "p50_ms": p99 / 2,
        "p90_ms": p99 * 0.9,
        "p99_ms": p99,
        "cpu_ms_per_req": 1.0,
        "postgres_cpu_ms_per_req": None,
        "non_2xx": non_2xx,
        "socket_errors": 0,
        "rss_mib": {"before": 60.0, "peak": 75.0, "after": 70.0},
        "other_cpu_cores": 0.25,
    }


ROWS = [
    row("results_full_gzip", 16, 700, 55),
    row("results_full_gzip", 1, 300, 5),
    row("ceiling_gzip", 16, 1000, 20),
    row("ceiling_gzip", 1, 600, 2),
    row("results_full_identity", 16, 230, 70),
    row("ceiling_identity", 16, 460, 30),
    row("estimators", 16, 1500, 10, non_2xx=3),
    row("user_simulations", 16, 1500, 10),
]


def test_verdicts():
    assert targets.verdict(ROWS[0]) == (">= 660 req/s, p99 <= 60 ms", True)
    assert targets.verdict(ROWS[1]) == ("", None)
    assert targets.verdict(ROWS[4]) == (">= 220 req/s, p99 <= 60 ms", False)  # p99 too high
    assert targets.verdict(ROWS[6]) == (">= 1400 req/s", False)  # fast, but errors
    assert targets.verdict({**ROWS[7], "error": "wrk failed"}) == (">= 1400 req/s", False)


def test_cold_rows_are_held_to_the_cold_p99():
    cold = [{**r, "cold": True} for r in ROWS]
    fast = {**row("results_full_identity", 16, 500, 29.0), "cold": True}
    assert targets.verdict(cold[4]) == (">= 220 req/s, p99 <= 30 ms", False)
    assert targets.verdict(fast) == (">= 220 req/s, p99 <= 30 ms", True)
    assert targets.verdict({**fast, "cold": False}) == (">= 220 req/s, p99 <= 60 ms", True)
    assert targets.verdict(cold[0]) == (">= 660 req/s, p99 <= 60 ms", True)  # gzip: unchanged
    memory = targets.memory(cold, idle_mib=50.0, vmhwm_mib=120.0)
    found = {c["what"]: c for c in targets.checks(cold, {}, memory, cold=True)}
    assert found["results_full_identity c=16"]["met"] is False
    # the ceiling ratios are for warm fetches: shown without a verdict
    assert found["gzip / ceiling c=16"] == {
        "what": "gzip / ceiling c=16",
        "target": ">= 0.6 (warm fetches only)",
        "value": "0.70",
        "met": None,
    }


def large_row(mb: int, identity_mb_s: float, gzip_mb_s: float, ttfb_max: float, rss: float):
    def fetched(mb_s: float) -> dict:
        return {"mb_per_s": mb_s, "ttfb_max_ms": ttfb_max, "concurrent": {"rss_growth_mib": rss}}

    return {"target_mb": mb, "identity": fetched(identity_mb_s), "gzip": fetched(gzip_mb_s)}


def test_large_checks():
    rows = [large_row(8, 400, 1000, 3.0, 5.0), large_row(400, 470, 700, 51.0, 64.0)]
    assert targets.large_checks(rows) == [
        {
            "what": "identity MB/s, largest / smallest",
            "target": "0.8-1.2",
            "value": "1.18",
            "met": True,
        },
        {
            "what": "gzip MB/s, largest / smallest",
            "target": "0.8-1.2",
            "value": "0.70",
            "met": False,
        },
        {
            "what": "slowest first byte, any size",
            "target": "<= 50 ms",
            "value": "51.00 ms",
            "met": False,
        },
        {
            "what": "RSS growth, 4 fetches of the largest",
            "target": "<= 64 MiB",
            "value": "64.00 MiB",
            "met": True,
        },
    ]
    assert targets.large_checks([]) == []


def test_ratios_and_memory():
    assert targets.ratios(ROWS) == {"gzip": {1: 0.5, 16: 0.7}, "identity": {1: None, 16: 0.5}}
    memory = targets.memory(ROWS, idle_mib=50.0, vmhwm_mib=120.0)
    assert memory["growth_mib"] == 25.0
    assert set(memory["c16_full_fetch"]) == {"identity", "gzip"}


def test_checks_and_markdown():
    upload = {
        "count": 12,
        "body_bytes": 900_000,
        "p50_ms": 30.0,
        "p90_ms": 45.0,
        "server_cpu_ms": 20.0,
    }
    upload["postgres_cpu_ms"] = 5.0
    memory = targets.memory(ROWS, idle_mib=50.0, vmhwm_mib=120.0)
    checks = targets.checks(ROWS, upload, memory)
    assert {check["what"]: check["met"] for check in checks} == {
        "results_full_gzip c=16": True,
        "results_full_identity c=16": False,
        "results_finished_gzip c=16": None,  # not measured
        "results_finished_identity c=16": None,
        "estimators c=16": False,
        "user_simulations c=16": True,
        "tasks c=16": None,  # not measured
        "identity / ceiling c=16": False,
        "gzip / ceiling c=16": True,
        "upload p50": True,
        "RSS growth, c=16 full": True,
    }
    machine = report.machine()
    assert machine["nproc"] == os.cpu_count()
    text = report.markdown(
        {
            "machine": machine,
            "settings": {"workers": 1, "duration": 5, "warmup": 1, "cold": False},
            "loadavg_end": (0.5, 0.5, 0.5),
            "sizes": {"identity_bytes": 1, "gzip_bytes": 1, "gzip6_bytes": 1},
            "rows": ROWS,
            "upload": upload,
            "ratios": targets.ratios(ROWS),
            "memory": memory,
            "checks": checks,
            "notes": ["estimators c=16: 3 non-2xx"],
        }
    )
    assert "| results_full_gzip | 16 | 700 | 27.50 | 49.50 | 55.00 |" in text
    assert "Targets of issues 5 and 15 met: 5 of 8 (3 not measured)." in text
    assert "| identity | - | 0.50 | - | >= 0.6 | FAIL |" in text
    assert "- estimators c=16: 3 non-2xx" in text
    assert "used 0.25 of" in text
    assert "Server: caches on, as configured." in text


def test_paired_ratios_decide_the_verdict():
    """The ratio of the paired windows (median over rounds) is the one judged, when measured."""
    measured = [
        {"ours": 800.0, "ceiling": 1000.0},
        {"ours": 900.0, "ceiling": 1000.0},
        {"ours": None, "ceiling": 1000.0},  # a failed window counts for nothing
        {"ours": 700.0, "ceiling": 1000.0},
    ]
    found = paired.summary(measured)
    assert found == {"rounds": measured, "ratio": 0.8, "low": 0.7, "high": 0.9}
    assert paired.summary([{"ours": None, "ceiling": 5.0}])["ratio"] is None
    memory = targets.memory(ROWS, idle_mib=50.0, vmhwm_mib=120.0)
    upload = {"p50_ms": 30.0}
    single = {c["what"]: c for c in targets.checks(ROWS, upload, memory)}
    assert (
        single["identity / ceiling c=16"]["value"],
        single["identity / ceiling c=16"]["met"],
    ) == (
        "0.50",
        False,
    )
    checks = targets.checks(ROWS, upload, memory, paired={"identity": found})
    by_what = {check["what"]: check for check in checks}
    assert by_what["identity / ceiling c=16"] == {
        "what": "identity / ceiling c=16",
        "target": ">= 0.6",
        "value": "0.80",
        "met": True,
    }
    assert by_what["gzip / ceiling c=16"]["value"] == "0.70"  # not paired: its single windows
    lines = report.ratio_lines(targets.ratios(ROWS), by_what, {"identity": found})
    assert "| identity | - | 0.50 | 0.80 (0.70-0.90) | >= 0.6 | PASS |" in lines
    assert "| gzip | 0.50 | 0.70 | - | >= 0.6 | PASS |" in lines


def test_workloads():
    scenario = Scenario("token", "key", 4, ["f1", "f2"], ["t1", "t2", "t3"], "done", '"etag"')
    scenario.finished_jobs = ["c1", "c2"]
    defined = workloads.define(scenario)
    assert tuple(w.name for w in defined) == workloads.NAMES
    by_name = {w.name: w for w in defined}
    assert by_name["results_full_gzip"].args == ("/results?job_id=f1", "/results?job_id=f2")
    assert by_name["results_full_gzip"].headers == {
        "Cookie": "access_token=token",
        "Accept-Encoding": "gzip",
    }
    assert by_name["results_full_identity"].headers == {"Cookie": "access_token=token"}
    assert by_name["results_finished_gzip"].args == ("/results?job_id=c1", "/results?job_id=c2")
    assert by_name["results_finished_gzip"].headers == by_name["results_full_gzip"].headers
    assert by_name["ceiling_identity"].headers == {}
    assert by_name["ceiling_gzip"].ceiling
    assert by_name["results_estimator"].args[0] == "/results?job_id=f1&estimator_name=yz_profile_"
    assert by_name["ui_results_pages"].args[1] == (
        "/ui/results?job_id=f2&estimator_name=yz_profile&page_numbers=0-2"
    )
    assert (by_name["tasks"].args, by_name["tasks"].key) == (("4", "t1", "t2", "t3"), "key")
    assert by_name["results_304"].args == ("/results?job_id=done",)
    assert by_name["results_304"].headers["If-None-Match"] == '"etag"'
    assert workloads.redacted(by_name["results_304"].headers)["Cookie"] == "<redacted>"


def test_cache_off_env_covers_every_cache_of_config_toml():
    env = server.cache_off_env()
    assert env  # config.toml has caches; each one is turned off by name
    assert all(name.startswith("YAPTIDE_SERVER_") and name.endswith("_CACHE_SIZE") for name in env)
    assert set(env.values()) == {"0"}

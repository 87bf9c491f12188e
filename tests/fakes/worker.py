"""A stand-in worker for the runner tests: a separate program that speaks the worker protocol
over HTTP (urllib only, so it starts fast), driven by the YAPTIDE_* environment the local runner
gives it, like a real worker on an HPC node.

Usage: fake_worker.py MODE [ARG]. Every mode first records what it was given in the job directory
(`env_<task>.json`: its environment minus the key, its argv and its working directory's files)
and its pid (`pid_<task>`). Modes:

- complete [RESULTS]: RUNNING, progress (half the primaries), wait for `<job dir>/go`, then task 1
  posts the results in the file RESULTS (if given) and every task reports COMPLETED;
- fail TASKS: like complete without results, but the tasks in the comma-separated list (or "all")
  report FAILED instead;
- crash: RUNNING, some output on stdout and stderr, then exit 3 without a final state;
- hang [stubborn|scribble|graceful]: RUNNING, then sleep (a "stubborn" worker ignores SIGTERM;
  a "scribble" one too, and writes files into its working directory until it is killed; a
  "graceful" one ends 0.3 s after SIGTERM, leaving `<job dir>/terminated_<task>`);
- quiet: sleep without ever reporting (a worker command whose first report comes late);
- slots: record start and end times (`times_<task>`) around a short sleep, then COMPLETED (its
  merge step records `times_merge` the same way);
- manifest: RUNNING, list its (no) result files for the merge step as the built-in worker does
  (`.yaptide_results.json`), then task 2 exits without a final state, the others COMPLETE;
- slowmerge: COMPLETED at once; its merge step sleeps 30 s before it reports;
- order FILE: append the job and task to FILE, then COMPLETED;
- crashmerge: COMPLETED at once; its merge step prints a line and exits 4 without reporting;
- plant log|hardlink|input PATH: task 1 puts, in the job directory, a link to PATH where the
  server writes task 2's output (`task_2.log`) and a FIFO in place of its own output file, or a
  hard link to PATH there, or a link to the directory PATH in place of the job's input files
  (`input`); then it exits 3 without a
  final state (tests/test_runner_jobfiles.py); task 2 COMPLETES if it runs;
- probe PATH...: what this task can do to each PATH (read the file, list the directory; a PATH
  written `+PATH` is a file to create; `userns`: make a user namespace; `syscalls`: make system
  calls the sandbox's filter refuses, and one it allows), and the processes it sees, in
  `<job dir>/probe_<task>.json`
  (the runner's sandbox: tests/test_runner_sandbox.py), then COMPLETED.

The runner runs a job's merge step as the same command plus `merge`: then the fake appends its
pid to `<job dir>/merges` and the task directories holding a result list to `<job dir>/merged`,
posts MERGING_RUNNING and a one-page result (the job COMPLETES).
"""

import ctypes
import errno
import json
import os
import platform
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

URL = os.environ["YAPTIDE_URL"]
JOB_ID = os.environ["YAPTIDE_SIMULATION_ID"]
TASK_ID = int(os.environ.get("YAPTIDE_TASK_ID", "0"))  # not set for the merge step
PRIMARIES = int(os.environ.get("YAPTIDE_PRIMARIES", "0"))
JOB_DIR = Path(os.environ["YAPTIDE_JOB_DIR"])
KEY = os.environ["YAPTIDE_UPDATE_KEY"]
CLONE_NEWUSER = 0x10000000  # <sched.h>


def post(path: str, body: dict) -> None:
    """POST with the update key as a Bearer header; raise on any status but 202."""
    request = urllib.request.Request(
        URL + path,
        data=json.dumps({"simulation_id": JOB_ID, **body}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202, response.status


def task(**update: object) -> None:
    post("/tasks", {"task_id": TASK_ID, "update_dict": update})


def record() -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("YAPTIDE_") and "KEY" not in k}
    seen = {
        "env": env,
        "key_length": len(KEY),
        "names": sorted(os.environ),  # every variable's name (values may be secrets)
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "files": sorted(os.listdir(".")),
    }
    (JOB_DIR / f"env_{TASK_ID}.json").write_text(json.dumps(seen))
    (JOB_DIR / f"pid_{TASK_ID}").write_text(str(os.getpid()))


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{path} never appeared")
        time.sleep(0.02)


def complete(results: str | None = None) -> None:
    task(task_state="RUNNING")
    task(simulated_primaries=PRIMARIES // 2, estimated_time=7)
    wait_for(JOB_DIR / "go")
    if results and TASK_ID == 1:
        estimators = json.loads(Path(results).read_text())["estimators"]
        post("/results", {"estimators": estimators})
    task(task_state="COMPLETED", simulated_primaries=PRIMARIES, estimated_time=0)


def fail(tasks: str) -> None:
    task(task_state="RUNNING")
    wait_for(JOB_DIR / "go")
    failing = tasks == "all" or str(TASK_ID) in tasks.split(",")
    task(task_state="FAILED" if failing else "COMPLETED")


def crash() -> None:
    task(task_state="RUNNING")
    print("simulating task", TASK_ID, flush=True)
    print("Segmentation fault (core dumped)", file=sys.stderr, flush=True)
    sys.exit(3)


def plant(what: str, path: str) -> None:
    if TASK_ID != 1:
        task(task_state="COMPLETED")
        return
    task(task_state="RUNNING")
    print("planting", what, flush=True)
    if what == "log":
        (JOB_DIR / "task_2.log").symlink_to(path)
        (JOB_DIR / "task_1.log").unlink()
        os.mkfifo(JOB_DIR / "task_1.log")
    elif what == "hardlink":
        os.link(path, JOB_DIR / "task_2.log")
    else:
        (JOB_DIR / "input").rename(JOB_DIR / "input.before")
        (JOB_DIR / "input").symlink_to(path, target_is_directory=True)
    sys.exit(3)


def hang(how: str | None = None) -> None:
    if how == "graceful":
        signal.signal(signal.SIGTERM, lambda *_: graceful_end())
    elif how:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    task(task_state="RUNNING")
    (JOB_DIR / f"running_{TASK_ID}").touch()
    for n in range(10**9) if how == "scribble" else ():  # until it is killed
        Path(f"part_{n % 64}").write_text("x")
    time.sleep(120)


def graceful_end() -> None:
    """What a worker given time to end does at SIGTERM: a moment's work, then `terminated_<task>`."""
    time.sleep(0.3)
    (JOB_DIR / f"terminated_{TASK_ID}").touch()
    os._exit(0)


def quiet() -> None:
    time.sleep(120)


def slots() -> None:
    timed(f"times_{TASK_ID}")
    task(task_state="RUNNING")
    task(task_state="COMPLETED")


def timed(name: str) -> None:
    """A short sleep, its start and end written to `<job dir>/name`."""
    start = time.time()
    time.sleep(0.4)
    (JOB_DIR / name).write_text(f"{start} {time.time()}")


def manifest() -> None:
    task(task_state="RUNNING")
    Path(".yaptide_results.json").write_text('{"files": []}')
    if TASK_ID == 2:
        os._exit(9)
    task(task_state="COMPLETED")


def order(path: str) -> None:
    with open(path, "a") as log:
        log.write(f"{JOB_ID} {TASK_ID}\n")
    task(task_state="RUNNING")
    task(task_state="COMPLETED")


def at_once() -> None:
    task(task_state="RUNNING")
    task(task_state="COMPLETED")


def look(path: str) -> dict[str, object]:
    """What can be done to `path`: {"read": its first 64 characters}, {"list": its entries},
    {"wrote": True} (a `+path`), or {"error": the errno name}."""
    try:
        if path.startswith("+"):
            Path(path[1:]).write_text("probe")
            return {"wrote": True}
        if Path(path).is_dir():
            return {"list": sorted(os.listdir(path))}
        return {"read": Path(path).read_text(errors="replace")[:64]}
    except OSError as exc:
        return {"error": errno.errorcode.get(exc.errno or 0, str(exc))}


def make_userns() -> dict[str, object]:
    """Whether this task may make a user namespace: {"made": True} or {"error": the errno name}
    (tried in a child: the task itself stays where it is)."""
    child = os.fork()
    if child == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno())
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return {"made": True} if code == 0 else {"error": errno.errorcode.get(code, str(code))}


def make_syscalls() -> dict[str, str]:
    """What this task gets (an errno name, or "ok") from system calls the sandbox's filter
    refuses: keyctl (its session keyring's id), io_uring_setup, a socket and a socket pair to
    the host of this virtual machine (AF_VSOCK), a UDP-Lite socket; and from one it allows: a
    TCP socket."""
    libc = ctypes.CDLL(None, use_errno=True)
    keyctl = {"x86_64": 250, "aarch64": 219}[platform.machine()]
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    calls = {
        "keyctl": lambda: libc.syscall(keyctl, 0, ctypes.c_long(-3), 1),
        "io_uring_setup": lambda: libc.syscall(425, 1, params),
        "AF_VSOCK": lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).detach(),
        "AF_VSOCK pair": lambda: socket.socketpair(socket.AF_VSOCK)[0].detach(),
        "UDP-Lite": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136).detach(),
        "AF_INET": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach(),
    }
    seen = {}
    for name, call in calls.items():
        try:
            result = call()
        except OSError as exc:
            result, ctypes_errno = -1, exc.errno
        else:
            ctypes_errno = ctypes.get_errno()
        seen[name] = "ok" if result >= 0 else errno.errorcode.get(ctypes_errno or 0, "?")
    return seen


SPECIAL = {"userns": make_userns, "syscalls": make_syscalls}


def probe(*paths: str) -> None:
    seen = {path: SPECIAL[path]() if path in SPECIAL else look(path) for path in paths}
    processes = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    (JOB_DIR / f"probe_{TASK_ID}.json").write_text(json.dumps({**seen, "processes": processes}))
    task(task_state="RUNNING")
    task(task_state="COMPLETED")


def merge() -> None:
    with open(JOB_DIR / "merges", "a") as merges:
        merges.write(f"{os.getpid()}\n")
    listed = sorted(path.parent.name for path in JOB_DIR.glob("task_*/.yaptide_results.json"))
    (JOB_DIR / "merged").write_text(" ".join(listed))
    if sys.argv[1] == "crashmerge":
        print("merging {broken}", flush=True)
        sys.exit(4)
    if sys.argv[1] == "slowmerge":
        time.sleep(30)
    if sys.argv[1] == "slots":
        timed("times_merge")
    post("/jobs", {"job_state": "MERGING_RUNNING"})
    page = {"page_number": 1, "data": {"values": [1.0]}}
    post("/results", {"estimators": [{"name": "merged", "pages": [page]}]})


if __name__ == "__main__":
    if sys.argv[-1] == "merge":
        merge()
        sys.exit()
    record()
    modes = {
        "complete": complete,
        "fail": fail,
        "crash": crash,
        "hang": hang,
        "quiet": quiet,
        "slots": slots,
        "order": order,
        "crashmerge": at_once,
        "slowmerge": at_once,
        "manifest": manifest,
        "probe": probe,
        "plant": plant,
    }
    modes[sys.argv[1]](*sys.argv[2:])

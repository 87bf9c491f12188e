"""One task: convert editor input if needed, run the simulator, report progress and the end.

The task turns RUNNING first (a task may only fail from RUNNING), and always ends with a final
state: COMPLETED when the simulator exited 0 and left result files, which are then kept in
`<job dir>/task_<n>/` for the merge step; FAILED otherwise, with the reason in the log file
`task_<n>_error`. The tails of the simulator's standard output and error are stored as
`task_<n>_stdout` and `task_<n>_stderr`. Log files are posted before the final state, because
the final state may end the job, after which the server accepts nothing more.
"""

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from server.worker import progress as prog
from server.worker.client import Rejected, ServerClient, ServerError
from server.worker.jobdir import RESULTS_MANIFEST
from server.worker.outcomes import describe_exit
from server.worker.outputs import in_output_order
from server.worker.settings import Settings, child_environment
from server.worker.simulators import Simulator, TaskFailed, simulator_for

log = logging.getLogger(__name__)

STREAM_LIMIT = 1024 * 1024
EXIT_POLL = 0.5  # seconds between two looks at whether the simulator has exited
OUTPUT_DRAIN = 2.0  # seconds its output is still read after its exit
NO_CONVERTER = (
    "This simulation was made in the editor; its input.json has to be converted into "
    "{title} input files, and no converter is configured ([runner] converter in config.toml, "
    "or YAPTIDE_RUNNER_CONVERTER)."
)


class TaskRun:
    def __init__(self, settings: Settings, client: ServerClient, directory: Path) -> None:
        self.settings = settings
        self.client = client
        self.directory = directory
        self.logs: dict[str, str] = {}
        self.prefix = f"task_{settings.task_id}_"

    async def run(self) -> None:
        """Run and report; ServerError (including JobEnded) propagates: nothing can be said."""
        await self.client.update_task(task_state="RUNNING")
        try:
            await self.simulate()
        except TaskFailed as exc:
            await self.fail(str(exc))
            return
        except (ServerError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or an I/O error: the task must still end
            log.exception("task failed")
            await self.fail(f"The worker failed: {type(exc).__name__}: {exc}")
            return
        try:
            await self.client.save_logfiles(self.logs)
            await self.client.update_task(
                task_state="COMPLETED",
                simulated_primaries=self.settings.primaries,
                estimated_time=0,
            )
        except Rejected:
            # Not COMPLETED as far as the server knows: keep the merge step off these files.
            # (Unreachable: it may have been stored. Whoever fails the task then, the local
            # runner or the SLURM reconciler, removes the list.)
            (self.settings.task_dir / RESULTS_MANIFEST).unlink(missing_ok=True)
            raise

    async def fail(self, reason: str) -> None:
        log.warning("task FAILED: %s", reason)
        self.logs[self.prefix + "error"] = reason
        await self.client.save_logfiles(self.logs)
        await self.client.update_task(task_state="FAILED")

    async def simulate(self) -> None:
        simulator = simulator_for(self.settings.sim_type)
        if self.settings.input_type == "editor":
            await self.convert(simulator)
        configured = getattr(self.settings, simulator.sim_type)
        executable = simulator.executable(configured)
        inputs = set(os.listdir(self.directory))
        argv = simulator.command(
            executable, self.directory, self.settings.primaries, self.settings.task_id
        )
        log.info("running %s", shlex.join(argv))
        returncode = await self.execute(simulator, argv)
        if returncode != 0:
            raise TaskFailed(f"{simulator.title} {describe_exit(returncode)}.")
        results = simulator.results(self.directory, inputs)
        if simulator.sim_type == "shieldhit":
            results = in_output_order(results, self.directory)
        if not results:
            raise TaskFailed(
                f"{simulator.title} finished but wrote no result files "
                f"({simulator.result_pattern}): check its output and the detectors of the input."
            )
        await asyncio.to_thread(keep_results, results, self.settings.task_dir)

    async def start(self, argv: list[str], what: str, **pipes: Any) -> asyncio.subprocess.Process:
        """A child in the task directory, with piped stdout and without the update key."""
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.directory,
                env=child_environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                **pipes,
            )
        except OSError as exc:
            raise TaskFailed(f"{what} could not start: {exc}") from None

    async def convert(self, simulator: Simulator) -> None:
        """Run the configured converter beside input.json; it writes the simulator's inputs."""
        if not self.settings.converter:
            raise TaskFailed(NO_CONVERTER.format(title=simulator.title))
        argv = shlex.split(self.settings.converter)
        process = await self.start(
            argv, f"The converter {argv[0]!r}", stderr=asyncio.subprocess.STDOUT, limit=STREAM_LIMIT
        )
        output = prog.Tail()  # its tail only: what it prints may be large
        assert process.stdout is not None  # piped
        # as the simulator's: what it left running may hold its output open for ever
        returncode = await _finish(
            process, [read_lines(process.stdout, output, None, prog.Progress())]
        )
        self.logs[self.prefix + "converter"] = output.text()
        if returncode != 0:
            raise TaskFailed(f"The converter {describe_exit(returncode)}.")

    async def execute(self, simulator: Simulator, argv: list[str]) -> int:
        """Run the simulator, watching its output and reporting progress; its exit code."""
        process = await self.start(
            argv, simulator.title, stderr=asyncio.subprocess.PIPE, limit=STREAM_LIMIT
        )
        progress = prog.Progress()
        stdout, stderr = prog.Tail(), prog.Tail()
        parse = prog.read_shieldhit_line if simulator.sim_type == "shieldhit" else None
        assert process.stdout is not None and process.stderr is not None  # both piped
        watchers = [
            read_lines(process.stdout, stdout, parse, progress),
            read_lines(process.stderr, stderr, None, progress),
        ]
        try:
            return await self.supervise(process, watchers, simulator, progress)
        finally:
            self.logs[self.prefix + "stdout"] = stdout.text()
            self.logs[self.prefix + "stderr"] = stderr.text()

    async def supervise(
        self,
        process: asyncio.subprocess.Process,
        watchers: Sequence[Awaitable[None]],
        simulator: Simulator,
        progress: prog.Progress,
    ) -> int:
        """Wait for the simulator; a refused progress report (the job ended) stops it."""
        interval = self.settings.progress_interval
        helpers = [asyncio.ensure_future(prog.report(self.client, progress, interval))]
        if simulator.sim_type == "fluka":
            period = min(interval, 0.5)
            helpers.append(
                asyncio.ensure_future(prog.follow_fluka_out(self.directory, progress, period))
            )
        main = asyncio.ensure_future(_finish(process, watchers))
        first: list[asyncio.Future[Any]] = [main, helpers[0]]
        try:
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if helpers[0].done():
                helpers[0].result()  # raises what stopped the reporter
            return main.result()
        finally:
            for helper in helpers:
                helper.cancel()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            # Something the simulator started may still hold its output open: do not wait.
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await main


async def _finish(process: asyncio.subprocess.Process, watchers: Sequence[Awaitable[None]]) -> int:
    """The exit code, once the process has ended and its output has been read to the end, or
    for OUTPUT_DRAIN seconds after its exit: a process it started may hold its output open for
    ever (asyncio's own wait() waits for the output to close too)."""
    reading = asyncio.ensure_future(asyncio.gather(*watchers))
    try:
        while process.returncode is None and not reading.done():
            await asyncio.wait({reading}, timeout=EXIT_POLL)
        await asyncio.wait({reading}, timeout=OUTPUT_DRAIN)  # at once when read to the end
        if reading.done():
            reading.result()
            return await process.wait()
        returncode = process.returncode
        assert returncode is not None  # the loop ends at the exit or at the output's end
        return returncode
    finally:
        reading.cancel()
        # Its outcome taken whenever it ends: else asyncio logs the cancellation as an error
        # "never retrieved", with a traceback, in the task's output (a user's log file).
        reading.add_done_callback(_taken)


def _taken(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def read_lines(
    stream: asyncio.StreamReader,
    tail: prog.Tail,
    parse: Callable[[prog.Progress, str], None] | None,
    progress: prog.Progress,
) -> None:
    """Feed each line to the tail (and the parser) until the stream ends. Of a line longer
    than STREAM_LIMIT, asyncio drops what it had buffered: it goes on with the rest."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # the line's first STREAM_LIMIT bytes are gone, not the stream
            continue
        if not raw:
            return
        line = raw.decode(errors="replace")
        tail.add(line)
        if parse is not None:
            parse(progress, line)


def keep_results(results: list[Path], task_dir: Path) -> None:
    """Copy the results into the job directory (unless the task ran there) and list them."""
    task_dir.mkdir(parents=True, exist_ok=True)
    for path in results:
        target = task_dir / path.name
        if not target.exists() or not os.path.samefile(path, target):
            shutil.copyfile(path, target)
    manifest = {"files": [path.name for path in results]}
    (task_dir / RESULTS_MANIFEST).write_bytes(orjson.dumps(manifest))


async def run_task(settings: Settings, client: ServerClient) -> None:
    await TaskRun(settings, client, Path.cwd()).run()

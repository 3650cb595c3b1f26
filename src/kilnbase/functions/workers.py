"""Warm Deno worker processes, and the pool of them that serves one version of one function.

A worker is one `deno run router.js` process listening on a Unix socket of its own; the server talks HTTP/1.1
to it over a kept-alive connection pool. A worker serves many invocations, concurrently (one event loop), for
as long as its function's version stands; a pool holds `workers_per_function` of them and sends each
invocation to the least busy. When a worker dies (a crash, the V8 heap cap, a kill after a time limit), the
pool starts another in its place. A new version gets a new pool; the old one is retired once its in-flight
invocations are done, so a reload drops nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kilnbase.functions.worker_http import WorkerClient, WorkerGone

log = logging.getLogger("kilnbase.functions")

#: Called with (slug, request id, level, message) for every line a worker logs.
LogLine = Callable[[str, str | None, str, str], None]
_PR_SET_PDEATHSIG = 1
_PROBE = ((b"host", b"worker"), (b"x-kilnbase-probe", b"1"))


def die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def kill(process: asyncio.subprocess.Process, seconds: float = 10) -> None:
    """Kill a child that still runs, and wait (up to `seconds`) until it has exited."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), seconds)


def close_transport(process: asyncio.subprocess.Process) -> None:
    """Close an exited process's transport now, in its loop: left to the garbage collector, it would be
    closed after the loop is gone (and complain about it)."""
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()


async def events_of(stream: asyncio.StreamReader) -> AsyncIterator[dict[str, Any] | str]:
    """What a Deno worker prints on stdout: its JSON events, and any other line as text."""
    async for line in lines_of(stream):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line.decode(errors="replace").rstrip()
            continue
        if isinstance(event, dict):
            yield event


async def deno_messages(stream: asyncio.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """Deno's own messages on stderr, as (level, text): downloads are debug lines; the rest (an uncaught
    error at the top level, the heap limit, a port in use) errors."""
    async for line in lines_of(stream):
        text = line.decode(errors="replace").rstrip()
        if text:
            yield ("debug" if text.startswith(("Download ", "Initialize ")) else "error"), text


async def lines_of(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """A child's output, line by line until it closes; a line past the stream's limit is skipped."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line past the stream's limit
            continue
        if not line:
            return
        yield line


class FunctionLoadError(Exception):
    """The function's code could not be loaded by a worker (its message says why)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start a worker of one version of one function."""

    slug: str
    revision: int
    command: Sequence[str]
    env: dict[str, str]
    socket_dir: Path
    start_timeout: float
    #: When the first of the function's secrets expires (epoch seconds): the pool is rebuilt then.
    expires_at: float | None = None


class DenoWorker:
    def __init__(self, spec: WorkerSpec, socket_path: Path, on_log: LogLine) -> None:
        self.spec = spec
        self.socket_path = socket_path
        self.on_log = on_log
        self.inflight = 0
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self._ready = asyncio.Event()
        self._fatal: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.client = WorkerClient(str(socket_path))

    @property
    def alive(self) -> bool:
        return self._ready.is_set() and not self.exited.is_set()

    async def start(self) -> None:
        """Start the process and wait until it listens; `FunctionLoadError` when the code does not load."""
        self.socket_path.unlink(missing_ok=True)
        command = [part.replace("{socket}", str(self.socket_path)) for part in self.spec.command]
        self._process = await asyncio.create_subprocess_exec(
            *command,
            env=self.spec.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._tasks = [
            asyncio.create_task(self._read_stdout(self._process.stdout)),
            asyncio.create_task(self._read_stderr(self._process.stderr)),
            asyncio.create_task(self._watch()),
        ]
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.exited.wait())
        try:
            done, pending = await asyncio.wait(
                {ready, exited}, timeout=self.spec.start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled while starting (the server stops): leave no process behind
            ready.cancel()
            exited.cancel()
            await asyncio.shield(self.stop())
            raise
        for task in pending:
            task.cancel()
        if ready in done and not self.exited.is_set():
            return
        await self.stop()
        if self._fatal:
            raise FunctionLoadError(self._fatal)
        if not done:
            raise FunctionLoadError(
                f"The function's worker did not start within {self.spec.start_timeout:g} s."
            )
        raise FunctionLoadError(f"The function's worker exited while starting (exit code {self.exit_code}).")

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        async for event in events_of(stream):
            if isinstance(event, str):
                self.on_log(self.spec.slug, None, "info", event)
                continue
            kind = event.get("t")
            if kind == "log":
                self.on_log(self.spec.slug, event.get("rid"), str(event.get("level")), str(event.get("msg")))
            elif kind == "ready":
                self._ready.set()
            elif kind == "fatal":
                self._fatal = str(event.get("msg"))
                self.on_log(self.spec.slug, None, "error", self._fatal)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for level, text in deno_messages(stream):
            self.on_log(self.spec.slug, None, level, text)

    async def _watch(self) -> None:
        assert self._process is not None
        self.exit_code = await self._process.wait()
        self.exited.set()

    async def probe(self, seconds: float) -> bool:
        """Does the worker still answer? (An infinite loop does not.)"""
        if not self.alive:
            return False
        try:
            async with asyncio.timeout(seconds):
                response = await self.client.request("GET", "/", _PROBE)
                try:
                    async for _chunk in response.chunks():
                        pass
                finally:
                    await response.aclose()
        except (TimeoutError, WorkerGone):
            return False
        return response.status == 200

    async def stop(self) -> None:
        if self._process is not None:
            await kill(self._process)
        for task in self._tasks:
            if not task.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(task, 2)
        if self._process is not None:
            close_transport(self._process)
        await self.client.aclose()
        self.socket_path.unlink(missing_ok=True)


class FunctionPool:
    """The warm workers of one version of one function."""

    def __init__(self, spec: WorkerSpec, size: int, on_log: LogLine, identity: tuple[object, ...]) -> None:
        self.spec = spec
        self.size = size
        self.on_log = on_log
        #: What the pool was built from (revision, secrets generation, anon key, ...): a new one differs.
        self.identity = identity
        self.workers: list[DenoWorker] = []
        self.inflight = 0
        self.retired = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._watchers: set[asyncio.Task[None]] = set()
        #: Set (and renewed) whenever a worker was replaced, or could not be.
        self._replaced = asyncio.Event()
        #: A worker died and its replacement failed to load: the runtime builds a new pool.
        self.broken = False
        self.last_used = time.monotonic()

    def _new_worker(self) -> DenoWorker:
        # A name no other worker ever had: a new pool of the same version (after a secret changed) must not
        # take over, or later remove, the socket of the pool it replaces while that one drains.
        path = self.spec.socket_dir / f"{self.spec.slug[:40]}-{uuid.uuid4().hex[:12]}.sock"
        return DenoWorker(self.spec, path, self.on_log)

    async def start(self) -> None:
        workers = [self._new_worker() for _ in range(self.size)]
        results = await asyncio.gather(*(worker.start() for worker in workers), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await asyncio.gather(*(worker.stop() for worker in workers))
            raise failures[0]
        self.workers = workers
        for worker in workers:
            self._watch(worker)

    def _watch(self, worker: DenoWorker) -> None:
        task = asyncio.create_task(self._replace_when_exited(worker))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _replace_when_exited(self, worker: DenoWorker) -> None:
        await worker.exited.wait()
        if self.retired:
            return
        log.warning(
            "function %s: worker exited (code %s); starting another", self.spec.slug, worker.exit_code
        )
        await worker.stop()
        replacement = self._new_worker()
        try:
            await replacement.start()
        except FunctionLoadError as exc:
            log.error("function %s: a replacement worker failed: %s", self.spec.slug, exc)
            self.broken = True
            self._announce()
            return
        if self.retired:
            await replacement.stop()
            return
        self.workers = [replacement if w is worker else w for w in self.workers]
        self._watch(replacement)
        self._announce()

    def _announce(self) -> None:
        event, self._replaced = self._replaced, asyncio.Event()
        event.set()

    async def live_worker(self, seconds: float) -> DenoWorker | None:
        """The least busy live worker; when every one has died, wait (up to `seconds`) for a replacement."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (worker := self.pick()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.retired or self.broken:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await self._replaced.wait()
            except TimeoutError:
                return None
        return worker

    def pick(self) -> DenoWorker | None:
        live = [worker for worker in self.workers if worker.alive]
        return min(live, key=lambda worker: worker.inflight) if live else None

    def begin(self) -> None:
        self.last_used = time.monotonic()
        self.inflight += 1
        self._idle.clear()

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def kill(self, worker: DenoWorker) -> None:
        """Stop a worker that no longer answers; the watcher starts its replacement."""
        await worker.stop()

    async def retire(self, drain_seconds: float) -> None:
        """Let in-flight invocations finish (up to `drain_seconds`), then stop every worker."""
        self.retired = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_seconds)
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(worker.stop() for worker in self.workers), return_exceptions=True)

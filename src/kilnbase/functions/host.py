"""The functions host: one Deno process that serves every shared function at `/<slug>[/*]` on its own port
(`KILNBASE_FUNCTIONS_HOST_PORT`, 7133 as in InsForge's self-hosted setup), with no Python process on the path.

Why it exists: an invocation through `/functions/:slug` crosses the API's Python edge and a proxy, which
bounds it to the API's own request rate (a few thousand a second on two cores). `@insforge/sdk` calls a
functions URL directly when one is configured (`createClient({ functionsUrl })`), and falls back to
`/functions/:slug` when that URL answers 404; the host is that URL. It runs the functions in one isolate, as
InsForge's cloud does, so it serves only the functions that share one environment: active ones without a
secrets allow-list (those see every active secret anyway) that no agent key deployed. A function with an
allow-list, or one an agent deployed (it may not reach private networks: egress.py), is not hosted (404, so
the SDK uses the API path, where it runs in workers of its own).

One API process owns the host: whichever finds the port free starts it (the others check again now and
then, and take over if the owner goes). The owner sends the configuration (functions, secrets as the
environment, limits) on the host's stdin whenever a function or secret changes, pings it every second while
it serves a function, and restarts it when it stops answering for `host_stall_seconds` (an infinite loop:
every function it hosts waits until then) or exits. A host that serves nothing runs no code that could loop:
it is pinged only when its configuration is read again, so that an idle server without functions does not
wake itself and Deno every second. A function whose loading never finished before such a restart is left
out of the next configuration, so one bad top level cannot keep the host down.

Replacing the host: a function deployed again is loaded beside its old version, which stays in the isolate's
memory for good (an ES module cannot be unloaded); an agent that redeploys a function hundreds of times in a
session would grow the host without end. The host says how many such versions it holds (`stale`, in each
`configured` line) and its resident memory (in each pong); past `host_recycle_versions`, or past
`host_recycle_memory_mb` while it holds any, the owner replaces it with a fresh process, dropping no
invocation: the successor starts as `standby` (not listening), loads the configuration the host serves, and
only then listens on the same port (SO_REUSEPORT; port_group.py sends it every new connection from then on).
It is the host from that moment; the old one finishes what it has accepted, logging as it does, and exits
(killed after `drain_seconds`). A replacement that fails (the successor does not start, stalls or exits
while loading, cannot load a function the host serves, or cannot listen) is logged and the old host keeps
serving; it is tried again once as many versions have been replaced again. The successor goes through the
same start and configuration as any host; a stall or exit of the host itself is noticed after the
replacement, which is bounded by the same waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kilnbase.config import Settings
from kilnbase.functions.log_sink import LogSink
from kilnbase.functions.port_group import claim_port, newest_listener_group
from kilnbase.functions.sandbox import HOST, Sandbox, deno_command
from kilnbase.functions.workers import close_transport, deno_messages, die_with_parent, kill, lines_of
from kilnbase.http.bind_check import bind_error

log = logging.getLogger("kilnbase.functions")

#: How often a host that is not ours checks whether the port came free.
RETRY_SECONDS = 5.0
PING_SECONDS = 1.0
RECONFIGURE_SECONDS = 30.0
#: host.js's exit code when its port is taken.
PORT_TAKEN = 4
#: Log lines not attributed to a function (the host's own messages).
HOST_SLUG = "-"
#: How long a host has to say it is ready.
READY_SECONDS = 30.0
#: How long a host being replaced answers with `connection: close` before it stops listening: a client
#: between two requests on a kept-alive connection moves to the new host rather than having it closed under
#: the request it is sending. Stopping closes the connections still idle, so a client whose next request
#: comes later than this meets a reset: 250 ms was too short for a client on a busy machine (the recycle
#: test's callers met it in CI); two seconds costs only the old host's memory for that much longer.
HANDOFF_MS = 2000
MIB = 1024 * 1024


@dataclass
class HostConfig:
    """What the host serves: slug -> code file, the environment they share, and the limits."""

    functions: dict[str, Path]
    env: dict[str, str]
    limits: dict[str, int]
    #: When the first of the secrets expires (epoch seconds): the host is configured again then.
    expires_at: float | None = None

    def message(self, left_out: dict[str, tuple[Path, str]]) -> bytes:
        """The `config` line; a function left out (this very code got the host stuck) is sent as its error."""
        functions: list[dict[str, str]] = []
        for slug, path in sorted(self.functions.items()):
            entry = {"slug": slug, "url": path.as_uri()}
            stuck = left_out.get(slug)
            if stuck is not None and stuck[0] == path:
                entry["error"] = stuck[1]
            functions.append(entry)
        return orjson.dumps({"t": "config", "functions": functions, "env": self.env, **self.limits}) + b"\n"


@dataclass
class HostState:
    status: str = "starting"
    detail: str = ""
    #: slug -> the message of a function the host could not load
    failed: dict[str, str] = field(default_factory=dict)
    #: The slugs it serves
    served: list[str] = field(default_factory=list)


class HostProcess:
    """One host process and what it says: its nonce, its pongs, the function it is loading, its stale versions
    and its memory. Two run at once while one replaces the other; both log, each under its own nonce."""

    def __init__(self, process: asyncio.subprocess.Process, logs: LogSink) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        self.pid = process.pid
        self.logs = logs
        loop = asyncio.get_running_loop()
        self.nonce: bytes | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        #: None once it listens (a `standby` host told to), or why it cannot.
        self.listening: asyncio.Future[str | None] = loop.create_future()
        #: The `configured` line awaited.
        self.configured: asyncio.Future[dict[str, Any]] | None = None
        self.pongs: dict[int, asyncio.Future[None]] = {}
        self.ping_numbers = itertools.count(1)
        #: The function it said it is loading, until it says it is configured.
        self.loading: str | None = None
        #: Whether it answered a ping since it said it was loading `loading`: if so, a load that is taking
        #: long (a download) is not what stopped it.
        self.answered_while_loading = False
        #: Function versions it holds that were replaced or removed, and its resident memory (bytes).
        self.stale = 0
        self.rss = 0
        #: `stale` when replacing it last failed: it is tried again once as many more have been replaced.
        self.stale_at_failed_recycle = 0
        self.exited = asyncio.create_task(process.wait())
        self._readers = [
            asyncio.create_task(self._read_stdout(process.stdout)),
            asyncio.create_task(self._read_stderr(process.stderr)),
        ]

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str], logs: LogSink) -> HostProcess:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            limit=1024 * 1024,
        )
        return cls(process, logs)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def _until(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Whether `future` is done within `seconds`; False as soon as the process exits."""
        await asyncio.wait({future, self.exited}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        return future.done()

    async def wait_ready(self, seconds: float) -> bool:
        return await self._until(self.ready, seconds)

    async def ping(self, seconds: float) -> bool:
        """Does it answer within `seconds`? (An isolate stuck in a loop does not.)"""
        if self.returncode is not None:
            return False
        number = next(self.ping_numbers)
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pongs[number] = pong
        try:
            await self.send(orjson.dumps({"t": "ping", "n": number}) + b"\n")
            return await self._until(pong, seconds)
        except ConnectionError:
            return False
        finally:
            self.pongs.pop(number, None)

    async def load(self, message: bytes, stall: float) -> dict[str, str] | None:
        """Send a `config` line and wait until it is loaded: the functions that failed to load (slug ->
        message), or None if it stalled or exited meanwhile."""
        configured: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.configured = configured
        try:
            await self.send(message)
        except ConnectionError:
            return None
        # Loading may take long (a package download), but the host answers pings meanwhile.
        while not await self._until(configured, PING_SECONDS):
            if not await self.ping(stall):
                return None
        event = configured.result()
        # Taken in here rather than when read: the owner decides at once whether to replace the host, so its
        # health never shows the count without the decision.
        self.stale = int(event.get("stale") or 0)
        failed = event.get("failed")
        return failed if isinstance(failed, dict) else {}

    async def listen(self, seconds: float) -> str | None:
        """Tell a `standby` host to listen: None once it does, or why it does not."""
        try:
            await self.send(b'{"t":"listen"}\n')
        except ConnectionError:
            return f"it exited (code {self.returncode})"
        if await self._until(self.listening, seconds):
            return self.listening.result()
        return "it did not answer" if self.returncode is None else f"it exited (code {self.returncode})"

    async def drain(self, seconds: float) -> None:
        """Stop listening, let the invocations in flight finish and exit: killed after `seconds`. What it
        logs until then is read."""
        try:
            with contextlib.suppress(ConnectionError):
                await self.send(orjson.dumps({"t": "drain", "handoffMs": HANDOFF_MS}) + b"\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), seconds)
            if self.returncode is None:
                log.warning(
                    "functions host: pid %s did not finish its invocations in %g s; killed", self.pid, seconds
                )
        finally:
            await self.stop()

    async def send(self, message: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(message)
        await self.process.stdin.drain()

    async def stop(self) -> None:
        """Kill it if it still runs, read what it wrote until it exited, and let go of it."""
        await kill(self.process)
        with contextlib.suppress(TimeoutError):  # (its output ends when it does)
            await asyncio.wait_for(asyncio.gather(*self._readers, return_exceptions=True), 1.0)
        for task in (*self._readers, self.exited):
            task.cancel()
        await asyncio.gather(*self._readers, self.exited, return_exceptions=True)
        close_transport(self.process)

    # --- output --------------------------------------------------------------------------------------------

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        """Its lines: the first says `ready` and gives the nonce every later line of the host starts with;
        anything else on stdout (a function writing there itself) is a plain log line, whatever it claims to
        be."""
        async for line in lines_of(stream):
            if self.nonce is None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    first = orjson.loads(line)
                    if isinstance(first, dict) and first.get("t") == "ready" and first.get("nonce"):
                        self.nonce = str(first["nonce"]).encode()
                        if not self.ready.done():
                            self.ready.set_result(None)
                continue
            if not line.startswith(self.nonce):
                self.logs.line(HOST_SLUG, None, "info", line.decode(errors="replace").rstrip())
                continue
            try:
                event = orjson.loads(line[len(self.nonce) :])
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("t")
        if kind == "inv":
            self.logs.invocation(
                str(event.get("slug")),
                str(event.get("rid")),
                str(event.get("msg")),
                int(event.get("status") or 0),
                float(event.get("ms") or 0.0),
            )
        elif kind == "log":
            slug = str(event.get("slug") or HOST_SLUG)
            self.logs.line(slug, event.get("rid"), str(event.get("level")), str(event.get("msg")))
        elif kind == "pong":
            self.answered_while_loading = self.loading is not None
            self.rss = int(event.get("rss") or 0)
            pong = self.pongs.get(int(event.get("n") or 0))
            if pong is not None and not pong.done():
                pong.set_result(None)
        elif kind == "loading":
            self.loading = str(event.get("slug"))
            self.answered_while_loading = False
        elif kind == "configured":
            self.loading = None
            if self.configured is not None and not self.configured.done():
                self.configured.set_result(event)
        elif kind in ("listening", "listen-failed") and not self.listening.done():
            self.listening.set_result(None if kind == "listening" else str(event.get("msg")))

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for level, text in deno_messages(stream):
            self.logs.line(self.loading or HOST_SLUG, None, level, text)


class FunctionsHost:
    def __init__(
        self,
        settings: Settings,
        code_dir: Path,
        deno_dir: Path,
        sandbox: Callable[[], Sandbox],
        config: Callable[[], Awaitable[HostConfig]],
        logs: LogSink,
    ) -> None:
        self.settings = settings
        self.port = settings.functions.host_port
        self.hostname = settings.host
        self.code_dir = code_dir
        self.deno_dir = deno_dir
        self.sandbox = sandbox
        self.config = config
        self.logs = logs
        self.state = HostState() if self.port else HostState("off", "KILNBASE_FUNCTIONS_HOST_PORT=0")
        #: Times the host was replaced by a fresh process (not counting restarts).
        self.recycles = 0
        self._changed = asyncio.Event()
        #: The right to start hosts on the port (port_group.claim_port), held from the first start on.
        self._claim: socket.socket | None = None
        #: The host that serves (the one that listens last, when two do).
        self._process: HostProcess | None = None
        #: Hosts replaced, finishing their invocations in flight.
        self._draining: dict[HostProcess, asyncio.Task[None]] = {}
        #: slug -> (the code that got the host stuck while loading, the error it is answered with)
        self._left_out: dict[str, tuple[Path, str]] = {}
        self._current: HostConfig | None = None
        self._sent: bytes | None = None
        self._configured_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.port != 0

    def changed(self) -> None:
        """A function, a secret or the anon key changed: the host gets a new configuration."""
        self._changed.set()

    # --- ownership and restarts ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the host while this process can; restart it when it stops or stalls, replace it when it has
        held too many replaced versions."""
        if not self.enabled:
            return
        while True:
            if self._claim is None:
                self._claim = claim_port(self.hostname, self.port)
            if self._claim is None or bind_error(self.hostname, self.port) is not None:
                self._set("elsewhere", f"port {self.port} is served by another process")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                await self._serve_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("functions host failed")
            await self._stop_process()
            await asyncio.sleep(1.0)

    async def _serve_once(self) -> None:
        self._set("starting", "")
        with newest_listener_group(self.hostname, self.port):
            self._process = process = await self._start(standby=False)
            ready = await process.wait_ready(READY_SECONDS)
        if not ready:
            if not self._port_taken(process):
                self._set("stopped", f"the host did not start (exit code {process.returncode})")
            return
        self._sent = None
        self._changed.set()
        await self._supervise()

    def _port_taken(self, process: HostProcess) -> bool:
        """Did the host exit because another process took its port between the check and the listen?"""
        if process.returncode != PORT_TAKEN:
            return False
        self._set("elsewhere", f"port {self.port} was taken by another process")
        return True

    async def _supervise(self) -> None:
        """Configure the host when asked, replace it when due, ping it (every second while it serves a
        function); return when it stalls or exits."""
        stall = self.settings.functions.host_stall_seconds
        while True:
            process = self._process
            assert process is not None
            if not await self._tend(process, stall):
                self._gone(process, stall)
                return
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait(
                {changed, process.exited}, timeout=self._next_ping(), return_when=asyncio.FIRST_COMPLETED
            )
            changed.cancel()

    def _next_ping(self) -> float:
        """Seconds until the next round: `PING_SECONDS` while a function is served (its requests reach the
        host directly, so only a ping finds one that loops forever), else when the configuration is due
        again (a host serving nothing runs no code that could loop)."""
        if self.state.served:
            return PING_SECONDS
        return max(PING_SECONDS, self._configured_at + RECONFIGURE_SECONDS - time.monotonic())

    async def _tend(self, process: HostProcess, stall: float) -> bool:
        """One round of supervision; False if the host stalled or exited."""
        if self._changed.is_set() or self._reconfigure_due():
            self._changed.clear()
            try:
                if not await self._configure(process, stall):
                    return False
            except Exception as exc:  # (the database, most likely: keep serving what is loaded)
                log.warning("functions host: could not read its configuration (%s)", type(exc).__name__)
                # Tried again in a few seconds rather than at the next half-minute.
                self._configured_at = time.monotonic() - RECONFIGURE_SECONDS + RETRY_SECONDS
        why = self._recycle_due(process)
        if why is not None:
            await self._recycle(process, why, stall)
            return True
        return await process.ping(stall)

    def _reconfigure_due(self) -> bool:
        """Now and then unasked: the anon key may have rotated, a load that failed may pass now; and when
        a secret expires."""
        if time.monotonic() - self._configured_at > RECONFIGURE_SECONDS:
            return True
        expires_at = self._current.expires_at if self._current is not None else None
        return expires_at is not None and expires_at <= time.time()

    async def _configure(self, process: HostProcess, stall: float) -> bool:
        """Send the configuration if it changed and wait until the host has loaded it; False if the host
        stalled or exited meanwhile."""
        config = await self.config()
        message = config.message(self._left_out)
        load_failures = set(self.state.failed) - set(self._left_out)
        self._current = config
        if message == self._sent and not load_failures:  # (the host tries failed loads again when sent)
            self._configured_at = time.monotonic()
            return True
        failed = await process.load(message, stall)
        if failed is None:
            return False
        self._sent = message
        self._configured_at = time.monotonic()
        self.state.failed = failed
        self.state.served = sorted(set(config.functions) - set(failed))
        self._set("running", f"serving {len(self.state.served)} function(s) on port {self.port}")
        return True

    def _gone(self, process: HostProcess, stall: float) -> None:
        if process.returncode is None:
            self._lost(
                process,
                f"The functions host stopped answering for {stall:g} s; restarting it.",
                "Loading the function did not finish (a loop at its top level?); fix it and deploy it again.",
            )
            return
        code = process.returncode
        self._set("stopped", f"the host exited (code {code}); restarting")
        self._lost(
            process,
            f"The functions host exited (code {code}); restarting it.",
            f"The functions host stopped while loading the function (exit code {code}: the memory "
            "cap?); fix it and deploy it again.",
        )

    def _lost(self, process: HostProcess, message: str, blame: str) -> None:
        """The host is gone or going: if it was loading a function, that function is left out from now on
        (answered `blame`), so that the next host serves the others."""
        stuck, process.loading = process.loading, None
        if process.answered_while_loading:
            stuck = None
        if stuck is not None and self._current is not None and stuck in self._current.functions:
            self._left_out[stuck] = (self._current.functions[stuck], blame)
        self._say("error", message, stuck or HOST_SLUG)

    # --- replacing the host with a fresh process ----------------------------------------------------------

    def _recycle_due(self, process: HostProcess) -> str | None:
        """Why the host should be replaced by a fresh process now, or None."""
        config = self.settings.functions
        stale = process.stale - process.stale_at_failed_recycle
        if self._sent is None or stale <= 0:
            return None
        if config.host_recycle_versions and stale >= config.host_recycle_versions:
            return f"it holds {process.stale} replaced function versions"
        bound = config.host_recycle_memory_bytes
        if bound and process.rss >= bound:
            return f"{process.rss / MIB:.0f} MiB resident, {process.stale} replaced function versions"
        return None

    async def _recycle(self, current: HostProcess, why: str, stall: float) -> None:
        """Replace the host with a fresh process that serves what it serves, or leave it serving (and say
        why) if that fails."""
        self._say("info", f"Replacing the functions host (pid {current.pid}) with a fresh process: {why}.")
        detail = self.state.detail
        self.state.detail = f"{detail}; being replaced by a fresh process ({why})"
        successor: HostProcess | None = None
        try:
            successor = await self._start(standby=True)
            failure = await self._hand_over(successor, stall)
        except asyncio.CancelledError:
            if successor is not None:
                await successor.stop()
            raise
        except Exception as exc:  # (it could not be started, or closed its stdin under us)
            failure = f"{type(exc).__name__}: {exc}"
        if failure is None and successor is not None:
            self._switch(current, successor)
        else:
            if successor is not None:
                await successor.stop()
            current.stale_at_failed_recycle = current.stale
            self._say(
                "error",
                f"Could not replace the functions host with a fresh process: {failure}. The current one "
                f"(pid {current.pid}) keeps serving; it is tried again after as many replaced versions.",
            )
        self.state.detail = detail

    def _switch(self, current: HostProcess, successor: HostProcess) -> None:
        """The successor listens: it is the host now, and the old one drains."""
        self._process = successor
        self.recycles += 1
        self._draining[current] = draining = asyncio.create_task(
            current.drain(self.settings.functions.drain_seconds)
        )
        draining.add_done_callback(lambda _task: self._draining.pop(current, None))
        self._say(
            "info",
            f"The functions host is now pid {successor.pid}; pid {current.pid} finishes its invocations in "
            "flight and exits.",
        )

    async def _hand_over(self, successor: HostProcess, stall: float) -> str | None:
        """Bring the successor to where the host is, then have it listen: None once it does, or why not."""
        if not await successor.wait_ready(READY_SECONDS):
            return f"it did not start (exit code {successor.returncode})"
        assert self._sent is not None
        failed = await successor.load(self._sent, stall)
        loading = f" while loading {successor.loading}" if successor.loading else ""
        if failed is None and successor.returncode is not None:
            return f"it exited{loading} (code {successor.returncode})"
        if failed is None:
            return f"it stopped answering{loading}"
        lost = sorted(set(failed) - set(self.state.failed))
        if lost:
            return f"it could not load {', '.join(lost)} ({failed[lost[0]]})"
        error = await successor.listen(stall)
        if error is None and self._current is not None:  # (it may load what the old one could not)
            self.state.failed = failed
            self.state.served = sorted(set(self._current.functions) - set(failed))
        return error

    # --- the process ---------------------------------------------------------------------------------------

    async def _start(self, *, standby: bool) -> HostProcess:
        # No environment of its own: the functions' values arrive on stdin.
        command, env = deno_command(
            self.sandbox(),
            self.deno_dir,
            HOST,
            [self.hostname, str(self.port), *(["standby"] if standby else [])],
            code=self.code_dir,
            memory_mb=self.settings.functions.host_memory_mb,
            env={},
            unstable=["net"],  # `reusePort`
        )
        return await HostProcess.start(command, env, self.logs)

    def _say(self, level: str, message: str, slug: str = HOST_SLUG) -> None:
        """A message about the host, in the server's log and the functions' logs."""
        log.log(logging.INFO if level == "info" else logging.WARNING, "functions host: %s", message)
        self.logs.line(slug, None, level, message)

    def _set(self, status: str, detail: str) -> None:
        if status == "elsewhere" and self.state.status != "elsewhere":
            # Said once per change: with `serve --workers N` the other processes say it too, which is right
            # (one of them owns the host); with one process, something else holds the port.
            log.info("functions host: %s (KILNBASE_FUNCTIONS_HOST_PORT sets the port)", detail)
        self.state.status = status
        self.state.detail = detail

    async def stop(self) -> None:
        draining = list(self._draining.values())
        for task in draining:
            task.cancel()
        await asyncio.gather(*draining, return_exceptions=True)
        await self._stop_process()
        if self._claim is not None:
            self._claim.close()
            self._claim = None
        if self.enabled:
            self._set("stopped", "the server is stopping")

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.stop()

    async def health(self) -> dict[str, Any]:
        """The host's state; `running` only when it answers a ping now. While it is being replaced, the one
        that serves is the old one until the new one listens."""
        status = self.state.status
        process = self._process
        if status == "running" and (process is None or not await process.ping(2.0)):
            status = "unavailable"
        return {
            "status": status,
            "port": self.port or None,
            "functions": len(self.state.served),
            "served": list(self.state.served),
            "failed": dict(self.state.failed),
            "detail": self.state.detail,
            "pid": process.pid if process is not None else None,
            "replacedVersions": process.stale if process is not None else 0,
            "memoryMb": round(process.rss / MIB, 1) if process is not None and process.rss else None,
            "recycles": self.recycles,
            "draining": sorted(old.pid for old in self._draining),
        }


__all__ = ["FunctionsHost", "HostConfig"]

"""The functions host: one Deno process that serves every shared function at `/<slug>[/*]` on its own port
(`KILNBASE_FUNCTIONS_HOST_PORT`, 7133 as in InsForge's self-hosted setup), with no Python process on the path.

Why it exists: an invocation through `/functions/:slug` crosses the API's Python edge and a proxy, which
bounds it to the API's own request rate (a few thousand a second on two cores). `@insforge/sdk` calls a
functions URL directly when one is configured (`createClient({ functionsUrl })`), and falls back to
`/functions/:slug` when that URL answers 404; the host is that URL. It runs the functions in one isolate, as
InsForge's cloud does, so it serves only the functions that share one environment: active ones without a
secrets allow-list (those see every active secret anyway). A function with an allow-list is not hosted (404,
so the SDK uses the API path, where it runs in workers of its own).

One API process owns the host: whichever finds the port free starts it (the others check again now and
then, and take over if the owner goes). The owner sends the configuration (functions, secrets as the
environment, limits) on the host's stdin whenever a function or secret changes, pings it every second while
it serves a function, and restarts it when it stops answering for `host_stall_seconds` (an infinite loop:
every function it hosts waits until then) or exits. A host that serves nothing runs no code that could loop:
it is pinged only when its configuration is read again, so that an idle server without functions does not
wake itself and Deno every second. A function whose loading never finished before such a restart is left
out of the next configuration, so one bad top level cannot keep the host down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kilnbase.config import Settings
from kilnbase.functions.log_sink import LogSink
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
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._ping_numbers = itertools.count(1)
        self._configured: asyncio.Future[dict[str, str]] | None = None
        self._loading: str | None = None
        #: Whether the host answered a ping since it said it was loading `_loading`: if so, a load that is
        #: taking long (a download) is not what stopped it.
        self._answered_while_loading = False
        self._nonce: bytes | None = None
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
        """Own the host while this process can; restart it when it stops or stalls."""
        if not self.enabled:
            return
        while True:
            if bind_error(self.hostname, self.port) is not None:
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
        command, env = self._command()
        self._process = process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            limit=1024 * 1024,
        )
        assert process.stdout is not None and process.stderr is not None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        readers = [
            asyncio.create_task(self._read_stdout(process.stdout, ready)),
            asyncio.create_task(self._read_stderr(process.stderr)),
        ]
        exited = asyncio.create_task(process.wait())
        first: set[asyncio.Future[Any]] = {ready, exited}
        try:
            await asyncio.wait(first, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                if not self._port_taken(process):
                    self._set("stopped", f"the host did not start (exit code {process.returncode})")
                return
            self._sent = None
            self._changed.set()
            supervise = asyncio.create_task(self._supervise())
            await asyncio.wait({supervise, exited}, return_when=asyncio.FIRST_COMPLETED)
            supervise.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervise
            if exited.done() and not self._port_taken(process):
                code = process.returncode
                self._set("stopped", f"the host exited (code {code}); restarting")
                self._lost(
                    f"The functions host exited (code {code}); restarting it.",
                    f"The functions host stopped while loading the function (exit code {code}: the memory "
                    "cap?); fix it and deploy it again.",
                )
        finally:
            for task in (*readers, exited):
                task.cancel()
            await asyncio.gather(*readers, exited, return_exceptions=True)

    def _port_taken(self, process: asyncio.subprocess.Process) -> bool:
        """Did the host exit because another process took its port between the check and the listen?"""
        if process.returncode != PORT_TAKEN:
            return False
        self._set("elsewhere", f"port {self.port} was taken by another process")
        return True

    async def _supervise(self) -> None:
        stall = self.settings.functions.host_stall_seconds
        while True:
            if self._changed.is_set() or self._reconfigure_due():
                self._changed.clear()
                try:
                    configured = await self._configure(stall)
                except Exception as exc:  # (the database, most likely: keep serving what is loaded)
                    log.warning("functions host: could not read its configuration (%s)", type(exc).__name__)
                    # Tried again in a few seconds rather than at the next half-minute.
                    self._configured_at = time.monotonic() - RECONFIGURE_SECONDS + RETRY_SECONDS
                    configured = True
                if not configured:
                    self._stalled(stall)
                    return
            if not await self.ping(stall):
                self._stalled(stall)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._next_ping())

    def _next_ping(self) -> float:
        """Seconds until the next ping: `PING_SECONDS` while a function is served (its requests reach the host
        directly, so only a ping finds one that loops forever), else when the configuration is due again."""
        if self.state.served:
            return PING_SECONDS
        return max(PING_SECONDS, self._configured_at + RECONFIGURE_SECONDS - time.monotonic())

    def _reconfigure_due(self) -> bool:
        """Now and then unasked: the anon key may have rotated, a load that failed may pass now; and when
        a secret expires."""
        if time.monotonic() - self._configured_at > RECONFIGURE_SECONDS:
            return True
        expires_at = self._current.expires_at if self._current is not None else None
        return expires_at is not None and expires_at <= time.time()

    async def _configure(self, stall: float) -> bool:
        """Send the configuration if it changed and wait until the host has loaded it; False if the host
        stalled meanwhile."""
        config = await self.config()
        message = config.message(self._left_out)
        load_failures = set(self.state.failed) - set(self._left_out)
        if message == self._sent and not load_failures:  # (the host tries failed loads again when sent)
            self._configured_at = time.monotonic()
            self._current = config
            return True
        configured: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._configured = configured
        self._current = config
        await self._send(message)
        while True:  # loading may take long (a package download), but the host answers pings meanwhile
            try:
                failed = await asyncio.wait_for(asyncio.shield(configured), PING_SECONDS)
                break
            except TimeoutError:
                if not await self.ping(stall):
                    return False
        self._sent = message
        self._configured_at = time.monotonic()
        self.state.failed = failed
        self.state.served = sorted(set(config.functions) - set(failed))
        self._set("running", f"serving {len(self.state.served)} function(s) on port {self.port}")
        return True

    def _stalled(self, stall: float) -> None:
        self._lost(
            f"The functions host stopped answering for {stall:g} s; restarting it.",
            "Loading the function did not finish (a loop at its top level?); fix it and deploy it again.",
        )

    def _lost(self, message: str, blame: str) -> None:
        """The host is gone or going: if it was loading a function, that function is left out from now on
        (answered `blame`), so that the next host serves the others."""
        stuck, self._loading = self._loading, None
        if self._answered_while_loading:
            stuck = None
        if stuck is not None and self._current is not None and stuck in self._current.functions:
            self._left_out[stuck] = (self._current.functions[stuck], blame)
        log.warning(message)
        self.logs.line(stuck or HOST_SLUG, None, "error", message)

    async def ping(self, seconds: float) -> bool:
        """Does the host answer within `seconds`? (An isolate stuck in a loop does not.)"""
        if self._process is None or self._process.returncode is not None:
            return False
        number = next(self._ping_numbers)
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[number] = pong
        try:
            await self._send(orjson.dumps({"t": "ping", "n": number}) + b"\n")
            await asyncio.wait_for(pong, seconds)
            return True
        except (TimeoutError, ConnectionError):
            return False
        finally:
            self._pongs.pop(number, None)

    async def _send(self, message: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(message)
        await self._process.stdin.drain()

    def _set(self, status: str, detail: str) -> None:
        if status == "elsewhere" and self.state.status != "elsewhere":
            # Said once per change: with `serve --workers N` the other processes say it too, which is right
            # (one of them owns the host); with one process, something else holds the port.
            log.info("functions host: %s (KILNBASE_FUNCTIONS_HOST_PORT sets the port)", detail)
        self.state.status = status
        self.state.detail = detail

    async def stop(self) -> None:
        await self._stop_process()
        if self.enabled:
            self._set("stopped", "the server is stopping")

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await kill(process)
            close_transport(process)

    # --- output --------------------------------------------------------------------------------------------

    async def _read_stdout(self, stream: asyncio.StreamReader, ready: asyncio.Future[None]) -> None:
        """The host's lines: the first says `ready` and gives the nonce every later line of the host starts
        with; anything else on stdout (a function writing there itself) is a plain log line, whatever it
        claims to be."""
        self._nonce = None
        async for line in lines_of(stream):
            if self._nonce is None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    first = orjson.loads(line)
                    if isinstance(first, dict) and first.get("t") == "ready" and first.get("nonce"):
                        self._nonce = str(first["nonce"]).encode()
                        if not ready.done():
                            ready.set_result(None)
                continue
            if not line.startswith(self._nonce):
                self.logs.line(HOST_SLUG, None, "info", line.decode(errors="replace").rstrip())
                continue
            try:
                event = orjson.loads(line[len(self._nonce) :])
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
            self._answered_while_loading = self._loading is not None
            pong = self._pongs.get(int(event.get("n") or 0))
            if pong is not None and not pong.done():
                pong.set_result(None)
        elif kind == "loading":
            self._loading = str(event.get("slug"))
            self._answered_while_loading = False
        elif kind == "configured":
            self._loading = None
            failed = event.get("failed")
            if self._configured is not None and not self._configured.done():
                self._configured.set_result(failed if isinstance(failed, dict) else {})

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for level, text in deno_messages(stream):
            self.logs.line(self._loading or HOST_SLUG, None, level, text)

    # --- the process ---------------------------------------------------------------------------------------

    def _command(self) -> tuple[list[str], dict[str, str]]:
        # No environment of its own: the functions' values arrive on stdin.
        return deno_command(
            self.sandbox(),
            self.deno_dir,
            HOST,
            [self.hostname, str(self.port)],
            code=self.code_dir,
            memory_mb=self.settings.functions.host_memory_mb,
            env={},
        )

    async def health(self) -> dict[str, Any]:
        """The host's state; `running` only when it answers a ping now."""
        status = self.state.status
        if status == "running" and not await self.ping(2.0):
            status = "unavailable"
        return {
            "status": status,
            "port": self.port or None,
            "functions": len(self.state.served),
            "served": list(self.state.served),
            "failed": dict(self.state.failed),
            "detail": self.state.detail,
        }


__all__ = ["FunctionsHost", "HostConfig"]

"""The functions runtime of one API process: which version of each function is current, its warm pool,
reloads, the sandbox, the log sink, and the runtime's health.

Definitions are read from `functions.definitions` once and cached; a change (here, or in another API process,
heard through `NOTIFY kilnbase_functions`) drops the cached entry, and the next invocation builds a pool for
the new version while the old pool finishes what it has in flight. A change of secrets, of the anon key, or
a secret passing its expiry rebuilds the pools the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from psycopg import AsyncConnection

from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.functions.egress import denied_hosts, private_networks
from kilnbase.functions.host import FunctionsHost, HostConfig
from kilnbase.functions.log_sink import LogSink
from kilnbase.functions.sandbox import ROUTER, Sandbox, deno_binary, deno_command
from kilnbase.functions.workers import DenoWorker, FunctionLoadError, FunctionPool, WorkerSpec
from kilnbase.pg_listen import ConnectionLoss, notifications

log = logging.getLogger("kilnbase.functions")

CHANNEL = "kilnbase_functions"
LOAD_RETRY_SECONDS = 5.0
#: How many active functions (the most recently changed) get warm workers when the server starts.
WARM_AT_START = 10
#: (allow-list or None) -> (secret values, first expiry in epoch seconds or None)
SecretValues = Callable[[list[str] | None], Awaitable[tuple[dict[str, str], float | None]]]


#: The columns of `Definition`, as selected from `functions.definitions`.
_DEFINITION = "slug, revision, status, code, secrets, deployed_by_agent"


@dataclass(frozen=True)
class Definition:
    slug: str
    revision: int
    status: str
    code: str
    secrets: list[str] | None
    #: An agent key deployed it or changed it last: its workers may not reach private networks (egress.py).
    deployed_by_agent: bool = False


class Runtime:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        owner_conninfo: str,
        secret_values: SecretValues,
        anon_key: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.config = settings.functions
        self.database = database
        self.owner_conninfo = owner_conninfo
        self.secret_values = secret_values
        self.anon_key = anon_key
        self.base_dir = (settings.data_dir / "functions").resolve()
        self.deno_dir = self.base_dir / "deno"
        self.code_dir = self.base_dir / "code"
        #: The code of the functions the host serves, and only theirs: all the host may read.
        self.host_code_dir = self.base_dir / "host-code"
        self.socket_dir = Path("/nonexistent")
        self.sandbox = Sandbox(None, "not started")
        #: The sandbox of functions an agent deployed: `sandbox` that also denies private networks.
        self.agent_sandbox = self.sandbox
        self.logs = LogSink(database)
        self.host = FunctionsHost(
            settings, self.host_code_dir, self.deno_dir, lambda: self.sandbox, self.host_config, self.logs
        )
        self.inflight: dict[str, int] = {}
        self._definitions: dict[str, Definition | None] = {}
        self._pools: dict[str, FunctionPool] = {}
        self._building: dict[str, asyncio.Task[FunctionPool]] = {}
        self._loss = ConnectionLoss("functions listener", log)
        self._retiring: set[asyncio.Task[None]] = set()
        #: Pools draining after a reload, stopped at once when the server stops.
        self._retired: set[FunctionPool] = set()
        self._stopping = False
        self._secrets_generation = 0
        self._listener: asyncio.Task[None] | None = None
        self._deno_version: tuple[float, str | None] = (0.0, None)
        #: The last load failure per function, answered again for a few seconds rather than retried.
        self._failed: dict[str, tuple[tuple[object, ...], float, FunctionLoadError]] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.deno_dir.mkdir(parents=True, exist_ok=True)
        self.code_dir.mkdir(parents=True, exist_ok=True)
        self.host_code_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are short (108 bytes): a directory of its own under the system's temp dir.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="kilnbase-fn-"))
        probed = await anyio.to_thread.run_sync(Sandbox.probe, self.config.sandbox, self.deno_dir)
        denied = await anyio.to_thread.run_sync(denied_hosts, self.settings, self.owner_conninfo)
        self.sandbox = dataclasses.replace(probed, deny_net=denied)
        private = await anyio.to_thread.run_sync(private_networks, self.settings)
        self.agent_sandbox = dataclasses.replace(probed, deny_net=tuple(dict.fromkeys((*denied, *private))))
        if not self.sandbox.enabled:
            log.warning(
                "functions: bubblewrap is off (%s); Deno's permissions are the only wall", self.sandbox.reason
            )
        await self.logs.start()
        listening = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(listening), name="kilnbase-functions-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait(), 10)
        warming = asyncio.create_task(self._warm_active(), name="kilnbase-functions-warm")
        reaping = asyncio.create_task(self._reap_idle(), name="kilnbase-functions-reaper")
        hosting = asyncio.create_task(self.host.run(), name="kilnbase-functions-host")
        try:
            yield
        finally:
            self._stopping = True
            for task in (warming, reaping, hosting, self._listener):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            builds = list(self._building.values())
            for building in builds:
                building.cancel()
            await asyncio.gather(*builds, return_exceptions=True)
            background = list(self._retiring)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            pools = [*self._pools.values(), *self._retired]
            self._pools.clear()
            await asyncio.gather(*(pool.retire(0) for pool in pools), return_exceptions=True)
            await self.host.stop()
            await self.logs.stop()
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def _warm_active(self) -> None:
        """After a start, the active functions get their workers before their first invocation asks."""
        try:
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "select slug from functions.definitions where status = 'active' "
                    "order by updated_at desc limit %s",
                    (WARM_AT_START,),
                )
                slugs = [row["slug"] for row in await cur.fetchall()]
        except Exception:
            log.exception("functions: could not list the active functions to warm")
            return
        for slug in slugs:  # one at a time: a start is no moment to take every core
            definition = await self.definition(slug)
            if definition is not None and definition.status == "active":
                with contextlib.suppress(FunctionLoadError):
                    await self.pool_for(definition)

    async def _reap_idle(self) -> None:
        """Functions nobody called for `idle_seconds` give their workers back; the next call starts them."""
        idle = self.config.idle_seconds
        if idle <= 0:
            return
        while True:
            await asyncio.sleep(min(60.0, idle / 4))
            now = time.monotonic()
            for slug, pool in list(self._pools.items()):
                if pool.inflight == 0 and now - pool.last_used > idle and self._pools.get(slug) is pool:
                    del self._pools[slug]
                    self.retire(pool)

    async def _listen(self, listening: asyncio.Event) -> None:
        """Hear changes made by any API process; after a lost connection, forget everything cached."""
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.owner_conninfo, autocommit=True, application_name="kilnbase-functions"
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.forget_all()
                    self._loss.connected()
                    listening.set()
                    async for notify in notifications(conn):
                        payload = notify.payload
                        if payload.startswith("function:"):
                            self.forget(payload.removeprefix("function:"))
                        else:
                            self.secrets_changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pause = self._loss.lost(exc)
                listening.set()
                await asyncio.sleep(pause)

    def forget(self, slug: str) -> None:
        self._definitions.pop(slug, None)
        self.host.changed()

    def forget_all(self) -> None:
        self._definitions.clear()
        self._secrets_generation += 1
        self.host.changed()

    def secrets_changed(self) -> None:
        self._secrets_generation += 1
        self.host.changed()

    # --- definitions and pools ----------------------------------------------------------------------------

    async def definition(self, slug: str) -> Definition | None:
        if slug in self._definitions:
            return self._definitions[slug]
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"select {_DEFINITION} from functions.definitions where slug = %s",
                (slug,),
            )
            row = await cur.fetchone()
        found = Definition(**row) if row else None
        if len(self._definitions) > 10_000:
            self._definitions.clear()
        self._definitions[slug] = found
        return found

    def _identity(self, definition: Definition) -> tuple[object, ...]:
        return (
            definition.revision,
            self._secrets_generation,
            self.anon_key(),
            tuple(definition.secrets or ()),
            definition.deployed_by_agent,
        )

    async def pool_for(self, definition: Definition) -> FunctionPool:
        """The current pool for this version, built (once, however many ask) when there is none."""
        identity = self._identity(definition)
        current = self._pools.get(definition.slug)
        if (
            current is not None
            and current.identity == identity
            and not current.broken
            and not self._expired(current)
        ):
            return current
        if self._stopping:
            raise FunctionLoadError("The server is stopping.")
        failed = self._failed.get(definition.slug)
        if failed is not None and failed[0] == identity and time.monotonic() - failed[1] < LOAD_RETRY_SECONDS:
            raise failed[2]
        building = self._building.get(definition.slug)
        if building is None or building.done():
            building = asyncio.create_task(self._build(definition, identity))
            self._building[definition.slug] = building
        return await asyncio.shield(building)

    def _expired(self, pool: FunctionPool) -> bool:
        expires_at = pool.spec.expires_at
        return expires_at is not None and expires_at <= time.time()

    async def _build(self, definition: Definition, identity: tuple[object, ...]) -> FunctionPool:
        try:
            spec = await self._spec(definition)
            pool = FunctionPool(spec, self.config.workers_per_function, self.logs.line, identity)
            try:
                await pool.start()
            except FunctionLoadError as exc:
                self._failed[definition.slug] = (identity, time.monotonic(), exc)
                raise
            self._failed.pop(definition.slug, None)
            previous = self._pools.get(definition.slug)
            self._pools[definition.slug] = pool
            if previous is not None:
                self.retire(previous)
            return pool
        finally:
            self._building.pop(definition.slug, None)

    def retire(self, pool: FunctionPool) -> None:
        self._retired.add(pool)
        task = asyncio.create_task(pool.retire(self.config.drain_seconds))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda _task: self._retired.discard(pool))

    async def drop(self, slug: str) -> None:
        """The function was deleted or drafted here: stop serving it once its invocations are done."""
        self.forget(slug)
        pool = self._pools.pop(slug, None)
        if pool is not None:
            self.retire(pool)

    def _code_file(self, definition: Definition, root: Path | None = None) -> Path:
        digest = hashlib.sha256(definition.code.encode()).hexdigest()[:16]
        directory = (root or self.code_dir) / definition.slug / f"{definition.revision}-{digest}"
        path = directory / "index.ts"
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            # A name of its own per writer: the host's configuration and a pool may write it at once.
            partial = directory / f".index.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            partial.write_text(definition.code)
            partial.replace(path)
        return path

    async def host_config(self) -> HostConfig:
        """What the functions host serves: every active function without a secrets allow-list that no agent
        key deployed (those run in workers denied private networks), with every active secret and the
        platform's values as their shared environment."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"select {_DEFINITION} from functions.definitions "
                "where status = 'active' and secrets is null and not deployed_by_agent order by slug"
            )
            definitions = [Definition(**row) for row in await cur.fetchall()]
        root = self.host_code_dir
        paths = await anyio.to_thread.run_sync(lambda: [self._code_file(d, root) for d in definitions])
        values, expires_at = await self.secret_values(None)
        config = self.config
        return HostConfig(
            functions={d.slug: path for d, path in zip(definitions, paths, strict=True)},
            env={**values, **self._platform_env()},
            limits={
                "timeoutMs": config.timeout_ms,
                "maxConcurrency": config.max_concurrency,
                "maxBodyBytes": self.settings.max_upload_body_bytes,
                "logPerSecond": config.host_log_per_second,
                "loadTimeoutMs": round(config.start_timeout_seconds * 1000),
            },
            expires_at=expires_at,
        )

    def _platform_env(self) -> dict[str, str]:
        """The values InsForge seeds for functions."""
        return {
            "INSFORGE_BASE_URL": self.settings.base_url,
            "INSFORGE_INTERNAL_URL": self.internal_url(),
            "ANON_KEY": self.anon_key(),
        }

    def internal_url(self) -> str:
        return self.settings.local_url

    async def _spec(self, definition: Definition) -> WorkerSpec:
        code_path = await anyio.to_thread.run_sync(self._code_file, definition)
        values, expires_at = await self.secret_values(definition.secrets)
        function_env = {**values, **self._platform_env()}
        command, env = deno_command(
            self.agent_sandbox if definition.deployed_by_agent else self.sandbox,
            self.deno_dir,
            ROUTER,
            [code_path.as_uri(), "{socket}", ",".join(sorted(function_env))],
            code=code_path.parent,
            memory_mb=self.config.memory_mb,
            env=function_env,
            socket=("{socket}", self.socket_dir),
        )
        return WorkerSpec(
            slug=definition.slug,
            revision=definition.revision,
            command=command,
            env=env,
            socket_dir=self.socket_dir,
            start_timeout=self.config.start_timeout_seconds,
            expires_at=expires_at,
        )

    # --- health -------------------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """The runtime's real state: Deno runs here, and every live worker answers a probe."""
        version = await self._probe_deno()
        workers = [
            worker for pool in self._pools.values() for worker in pool.workers if not worker.exited.is_set()
        ]
        answers = await asyncio.gather(*(worker.probe(2.0) for worker in workers))
        healthy = sum(1 for answer in answers if answer)
        status = "running" if version is not None and healthy == len(workers) else "unavailable"
        return {
            "status": status,
            "deno": version,
            "workers": {"total": len(workers), "healthy": healthy},
            "warmFunctions": sorted(self._pools),
            "sandbox": {"enabled": self.sandbox.enabled, "detail": self.sandbox.reason},
            "host": await self.host.health(),
            "limits": {
                "timeoutMs": self.config.timeout_ms,
                "memoryMb": self.config.memory_mb,
                "maxConcurrency": self.config.max_concurrency,
                "workersPerFunction": self.config.workers_per_function,
            },
        }

    async def _probe_deno(self) -> str | None:
        checked_at, version = self._deno_version
        if time.monotonic() - checked_at < 30 and version is not None:
            return version

        def run() -> str | None:
            try:
                result = subprocess.run(
                    [deno_binary(), "--version"], capture_output=True, timeout=10, check=False, text=True
                )
            except (OSError, subprocess.TimeoutExpired):
                return None
            first = result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else None
            return first

        version = await anyio.to_thread.run_sync(run)
        self._deno_version = (time.monotonic(), version)
        return version

    def check_worker(self, pool: FunctionPool, worker: DenoWorker) -> None:
        """After a time limit passed: a worker that no longer answers a probe (an infinite loop) is killed,
        and its pool starts another."""

        async def check() -> None:
            if not await worker.probe(1.0):
                log.warning("function %s: a worker stopped answering; replacing it", pool.spec.slug)
                self.logs.line(pool.spec.slug, None, "error", "A worker stopped answering and was replaced.")
                await pool.kill(worker)

        task = asyncio.create_task(check())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


__all__ = ["Definition", "FunctionLoadError", "Runtime"]

"""The database driver's own cost per request transaction, three ways in one run: `Database.as_caller`
(psycopg's pipeline: BEGIN, the caller's context, the statement, COMMIT), `Database.statement_as_caller`
(the context and the statement, one implicit transaction: how the records engine runs a single statement),
and that same transaction sent through libpq directly (`psycopg.pq`).

Every request that touches the database as its caller is such a transaction, sent in one round trip. This
measures what the client side of it costs: CPU of this process per transaction (beside the CPU of Postgres's
processes), and transactions per second against the embedded Postgres, for the records cases of
`bench/records.py`. All three use Kilnbase's request pool (logged in as the authenticator), the statement the
records engine renders, and server-side prepared statements (psycopg prepares a statement from its sixth
use, as `db_prepare_threshold` sets; the libpq side prepares on first use per connection).

The libpq side is a measuring stick, not a second driver: it reads rows as text and checks nothing but the
statuses. What it shows is how much of a request's CPU goes to psycopg's Python layer (its generators,
adaptation, and a socket flush after every statement of a pipeline), the part a leaner path could save.

    .venv/bin/python -m bench.driver [--cases get_one,post_one] [--requests 8000] [--concurrency 8]
                                     [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psutil
import psycopg
import uvloop
from psycopg import AsyncConnection, pq
from psycopg.pq.abc import PGconn
from tests.support.postgres import TestCluster, database_for

from bench.records import CASES, SEED, render_statements, server_cpu_seconds
from bench.records_servers import ADMIN, statement_params
from kilnbase.config import Settings
from kilnbase.db.session import _SET_CONTEXT, _SET_CONTEXT_READ_ONLY, Database

Transaction = Callable[[], Awaitable[None]]
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
#: The statements each connection has prepared (pooled connections live as long as the run).
_PREPARED: dict[PGconn, set[bytes]] = {}


def numbered(query: str) -> bytes:
    """psycopg's `%s` placeholders as libpq's `$1, $2, ...` (`%%` is a literal `%`)."""
    parts = query.split("%%")
    count = 0
    out = []
    for part in parts:
        pieces = part.split("%s")
        text = pieces[0]
        for piece in pieces[1:]:
            count += 1
            text += f"${count}" + piece
        out.append(text)
    return "%".join(out).encode()


def text_param(value: Any) -> bytes | None:
    """A parameter in text format, untyped, as psycopg sends a Python `str` (the server infers the type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    return str(value).encode()


class LibpqTransaction:
    """The context and one statement on a pooled connection's PGconn, in pipeline mode, with one sync and one
    flush (an implicit transaction, as `statement_as_caller`'s); each statement prepared on a connection's
    first use of it."""

    def __init__(self, database: Database, statement: str, params: list[Any], read_only: bool) -> None:
        self.database = database
        self.read_only = read_only
        context = _SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT
        self.queries = [numbered(context), numbered(statement)]
        self.names = [b"kbdrv_" + hashlib.sha1(q).hexdigest()[:16].encode() for q in self.queries]  # noqa: S324
        claims = orjson.dumps(dict(ADMIN.claims))
        timeout = database.statement_timeout(ADMIN.db_role).encode()
        self.params: list[list[bytes | None]] = [
            [ADMIN.db_role.encode(), claims, timeout],
            [text_param(v) for v in params],
        ]

    async def __call__(self) -> None:
        async with self.database.request_pool.connection() as conn:
            await self._run(conn)

    async def _run(self, conn: AsyncConnection[Any]) -> None:
        pg = conn.pgconn
        known = _PREPARED.setdefault(pg, set())
        pg.enter_pipeline_mode()
        try:
            for name, query, params in zip(self.names, self.queries, self.params, strict=True):
                if name not in known:
                    pg.send_prepare(name, query)
                    known.add(name)
                pg.send_query_prepared(name, params)
            pg.pipeline_sync()
            while pg.flush():
                await _ready(pg.socket, write=True)
            while True:
                if pg.is_busy():
                    await _ready(pg.socket, write=False)
                    pg.consume_input()
                    continue
                result = pg.get_result()
                if result is None:
                    continue  # the end of one statement's results
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if result.status not in _OK:
                    raise RuntimeError((result.error_message or b"").decode())
                if result.status == pq.ExecStatus.TUPLES_OK and result.ntuples:
                    self.last_row = [result.get_value(0, i) for i in range(result.nfields)]
        finally:
            pg.exit_pipeline_mode()


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    if write:
        loop.add_writer(fd, ready.set_result, None)
    else:
        loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def as_caller_transaction(
    database: Database, statement: str, params: list[Any], read_only: bool
) -> Transaction:
    """`as_caller` with one statement, its row read after COMMIT."""

    async def run() -> None:
        async with database.as_caller(ADMIN, read_only=read_only) as cur:
            await cur.execute(statement, params)
        if cur.description:
            await cur.fetchone()

    return run


def statement_transaction(
    database: Database, statement: str, params: list[Any], read_only: bool
) -> Transaction:
    """As the records engine runs a single statement."""

    async def run() -> None:
        cur = await database.statement_as_caller(ADMIN, statement, params, read_only=read_only)
        if cur.description:
            await cur.fetchone()

    return run


async def drive(
    transaction: Transaction, requests: int, concurrency: int, postgres: psutil.Process
) -> tuple[float, float, float]:
    """(CPU µs of this process per transaction, of Postgres's processes, transactions per second)."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await transaction()

    cpu, server, wall = time.process_time(), server_cpu_seconds(postgres), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - wall
    return (
        (time.process_time() - cpu) / requests * 1e6,
        (server_cpu_seconds(postgres) - server) / requests * 1e6,
        requests / elapsed,
    )


async def measure(conninfo: str, postgres: psutil.Process, args: argparse.Namespace) -> None:
    statements = await render_statements(conninfo)
    settings = Settings(db_pool_min=args.concurrency, db_pool_max=args.concurrency)
    database = database_for(conninfo, settings)
    await database.open()
    print(f"{args.concurrency} concurrent transactions, a pool of as many; medians of {args.rounds} rounds")
    print("per transaction: CPU µs of the client / of Postgres; and transactions per second")
    print(f"{'case':<10} {'as_caller':>24} {'statement_as_caller':>24} {'libpq':>24}")
    try:
        for case in CASES:
            if case.name not in args.cases.split(","):
                continue
            rendered = statements[case.name]
            params = statement_params(rendered, case.body_bytes)
            read_only = bool(rendered["read_only"])
            sql = rendered["sql"]
            sides: dict[str, Transaction] = {
                "as_caller": as_caller_transaction(database, sql, params, read_only),
                "statement": statement_transaction(database, sql, params, read_only),
                "libpq": LibpqTransaction(database, sql, params, read_only),
            }
            count = max(args.requests // (20 if case.name.startswith("post_1000") else 1), 50)
            results: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
            for transaction in sides.values():  # warm: pools, prepared statements
                await drive(transaction, count // 4, args.concurrency, postgres)
            for _ in range(args.rounds):
                for side, transaction in sides.items():
                    results[side].append(await drive(transaction, count, args.concurrency, postgres))
            cells = []
            for runs in results.values():
                client, server, rate = (statistics.median(r[i] for r in runs) for i in range(3))
                cells.append(f"{client:5.0f} / {server:4.0f} µs {rate:6.0f}/s")
            print(f"{case.name:<10} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24}", flush=True)
    finally:
        await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="get_one,get_100,post_one,patch,rpc")
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = TestCluster()
    try:
        conninfo = cluster.create_database("bench")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SEED)
        postmaster = cluster.server.postmaster_pid()
        assert postmaster is not None
        uvloop.run(measure(conninfo, psutil.Process(postmaster), args))
    finally:
        cluster.close()


if __name__ == "__main__":
    main()

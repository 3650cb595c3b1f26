"""Bytecodes executed per request, by function: a measure of Python work that other load cannot change.

On a shared 2-core host a CPU time per request swings by 10% between runs, so a change worth 1% cannot be
seen in it. The number of bytecodes a request executes does not depend on the machine: it varies only with
how often psycopg polls for a result that has not arrived yet (about 1% of the total, in psycopg's and
asyncio's frames). `own` leaves those out. A bytecode is not a fixed cost (a call or a dict built costs more
than a load), so this says where Python work is and whether a change removed some; CPU time over HTTP
(`bench.records`) says what it is worth.

Counted with `sys.settrace` and opcode events, in the thread that runs the event loop.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from types import FrameType
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
_PREFIXES = (
    (f"{_ROOT}/src/", ""),
    ("/site-packages/", ""),
    ("/lib/python3.", "stdlib 3."),
    (f"{_ROOT}/", ""),
)
#: Functions whose bytecodes are the server's own work, not the driver's polling or the event loop's.
_OWN = ("kilnbase/", "starlette/", "<string>", "bench/")


def _short(filename: str) -> str:
    for marker, replacement in _PREFIXES:
        at = filename.find(marker)
        if at >= 0:
            return replacement + filename[at + len(marker) :]
    return filename


async def count_bytecodes(work: Awaitable[Any]) -> Counter[str]:
    """Bytecodes executed by each function (`file:name`) while `work` is awaited."""
    counts: Counter[str] = Counter()
    names: dict[Any, str] = {}

    def trace(frame: FrameType, event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            name = names.get(code)
            if name is None:
                name = names[code] = f"{_short(code.co_filename)}:{code.co_name}"
            counts[name] += 1
        return trace

    sys.settrace(trace)
    try:
        await work
    finally:
        sys.settrace(None)
    return counts


def own(counts: Counter[str]) -> int:
    return sum(n for name, n in counts.items() if name.startswith(_OWN))


def report(case: str, bare: Counter[str], kilnbase: Counter[str], requests: int, top: int) -> str:
    """Per request: both totals and own parts, then the functions whose counts differ most."""
    lines = [
        f"{case:<10} {sum(bare.values()) / requests:8.0f} {sum(kilnbase.values()) / requests:8.0f}"
        f" {sum(bare.values()) / sum(kilnbase.values()):6.2f}"
        f"   own {own(bare) / requests:6.0f} {own(kilnbase) / requests:6.0f}"
    ]
    names = sorted(set(bare) | set(kilnbase), key=lambda name: -abs(kilnbase[name] - bare[name]))
    for name in names[:top]:
        lines.append(
            f"    {bare[name] / requests:7.0f} {kilnbase[name] / requests:7.0f}"
            f" {(kilnbase[name] - bare[name]) / requests:+7.0f}  {name}"
        )
    return "\n".join(lines)

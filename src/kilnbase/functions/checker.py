"""`deno check` before a function's code is accepted: syntax, types and imports (which it also fetches into
the module cache, so the first invocation does not wait for the registry). It runs in the workers' sandbox
(`sandbox.check_command`): the code is not trusted yet, and the check reads what it imports."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from pathlib import Path

import anyio.to_thread

from kilnbase.functions.sandbox import Sandbox, check_command
from kilnbase.functions.workers import close_transport
from kilnbase.http.errors import ApiError

_CONFIG = Path(__file__).with_name("check.json")
#: The types `check.json` names (what every function sees besides Deno's own).
_TYPES = Path(__file__).with_name("globals.d.ts")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_MESSAGE = 4000


class CheckFailed(ApiError):
    """400 `FUNCTION_CHECK_FAILED`: the code was checked and did not pass (audited as failed, not refused)."""

    failed = True

    def __init__(self, message: str, next_actions: str) -> None:
        super().__init__(400, "FUNCTION_CHECK_FAILED", message, next_actions)


def _compiler_message(output: str, code_path: Path) -> str:
    text = _ANSI.sub("", output)
    text = text.split("Stack backtrace:", 1)[0]
    text = text.replace(code_path.as_uri(), "index.ts").replace(str(code_path), "index.ts")
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines)[:MAX_MESSAGE] or "deno check failed without a message"


def _build_dir(work_dir: Path, code: str) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="check-", dir=work_dir))
    (build / "index.ts").write_text(code)
    return build


async def check_code(code: str, deno_dir: Path, work_dir: Path, seconds: float, sandbox: Sandbox) -> None:
    """Raise a 400 with the compiler's message when `code` does not pass `deno check`."""
    build = await anyio.to_thread.run_sync(_build_dir, work_dir, code)
    try:
        code_path = build / "index.ts"
        command, env = check_command(sandbox, deno_dir, code_path, _CONFIG, _TYPES)
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=build,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), seconds)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            close_transport(process)
            if isinstance(exc, TimeoutError):
                raise CheckFailed(
                    f"deno check did not finish within {seconds:g} s (an import that cannot be fetched?).",
                    next_actions="Check the import specifiers; the previous version, if any, keeps serving.",
                ) from None
            raise
        close_transport(process)
        if process.returncode != 0:
            message = _compiler_message(output.decode(errors="replace"), code_path)
            raise CheckFailed(
                f"The function's code does not pass deno check:\n{message}",
                next_actions="Fix the code and deploy again; the previous version, if any, keeps serving.",
            )
    finally:
        shutil.rmtree(build, ignore_errors=True)

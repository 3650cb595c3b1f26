"""The doc-example runner's parts: reading the ```sh blocks of a Markdown file into steps (a command and the
output written under it), matching output against what the doc expects, and running a file's steps in one
bash session. The convention it reads is written at the top of `docs/README.md`."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^```(\S*)")
#: A line of expected output: `#` alone (an empty line) or `# ` and the text.
_EXPECTED = re.compile(r"^#( |$)")


@dataclass
class Step:
    """Code that runs, and (when the doc says) the stdout it must print."""

    block: int  # 1-based, among the file's ```sh blocks
    line: int  # where the code starts in the file, 1-based
    code: str
    expected: list[str] | None = None


@dataclass
class Outcome:
    step: Step
    stdout: str
    stderr: str


@dataclass
class DocRun:
    path: Path
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def steps_of(markdown: str) -> list[Step]:
    """The ```sh blocks of `markdown`, in order, as steps. A run of comment lines right under a line of code
    (no blank line between) is that code's expected output; any other comment is a remark and runs as
    shell (bash ignores it). Code after the last expected output of a block still runs."""
    steps: list[Step] = []
    block, start = 0, 0
    in_block = False
    code: list[str] = []
    expected: list[str] | None = None
    previous = ""

    def close() -> None:
        nonlocal code, expected
        if any(line.strip() and not line.lstrip().startswith("#") for line in code):
            steps.append(Step(block, start, "\n".join(code), expected))
        code, expected = [], None

    for number, line in enumerate(markdown.splitlines(), start=1):
        if not in_block:
            if line.strip() == "```sh":
                in_block, block, previous = True, block + 1, ""
            continue
        if line.startswith("```"):
            close()
            in_block = False
            continue
        if expected is not None:
            if _EXPECTED.match(line):
                expected.append(line[2:])
                previous = line
                continue
            close()
        is_code = bool(previous.strip()) and not previous.lstrip().startswith("#")
        if _EXPECTED.match(line) and is_code:
            expected = [line[2:]]
        else:
            if not code:
                start = number
            code.append(line)
        previous = line
    return steps


def _skip_foreign_blocks(markdown: str) -> str:
    """`markdown` with every fenced block that is not ```sh blanked (its ``` lines could be mistaken for
    the end of a sh block); line numbers are kept."""
    out: list[str] = []
    inside: str | None = None
    for line in markdown.splitlines():
        fence = _FENCE.match(line)
        if inside is None and fence:
            inside = fence.group(1) or "plain"
            out.append(line if inside == "sh" else "")
            continue
        if inside is not None and line.startswith("```"):
            out.append(line if inside == "sh" else "")
            inside = None
            continue
        out.append(line if inside in (None, "sh") else "")
    return "\n".join(out)


def read_steps(path: Path) -> list[Step]:
    return steps_of(_skip_foreign_blocks(path.read_text()))


def _pattern(expected: list[str]) -> re.Pattern[str]:
    """`...` alone on a line matches any number of lines (none too); `...` within a line, any text there."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.rstrip().split("...")) + r"\n")
    return re.compile("".join(parts))


def _normalized(stdout: str) -> str:
    lines = [line.rstrip() for line in stdout.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(f"{line}\n" for line in lines)


def matches(expected: list[str], stdout: str) -> bool:
    return _pattern(expected).fullmatch(_normalized(stdout)) is not None


def run_file(path: Path, env: dict[str, str], cwd: Path, timeout: float = 300) -> DocRun:
    """Run every step of `path` in one bash session (variables carry from block to block), each step's
    stdout and stderr captured apart; then compare."""
    steps = read_steps(path)
    run = DocRun(path)
    with tempfile.TemporaryDirectory(prefix="kbdocs-") as scratch:
        out = Path(scratch)
        script = ["set -u +e", "exec </dev/null"]
        for index, step in enumerate(steps):
            script.append(f"{{\n{step.code}\n}} >{out}/{index}.out 2>{out}/{index}.err")
        (out / "script.sh").write_text("\n".join(script) + "\n")
        result = subprocess.run(
            ["bash", str(out / "script.sh")],
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for index, step in enumerate(steps):
            stdout_file, stderr_file = out / f"{index}.out", out / f"{index}.err"
            if not stdout_file.exists():
                run.failures.append(
                    f"{path.name}, block {step.block} (line {step.line}): never ran; the script stopped "
                    f"before it (exit {result.returncode}):\n{result.stderr}"
                )
                break
            outcome = Outcome(
                step, stdout_file.read_text(errors="replace"), stderr_file.read_text(errors="replace")
            )
            run.outcomes.append(outcome)
            if step.expected is not None and not matches(step.expected, outcome.stdout):
                run.failures.append(_describe(path, outcome))
    return run


def _describe(path: Path, outcome: Outcome) -> str:
    step = outcome.step
    assert step.expected is not None
    diff = "\n".join(
        difflib.unified_diff(
            step.expected,
            _normalized(outcome.stdout).splitlines(),
            "expected (the doc)",
            "printed",
            lineterm="",
        )
    )
    stderr = f"\nstderr:\n{outcome.stderr.strip()}" if outcome.stderr.strip() else ""
    return (
        f"{path.name}, block {step.block} (line {step.line}):\n"
        + "\n".join(f"    {line}" for line in step.code.splitlines())
        + f"\n{diff}{stderr}"
    )

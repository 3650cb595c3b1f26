"""`kilnbase ... --help` as a user reads it: every option's default is shown as written, every command ends
with examples, and README's table of commands names every command there is."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kilnbase.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "default"),
    [
        (["mcp"], "[the project's API key]"),
        (["approvals", "list"], "[the data dir's URL]"),
        (["serve"], "[./.kilnbase]"),
    ],
)
def test_help_shows_the_defaults_in_brackets(command: list[str], default: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kilnbase", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert default in result.stdout


def commands() -> dict[str, Any]:
    """Every command and group `kilnbase` has, by its path ("" for `kilnbase` itself, "db migrate", ...)."""
    found: dict[str, Any] = {}

    def walk(path: str, command: Any) -> None:
        found[path] = command
        for name, child in getattr(command, "commands", {}).items():
            walk(f"{path} {name}".strip(), child)

    walk("", typer.main.get_command(app))
    return found


def leaf_commands() -> set[str]:
    return {path for path, command in commands().items() if not hasattr(command, "commands")}


@pytest.mark.parametrize("path", sorted(commands()))
def test_every_help_ends_with_examples_that_use_its_own_options(path: str) -> None:
    command = commands()[path]
    result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    examples = [line.strip() for line in command.epilog.splitlines()[1:]]
    assert examples and all(f"kilnbase {path}".rstrip() in example for example in examples), examples
    if hasattr(command, "commands"):
        return
    options = {name for parameter in command.params for name in parameter.opts}
    for example in examples:
        used = {word.split("=")[0] for word in example.split("#")[0].split() if word.startswith("--")}
        assert used <= options | {"--help"}, f"{example!r} uses options {path!r} does not have"


def test_the_readme_lists_every_command() -> None:
    """README's table of commands and the CLI cannot drift apart: a command added, renamed or removed on one
    side fails here until the other says the same."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in re.findall(r"^\| `kilnbase ([^`]+)` \|", table, flags=re.MULTILINE):
        listed.add(
            " ".join(itertools.takewhile(lambda word: re.fullmatch("[a-z][a-z-]*", word), row.split()))
        )
    assert listed == leaf_commands()

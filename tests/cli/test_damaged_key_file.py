"""A `keys.json` that is not the file Kilnbase wrote, as an operator meets it: cut short by a full disk or a
copy, written over, edited into something else, or a directory. Every command says in one line that the file
is damaged and what to do, with no traceback and without quoting what the file holds (the project's
secrets)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys
from tests.support.cli import assert_said_in_one_line, run_kilnbase
from tests.support.postgres import reachable_scratch

COMMANDS = {
    "serve": ["serve"],
    "keys": ["keys"],
    "db migrate": ["db", "migrate"],
    "db backup": ["db", "backup"],
    "audit sessions": ["audit", "sessions"],
}


def _cut_short(text: str) -> bytes:
    return text[: len(text) // 2].encode()


def _values_not_text(text: str) -> bytes:
    return json.dumps({name: 1234 for name in json.loads(text)}).encode()


#: What the key file holds instead of its keys, made from the keys it held.
DAMAGE: dict[str, Callable[[str], bytes]] = {
    "cut short": _cut_short,
    "empty": lambda _text: b"",
    "not JSON": lambda _text: b"api_key=ik_...\n",
    "not UTF-8": lambda _text: b"\xff\xfe{\x00",
    "JSON null": lambda _text: b"null",
    "values not text": _values_not_text,
}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with reachable_scratch("kbkeyfile-") as parent:
        data_dir = parent / "project"
        load_project_keys(Settings(data_dir=data_dir))
        yield data_dir


def assert_refused(result: subprocess.CompletedProcess[str], *said: str) -> None:
    assert_said_in_one_line(result, *said, "restore it from a backup", "move it away")
    assert result.stdout == ""


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_key_file(data_dir: Path, command: str, damage: str) -> None:
    keys_file = data_dir / "keys.json"
    held = keys_file.read_text()
    keys_file.write_bytes(DAMAGE[damage](held))
    result = run_kilnbase(COMMANDS[command], data_dir=data_dir)
    assert_refused(result, f"{keys_file} is damaged")
    for secret in json.loads(held).values():
        assert secret[:16] not in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_key_file_that_is_a_directory(data_dir: Path, command: str) -> None:
    keys_file = data_dir / "keys.json"
    keys_file.unlink()
    keys_file.mkdir(mode=0o755)
    result = run_kilnbase(COMMANDS[command], data_dir=data_dir)
    assert_refused(result, f"{keys_file} is a directory")
    assert keys_file.stat().st_mode & 0o777 == 0o755  # (not made 0600 as the key file would be)

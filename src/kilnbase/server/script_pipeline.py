"""One SQL script streamed from a producer (`pg_restore --file=-`) through a filter into a consumer (psql),
for both restores: `kilnbase db restore` into PostgreSQL 15 or 16, and a backup restored into the live
database (`live_backups`).

The two ran the same pipeline in two ways, and a hang was found in the way one of them differed; one
implementation now decides every ending:
- the consumer stops first (psql at an error): the producer is stopped too, since its output has nowhere
  to go, and the consumer's message is the one that counts;
- the producer fails: nothing after the failure reaches the server and `closing` is never sent, the
  consumer is stopped, and the server rolls the open transaction back;
- this process is interrupted: both are stopped, and nothing more is sent.
Both stderr streams go to files, so neither process blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

#: Copies the producer's script into the consumer, changing what it must on the way.
Copy = Callable[[IO[bytes], IO[bytes]], None]


@dataclass(frozen=True)
class PipelineResult:
    """How the two processes ended: exit codes and what each wrote to stderr."""

    producer_code: int
    producer_errors: str
    #: The producer was stopped (or never started) because the consumer had stopped first: its code then
    #: says nothing.
    producer_stopped: bool
    consumer_code: int
    consumer_errors: str
    #: The consumer read the whole script and `closing`: whether it also ran them is `consumer_code`'s to say.
    written: bool

    @property
    def consumer_failed(self) -> bool:
        """The consumer stopped on its own (an error in the script), rather than being stopped by us."""
        return self.producer_stopped or (self.written and self.consumer_code != 0)

    @property
    def producer_failed(self) -> bool:
        return not self.producer_stopped and self.producer_code != 0


def run_script_pipeline(
    producer: list[str],
    consumer: list[str],
    environment: dict[str, str],
    copy: Copy,
    *,
    opening: bytes = b"",
    closing: bytes = b"",
) -> PipelineResult:
    """Start `consumer`, send it `opening`, then `producer`'s stdout through `copy` (a chunk at a time: never
    the whole script in memory), then `closing` only when the producer finished without error; wait for
    both (see the module's docstring for each ending)."""
    with tempfile.TemporaryFile() as producer_errors, tempfile.TemporaryFile() as consumer_errors:
        reader = _start(consumer, environment, subprocess.PIPE, subprocess.DEVNULL, consumer_errors)
        writer: subprocess.Popen[bytes] | None = None
        try:
            assert reader.stdin is not None
            consumer_stopped = False
            try:
                reader.stdin.write(opening)
                writer = _start(producer, environment, subprocess.DEVNULL, subprocess.PIPE, producer_errors)
                assert writer.stdout is not None
                copy(writer.stdout, reader.stdin)
            except BrokenPipeError:
                consumer_stopped = True  # (its stderr says why)
            producer_stopped = consumer_stopped
            producer_code = 0
            if writer is not None:
                assert writer.stdout is not None
                writer.stdout.close()
                if consumer_stopped and writer.poll() is None:
                    writer.kill()  # (its output has nowhere to go)
                producer_code = writer.wait()
            written = not consumer_stopped and producer_code == 0
            if not written:
                # Before its input ends, so that it never sees a script's end: the transaction it holds
                # open is rolled back when it disconnects.
                reader.kill()
            with contextlib.suppress(BrokenPipeError):
                if written:
                    reader.stdin.write(closing)
                reader.stdin.close()
            consumer_code = reader.wait()
        finally:
            for process in (writer, reader):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
        return PipelineResult(
            producer_code,
            _read_back(producer_errors),
            producer_stopped,
            consumer_code,
            _read_back(consumer_errors),
            written,
        )


def _start(
    args: list[str], environment: dict[str, str], stdin: int, stdout: int, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=environment)


def _read_back(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace").strip()

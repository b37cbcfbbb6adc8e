"""A Singer target run as its own process with stdin held open, as Meltano runs it.

For the loaders' crash tests: feed messages a few at a time, read the STATE lines the target
writes as they come, then end the stream or SIGKILL it mid-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.helpers import REPO_ROOT


class LiveTarget:
    """The target CLI with stdin held open, its stdout lines collected by a reader thread."""

    def __init__(self, command: list[str], config: Path, finish_timeout: float = 60) -> None:
        self.finish_timeout = finish_timeout
        self.proc = subprocess.Popen(
            [*command, "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def send(self, *messages: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        self.proc.stdin.flush()

    def finish(self) -> int:
        """Close stdin (end of the stream) and wait for a clean exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=self.finish_timeout)
        self._release()
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._release()

    def _release(self) -> None:
        """Join the reader (the pipe is at its end once the process is gone), close the pipes."""
        self._thread.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

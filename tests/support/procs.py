"""Real subprocesses for end-to-end tests: start one, wait for its `ready` line (with a
deadline), kill it (-9 when asked), and always reap it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["Proc", "spawn"]

REPO = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(self, popen: subprocess.Popen, name: str) -> None:
        self.popen = popen
        self.name = name
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no line starting {prefix!r} in {timeout}s:\n" + self.tail())
            try:
                line = self._q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.popen.poll()}) before {prefix!r}:\n" + self.tail())
            if line.startswith(prefix):
                return line

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=10)


def spawn(args: list[str], name: str, env: dict | None = None, cwd: Path | None = None) -> Proc:
    """Runs `python -m <args>` style commands with stdout+stderr merged into one pumped pipe."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        cwd=cwd or REPO, start_new_session=True,
    )  # fmt: skip
    return Proc(popen, name)

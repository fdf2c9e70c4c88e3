"""A newcomer's first hour: one real `helium dev` (ports 0, its own folder as the working directory), and
the `helium` CLI run in subprocesses from that folder, with no flags a newcomer would not know."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import Proc, spawn

DEV_READY_S = 240  # a cold start (tiny models, chain, 3 workers) on a loaded 2-core host


def cli(cwd: Path, *args: str, timeout: float = 180, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """`helium ARGS` run from `cwd`, as a user types it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("HELIUM_COORDINATOR", None)
    return subprocess.run([sys.executable, "-m", "helium.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, **kw)  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The stderr of a command that failed with one clear line (no traceback, no library noise)."""
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


class DevNet:
    def __init__(self, home: Path, proc: Proc, banner: list[str]) -> None:
        self.home = home
        self.proc = proc
        self.banner = banner

    @property
    def state(self) -> dict:
        return json.loads((self.home / ".helium" / "dev" / "dev.json").read_text())

    def worker_pids(self) -> dict[int, int]:
        """worker index -> pid, read from /proc (the dev's children)."""
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) != self.proc.popen.pid:  # ppid
                continue
            m = [re.search(rb"worker-(\d+)$", c) for c in cmd]
            hit = next((x for x in m if x), None)
            if b"worker" in cmd and hit:
                out[int(hit.group(1))] = int(d.name)
        return out


@pytest.fixture(scope="session")
def devnet(tmp_path_factory) -> DevNet:
    home = tmp_path_factory.mktemp("newcomer")
    proc = spawn(["-m", "helium.cli", "dev", "--port", "0", "--http-port", "0", "--log-level", "warning"],
                 "helium dev", cwd=home)  # fmt: skip
    try:
        proc.wait_for("ready grpc=", DEV_READY_S)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("test tokens:" in x for x in proc.lines):
            time.sleep(0.1)
        net = DevNet(home, proc, list(proc.lines))
        yield net
    finally:
        proc.terminate(timeout=40)

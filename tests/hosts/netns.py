"""Hosts for tests: each part of the network in a network namespace of its own, on its own address in
198.18.0.0/15 (the benchmarking range, RFC 2544; the addresses exist only inside the namespaces made
here, and no frame leaves them).

    with Hosts(tmp_path) as net:
        coord = net.host("coord")                 # namespace hx<pid>-<n>-coord, 198.18.0.2
        w = net.host("w0")
        net.start()                               # the switch between them (tests/hosts/_wire.py)
        p = net.spawn(coord, ["coordinator", "--host", coord.ip, ...], "coordinator")  # `helium ...`
        net.impair(w, delay_ms=100, jitter_ms=20, loss=0.02); net.down(w); net.up(w)

Each namespace holds one TAP device, `hx0`, and the switch process forwards frames between them with
netem-like impairments per host (see _wire.py for why not `tc netem`). Everything is torn down on exit,
even when the test fails: processes (their whole session), the switch, the namespaces (and with them
their devices). Names carry the pid, so parallel pytest workers never collide; namespaces left by a
killed run (whose pid is gone) are removed by the next one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import REPO, Proc

__all__ = ["Host", "Hosts", "unavailable_reason"]

SUBNET = "198.18.0"
DEV = "hx0"
HELIUM = str(Path(sys.executable).with_name("helium"))
_counter = itertools.count()


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (TAP devices)"
    name = f"hx{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _sweep_stale() -> None:
    """Removes namespaces of earlier runs whose process is gone (a kill -9 skips teardown)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for m in re.finditer(r"^(hx(\d+)-\S+)", out, re.M):
        pid = int(m.group(2))
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", m.group(1)], capture_output=True)


@dataclass(frozen=True)
class Host:
    name: str
    ns: str
    ip: str

    def addr(self, port: int | str) -> str:
        return f"{self.ip}:{port}"


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Hosts:
    """The namespaces of one test; use as a context manager (teardown on exit, whatever happened)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tag = f"hx{os.getpid()}-{next(_counter)}"
        self.hosts: dict[str, Host] = {}
        self.procs: list[Proc] = []
        self.wire: subprocess.Popen | None = None
        self._next_ip = 2

    def __enter__(self) -> Hosts:
        _sweep_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host(self, name: str, ip_last: int | None = None) -> Host:
        """A namespace `name` with the next free address (or 198.18.0.<ip_last>), its device up."""
        if ip_last is None:
            ip_last = self._next_ip
        self._next_ip = max(self._next_ip, ip_last + 1)
        h = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{ip_last}")
        _ip("netns", "add", h.ns)
        self.hosts[name] = h
        _ip("-n", h.ns, "link", "set", "lo", "up")
        _ip("-n", h.ns, "tuntap", "add", "dev", DEV, "mode", "tap")
        _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", DEV)
        _ip("-n", h.ns, "link", "set", DEV, "up")
        return h

    def start(self) -> None:
        """Starts the switch between every host made so far."""
        ports = [f"{h.name}={h.ns}:{DEV}" for h in self.hosts.values()]
        self.wire = subprocess.Popen([sys.executable, "-m", "tests.hosts._wire", *ports], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        line = self.wire.stdout.readline() if self.wire.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the switch did not start: {line!r}")

    def _wire(self, line: str) -> str:
        assert self.wire is not None and self.wire.stdin is not None and self.wire.stdout is not None
        self.wire.stdin.write(line + "\n")
        self.wire.stdin.flush()
        answer = self.wire.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"switch: {line!r}: {answer!r}")
        return answer

    def impair(self, host: Host, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0) -> None:
        """Like `tc qdisc add dev <host's device> root netem delay D J loss L`: frames the host sends."""
        self._wire(f"impair {host.name} delay_ms={delay_ms} jitter_ms={jitter_ms} loss={loss}")

    def clear(self, host: Host) -> None:
        self._wire(f"clear {host.name}")

    def down(self, host: Host) -> None:
        """Cuts the host off: every frame from and to it is dropped; its device and sockets stay up
        (half-open connections, as a failed switch port or a firewall DROP makes them)."""
        self._wire(f"down {host.name}")

    def up(self, host: Host) -> None:
        self._wire(f"up {host.name}")

    def stats(self, host: Host) -> str:
        return self._wire(f"stats {host.name}")

    def command(self, host: Host, args: list[str]) -> list[str]:
        """`args` run inside `host`'s namespace (`ip netns exec`)."""
        return ["ip", "netns", "exec", host.ns, *args]

    def spawn(self, host: Host, args: list[str], name: str, env: dict | None = None, *,
              helium: bool = True) -> Proc:  # fmt: skip
        """`helium ARGS` (or `python ARGS` with helium=False) in `host`, stdout+stderr pumped into a Proc."""
        argv = [HELIUM, *args] if helium else [sys.executable, *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    **(env or {})}  # fmt: skip
        popen = subprocess.Popen(self.command(host, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=full_env, cwd=REPO, start_new_session=True)  # fmt: skip
        proc = Proc(popen, name)
        self.procs.append(proc)
        return proc

    def run(self, host: Host, args: list[str], timeout: float, env: dict | None = None,
            helium: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
        """Runs `helium ARGS` (or `python ARGS`) in `host` to completion (bounded by `timeout`)."""
        argv = [HELIUM, *args] if helium else [sys.executable, *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.run(self.command(host, argv), capture_output=True, text=True, env=full_env, cwd=REPO,
                              timeout=timeout)  # fmt: skip

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.popen.wait(timeout=10)
        if self.wire is not None:
            with contextlib.suppress(Exception):
                self.wire.kill()
                self.wire.wait(timeout=10)
        for h in self.hosts.values():
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
        self.hosts.clear()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls `predicate` until it returns something truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)

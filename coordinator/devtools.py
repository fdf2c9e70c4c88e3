"""What `helium dev` needs around the network itself: one network per data dir, a state file the CLI
reads, the faucet, worker supervision, and plain one-line errors for a port already taken.

`<data-dir>/dev.lock` is held (flock) for the life of a `helium dev`, so a second one in the same
folder stops at once with a sentence instead of racing the first for the chain. `<data-dir>/dev.json`
says where the running network answers (gRPC, HTTP, chain RPC) and which creator key it funded; the
CLI reads it to find the coordinator, the admin token and the chain, so nothing needs a flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

__all__ = [
    "DEFAULT_DEV_DIR", "DevDirBusy", "PortInUse", "WorkerSupervisor", "check_port_free", "fund", "lock_dev_dir",
    "read_state", "remove_state", "write_state",
]  # fmt: skip

log = structlog.get_logger("coordinator.dev")
DEFAULT_DEV_DIR = Path(".helium/dev")
ETHER = 10**18


class DevDirBusy(RuntimeError):
    """The data dir is open in another `helium dev` (or coordinator)."""


class PortInUse(RuntimeError):
    """A port the network must bind is held by another process."""


def lock_dev_dir(data_dir: Path, what: str = "helium dev", name: str = "dev.lock") -> int:
    """Takes `<data_dir>/<name>` for this process (released when it exits); DevDirBusy names the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DevDirBusy(f"{data_dir} is already open in another network ({what}, pid {holder}); "
                         f"stop it, or give another --data-dir") from None  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def check_port_free(host: str, port: int, what: str) -> None:
    """Raises PortInUse when `host:port` cannot be bound (port 0 always can). gRPC's own bind error comes
    with a C-core log line and no port named, so the CLI checks first."""
    if port <= 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT socket does not hold the port
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"{what} port {port} on {host} is in use by another process "
                            f"(another helium dev or coordinator?); choose another with --{_flag(what)}, or 0 for a free one") from None  # fmt: skip


def _flag(what: str) -> str:
    return "http-port" if what.lower().startswith("http") else "port"


def write_state(data_dir: Path, **state: Any) -> None:
    path = data_dir / "dev.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **state}, indent=2))
    os.replace(tmp, path)


def remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "dev.json").unlink()


def read_state(data_dir: Path = DEFAULT_DEV_DIR) -> dict[str, Any] | None:
    """The running dev network's state, or None when none runs there (no file, or its process is gone)."""
    try:
        state = json.loads((data_dir / "dev.json").read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


async def fund(data_dir: Path, address: str, amount_wei: int, deposit_key: Any = None) -> str:
    """Sends `amount_wei` from the dev chain's faucet to `address` (over the running network's chain RPC,
    or by opening the chain when no network runs). With `deposit_key` (the address's own key), the tokens
    then go into its TaskLedger deposit, so the key can pay task fees. Returns the faucet's tx hash."""
    from eth_utils import is_address, to_checksum_address

    if not is_address(address):
        raise ValueError(f"address must be a 0x address, got {address!r}")
    address = to_checksum_address(address)
    if amount_wei <= 0:
        raise ValueError(f"amount must be > 0, got {amount_wei} wei")
    state = read_state(data_dir)
    chain_dir = data_dir / "chain"
    if state is not None and state.get("rpc"):
        from chain.client import ChainClient
        from chain.devchain import DevKeys
        from chain.models import ContractAddresses

        meta = json.loads((chain_dir / "devchain.json").read_text())
        keys = DevKeys.from_dict(meta["keys"])
        client = await ChainClient.connect(state["rpc"], keys.faucet, ContractAddresses(**meta["addresses"]))
        try:
            receipt = await client.send_value(address, amount_wei)
            if deposit_key is not None:
                await client.deposit(deposit_key, amount_wei - ETHER // 10)  # the rest pays the gas
        finally:
            await client.close()
        return "0x" + receipt.tx_hash.hex()
    if not (chain_dir / "devchain.json").exists():
        raise ValueError(f"no dev chain in {data_dir}: start `helium dev` (or give --data-dir)")
    from chain.devchain import DevChain
    from chain.errors import DevChainError

    try:
        chain = await DevChain.open(chain_dir)
    except DevChainError as exc:
        raise ValueError(str(exc)) from None
    async with chain:
        receipt = await chain.fund(address, amount_wei)
        if deposit_key is not None:
            await chain.client(deposit_key).deposit(deposit_key, amount_wei - ETHER // 10)
    return "0x" + receipt.tx_hash.hex()


@dataclass
class WorkerSupervisor:
    """Keeps the dev workers running: one that exits is logged with its status and started again after a
    bounded exponential backoff (1 s doubling to `max_backoff_s`; back to 1 s after a minute of running)."""

    start: Callable[[int], subprocess.Popen]
    count: int
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0
    poll_s: float = 0.2
    procs: list[subprocess.Popen] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)
    _started_at: list[float] = field(default_factory=list)
    _backoff: list[float] = field(default_factory=list)
    _stopping: bool = False

    def start_all(self) -> None:
        for i in range(self.count):
            self.procs.append(self.start(i))
            self._started_at.append(time.monotonic())
            self._backoff.append(1.0)
            self.restarts.append(0)

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        pending: dict[int, float] = {}  # worker index -> when to start it again
        while not self._stopping:
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if i in pending:
                    if now >= pending[i] and not self._stopping:
                        del pending[i]
                        self.procs[i] = self.start(i)
                        self._started_at[i] = time.monotonic()
                        self.restarts[i] += 1
                        log.warning("dev_worker_restarted", worker=i, pid=self.procs[i].pid, restarts=self.restarts[i])
                    continue
                rc = p.poll()  # reaps it: no zombie is left behind
                if rc is None:
                    continue
                if now - self._started_at[i] >= self.stable_after_s:
                    self._backoff[i] = 1.0
                delay = self._backoff[i]
                self._backoff[i] = min(delay * 2, self.max_backoff_s)
                pending[i] = now + delay
                log.warning("dev_worker_exited", worker=i, pid=p.pid, exit_status=_describe(rc), restart_in_s=delay)
            await asyncio.sleep(self.poll_s)


def _describe(rc: int) -> str:
    if rc < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    return f"exit {rc}"

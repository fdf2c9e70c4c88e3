"""The embedded dev chain in its own process: a JSON-RPC node over HTTP on loopback.

    python -m chain serve --data-dir DIR [--host 127.0.0.1] [--port 0]      (or `helium chain ...`)

It opens the DevChain of DIR (created on first use: keys, genesis, contracts; reopened at its head after
any stop, `kill -9` included: every request is committed before it is answered), serves web3 JSON-RPC on
``POST /`` (one request or a batch) and prints one line on stdout once it accepts requests::

    ready rpc=http://127.0.0.1:PORT chain_id=1337 ledger=0x... data_dir=DIR

A client talks to it like to a Hardhat node (``AsyncHTTPProvider``; reverts are errors with code 3 and
the revert data; ``evm_increaseTime`` / ``evm_mine`` work). Running the EVM in its own process keeps its
work (execution, receipts, the fsync per block) off the coordinator's interpreter lock. ``--evm`` picks the
backend of a new chain (``revm``, the default, or ``pyevm``); an existing one keeps its own.

``ChainServerProcess`` runs it as a child: ``url = await proc.start()`` waits for the ready line under a
deadline, ``await proc.stop()`` ends it (SIGTERM, then SIGKILL). The child also exits when its parent
dies (its stdin, a pipe from the parent, reaches EOF), so a crashed coordinator leaves no chain behind;
a new child waits (``lock_wait``) for the old one to let go of DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from web3.providers.eth_tester.middleware import request_formatters, result_formatters

from chain.errors import DevChainError

__all__ = ["ChainServerProcess", "main", "serve"]

log = structlog.get_logger(__name__)
READY_PREFIX = "ready rpc="
_FILL_FROM = ("eth_call", "eth_estimateGas", "eth_sendTransaction", "eth_createAccessList")


def _wire(value: Any) -> Any:
    """A formatted eth-tester result as JSON-RPC puts it on the wire: quantities and bytes as 0x-hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _answer_sync(provider, method: str, params: list) -> dict:
    """One JSON-RPC request on the EVM thread: web3's eth-tester formatting in, wire format out."""
    try:
        if method in _FILL_FROM and params and isinstance(params[0], dict) and not params[0].get("from"):
            params = [{**params[0], "from": provider.ethereum_tester.get_accounts()[0]}, *params[1:]]
        fmt = request_formatters.get(method)
        if fmt is not None:
            params = list(fmt(params))
    except Exception as exc:
        return {"error": {"code": -32602, "message": f"{method}: invalid params: {exc}"}}
    response = provider.request_sync(method, params)
    if "error" in response:
        return {"error": response["error"]}
    result = response["result"]
    fmt = result_formatters.get(method)
    return {"result": _wire(fmt(result) if fmt is not None else result)}


class _RpcApp:
    def __init__(self, chain) -> None:
        self.chain = chain

    async def answer(self, item: Any) -> dict:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        params = item.get("params") or []
        if not isinstance(params, list):
            params = [params]
        provider = self.chain.provider
        out = await provider.run(provider.wire, item["method"], params)
        return {"jsonrpc": "2.0", "id": item.get("id"), **out}

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            out: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        else:
            out = [await self.answer(i) for i in body] if isinstance(body, list) else await self.answer(body)
        return web.Response(body=json.dumps(out).encode(), content_type="application/json")


async def _open_chain(data_dir: Path, lock_wait: float, evm: str):
    """Opens the DevChain, waiting up to `lock_wait` seconds for another process to release it."""
    from chain.devchain import DevChain

    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return await DevChain.open(data_dir, evm=evm)
        except DevChainError as exc:
            if "open in another process" not in str(exc) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Sets `stop` when stdin reaches EOF (the parent that holds the pipe has exited)."""

    def run() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=run, name="helium-chain-parent-watch", daemon=True).start()


async def serve(data_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, *,
                lock_wait: timedelta = timedelta(seconds=0), exit_with_parent: bool = False,
                ready=print, evm: str = "revm") -> None:  # fmt: skip
    """Serves the DevChain of `data_dir` until SIGTERM/SIGINT (or stdin EOF with `exit_with_parent`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:
        _watch_stdin(loop, stop)
    chain = await _open_chain(Path(data_dir), lock_wait.total_seconds(), evm)
    runner = None
    try:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/", _RpcApp(chain).handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        log.info("chain_server_ready", rpc=f"http://{host}:{bound}", data_dir=str(data_dir), pid=os.getpid())
        ready(f"{READY_PREFIX}http://{host}:{bound} chain_id={chain.chain_id} ledger={chain.addresses.ledger} "
              f"data_dir={data_dir}")  # fmt: skip
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await chain.close()  # waits for the request in flight and commits it
        log.info("chain_server_stopped", data_dir=str(data_dir))


class ChainServerProcess:
    """`python -m chain serve` as a child process: `url = await start()`, `await stop()`, `kill()`."""

    def __init__(self, data_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 ready_timeout: timedelta = timedelta(seconds=90), lock_wait: timedelta = timedelta(seconds=15),
                 log_level: str = "warning", evm: str = "revm") -> None:  # fmt: skip
        self.data_dir = Path(data_dir)
        self.evm = evm
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.lock_wait = lock_wait
        self.log_level = log_level
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task | None = None
        self._lines: deque[str] = deque(maxlen=20)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "chain-server.log"

    async def start(self) -> str:
        """Starts the child and returns its RPC URL once it is ready (DevChainError if it is not in time).
        The port is kept for later starts, so a restarted chain answers at the same URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parent.parent)  # `-m chain` from any working directory
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
            )  # fmt: skip
        try:
            line = await asyncio.wait_for(self._ready_line(), self.ready_timeout.total_seconds())
        except (TimeoutError, DevChainError) as exc:
            await self.stop(timedelta(seconds=2))
            raise DevChainError(f"chain server for {self.data_dir} not ready within "
                                f"{self.ready_timeout.total_seconds():.0f}s: {exc}; see {self.log_path}") from exc  # fmt: skip
        self.url = line[len("ready rpc="):].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._drain = asyncio.create_task(self._drain_stdout())
        log.info("chain_server_started", rpc=self.url, pid=self.proc.pid, data_dir=str(self.data_dir))
        return self.url

    def command(self) -> list[str]:
        return [sys.executable, "-m", "chain", "serve", "--data-dir", str(self.data_dir), "--host", self.host,
                "--port", str(self.port), "--lock-wait", str(self.lock_wait.total_seconds()), "--exit-with-parent",
                "--log-level", self.log_level, "--evm", self.evm]  # fmt: skip

    async def _ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                rc = await self.proc.wait()
                raise DevChainError(f"chain server exited with {rc} before it was ready")
            line = raw.decode(errors="replace").strip()
            self._lines.append(line)
            if line.startswith(READY_PREFIX):
                return line

    async def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self._lines.append(raw.decode(errors="replace").rstrip())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def kill(self) -> None:
        """SIGKILL (tests: a chain node that dies mid-run)."""
        if self.running:
            self.proc.kill()

    async def stop(self, timeout: timedelta = timedelta(seconds=15)) -> int | None:
        """SIGTERM, and SIGKILL after `timeout`; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout.total_seconds())
            except TimeoutError:
                log.warning("chain_server_kill", pid=proc.pid, data_dir=str(self.data_dir))
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        return proc.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="helium chain", description="Run the embedded dev chain as a JSON-RPC node.")
    p.add_argument("command", nargs="?", default="serve", choices=("serve",))
    p.add_argument("--data-dir", required=True, metavar="DIR", help="the chain's directory (created on first use)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8545, help="0 picks a free port")
    p.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for another process to release DIR")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when stdin reaches EOF")
    p.add_argument("--evm", default="revm", choices=("revm", "pyevm"),
                   help="the EVM of a new chain (an existing one keeps its own)")
    p.add_argument("--log-json", action="store_true")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    from helium.log import configure_logging

    configure_logging(args.log_json, args.log_level)

    def ready(line: str) -> None:
        print(line, flush=True)

    try:
        asyncio.run(serve(args.data_dir, args.host, args.port, lock_wait=timedelta(seconds=args.lock_wait),
                          exit_with_parent=args.exit_with_parent, ready=ready, evm=args.evm))  # fmt: skip
    except DevChainError as exc:
        print(f"helium chain: {exc}", file=sys.stderr)
        return 1
    return 0

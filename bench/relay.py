"""Relay throughput: Put then Get of a 10 MB blob over real gRPC on loopback, against a plain file copy.

The relay runs as its own process (`python -m relay`, as `helium relay` does; bundled in the coordinator
it is the same servicer), the client here signs with a worker key and a coordinator grant. One round
is Put + Get of a fresh 10 MB blob (one durable write and one read, like a copy); the baseline round is
``shutil.copyfile`` of a 10 MB file plus fsync of the copy. Rounds are interleaved; medians compared.
With ``--transport-floor`` each round also moves the same 10 MB up and back through bare gRPC between
two processes (same channel options and chunk size, pre-cut bytes, identity serializers: no hashing,
no disk, no signing), to show how much of the relay's time is the transport itself.
Last line: ``figure=relay_throughput value=<MB/s> unit=MB/s baseline=file_copy ratio=<r>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from eth_account import Account

from chain.signing import DEV_DOMAIN
from relay.auth import make_grant, worker_grant_slots
from relay.client import RelayClient
from relay.config import grpc_options
from relay.store import result_slot

SIZE = 10_000_000
_RAW_SERVICE = "bench.RawBlob"
_READY_TIMEOUT_S = 30


def _identity(b: bytes) -> bytes:
    return b


async def _serve_raw(chunk_bytes: int) -> None:
    """The transport-floor peer: Put drains the stream, Get streams SIZE bytes pre-cut into chunks."""
    data = os.urandom(SIZE)
    chunks = [data[off : off + chunk_bytes] for off in range(0, SIZE, chunk_bytes)]

    async def put(requests, context) -> bytes:
        n = 0
        async for chunk in requests:
            n += len(chunk)
        return str(n).encode()

    async def get(request, context):
        for chunk in chunks:
            yield chunk

    server = grpc.aio.server(options=grpc_options(chunk_bytes))
    handlers = {
        "Put": grpc.stream_unary_rpc_method_handler(put, request_deserializer=_identity, response_serializer=_identity),
        "Get": grpc.unary_stream_rpc_method_handler(get, request_deserializer=_identity, response_serializer=_identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_RAW_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"ready grpc=127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def _start_relay(data_dir: Path, coordinator: str, chunk_bytes: int) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIUM_")}
    env["HELIUM_CHUNK_BYTES"] = str(chunk_bytes)
    cmd = [sys.executable, "-m", "relay", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--coordinator-address", coordinator, "--max-blob-bytes", str(64 << 20)]
    return _start(cmd, env)


def _start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + _READY_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready grpc="):
            return proc, line.split("=", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{cmd[2]} did not print its ready line within {_READY_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _raw_round(channel: grpc.aio.Channel, chunks: list[bytes]) -> float:
    """Seconds for one bare Put then Get of the same size through the transport-floor peer."""

    async def requests():
        for chunk in chunks:
            yield chunk

    put = channel.stream_unary(f"/{_RAW_SERVICE}/Put", request_serializer=_identity, response_deserializer=_identity)
    get = channel.unary_stream(f"/{_RAW_SERVICE}/Get", request_serializer=_identity, response_deserializer=_identity)
    t = time.perf_counter()
    assert int(await put(requests())) == SIZE
    got = 0
    async for chunk in get(b""):
        got += len(chunk)
    elapsed = time.perf_counter() - t
    assert got == SIZE
    return elapsed


def _copy_round(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t
    dst.unlink()
    return elapsed


async def _run(rounds: int, chunk_bytes: int, work: Path, floor: bool = False) -> tuple[float, float, float | None]:
    """Medians of (relay put+get, file copy, bare-gRPC put+get if `floor`) in seconds."""
    coordinator, worker = Account.create(), Account.create()
    proc, address = _start_relay(work / "relay", coordinator.address, chunk_bytes)
    raw = _start([sys.executable, "-m", "bench.relay", "--raw-server", "--chunk-bytes", str(chunk_bytes)]) if floor else None
    src = work / "src.bin"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    chunks = [data[off : off + chunk_bytes] for off in range(0, SIZE, chunk_bytes)]
    relay_times: list[float] = []
    copy_times: list[float] = []
    raw_times: list[float] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(address, options=grpc_options(chunk_bytes)))
            raw_channel = None
            if raw:
                raw_channel = await stack.enter_async_context(grpc.aio.insecure_channel(raw[1], options=grpc_options(chunk_bytes)))
            client = RelayClient(channel, worker, DEV_DOMAIN, chunk_bytes=chunk_bytes)
            read, write = worker_grant_slots(worker.address)
            for i in range(rounds + 1):  # round 0 warms up the channel and caches
                task_id = "0x" + secrets.token_hex(32)
                read_own = [*read, result_slot(worker.address)]
                grant = make_grant(coordinator, DEV_DOMAIN, task_id, worker.address, read_own, write, int(time.time()) + 600)
                t = time.perf_counter()
                await client.put(task_id, result_slot(worker.address), data, grant)
                t_put = time.perf_counter() - t
                back = await client.get(task_id, result_slot(worker.address), grant)
                elapsed = time.perf_counter() - t
                assert back == data, "relay returned different bytes"
                copy_elapsed = _copy_round(src, work / "dst.bin")
                raw_elapsed = await _raw_round(raw_channel, chunks) if raw_channel else None
                if i:
                    relay_times.append(elapsed)
                    copy_times.append(copy_elapsed)
                    if raw_elapsed is not None:
                        raw_times.append(raw_elapsed)
                print(
                    f"round {i}: relay put+get {elapsed * 1e3:7.1f} ms (put {t_put * 1e3:5.1f}, "
                    f"get {(elapsed - t_put) * 1e3:5.1f})   file copy {copy_elapsed * 1e3:7.1f} ms"
                    + (f"   bare gRPC put+get {raw_elapsed * 1e3:7.1f} ms" if raw_elapsed is not None else "")
                )
    finally:
        _stop(proc)
        if raw:
            _stop(raw[0])
    raw_median = statistics.median(raw_times) if raw_times else None
    return statistics.median(relay_times), statistics.median(copy_times), raw_median


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--chunk-bytes", type=int, default=1 << 20)
    p.add_argument("--transport-floor", action="store_true", help="also time bare gRPC put+get of the same bytes")
    p.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)  # the transport-floor peer
    args = p.parse_args(argv)
    if args.raw_server:
        asyncio.run(_serve_raw(args.chunk_bytes))
        return 0
    with tempfile.TemporaryDirectory(prefix="helium-bench-relay-") as tmp:
        relay_s, copy_s, raw_s = asyncio.run(_run(args.rounds, args.chunk_bytes, Path(tmp), args.transport_floor))
    mb = SIZE / 1e6
    value, baseline = mb / relay_s, mb / copy_s
    print(f"relay put+get median {relay_s * 1e3:.1f} ms = {value:.0f} MB/s; file copy median {copy_s * 1e3:.1f} ms = {baseline:.0f} MB/s")
    if raw_s is not None:
        print(f"bare gRPC put+get median {raw_s * 1e3:.1f} ms = {mb / raw_s:.0f} MB/s: ratio {copy_s / raw_s:.2f} with no relay work at all")
    print(f"figure=relay_throughput value={value:.1f} unit=MB/s baseline=file_copy ratio={value / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

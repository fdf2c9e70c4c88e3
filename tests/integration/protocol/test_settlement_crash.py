"""kill -9 the coordinator between sending a settlement transaction and seeing its receipt.

A real coordinator process on the embedded chain (persisted in its data directory) and three real worker
processes (four: a spare replaces a lapsed lease). The first run has the test hook HELIUM_TEST_KILL_AFTER_SETTLE_SEND=1: it SIGKILLs itself right
after its first settle transaction is sent. The restart (no hook) reconciles the journaled batch with the
chain and settles the rest: every node is paid exactly once, and the creator is charged exactly once.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from chain.devchain import DevChain
from chain.signing import load_or_create_key
from coordinator.service.qos import fee_split
from coordinator.service.settlement import TEST_KILL_AFTER_SEND_ENV
from helium.client import TaskClient
from helium.v1 import task_pb2
from tests.support.network import gpt_args
from tests.support.procs import spawn

pytestmark = pytest.mark.slow


def _coordinator(data, port: int, kill_hook: bool):
    env = {"HELIUM_BATCH_MAX_TASKS": "4", "HELIUM_BATCH_INTERVAL": "0.5"}
    if kill_hook:
        env[TEST_KILL_AFTER_SEND_ENV] = "1"
    return spawn(["-m", "coordinator", "--data-dir", str(data), "--port", str(port), "--chain", "embedded",
                  "--heartbeat-interval-s", "0.3", "--log-level", "warning"], "coordinator", env=env)  # fmt: skip


def _worker(tmp_path, i: int, address: str):
    return spawn(["-m", "tests.support.worker_proc", "--coordinator", address, "--data-dir", str(tmp_path / f"w{i}"),
                  "--delay", "0.05"], f"w{i}")  # fmt: skip


async def test_kill9_between_settle_send_and_receipt_pays_everyone_once(tmp_path):
    data = tmp_path / "coord"
    keys = [load_or_create_key(tmp_path / f"w{i}" / "keys" / "node-0.key") for i in range(4)]
    async with await DevChain.open(data / "chain") as chain:
        for k in keys:
            await chain.fund_and_stake(k)
        creator = chain.keys.creator
        deposit_before = await chain.client().deposit_balance(creator.address)
    coord = _coordinator(data, 0, kill_hook=True)
    workers = []
    try:
        address = coord.wait_for("ready", 90).split("grpc=")[1].split()[0]
        port = int(address.rsplit(":", 1)[1])
        workers = [_worker(tmp_path, i, address) for i in range(4)]
        for w in workers:
            await asyncio.to_thread(w.wait_for, "ready", 60)
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator, rpc_timeout=10)
            ids = [await client.submit(gpt_args(f"crash {i}"), fee=1_000_000 + 7 * i) for i in range(10)]
        # The hook fires on the first batch: the process dies with the transaction sent, unconfirmed.
        rc = await asyncio.to_thread(coord.popen.wait, 60)
        assert rc == -9, coord.tail()
        assert any("test_hook_kill_after_settle_send" in line for line in coord.lines), coord.tail()

        coord = _coordinator(data, port, kill_hook=False)
        coord.wait_for("ready", 90)
        for i, w in enumerate(workers):  # a worker whose reconnects ran out during a slow restart comes back
            if w.popen.poll() is not None:
                workers[i] = _worker(tmp_path, i, address)
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator, rpc_timeout=10)
            deadline = time.monotonic() + 120
            while True:
                tasks = [await client.get(i) for i in ids]
                if all(t.state == task_pb2.TASK_STATE_SETTLED for t in tasks):
                    break
                assert time.monotonic() < deadline, ([task_pb2.TaskState.Name(t.state) for t in tasks], coord.tail(),
                                                     [w.tail(5) for w in workers])  # fmt: skip
                await asyncio.sleep(0.2)
        assert coord.terminate() == 0, coord.tail()
    finally:
        for w in workers:
            w.kill9()
        coord.kill9()

    expected: dict[str, int] = {}
    for t in tasks:
        winners = [a for a in t.assignments if a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED and a.matched]
        for a, part in zip(winners, fee_split(int(t.fee), [a.submission_order for a in winners]), strict=True):
            expected[a.node] = expected.get(a.node, 0) + part
    async with await DevChain.open(data / "chain") as chain:
        c = chain.client()
        for k in keys:
            assert await c.credit_of(k.address) == expected.get(k.address, 0)
        assert deposit_before - await c.deposit_balance(creator.address) == sum(int(t.fee) for t in tasks)
        settled = [e for e in await c.events() if e.name == "TaskSettled"]
        assert sorted("0x" + e.args["taskId"].hex() for e in settled) == sorted(ids)

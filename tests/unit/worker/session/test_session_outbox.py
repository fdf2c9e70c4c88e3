"""Unacknowledged results live on disk (worker._outbox): written before they are sent, read back and re-sent
by the next run of the node, a torn journal tail dropped, the journal emptied once everything is acked."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from _session_fakes import assignment, fast_config, gpt_args, new_key

from helium.v1 import worker_pb2
from worker import _outbox
from worker._outbox import ResultOutbox, outbox_path
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor

pytestmark = pytest.mark.timeout(30)

PROFILE = NodeProfile(card_name="Fake GPU 24GB", vram_bytes=24 << 30, device="cuda:0")


def _msg(aid: str, payload: bytes = b"out") -> worker_pb2.ConnectRequest:
    return worker_pb2.ConnectRequest(result=worker_pb2.Result(assignment_id=aid, task_id="0x" + "11" * 32,
                                                              result_hash=b"\x01" * 32, inline_output=payload))


async def test_a_result_is_on_disk_before_it_is_sent_and_a_new_run_of_the_node_sends_it_again(fake, tmp_path):
    key = new_key()
    cfg = fast_config(fake.address, tmp_path)
    journal = outbox_path(tmp_path, key.address)
    async with WorkerNode(cfg, key, [InstantExecutor("gpt")], profile=PROFILE):
        first = await fake.next_stream()
        a = assignment(gpt_args(seed=3))
        first.send(assignment=a)
        sent = await first.recv("result")
        assert journal.stat().st_size > 0  # fsynced before the send: the coordinator holds no ack yet
        first.end(grpc.StatusCode.UNAVAILABLE, "gone")
    # The node (its process, in production) is gone without the ack; a new run of it finds the result.
    async with WorkerNode(cfg, key, [InstantExecutor("gpt")], profile=PROFILE) as again:
        assert a.assignment_id in again.jobs.outbox
        stream = await fake.next_stream()
        resent = await stream.recv("result")
        assert resent == sent  # the same signed result, no assignment needed
        stream.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
        await asyncio.wait_for(again.jobs.delivered(), 3)
        assert _outbox._parse(journal.read_bytes())[0] == {}  # the ack is journaled: nothing waits on disk
    assert not journal.exists()  # closed with nothing waiting: nothing left behind
    async with WorkerNode(cfg, key, [InstantExecutor("gpt")], profile=PROFILE) as third:
        assert not third.jobs.outbox
        stream = await fake.next_stream()
        await stream.recv("heartbeat")
        assert not any(m.WhichOneof("msg") == "result" for m in stream.seen)  # acked: never sent again


async def test_torn_tail_is_dropped_and_acked_records_stay_acked(tmp_path):
    path = tmp_path / "outbox" / "node.journal"
    box = ResultOutbox(path)
    box.load()
    for aid in ("a-1", "a-2", "a-3"):
        assert await box.put(aid, _msg(aid))
    box.ack("a-2")
    await box.close()
    whole = path.read_bytes()
    path.write_bytes(whole + _outbox._record(_outbox._PUT, "a-4", _msg("a-4").SerializeToString())[:-3])
    again = ResultOutbox(path)
    assert again.load() == 2
    assert list(again) == ["a-1", "a-3"] and again.values()[1] == _msg("a-3")
    assert path.read_bytes() == b"".join(_outbox._parse(whole)[0].values())  # rewritten without the tail
    again.ack("a-1")
    again.ack("a-3")
    await again.close()
    assert not path.exists()


async def test_journal_starts_over_once_it_has_grown_and_nothing_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(_outbox, "_RESTART_BYTES", 2048)
    path = tmp_path / "j"
    box = ResultOutbox(path)
    sizes = []
    for i in range(40):
        await box.put(f"a-{i}", _msg(f"a-{i}", b"x" * 100))
        box.ack(f"a-{i}")
        sizes.append(path.stat().st_size)
    assert max(sizes) <= 2048 and 0 in sizes  # emptied now and then, not after every result
    await box.put("last", _msg("last"))
    await box.close()
    back = ResultOutbox(path)
    assert back.load() == 1 and list(back) == ["last"]  # what waits survives the restarts of the file


async def test_journal_is_rewritten_when_it_grows_and_never_loses_a_waiting_result(tmp_path, monkeypatch):
    monkeypatch.setattr(_outbox, "_COMPACT_BYTES", 4096)
    path = tmp_path / "j"
    box = ResultOutbox(path)
    await box.put("keep", _msg("keep"))  # one result always waits, so the journal is never emptied
    for i in range(200):
        await box.put(f"a-{i}", _msg(f"a-{i}", b"x" * 100))
        box.ack(f"a-{i}")
    await box.put("last", _msg("last"))
    assert path.stat().st_size < 4096 + 400  # rewritten, not 200 records long
    await box.close()
    back = ResultOutbox(path)
    assert back.load() == 2 and list(back) == ["keep", "last"]


async def test_a_failed_write_still_delivers_from_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    box = ResultOutbox(blocker / "outbox" / "j")  # its parent cannot be made
    assert await box.put("a-1", _msg("a-1")) is False
    assert "a-1" in box and box.failures == 1
    await box.close()


async def test_durable_results_off_writes_nothing(fake, tmp_path):
    key = new_key()
    async with WorkerNode(fast_config(fake.address, tmp_path, durable_results=False), key,
                          [InstantExecutor("gpt")], profile=PROFILE) as node:
        stream = await fake.next_stream()
        stream.send(assignment=assignment())
        await stream.recv("result")
        assert "a-1" in node.jobs.outbox
    assert not (tmp_path / "outbox").exists()

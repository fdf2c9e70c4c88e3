"""The node's stream against a scripted coordinator: register, heartbeats, results, errors, cancel, relay."""

from __future__ import annotations

import asyncio
import json

import pytest
from _session_fakes import DOMAIN, assignment, fast_config, gpt_args, new_key

from chain import signing
from helium.tasks import canonical_args
from helium.v1 import sd_pb2, task_pb2, worker_pb2
from worker._jobs import INVALID_ARGS_HASH
from worker.session import NodeProfile, WorkerNode
from worker.testing import FailingExecutor, InstantExecutor, SlowExecutor, instant_result_hash

pytestmark = pytest.mark.timeout(30)

PROFILE = NodeProfile(card_name="Fake GPU 24GB", vram_bytes=24 << 30, device="cuda:0", free_vram=lambda: 20 << 30)


def node_for(fake, tmp_path, executors=None, **overrides) -> WorkerNode:
    return WorkerNode(fast_config(fake.address, tmp_path, **overrides), new_key(),
                      executors or [InstantExecutor("gpt")], profile=PROFILE, **overrides.pop("node_kwargs", {}))


def task_id_bytes(task_id: str) -> bytes:
    return bytes.fromhex(task_id[2:])


async def test_register_signed_nodeinfo_and_heartbeats(fake, tmp_path):
    ex = [InstantExecutor("gpt", loaded_models=("tiny/gpt",)), InstantExecutor("sd", cached_models=("tiny/sd",))]
    async with node_for(fake, tmp_path, ex) as node:
        stream = await fake.next_stream()
        assert fake.bad_signatures == 0  # the fake checked the Register signature with chain.signing
        info = stream.info
        assert info.address == node.address == stream.hello.address
        assert (info.card.name, info.card.vram_bytes, info.free_vram_bytes) == ("Fake GPU 24GB", 24 << 30, 20 << 30)
        assert info.device == "cuda:0"
        assert list(info.task_types) == [task_pb2.TASK_TYPE_GPT, task_pb2.TASK_TYPE_SD]
        assert list(info.loaded_models) == ["tiny/gpt"] and list(info.cached_models) == ["tiny/sd"]
        assert "instant" in info.backends and "float32" in info.dtypes and list(info.quantize_bits) == [4, 8]
        assert node.domain == DOMAIN
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = await stream.recv("heartbeat")
        await stream.recv("heartbeat")
        assert loop.time() - t0 < 1.0  # every 150 ms as the coordinator asked
        assert first.free_vram_bytes == 20 << 30 and list(first.loaded_models) == ["tiny/gpt"]


async def test_an_idle_node_heartbeats_at_the_idle_interval_and_a_busy_one_at_the_lease_interval(fake, tmp_path):
    fake.heartbeat_ms, fake.idle_heartbeat_ms = 100, 1500
    async with node_for(fake, tmp_path, [SlowExecutor(1.0)]):
        stream = await fake.next_stream()
        await stream.recv("heartbeat")  # the first one says where the node stands
        await stream.nothing("heartbeat", within=0.8)  # idle, nothing changed: no lease to keep
        a = assignment(gpt_args(seed=9))
        stream.send(assignment=a)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        beats = [await stream.recv("heartbeat") for _ in range(3)]
        assert loop.time() - t0 < 0.7  # every 100 ms while it holds the assignment
        assert all(list(b.running_assignments) == [a.assignment_id] for b in beats)
        await stream.recv("result", within=3)
        after = await stream.recv("heartbeat")  # idle again: said once, at once
        assert list(after.running_assignments) == []


async def test_a_task_longer_than_the_report_threshold_is_reported_started_before_its_result(fake, tmp_path):
    async with node_for(fake, tmp_path, [InstantExecutor("gpt", delay=0.4)]):
        stream = await fake.next_stream()
        a = assignment(gpt_args(seed=8))
        stream.send(assignment=a)
        assert (await stream.recv("started")).assignment_id == a.assignment_id
        assert (await stream.recv("result")).assignment_id == a.assignment_id
        kinds = [m.WhichOneof("msg") for m in stream.seen]
        assert kinds.index("started") < kinds.index("result")


async def test_instant_task_sends_its_signed_result_without_a_started_report_then_takes_the_ack(fake, tmp_path):
    ex = InstantExecutor("gpt")
    async with node_for(fake, tmp_path, [ex]) as node:
        stream = await fake.next_stream()
        a = assignment(gpt_args(seed=7))
        stream.send(assignment=a)
        result = await stream.recv("result")
        assert "started" not in [m.WhichOneof("msg") for m in stream.seen]
        assert (result.assignment_id, result.task_id) == (a.assignment_id, a.task_id)
        assert result.result_hash == instant_result_hash("gpt", a.args.gpt)
        signer = signing.result_signer(DOMAIN, task_id_bytes(a.task_id), result.result_hash, node.address,
                                       result.signature)
        assert signer == node.address
        doc = json.loads(result.inline_output)
        assert doc["object"] == "chat.completion" and doc["model"] == "tiny/gpt"
        assert result.stats.completion_tokens == 2 and not result.output_slots
        assert ex.jobs[0].spec == a.args.gpt and ex.jobs[0].task_id == a.task_id
        hb = await stream.recv("heartbeat")
        assert list(hb.running_assignments) == []
        assert a.assignment_id in node.jobs.outbox
        stream.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
        await asyncio.wait_for(node.jobs.delivered(), 2)
        assert not node.jobs.outbox


async def test_one_assignment_at_a_time(fake, tmp_path):
    ex = SlowExecutor(0.3)
    async with node_for(fake, tmp_path, [ex]) as node:
        stream = await fake.next_stream()
        a1, a2 = assignment(aid="a-1"), assignment(aid="a-2")
        stream.send(assignment=a1)
        stream.send(assignment=a2)
        await stream.recv("started")
        hb = await stream.recv("heartbeat")
        assert list(hb.running_assignments) == ["a-1", "a-2"]
        r1 = await stream.recv("result")
        s2 = await stream.recv("started")
        r2 = await stream.recv("result")
        assert (r1.assignment_id, s2.assignment_id, r2.assignment_id) == ("a-1", "a-2", "a-2")
        assert node.jobs.completed == 2


@pytest.mark.parametrize("kind", [worker_pb2.ERROR_KIND_INVALID_ARGS, worker_pb2.ERROR_KIND_OUT_OF_MEMORY,
                                  worker_pb2.ERROR_KIND_CRASH])
async def test_error_report_kinds(fake, tmp_path, kind):
    async with node_for(fake, tmp_path, [FailingExecutor(kind, message="boom: field x")]) as node:
        stream = await fake.next_stream()
        a = assignment()
        stream.send(assignment=a)
        err = await stream.recv("error")
        assert (err.assignment_id, err.task_id, err.kind) == (a.assignment_id, a.task_id, kind)
        assert err.message == "boom: field x"
        if kind == worker_pb2.ERROR_KIND_INVALID_ARGS:
            assert INVALID_ARGS_HASH == signing.INVALID_ARGS_HASH
            signer = signing.result_signer(DOMAIN, task_id_bytes(a.task_id), INVALID_ARGS_HASH, node.address,
                                           err.signature)
            assert signer == node.address
        else:
            assert err.signature == b""
        assert a.assignment_id in node.jobs.outbox


async def test_unexpected_exception_is_a_crash_and_missing_executor_too(fake, tmp_path):
    class Broken(InstantExecutor):
        def run(self, job):
            raise RuntimeError("bug in executor")

    async with node_for(fake, tmp_path, [Broken("gpt")]) as node:
        stream = await fake.next_stream()
        stream.send(assignment=assignment(aid="a-1"))
        err = await stream.recv("error")
        assert err.kind == worker_pb2.ERROR_KIND_CRASH and "bug in executor" in err.message
        sd = task_pb2.TaskArgs(sd=sd_pb2.SdTask(base_model=sd_pb2.SdModel(name="tiny/sd"), prompt="cat"))
        stream.send(assignment=assignment(sd, aid="a-2"))
        err = await stream.recv("error")
        assert err.kind == worker_pb2.ERROR_KIND_CRASH and "no sd executor" in err.message
        assert node.connected


async def test_cancel_sends_nothing_and_frees_the_node(fake, tmp_path):
    ex = SlowExecutor(5.0)
    async with node_for(fake, tmp_path, [ex]) as node:
        stream = await fake.next_stream()
        a = assignment(aid="a-1")
        stream.send(assignment=a)
        await stream.recv("started")
        stream.send(cancel=worker_pb2.CancelAssignment(assignment_id="a-1", task_id=a.task_id, reason="quorum"))
        # The slow job sees its cancel flag and stops; the node takes the next assignment at once.
        stream.send(assignment=assignment(aid="a-2"))
        s2 = await stream.recv("started", within=2)
        assert s2.assignment_id == "a-2"
        assert ex.jobs[0].is_cancelled()
        assert not any(m.WhichOneof("msg") in ("result", "error") and "a-1" in str(m) for m in stream.seen)
        assert "a-1" not in node.jobs.outbox


@pytest.mark.parametrize("executor", [InstantExecutor("gpt"), SlowExecutor(0.05)], ids=["inline", "thread"])
async def test_stream_deltas_are_forwarded_in_order(fake, tmp_path, executor):
    async with node_for(fake, tmp_path, [executor]) as node:
        stream = await fake.next_stream()
        a = assignment(stream_deltas=True)
        stream.send(assignment=a)
        await stream.recv("result")
        deltas = [m.delta for m in stream.seen if m.WhichOneof("msg") == "delta"]
        assert [d.seq for d in deltas] == list(range(len(deltas))) and len(deltas) >= 3
        assert all(d.task_id == a.task_id and d.node == node.address for d in deltas)
        chunks = [json.loads(d.chunk_json) for d in deltas]
        assert chunks[0]["object"] == "chat.completion.chunk"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class MemoryRelay:
    """In-memory stand-in for relay.client.RelayClient (the real one is tested in tests/unit/relay)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.grants: list = []

    def factory(self, channel, key, domain):
        self.key, self.domain = key, domain
        return self

    async def put(self, task_id, slot, data, grant=None):
        assert (task_id, slot) not in self.blobs, "slots are write-once"
        self.blobs[(task_id, slot)] = data
        self.grants.append(grant)
        return "sha"

    async def get(self, task_id, slot, grant=None):
        self.grants.append(grant)
        return self.blobs[(task_id, slot)]


async def test_args_from_relay_and_outputs_to_relay(fake, tmp_path):
    relay = MemoryRelay()
    sd_args = task_pb2.TaskArgs(sd=sd_pb2.SdTask(base_model=sd_pb2.SdModel(name="tiny/sd"), prompt="a cat",
                                                 task_config=sd_pb2.SdTaskConfig(num_images=2, seed=3)))
    cfg = fast_config(fake.address, tmp_path, max_inline_output_bytes=16)
    node = WorkerNode(cfg, new_key(), [InstantExecutor("sd")], profile=PROFILE, relay_factory=relay.factory)
    async with node:
        stream = await fake.next_stream()
        a = assignment(sd_args)
        a.ClearField("args")  # too large to inline: the worker reads the canonical JSON from the relay
        a.type = task_pb2.TASK_TYPE_SD
        a.grant.CopyFrom(task_pb2.RelayGrant(task_id=a.task_id, grantee=node.address, read_slots=["input"]))
        relay.blobs[(a.task_id, "input")] = canonical_args(sd_args)
        stream.send(assignment=a)
        result = await stream.recv("result")
        base = f"result/{node.address}"
        assert list(result.output_slots) == [f"{base}/0", f"{base}/1", f"{base}/output"]
        assert result.inline_output == b""  # larger than max_inline_output_bytes
        assert json.loads(relay.blobs[(a.task_id, f"{base}/output")])["images"][1]["index"] == 1
        assert len(result.phashes) == 2 and result.stats.images == 2
        assert result.result_hash == instant_result_hash("sd", sd_args.sd)
        assert all(g is not None and g.grantee == node.address for g in relay.grants)
        assert relay.key is node.key and relay.domain == DOMAIN


async def test_a_gpt_output_travels_inline_for_the_coordinator_to_recompute_its_hash(fake, tmp_path):
    """Only inline GPT outputs can be checked against their signed hash: past the SD threshold they stay inline."""
    relay = MemoryRelay()
    cfg = fast_config(fake.address, tmp_path, max_inline_output_bytes=16)
    node = WorkerNode(cfg, new_key(), [InstantExecutor("gpt")], profile=PROFILE, relay_factory=relay.factory)
    async with node:
        stream = await fake.next_stream()
        stream.send(assignment=assignment())
        result = await stream.recv("result")
        assert len(result.inline_output) > 16 and list(result.output_slots) == [] and not relay.blobs


async def test_fleet_of_in_process_nodes_with_a_liar(fake, tmp_path):
    from worker.testing import LyingExecutor, NodeFleet

    cfg = fast_config(fake.address, tmp_path)
    executors = lambda i: [LyingExecutor("gpt") if i == 2 else InstantExecutor("gpt")]  # noqa: E731
    async with NodeFleet(fake.address, 3, executors=executors, config=cfg) as fleet:
        streams = [await fake.next_stream() for _ in range(3)]
        assert {s.info.address for s in streams} == {n.address for n in fleet.nodes}
        args = gpt_args(seed=5)
        hashes = {}
        for s in streams:
            s.send(assignment=assignment(args, aid=f"a-{s.info.address}"))
            hashes[s.info.address] = (await s.recv("result")).result_hash
        liar = fleet.nodes[2].address
        honest = {h for a, h in hashes.items() if a != liar}
        assert honest == {instant_result_hash("gpt", args.gpt)} and hashes[liar] not in honest


async def test_cancel_of_a_queued_assignment_never_starts_it(fake, tmp_path):
    async with node_for(fake, tmp_path, [SlowExecutor(0.3)]) as node:
        stream = await fake.next_stream()
        stream.send(assignment=assignment(aid="a-1"))
        stream.send(assignment=assignment(aid="a-2"))
        await stream.recv("started")
        stream.send(cancel=worker_pb2.CancelAssignment(assignment_id="a-2", reason="quorum reached"))
        assert (await stream.recv("result")).assignment_id == "a-1"
        stream.send(assignment=assignment(aid="a-3"))
        assert (await stream.recv("started")).assignment_id == "a-3"
        started = [m.started.assignment_id for m in stream.seen if m.WhichOneof("msg") == "started"]
        assert started == ["a-1", "a-3"]
        assert node.jobs.running_ids() == ["a-3"]

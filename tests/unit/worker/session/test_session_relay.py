"""The node against the real bundled relay: it reads its input with the coordinator's grant and stores
its outputs under its own result slots, where the coordinator reads them back."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from _session_fakes import DOMAIN, FakeCoordinator, assignment, fast_config, new_key

from helium.tasks import canonical_args
from helium.v1 import sd_pb2, task_pb2, worker_pb2_grpc
from relay.auth import make_grant, worker_grant_slots
from relay.client import RelayClient
from relay.config import RelayConfig
from relay.server import add_relay_to_server
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor, instant_result_hash

pytestmark = pytest.mark.timeout(30)


async def test_input_from_and_outputs_to_the_real_relay(tmp_path):
    coordinator_key = new_key()
    server = grpc.aio.server()
    fake = FakeCoordinator()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
    add_relay_to_server(server, RelayConfig(data_dir=tmp_path / "relay", coordinator_address=coordinator_key.address,
                                            chain_id=DOMAIN.chain_id, verifying_contract=DOMAIN.verifying_contract))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        as_coordinator = RelayClient(channel, coordinator_key, DOMAIN)
        cfg = fast_config(f"127.0.0.1:{port}", tmp_path, max_inline_output_bytes=16)
        node = WorkerNode(cfg, new_key(), [InstantExecutor("sd")],
                          profile=NodeProfile(card_name="Fake GPU", vram_bytes=1 << 30, device="cuda:0"))
        async with node:
            stream = await fake.next_stream()
            args = task_pb2.TaskArgs(sd=sd_pb2.SdTask(base_model=sd_pb2.SdModel(name="tiny/sd"), prompt="a cat",
                                                      task_config=sd_pb2.SdTaskConfig(num_images=2, seed=3)))
            a = assignment(args)
            a.ClearField("args")  # "too large to inline": only the relay has it
            a.type = task_pb2.TASK_TYPE_SD
            await as_coordinator.put(a.task_id, "input", canonical_args(args))
            read, write = worker_grant_slots(node.address)
            a.grant.CopyFrom(make_grant(coordinator_key, DOMAIN, a.task_id, node.address, read, write,
                                        int(time.time()) + 600))
            stream.send(assignment=a)
            result = await stream.recv("result", within=10)
            base = f"result/{node.address}"
            assert list(result.output_slots) == [f"{base}/0", f"{base}/1", f"{base}/output"]
            assert result.result_hash == instant_result_hash("sd", args.sd)  # ran on the args it read
            manifest = json.loads(await as_coordinator.get(a.task_id, f"{base}/output"))
            assert [img["index"] for img in manifest["images"]] == [0, 1]
            image = await as_coordinator.get(a.task_id, f"{base}/1")
            assert image.startswith(b"\x89PNG")  # a real PNG: the coordinator checks its pHash
    finally:
        await channel.close()
        await server.stop(grace=None)

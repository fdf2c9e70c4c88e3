"""Relay attacks (issue #13, the attack suite, attacks 16-17) on the relay bundled in a real coordinator
(port 0): two scripted nodes of one SD task hold the relay grants the coordinator sent with their
assignments; one writes to the other's result slot, and signed requests are replayed."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from _protocol_harness import RawNode

from helium.v1 import relay_pb2, relay_pb2_grpc
from relay.auth import GET, PUT, build_auth
from relay.client import RelayClient
from relay.errors import PermissionDeniedError
from relay.store._names import result_slot
from tests.adversarial.conftest import honest, sd_args

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pair(attack):
    """(x, h, x's assignment, h's assignment): two joined RawNodes holding assignments of one SD task."""
    await attack.nodes(1, honest("sd", seconds=5.0))
    x, h = RawNode(attack.net.address), RawNode(attack.net.address)
    await x.join()
    await h.join()
    await attack.submit(sd_args(1))
    ax, ah = await x.next("assignment"), await h.next("assignment")
    assert ax.HasField("grant") and ah.HasField("grant")
    yield x, h, ax, ah
    await x.close()
    await h.close()


def _put_messages(tid: str, slot: str, data: bytes, auth: relay_pb2.RelayAuth):
    header = relay_pb2.PutHeader(task_id=tid, slot=slot, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                 auth=auth)  # fmt: skip
    return [relay_pb2.PutRequest(header=header), relay_pb2.PutRequest(chunk=data)]


async def test_16_a_write_to_another_nodes_slot_is_refused_and_the_slot_keeps_its_bytes(attack, pair):
    x, h, ax, ah = pair
    tid = ah.task_id
    theirs = result_slot(h.address, 0)
    await RelayClient(h.channel, h.key, h.domain).put(tid, theirs, b"legit image", ah.grant)
    xr = RelayClient(x.channel, x.key, x.domain, attempts=1)
    attempts = [
        (result_slot(h.address, 0), ax.grant),  # overwrite h's image with x's own grant
        (result_slot(h.address, 1), ax.grant),  # fill an empty slot of h's
        (result_slot(h.address), ax.grant),
        (result_slot(h.address, 0), ah.grant),  # present h's grant (it names h as grantee, not x)
    ]
    for slot, grant in attempts:
        with pytest.raises(PermissionDeniedError) as err:
            await xr.put(tid, slot, b"forged image", grant)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, (slot, err.value)
    # A grant x rewrote to include h's slot: the coordinator's signature no longer holds.
    forged = type(ax.grant)()
    forged.CopyFrom(ax.grant)
    forged.write_slots.append(theirs)
    with pytest.raises(PermissionDeniedError):
        await xr.put(tid, theirs, b"forged image", forged)
    coordinator = RelayClient(x.channel, attack.net.app.key, x.domain)
    assert await coordinator.get(tid, theirs) == b"legit image"
    with pytest.raises(Exception, match="not found|NOT_FOUND|does not exist"):
        await coordinator.get(tid, result_slot(h.address, 1))
    await xr.put(tid, result_slot(x.address, 0), b"x's own image", ax.grant)  # its own slot: allowed


async def test_17_a_replayed_relay_request_is_refused(attack, pair):
    x, h, ax, ah = pair
    tid = ah.task_id
    stub = relay_pb2_grpc.RelayServiceStub(h.channel)
    data, slot = b"first write", result_slot(h.address, 0)
    auth = build_auth(h.key, h.domain, PUT, tid, slot, hashlib.sha256(data).digest(), ah.grant)
    got = await stub.Put(iter(_put_messages(tid, slot, data, auth)), timeout=10)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the same signed Put again (x captured it)
        await relay_pb2_grpc.RelayServiceStub(x.channel).Put(iter(_put_messages(tid, slot, data, auth)), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "replayed" in err.value.details()
    # A Get the coordinator signed, captured and replayed: the first read works, the replay does not.
    read = build_auth(attack.net.app.key, x.domain, GET, tid, slot)
    chunks = [m async for m in stub.Get(relay_pb2.GetRequest(task_id=tid, slot=slot, auth=read), timeout=10)]
    assert b"".join(m.chunk for m in chunks if m.WhichOneof("part") == "chunk") == data
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in relay_pb2_grpc.RelayServiceStub(x.channel).Get(
                relay_pb2.GetRequest(task_id=tid, slot=slot, auth=read), timeout=10):  # fmt: skip
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "replayed" in err.value.details()

"""Access-control attacks: nobody reads what is not theirs (issue #13 item 6).

Each test runs a real coordinator with its embedded gateway on a real port and three real node sessions
(test-double executors), and attacks it with real clients: httpx, the official `openai` client and the
generated gRPC stubs.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import openai
import pytest
from _access_harness import GPT_MODEL, SD_MODEL, access_net
from eth_account import Account

from chain import signing
from coordinator.gateway._access import ImageUrls
from coordinator.gateway.keys import KeyStore
from helium.client import TaskClient
from helium.v1 import task_pb2, task_pb2_grpc
from tests.support.network import gpt_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MSG = [{"role": "user", "content": "hi"}]


def _openai(net, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=net.url + "/v1", api_key=key, max_retries=0, timeout=30)


async def test_one_key_cannot_read_another_keys_task(tmp_path):
    async with access_net(tmp_path) as net, httpx.AsyncClient(base_url=net.url, timeout=30) as http:
        alice, mallory = net.create_key("alice"), net.create_key("mallory")
        done = await _openai(net, alice).chat.completions.create(model=GPT_MODEL, messages=MSG)
        task_id = done.model_extra["helium"]["task_id"]

        mine = await http.get(f"/v1/tasks/{task_id}", headers={"authorization": f"Bearer {alice}"})
        assert mine.status_code == 200 and mine.json()["output"]["choices"][0]["message"]["content"]
        theirs = await http.get(f"/v1/tasks/{task_id}", headers={"authorization": f"Bearer {mallory}"})
        missing = await http.get(f"/v1/tasks/0x{'ab' * 32}", headers={"authorization": f"Bearer {mallory}"})
        # Another key's task answers exactly as a task that does not exist: ids cannot be probed.
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        assert "instant" not in theirs.text and task_id.lower() not in missing.text
        assert (await http.get(f"/v1/tasks/{task_id}")).status_code == 401


async def test_unauthenticated_get_and_watch_task_are_refused(tmp_path):
    async with access_net(tmp_path) as net, grpc.aio.insecure_channel(net.grpc) as ch:
        creator = TaskClient(ch, Account.create(), rpc_timeout=10)
        task_id = await creator.submit(gpt_args("secret prompt", model=GPT_MODEL), fee=10)
        assert (await creator.wait(task_id, timeout=30)).state == task_pb2.TASK_STATE_VALIDATED
        stub = task_pb2_grpc.TaskServiceStub(ch)
        domain = await creator.domain()

        async def codes(req_fields: dict, metadata=()) -> tuple[grpc.StatusCode, grpc.StatusCode]:
            out = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetTask(task_pb2.GetTaskRequest(**req_fields), timeout=5, metadata=metadata)
            out.append(err.value.code())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.WatchTask(task_pb2.WatchTaskRequest(**req_fields), timeout=5, metadata=metadata):
                    pass
            out.append(err.value.code())
            return tuple(out)

        unauth = (grpc.StatusCode.UNAUTHENTICATED,) * 2
        denied = (grpc.StatusCode.PERMISSION_DENIED,) * 2
        assert await codes({"task_id": task_id}) == unauth
        assert await codes({"task_id": task_id}, (("authorization", "Bearer wrong"),)) == unauth
        now = int(time.time())
        stale = signing.sign_task_read(creator.key, domain, bytes.fromhex(task_id[2:]), now - 3600)
        assert await codes({"task_id": task_id, "timestamp": now - 3600, "signature": stale}) == unauth
        # A signature by someone else: refused, and a task that does not exist answers the same.
        other = Account.create()
        sig = signing.sign_task_read(other, domain, bytes.fromhex(task_id[2:]), now)
        assert await codes({"task_id": task_id, "timestamp": now, "signature": sig}) == denied
        ghost = "0x" + "cd" * 32
        sig = signing.sign_task_read(other, domain, bytes.fromhex(ghost[2:]), now)
        assert await codes({"task_id": ghost, "timestamp": now, "signature": sig}) == denied
        # A signature over another task id (replayed) does not open this one.
        own = signing.sign_task_read(creator.key, domain, bytes.fromhex(ghost[2:]), now)
        assert await codes({"task_id": task_id, "timestamp": now, "signature": own}) == denied

        # The creator, and the operator's admin token, read it.
        assert (await creator.get(task_id)).args.gpt.messages[0].content == "secret prompt"
        admin = (("authorization", f"Bearer {net.app.admin_token}"),)
        got = await stub.GetTask(task_pb2.GetTaskRequest(task_id=task_id), timeout=5, metadata=admin)
        assert got.task.task_id == task_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTask(task_pb2.GetTaskRequest(task_id=ghost), timeout=5, metadata=admin)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_flood_of_guessed_api_keys_is_locked_out_per_address(tmp_path):
    async with access_net(tmp_path) as net, httpx.AsyncClient(base_url=net.url, timeout=30) as http:
        good = net.create_key("good")
        statuses = []
        for i in range(12):
            r = await http.get("/v1/tasks/0x" + "ab" * 32, headers={"authorization": f"Bearer sk-helium-guess{i}"})
            statuses.append(r.status_code)
        assert statuses[:9] == [401] * 9 and statuses[-1] == 429
        locked = await http.post("/v1/chat/completions", headers={"authorization": f"Bearer {good}"},
                                 json={"model": GPT_MODEL, "messages": MSG})
        # Locked out: even a good key from this address waits, so guessing cannot go on.
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        assert locked.json()["error"]["code"] == "too_many_invalid_keys"


async def test_the_network_page_data_shows_no_task_ids_or_prompts(tmp_path):
    async with access_net(tmp_path) as net, httpx.AsyncClient(base_url=net.url, timeout=30) as http:
        key = net.create_key("k")
        done = await _openai(net, key).chat.completions.create(
            model=GPT_MODEL, messages=[{"role": "user", "content": "my private question"}])
        task_id = done.model_extra["helium"]["task_id"]
        assert (await http.get("/api/tasks")).status_code == 404
        public = (await http.get("/api/network")).text + (await http.get("/")).text
        assert task_id[2:].lower() not in public.lower() and "private question" not in public
        stats = (await http.get("/api/network")).json()["stats"]
        assert any(c["key"] == "validated" and int(c["value"]) >= 1 for c in stats["tasks_by_state"])


async def test_image_urls_need_a_valid_unexpired_signature_or_the_owner_key(tmp_path):
    async with access_net(tmp_path) as net, httpx.AsyncClient(timeout=30) as http:
        owner, other = net.create_key("owner"), net.create_key("other")
        done = await _openai(net, owner).images.generate(model=SD_MODEL, prompt="a cat", size="64x64",
                                                         response_format="url")
        url = done.data[0].url
        task_id = done.model_extra["helium"]["task_id"]
        assert "sig=" in url and "expires=" in url
        assert (await http.get(url)).content.startswith(b"\x89PNG")
        bare = url.split("?")[0]
        assert (await http.get(bare)).status_code == 403
        assert (await http.get(url[:-4] + "0000")).status_code == 403
        store = KeyStore(net.keys_db)
        expired = ImageUrls(store.secret("image_urls"), ttl_s=-10).url(net.url, task_id, 0)
        store.close()
        r = await http.get(expired)
        assert r.status_code == 403 and r.json()["error"]["code"] == "url_expired"
        assert (await http.get(bare, headers={"authorization": f"Bearer {owner}"})).status_code == 200
        assert (await http.get(bare, headers={"authorization": f"Bearer {other}"})).status_code == 404


async def test_only_the_creator_stops_its_running_task(tmp_path):
    from worker.testing import SlowExecutor

    slow = [SlowExecutor(20.0, loaded_models=(GPT_MODEL,)) for _ in range(3)]
    async with access_net(tmp_path, executors=lambda i: [slow[i]]) as net, \
            grpc.aio.insecure_channel(net.grpc) as ch:  # fmt: skip
        creator = TaskClient(ch, Account.create(), rpc_timeout=10)
        task_id = await creator.submit(gpt_args("long", model=GPT_MODEL), fee=10)
        await creator.wait(task_id, timeout=10, states=(task_pb2.TASK_STATE_DISPATCHED,))
        domain, tid = await creator.domain(), bytes.fromhex(task_id[2:])
        stub = task_pb2_grpc.TaskServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # someone else's cancel
            await stub.CancelTask(task_pb2.CancelTaskRequest(
                task_id=task_id, signature=signing.sign_cancel(Account.create(), domain, tid), stop_running=True),
                timeout=5)  # fmt: skip
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        own = signing.sign_cancel(creator.key, domain, tid)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # without stop_running, a running task stays
            await stub.CancelTask(task_pb2.CancelTaskRequest(task_id=task_id, signature=own), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        got = await stub.CancelTask(task_pb2.CancelTaskRequest(task_id=task_id, signature=own, stop_running=True),
                                    timeout=5)  # fmt: skip
        assert got.task.state == task_pb2.TASK_STATE_CANCELLED
        for _ in range(50):  # every node is told to stop
            if all(any(j.task_id == task_id and j.is_cancelled() for j in ex.jobs) for ex in slow):
                break
            await asyncio.sleep(0.1)
        assert all(any(j.task_id == task_id and j.is_cancelled() for j in ex.jobs) for ex in slow)

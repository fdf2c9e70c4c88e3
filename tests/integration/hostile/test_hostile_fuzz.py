"""Fuzzing the two doors strangers reach (issue #14): the gateway's JSON bodies and TaskService/CreateTask.

A real coordinator on port 0 with its embedded gateway, and six instant nodes (GPT and SD) serving the
fuzz models, so a body that happens to be valid runs to the end. Hypothesis drives sync clients from a
thread while the servers run on the test's event loop. Whatever comes in: never a 5xx, never INTERNAL or
UNKNOWN, and the servers still answer afterwards. Bodies include deep nesting, huge numbers, NaN, wrong
types, non-UTF-8 and raw bytes. Bounded examples, deadline=None: this runs in the normal suite.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import signing
from coordinator.gateway.keys import KeyStore
from helium.tasks import args_hash
from helium.v1 import gpt_pb2, task_pb2
from tests.support.network import TestNetwork
from worker.testing import InstantExecutor

GPT_MODEL, SD_MODEL = "helium/fuzz", "helium/fuzz-sd"
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])  # fmt: skip

_leaf = (st.none() | st.booleans() | st.integers(min_value=-(2**300), max_value=2**300)
         | st.floats() | st.text(max_size=12))  # fmt: skip
JSON = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                       max_size=3), max_leaves=10)
HOSTILE = st.sampled_from([True, False, 2**256, 2**300, -1, 1.5, float("nan"), float("inf"), "1e400", "NaN", "",
                           "/etc", "../../etc/passwd", "x" * 300, [], {}, None, "0x10", "１２"])
ANY = HOSTILE | JSON
MODEL = st.sampled_from([GPT_MODEL, SD_MODEL, "/etc", "../../etc/passwd", "./m", "", "a/b/c"]) | HOSTILE
# A valid body, then up to two of its fields replaced by something hostile: the fuzz reaches past the first check.
VALID_CHAT = st.fixed_dictionaries(
    {"model": st.just(GPT_MODEL), "messages": st.text(min_size=1, max_size=30).map(
        lambda t: [{"role": "user", "content": t}])},
    optional={"max_tokens": st.integers(1, 16), "temperature": st.floats(0, 2), "seed": st.integers(0, 10**6),
              "fee": st.sampled_from(["10", 10**15, "1000"]), "top_p": st.floats(0.1, 1), "stream": st.booleans(),
              "stop": st.sampled_from(["###", ["a", "b"]]), "dtype": st.sampled_from(["auto", "float32"])})
VALID_IMAGES = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=20), "model": st.just(SD_MODEL)},
    optional={"n": st.integers(1, 2), "size": st.just("512x512"), "steps": st.integers(1, 4),
              "seed": st.integers(0, 1000), "fee": st.just("10")})
CHAT_FIELDS = ["model", "messages", "fee", "temperature", "max_tokens", "max_completion_tokens", "n", "seed", "top_p",
               "top_k", "min_p", "stop", "tools", "dtype", "quantize_bits", "repetition_penalty", "tool_choice",
               "response_format", "logprobs", "stream", "user"]
IMAGE_FIELDS = ["prompt", "model", "n", "size", "steps", "seed", "cfg", "fee", "negative_prompt", "response_format",
                "dtype", "scheduler"]


def _mutated(valid, fields):
    def apply(base, edits):
        doc = dict(base)
        for field, value in edits:
            if value is _DROP:
                doc.pop(field, None)
            else:
                doc[field] = value
        return doc

    edits = (st.lists(st.tuples(st.sampled_from(fields), ANY | MODEL | st.just(_DROP)), max_size=2)
             | st.tuples(st.just("fee"), HOSTILE).map(lambda edit: [edit]))  # the fee, the field money hangs on
    return st.builds(apply, valid, edits)


_DROP = object()
CHAT = _mutated(VALID_CHAT, CHAT_FIELDS)
IMAGES = _mutated(VALID_IMAGES, IMAGE_FIELDS)
RAW = (st.binary(max_size=300)
       | st.sampled_from([65, 1_000, 100_000, 200_000]).map(lambda n: b"[" * n)
       | st.integers(min_value=60, max_value=50_000).map(lambda n: b'{"model": ' + b'{"a":' * n + b"1" + b"}" * n)
       | st.integers(min_value=100, max_value=20_000).map(lambda n: b'{"model": "helium/fuzz", "fee": ' + b"9" * n + b"}")
       | st.sampled_from([b'{"model": "\xff\xfe", "messages": []}', b"\xef\xbb\xbf{}", b'{"a": NaN}', b"",
                          b'{"messages": [{"role": "user", "content": "\\ud800"}], "model": "helium/fuzz"}']))


def _body(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


async def _network(tmp_path):
    net = TestNetwork(tmp_path, http_port=0)
    await net.__aenter__()
    await net.add_nodes(3, lambda: InstantExecutor("gpt", loaded_models=(GPT_MODEL,)))
    await net.add_nodes(3, lambda: InstantExecutor("sd", loaded_models=(SD_MODEL,)), vram=24 << 30)
    return net


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_gateway_bodies_never_get_a_5xx(tmp_path):
    net = await _network(tmp_path)
    try:
        url = "http://" + net.app.http_address
        store = KeyStore(net.root / "coordinator" / "gateway" / "keys.sqlite")
        key, _ = store.create("fuzz", rate_per_min=100_000)
        store.close()
        auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        seen: dict[int, int] = {}

        def post(http: httpx.Client, path: str, body: bytes, headers: dict) -> None:
            resp = http.post(path, content=body, headers=headers)
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            assert resp.status_code < 500, (path, body[:300], resp.status_code, resp.text[:500])

        @FUZZ
        @given(chat=CHAT, images=IMAGES, raw=RAW)
        def fuzz(chat, images, raw):
            headers = auth  # with a valid key, a body goes past authentication (10 keyless calls lock us out)
            with httpx.Client(base_url=url, timeout=60) as http:
                post(http, "/v1/chat/completions", _body(chat), headers)
                post(http, "/v1/images/generations", _body(images), headers)
                post(http, "/v1/chat/completions", raw, headers)

        await asyncio.to_thread(fuzz)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:  # still serving, and still right
            ok = await http.post("/v1/chat/completions", headers=auth,
                                 json={"model": GPT_MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200, ok.text
        assert seen.get(400, 0) > 0 and all(code < 500 for code in seen), seen
    finally:
        await net.__aexit__(None, None, None)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_gateway_names_the_hostile_field_with_a_400(tmp_path):
    """The issue's cases, one by one: a fee of 2^300 was a 500, `fee: true` became 1 wei, a model path reached
    the workers, a 10 MB message was accepted."""
    net = await _network(tmp_path)
    try:
        store = KeyStore(net.root / "coordinator" / "gateway" / "keys.sqlite")
        key, _ = store.create("hostile", rate_per_min=1000)
        store.close()
        chat = {"model": GPT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        cases = [({"fee": 2**300}, "fee"), ({"fee": 2**256}, "fee"), ({"fee": True}, "fee"), ({"fee": 1.5}, "fee"),
                 ({"fee": "1e3"}, "fee"), ({"max_tokens": True}, "max_tokens"), ({"temperature": "0.5"}, "temperature"),
                 ({"model": "/etc"}, "model"), ({"model": "../../etc/passwd"}, "model"), ({"seed": "7"}, "seed")]
        async with httpx.AsyncClient(base_url="http://" + net.app.http_address, timeout=60,
                                     headers={"authorization": f"Bearer {key}"}) as http:  # fmt: skip
            for change, param in cases:
                resp = await http.post("/v1/chat/completions", json={**chat, **change})
                assert resp.status_code == 400, (change, resp.status_code, resp.text[:300])
                assert resp.json()["error"]["param"] == param, (change, resp.text[:300])
            for size, status in ((10 << 20, 413), (2 << 20, 400)):  # over the body limit; over max_task_bytes
                resp = await http.post("/v1/chat/completions",
                                       json={**chat, "messages": [{"role": "user", "content": "x" * size}]})
                assert resp.status_code == status, (size, resp.text[:300])
            resp = await http.post("/v1/images/generations", json={"prompt": "a cat", "model": SD_MODEL, "fee": 2**300})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "fee", resp.text[:300]
            ok = await http.post("/v1/chat/completions", json={**chat, "fee": "1000"})
            assert ok.status_code == 200, ok.text[:300]
        assert sum(net.app.store.count_tasks_by_state().values()) == 1  # only the last one was stored
    finally:
        await net.__aexit__(None, None, None)


def _signed(key, domain, args: task_pb2.TaskArgs, fee: str, nonce: int, deadline: int, junk_sig: bytes | None):
    req = task_pb2.CreateTaskRequest(args=args, creator=key.address, nonce=nonce, fee=fee, deadline=deadline)
    if junk_sig is not None:
        req.signature = junk_sig
        return req
    try:
        ahash = args_hash(args)
        tid = signing.compute_task_id(key.address, nonce, ahash)
        req.signature = signing.sign_task(key, domain, tid, ahash, int(fee), nonce, deadline)
    except Exception:  # noqa: BLE001 - what a client cannot sign goes out with a junk signature
        req.signature = b"\x00" * 65
    return req


def _gpt_args(model, messages, tools, gen: dict) -> task_pb2.TaskArgs:
    task = gpt_pb2.GptTask(model=model)
    for role, content in messages:
        task.messages.add(role=role, content=content)
    for tool in tools:
        task.tools.add().update(tool)
    for name, value in gen.items():
        setattr(task.generation_config, name, value)
    return task_pb2.TaskArgs(gpt=task)


_STRUCT_JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
                            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                      max_size=3), max_leaves=8)
_TEXT = st.text(max_size=40) | st.sampled_from(["/etc", "../../etc/passwd", GPT_MODEL, "a/b", "", "user", "system"])
def _often(value, other):
    """`value` three times in four: so that some requests get past every check but one."""
    return st.sampled_from([value] * 3 + [None]).flatmap(lambda v: st.just(v) if v is not None else other)


_INT = st.integers(1, 8) | st.integers(0, 2**32 - 1)
_FLOAT = st.floats(0.1, 1.0) | st.floats()
_GEN = st.fixed_dictionaries({}, optional={
    "max_new_tokens": _INT, "temperature": _FLOAT, "top_p": _FLOAT, "top_k": _INT, "num_beams": _INT,
    "num_return_sequences": _INT, "repetition_penalty": _FLOAT, "do_sample": st.booleans()})


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_create_task_never_gets_internal_or_unknown(tmp_path):
    net = await _network(tmp_path)
    try:
        domain = await net.client().domain()
        key = Account.create()
        codes: dict[str, int] = {}
        bad = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)

        def check(fn, *a) -> None:
            try:
                fn(*a, timeout=30)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.RpcError as err:
                codes[err.code().name] = codes.get(err.code().name, 0) + 1
                assert err.code() not in bad, (err.code(), err.details())

        @FUZZ
        @given(model=_often(GPT_MODEL, _TEXT),
               messages=_often([("user", "hi")], st.lists(st.tuples(_TEXT, _TEXT), max_size=3)),
               tools=_often([], st.lists(st.dictionaries(st.text(max_size=5), _STRUCT_JSON, max_size=3), max_size=2)),
               gen=_often({}, _GEN), fee=st.sampled_from(["10"] * 4 + ["0", str(2**256), str(2**256 - 1), "9" * 79, "-1", "1.5",
                                                        "", "0x10", "true"]) | st.text(max_size=10),
               nonce=st.integers(0, 2**64 - 1),
               deadline=_often(int(time.time()) + 600, st.integers(-(2**63), 2**63 - 1)),
               junk_sig=st.none() | st.none() | st.binary(max_size=70), raw=st.binary(max_size=200))
        def fuzz(model, messages, tools, gen, fee, nonce, deadline, junk_sig, raw):
            with grpc.insecure_channel(net.address) as channel:
                create = channel.unary_unary("/helium.v1.TaskService/CreateTask",
                                             request_serializer=task_pb2.CreateTaskRequest.SerializeToString,
                                             response_deserializer=task_pb2.CreateTaskResponse.FromString)
                creates = channel.unary_unary("/helium.v1.TaskService/CreateTasks",
                                              request_serializer=task_pb2.CreateTasksRequest.SerializeToString,
                                              response_deserializer=task_pb2.CreateTasksResponse.FromString)
                raw_create = channel.unary_unary("/helium.v1.TaskService/CreateTask")
                req = _signed(key, domain, _gpt_args(model, messages, tools, gen), fee, nonce, deadline, junk_sig)
                check(create, req)
                check(creates, task_pb2.CreateTasksRequest(tasks=[req, req]))
                check(raw_create, raw)

        await asyncio.to_thread(fuzz)
        assert codes.get("INVALID_ARGUMENT", 0) > 0, codes
        ok = await net.client(key=Account.create()).submit(_gpt_args(GPT_MODEL, [("user", "hi")], [], {}), fee=10)
        assert ok.startswith("0x")  # still serving
    finally:
        await net.__aexit__(None, None, None)

"""A scripted stand-in for the coordinator's TaskService/AdminService on a real gRPC port (test double).

It checks the gateway's EIP-712 task signature for real. The model name picks
the behaviour:
  "tiny"            honest: three nodes, the first streams the validated tokens
  "liar"            the streaming node's deltas differ from the validated answer
  "slow-streamer"   the streamer sends only half its tokens before the quorum validates
  "abort"           the task is ABORTED (all three results differ)
  "no-nodes"        CreateTask fails FAILED_PRECONDITION / no_capable_nodes
  "queue-full"      CreateTask fails RESOURCE_EXHAUSTED / queue_full
  "bad-args"        CreateTask fails INVALID_ARGUMENT / invalid_args naming generation_config.top_p
A fee above `deposit` fails FAILED_PRECONDITION / insufficient_deposit.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc

from chain import signing
from helium.tasks import args_hash
from helium.v1 import admin_pb2, admin_pb2_grpc, card_pb2, task_pb2, task_pb2_grpc

NODES = ["0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20]
MIN_FEE = 1000


def answer_for(task: task_pb2.Task) -> dict:
    gpt = task.args.gpt
    last = gpt.messages[-1].content if gpt.messages else ""
    n = gpt.generation_config.num_return_sequences or 1
    choices = []
    for i in range(n):
        if len(gpt.tools):
            name = gpt.tools[0]["function"]["name"]
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": '{"city": "Oslo"}'}}]}
            choices.append({"index": i, "message": msg, "finish_reason": "tool_calls"})
        else:
            text = f"echo {i} seed={gpt.seed}: {last}"
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": gpt.model, "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}


def deltas_for(answer: dict, lie: bool = False) -> list[dict]:
    out = []
    for c in answer["choices"]:
        msg = c["message"]
        base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": answer["model"]}
        out.append({**base, "choices": [{"index": c["index"], "delta": {"role": "assistant"}, "finish_reason": None}]})
        if msg.get("tool_calls"):
            for k, tc in enumerate(msg["tool_calls"]):
                out.append({**base, "choices": [{"index": c["index"], "delta": {"tool_calls": [
                    {"index": k, "id": tc["id"], "type": "function",
                     "function": {"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]}}]},
                    "finish_reason": None}]})
        text = msg.get("content") or ""
        if lie and text:
            text = "LIE " + text[::-1]
        for j in range(0, len(text), 4):
            out.append({**base, "choices": [{"index": c["index"], "delta": {"content": text[j:j + 4]},
                                             "finish_reason": None}]})
        out.append({**base, "choices": [{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"]}]})
    return out


class FakeCoordinator(task_pb2_grpc.TaskServiceServicer, admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, deposit: int = 10**18, admin_token: str = "admin-secret") -> None:
        self.deposit = deposit
        self.admin_token = admin_token
        self.tasks: dict[str, task_pb2.Task] = {}
        self.created: list[task_pb2.CreateTaskRequest] = []
        self.domain = signing.DEV_DOMAIN
        self.server: grpc.aio.Server | None = None
        self.target = ""

    async def start(self) -> str:
        self.server = grpc.aio.server()
        task_pb2_grpc.add_TaskServiceServicer_to_server(self, self.server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.target = f"127.0.0.1:{port}"
        return self.target

    async def stop(self) -> None:
        await self.server.stop(0.5)

    async def _fail(self, context, code, reason, message):
        context.set_trailing_metadata((("helium-reason", reason),))
        await context.abort(code, message)

    async def GetNetworkInfo(self, request, context):
        return task_pb2.GetNetworkInfoResponse(chain_id=self.domain.chain_id,
                                               verifying_contract=self.domain.verifying_contract,
                                               coordinator=NODES[0], min_fee=str(MIN_FEE), version="test")

    async def CreateTask(self, request, context):
        digest = args_hash(request.args)
        task_id = signing.compute_task_id(request.creator, request.nonce, digest)
        signer = signing.task_signer(self.domain, task_id, digest, int(request.fee), request.nonce,
                                     request.deadline, request.signature)
        if signer.lower() != request.creator.lower():
            await self._fail(context, grpc.StatusCode.UNAUTHENTICATED, "bad_signature", "signature: bad")
        model = request.args.gpt.model
        if model == "no-nodes":
            await self._fail(context, grpc.StatusCode.FAILED_PRECONDITION, "no_capable_nodes",
                             "no available node can serve model no-nodes")
        if model == "queue-full":
            await self._fail(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full", "queue is full (100)")
        if model == "bad-args":
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid_args",
                             "generation_config.top_p must be in (0, 1], got 1.5")
        if int(request.fee) > self.deposit:
            await self._fail(context, grpc.StatusCode.FAILED_PRECONDITION, "insufficient_deposit",
                             f"deposit {self.deposit} cannot cover fee {request.fee}")
        tid = "0x" + task_id.hex()
        now = int(time.time() * 1000)
        self.created.append(request)
        self.tasks[tid] = task_pb2.Task(task_id=tid, type=task_pb2.TASK_TYPE_GPT, state=task_pb2.TASK_STATE_QUEUED,
                                        creator=request.creator, nonce=request.nonce, fee=request.fee,
                                        deadline=request.deadline, args=request.args, created_at_ms=now)
        return task_pb2.CreateTaskResponse(task_id=tid)

    async def GetTask(self, request, context):
        if request.task_id not in self.tasks:
            await self._fail(context, grpc.StatusCode.NOT_FOUND, "not_found", f"task {request.task_id} not found")
        return task_pb2.GetTaskResponse(task=self.tasks[request.task_id])

    async def WatchTask(self, request, context):
        task = self.tasks.get(request.task_id)
        if task is None:
            await self._fail(context, grpc.StatusCode.NOT_FOUND, "not_found", "no task")
        model = task.args.gpt.model
        task.state = task_pb2.TASK_STATE_DISPATCHED
        del task.assignments[:]
        for node in NODES:
            task.assignments.add(node=node, state=task_pb2.ASSIGNMENT_STATE_RUNNING)
        yield task_pb2.WatchTaskResponse(task=task)
        answer = answer_for(task)
        if request.include_deltas:
            deltas = deltas_for(answer, lie=model == "liar")
            if model == "slow-streamer":
                deltas = deltas[: len(deltas) // 2]
            for seq, d in enumerate(deltas):
                await asyncio.sleep(0.001)
                yield task_pb2.WatchTaskResponse(delta=task_pb2.TokenDelta(
                    task_id=task.task_id, node=NODES[0], seq=seq, chunk_json=json.dumps(d)))
        if model == "abort":
            task.state = task_pb2.TASK_STATE_ABORTED
            task.reason = "all three results differ"
            yield task_pb2.WatchTaskResponse(task=task)
            return
        liar = model == "liar"
        task.state = task_pb2.TASK_STATE_VALIDATED
        for i, a in enumerate(task.assignments):
            a.state = task_pb2.ASSIGNMENT_STATE_SUBMITTED
            a.submission_order = i + 1
            a.matched = not (liar and i == 0)
        task.result.output_json = json.dumps(answer)
        task.result.nodes[:] = NODES[1:] if liar else NODES[:2]
        task.result.validation = "quorum 2/3"
        yield task_pb2.WatchTaskResponse(task=task)

    async def ListModels(self, request, context):
        card = card_pb2.Card(name="cpu", vram_bytes=0)
        served = ["tiny", "liar", "slow-streamer", "abort", "queue-full", "bad-args"]
        return task_pb2.ListModelsResponse(models=[
            task_pb2.ModelInfo(model=m, type=task_pb2.TASK_TYPE_GPT, cards=[card], nodes=3, loaded_nodes=3)
            for m in served] + [task_pb2.ModelInfo(model="tiny", type=task_pb2.TASK_TYPE_SD, cards=[card], nodes=3)])

    async def _admin_ok(self, context):
        md = dict(context.invocation_metadata())
        if md.get("authorization") != f"Bearer {self.admin_token}":
            await self._fail(context, grpc.StatusCode.UNAUTHENTICATED, "permission_denied", "admin token")

    async def ListNodes(self, request, context):
        await self._admin_ok(context)
        return admin_pb2.ListNodesResponse(nodes=[
            admin_pb2.Node(address=a, card=card_pb2.Card(name="cpu"), qos=0.5, connected=True) for a in NODES])

    async def ListTasks(self, request, context):
        await self._admin_ok(context)
        return admin_pb2.ListTasksResponse(tasks=list(self.tasks.values())[: request.limit or 100])

    async def GetStats(self, request, context):
        await self._admin_ok(context)
        return admin_pb2.GetStatsResponse(nodes_by_card=[admin_pb2.Count(key="cpu", value=3)], gpus=0)

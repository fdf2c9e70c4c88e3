"""Conversions between `helium.v1` protos and the coordinator's domain objects.

Only the API layer calls these; the services never see a `*_pb2` type.
"""

from __future__ import annotations

from collections import OrderedDict

from google.protobuf import json_format

from coordinator.domain.models import (
    Assignment,
    AssignmentState,
    Card,
    ErrorKind,
    NodeCaps,
    NodeRecord,
    NodeState,
    Task,
    TaskState,
    TaskType,
)
from coordinator.service.messages import (
    AckMsg,
    AssignMsg,
    CancelMsg,
    DisconnectMsg,
    DrainMsg,
    Grant,
    Outgoing,
)
from helium.v1 import admin_pb2, card_pb2, task_pb2, worker_pb2

TASK_TYPE_TO_PB = {TaskType.GPT: task_pb2.TASK_TYPE_GPT, TaskType.SD: task_pb2.TASK_TYPE_SD}
TASK_TYPE_FROM_PB = {v: k for k, v in TASK_TYPE_TO_PB.items()}
TASK_STATE_TO_PB = {s: getattr(task_pb2, f"TASK_STATE_{s.name}") for s in TaskState}
TASK_STATE_FROM_PB = {v: k for k, v in TASK_STATE_TO_PB.items()}
ASSIGN_STATE_TO_PB = {s: getattr(task_pb2, f"ASSIGNMENT_STATE_{s.name}") for s in AssignmentState}
NODE_STATE_TO_PB = {s: getattr(worker_pb2, f"NODE_STATE_{s.name}") for s in NodeState}
NODE_STATE_FROM_PB = {v: k for k, v in NODE_STATE_TO_PB.items()}
ERROR_KIND_FROM_PB = {
    worker_pb2.ERROR_KIND_INVALID_ARGS: ErrorKind.INVALID_ARGS,
    worker_pb2.ERROR_KIND_OUT_OF_MEMORY: ErrorKind.OUT_OF_MEMORY,
    worker_pb2.ERROR_KIND_CRASH: ErrorKind.CRASH,
    worker_pb2.ERROR_KIND_UNSPECIFIED: ErrorKind.CRASH,
}


# canonical args JSON -> serialized TaskArgs, for the tasks most recently created or dispatched.
_ARGS_WIRE: OrderedDict[bytes, bytes] = OrderedDict()
_ARGS_WIRE_SIZE = 8192
_ARGS_WIRE_MAX_BYTES = 64 * 1024  # larger args are parsed again when needed: the cache stays small


def _keep_args_wire(canon: bytes, wire: bytes) -> bytes:
    if len(wire) > _ARGS_WIRE_MAX_BYTES:
        return wire
    _ARGS_WIRE[canon] = wire
    if len(_ARGS_WIRE) > _ARGS_WIRE_SIZE:
        _ARGS_WIRE.popitem(last=False)
    return wire


def remember_args_wire(canon: bytes, args: task_pb2.TaskArgs) -> None:
    """At creation: the creator's own TaskArgs stands for its canonical JSON (they are the same message,
    less unknown fields), so dispatch need not parse the JSON again."""
    if canon not in _ARGS_WIRE:
        clean = task_pb2.TaskArgs()
        clean.CopyFrom(args)
        clean.DiscardUnknownFields()
        _keep_args_wire(canon, clean.SerializeToString())


def _args_wire(canon: bytes) -> bytes:
    """Serialized TaskArgs of canonical args JSON (parsed at most once per task while it is recent)."""
    wire = _ARGS_WIRE.get(canon)
    if wire is None:
        wire = _keep_args_wire(canon, json_format.Parse(canon.decode(), task_pb2.TaskArgs()).SerializeToString())
    return wire


def args_from_canonical(canon: bytes) -> task_pb2.TaskArgs:
    return task_pb2.TaskArgs.FromString(_args_wire(canon))


def card_to_pb(card: Card | None) -> card_pb2.Card:
    return card_pb2.Card(name=card.name, vram_bytes=card.vram_bytes) if card else card_pb2.Card()


def caps_from_info(info: worker_pb2.NodeInfo, max_assignments_cap: int = 1) -> NodeCaps:
    """`max_assignments_cap`: the most assignments the coordinator lets one node hold, whatever it asks."""
    types = {TASK_TYPE_FROM_PB[t] for t in info.task_types if t in TASK_TYPE_FROM_PB}
    return NodeCaps(
        card=Card(info.card.name or "unknown", info.card.vram_bytes),
        task_types=frozenset(types),
        dtypes=frozenset(info.dtypes),
        quantize_bits=frozenset(info.quantize_bits),
        backends=tuple(info.backends),
        loaded_models=tuple(info.loaded_models),
        cached_models=tuple(info.cached_models),
        free_vram_bytes=info.free_vram_bytes,
        worker_version=info.worker_version,
        device=info.device,
        max_assignments=max(1, min(info.max_assignments, max_assignments_cap)),
    )


def assignment_to_pb(a: Assignment) -> task_pb2.Assignment:
    return task_pb2.Assignment(
        assignment_id=a.assignment_id, node=a.node, state=ASSIGN_STATE_TO_PB[a.state], leased_at_ms=a.leased_ms,
        lease_expires_at_ms=a.lease_expires_ms, result_hash=a.result_hash, submission_order=a.submission_order,
        matched=a.matched, error=(f"{a.error_kind.value}: " if a.error_kind else "") + a.error,
    )  # fmt: skip


def task_to_pb(task: Task, assignments: list[Assignment] | None = None, *, with_args: bool = True) -> task_pb2.Task:
    pb = task_pb2.Task(
        task_id=task.task_id, type=TASK_TYPE_TO_PB[task.type], state=TASK_STATE_TO_PB[task.state],
        creator=task.creator, nonce=task.nonce, fee=str(task.fee), deadline=task.deadline,
        created_at_ms=task.created_ms, updated_at_ms=task.updated_ms, reason=task.reason,
        settlement_tx=task.settlement_tx,
    )  # fmt: skip
    if with_args:
        pb.args.CopyFrom(args_from_canonical(task.args))
    for a in assignments or ():
        pb.assignments.append(assignment_to_pb(a))
    if task.state in (TaskState.VALIDATED, TaskState.SETTLED) and task.result_hash:
        pb.result.CopyFrom(
            task_pb2.TaskResult(
                result_hash=task.result_hash, output_json=task.output.decode("utf-8", "replace"),
                nodes=list(task.result_nodes), validation=task.validation, validated_at_ms=task.validated_ms,
            )  # fmt: skip
        )
    elif task.state == TaskState.ABORTED and task.validation:
        pb.result.CopyFrom(task_pb2.TaskResult(validation=task.validation, nodes=list(task.result_nodes)))
    return pb


def grant_to_pb(g: Grant | None) -> task_pb2.RelayGrant | None:
    if g is None:
        return None
    return task_pb2.RelayGrant(
        task_id=g.task_id, grantee=g.grantee, read_slots=list(g.read_slots), write_slots=list(g.write_slots),
        expires_at=g.expires_at, signature=g.signature,
    )  # fmt: skip


def outgoing_to_pb(msg: Outgoing) -> worker_pb2.ConnectResponse:
    if isinstance(msg, AssignMsg):
        a, task = msg.assignment, msg.task
        wa = worker_pb2.WorkAssignment(
            assignment_id=a.assignment_id, task_id=task.task_id, type=TASK_TYPE_TO_PB[task.type],
            lease_expires_at_ms=a.lease_expires_ms, deadline_ms=msg.deadline_ms,
            stream_deltas=task.stream_deltas and task.type == TaskType.GPT,
        )  # fmt: skip
        if msg.inline_args:
            wa.args.ParseFromString(_args_wire(task.args))
        if msg.grant is not None:
            wa.grant.CopyFrom(grant_to_pb(msg.grant))
        return worker_pb2.ConnectResponse(assignment=wa)
    if isinstance(msg, AckMsg):
        return worker_pb2.ConnectResponse(ack=worker_pb2.Ack(assignment_id=msg.assignment_id))
    if isinstance(msg, CancelMsg):
        return worker_pb2.ConnectResponse(
            cancel=worker_pb2.CancelAssignment(assignment_id=msg.assignment_id, task_id=msg.task_id, reason=msg.reason)
        )
    if isinstance(msg, DrainMsg):
        return worker_pb2.ConnectResponse(drain=worker_pb2.Drain(reason=msg.reason))
    if isinstance(msg, DisconnectMsg):
        return worker_pb2.ConnectResponse(
            disconnect=worker_pb2.Disconnect(state=NODE_STATE_TO_PB[msg.state], reason=msg.reason)
        )
    raise TypeError(f"unknown outgoing message {msg!r}")


def outgoing_batch_to_pb(msgs: list[Outgoing]) -> worker_pb2.ConnectResponse:
    return worker_pb2.ConnectResponse(batch=worker_pb2.ConnectResponseBatch(messages=[outgoing_to_pb(m) for m in msgs]))


def node_to_pb(record: NodeRecord, state: NodeState, *, connected: bool, running: list[str], qos: float,
               reliability: float, mean_score: float, scores: int, stake: str = "") -> admin_pb2.Node:  # fmt: skip
    c = record.caps
    return admin_pb2.Node(
        address=record.address, card=card_to_pb(c.card), state=NODE_STATE_TO_PB[state], qos=qos,
        reliability=reliability, mean_score=mean_score, scores=scores, worker_version=c.worker_version,
        loaded_models=list(c.loaded_models), cached_models=list(c.cached_models), last_seen_ms=record.last_seen_ms,
        running_tasks=running, stake=stake, connected=connected, backends=list(c.backends),
    )  # fmt: skip

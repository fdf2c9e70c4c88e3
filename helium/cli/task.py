"""`helium task submit FILE.json` and `helium task get ID`.

`submit` signs the task with the creator key, shows progress on stderr while it
waits, and prints the result JSON on stdout (`--no-wait`: only the task id, as
soon as the task is accepted). A refused task exits 1 with the server's message
on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import grpc
from google.protobuf import json_format

from chain.signing import load_or_create_key
from helium import boundedjson
from helium.cli._common import add_connection_args, open_channel, run_cli
from helium.client import TaskClient, load_task_file
from helium.v1 import task_pb2

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helium task")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="sign and submit a task JSON file, wait for its validated result")
    s.add_argument("file", help="task JSON (a GPT or SD definition, or {\"gpt\": ...} / {\"sd\": ...}); - for stdin")
    s.add_argument("--fee", type=int, default=10**15, help="fee in wei (default 10^15)")
    s.add_argument("--no-wait", action="store_true", help="print the task id once accepted, and return")
    s.add_argument("--wait-timeout", type=float, default=900.0)
    g = sub.add_parser("get", help="print a task's state and, once validated, its result")
    g.add_argument("task_id")
    for sp in (s, g):  # only a task's creator may read it: `get` signs its read with the same key
        sp.add_argument("--key", default=os.environ.get("HELIUM_CREATOR_KEY") or ".helium/creator.key",
                        help="creator key file (env HELIUM_CREATOR_KEY; created on first use)")  # fmt: skip
        add_connection_args(sp)
    return p


def _state(task: task_pb2.Task) -> str:
    return task_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_").lower()


def _task_doc(task: task_pb2.Task) -> dict:
    doc = {"task_id": task.task_id, "state": _state(task), "type": task_pb2.TaskType.Name(task.type)[10:].lower(),
           "creator": task.creator, "fee": task.fee}  # fmt: skip
    if task.reason:
        doc["reason"] = task.reason
    if task.HasField("result"):
        doc["validation"] = task.result.validation
        doc["nodes"] = list(task.result.nodes)
        if task.result.output_json:
            doc["result"] = json.loads(task.result.output_json)
    if task.settlement_tx:
        doc["settlement_tx"] = task.settlement_tx
    doc["assignments"] = [json_format.MessageToDict(a, preserving_proto_field_name=True) for a in task.assignments]
    return doc


def _read_task(name: str) -> dict:
    """The task file's JSON; a ValueError naming the file (and the line and column) when it is not."""
    where = "stdin" if name == "-" else name
    try:  # bounded in size and nesting before the parser runs: a deep file must not crash the CLI
        doc = boundedjson.load_file(name, what="the task file")
    except OSError as exc:
        raise ValueError(f"{where}: cannot read the task file: {exc.strerror or exc}") from None
    except boundedjson.BoundedJsonError as exc:
        if (err := exc.decode_error) is not None:
            raise ValueError(f"{where}: line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from None
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: a task must be a JSON object, got {type(doc).__name__}")
    return doc


async def _submit(args) -> int:
    doc = _read_task(args.file)
    try:
        task_args = load_task_file(doc)
    except ValueError as exc:
        raise ValueError(f"{'stdin' if args.file == '-' else args.file}: {exc}") from None
    key = load_or_create_key(args.key)
    async with open_channel(args) as channel:
        client = TaskClient(channel, key, rpc_timeout=args.timeout)
        try:
            task_id = await client.submit(task_args, args.fee)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "deposit" in (exc.details() or ""):
                raise ValueError(f"{exc.details()}; the creator key is {args.key} ({key.address}). On a dev "
                                 f"network: helium dev fund {key.address} --deposit-key {args.key}") from None  # fmt: skip
            raise
        if args.no_wait:
            print(task_id)
            return 0
        print(f"accepted {task_id}", file=sys.stderr)
        start = time.monotonic()
        last = None
        async for ev in client.watch(task_id, timeout=args.wait_timeout):
            if ev.HasField("task") and ev.task.state != last:
                last = ev.task.state
                print(f"[{time.monotonic() - start:6.2f}s] {_state(ev.task)}", file=sys.stderr)
        task = await client.get(task_id)
        print(json.dumps(_task_doc(task), indent=2))
        return 0 if task.state in (task_pb2.TASK_STATE_VALIDATED, task_pb2.TASK_STATE_SETTLED) else 1


async def _get(args) -> int:
    async with open_channel(args) as channel:
        stub = TaskClient(channel, load_or_create_key(args.key), rpc_timeout=args.timeout)
        task = await stub.get(args.task_id)
        print(json.dumps(_task_doc(task), indent=2))
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # RPC refusals, an unreachable coordinator, a bad file or field, a closed stdout: one line each.
    return run_cli("helium task", args, lambda: asyncio.run(_submit(args) if args.cmd == "submit" else _get(args)))

"""`helium nodes` and `helium stats`: the operator's view, through AdminService.

The admin credential comes from `--admin-token`, `HELIUM_ADMIN_TOKEN`, the coordinator's
`<data-dir>/admin.token` (`--data-dir`), or, without one, `.helium/coordinator` or a `helium dev`'s
`.helium/dev/coordinator` in this folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from google.protobuf import json_format

from helium.cli._common import add_connection_args, admin_token, open_channel, run_cli
from helium.v1 import admin_pb2, admin_pb2_grpc, worker_pb2

__all__ = ["info_main", "nodes_main", "stats_main"]


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    add_connection_args(p)
    p.add_argument("--admin-token", help="admin credential (env HELIUM_ADMIN_TOKEN)")
    p.add_argument("--data-dir", help="coordinator data dir holding admin.token "
                                     "(default: .helium/coordinator, then .helium/dev/coordinator)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


async def _call(args, method: str, request):
    token = admin_token(args.admin_token, args.data_dir)
    async with open_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return await getattr(stub, method)(request, timeout=args.timeout,
                                           metadata=(("authorization", f"Bearer {token}"),))  # fmt: skip


def stats_doc(resp: admin_pb2.GetStatsResponse) -> dict:
    """GetStats as a plain dict: each list of counts becomes {key: value}, zero counts included (proto3's
    JSON mapping leaves a zero value out, which is why this reads the message, not its JSON)."""
    out: dict = {}
    for field, value in resp.ListFields():
        if field.message_type is not None and field.message_type.name == "Count":
            out[field.name] = {c.key: c.value for c in value}
    for name in ("nodes_by_state", "nodes_by_card", "tasks_by_state", "queue_depth_by_type", "validation_outcomes"):
        out.setdefault(name, {})
    out["gpus"] = resp.gpus
    out["settled_batches"] = resp.settled_batches
    return out


def nodes_main(argv: list[str] | None = None) -> int:
    args = _parser("helium nodes").parse_args(argv)

    async def go() -> int:
        resp = await _call(args, "ListNodes", admin_pb2.ListNodesRequest())
        if args.json:
            print(json_format.MessageToJson(resp, preserving_proto_field_name=True))
            return 0
        print(f"{'ADDRESS':44} {'CARD':28} {'STATE':14} {'QOS':>5} {'H':>5} TASK")
        for n in resp.nodes:
            card = f"{n.card.name} ({n.card.vram_bytes / 2**30:.0f} GiB)"
            state = worker_pb2.NodeState.Name(n.state).removeprefix("NODE_STATE_").lower()
            task = n.running_tasks[0][:18] if n.running_tasks else "-"
            print(f"{n.address:44} {card[:28]:28} {state:14} {n.qos:5.2f} {n.reliability:5.2f} {task}")
        return 0

    return run_cli("helium nodes", args, lambda: asyncio.run(go()))


def stats_main(argv: list[str] | None = None) -> int:
    args = _parser("helium stats").parse_args(argv)

    async def go() -> int:
        resp = await _call(args, "GetStats", admin_pb2.GetStatsRequest())
        print(json.dumps(stats_doc(resp), indent=2 if not args.json else None))
        return 0

    return run_cli("helium stats", args, lambda: asyncio.run(go()))


def info_main(argv: list[str] | None = None) -> int:
    """`helium info [FIELD]`: the network's chain id, TaskLedger, coordinator address, min fee, version."""
    p = argparse.ArgumentParser(prog="helium info", description="the network as the coordinator describes it")
    add_connection_args(p)
    p.add_argument("field", nargs="?", help="print only this field (e.g. coordinator, verifying_contract)")
    args = p.parse_args(argv)

    async def go() -> int:
        from helium.v1 import task_pb2, task_pb2_grpc

        async with open_channel(args) as channel:
            resp = await task_pb2_grpc.TaskServiceStub(channel).GetNetworkInfo(task_pb2.GetNetworkInfoRequest(),
                                                                                  timeout=args.timeout)  # fmt: skip
        doc = json_format.MessageToDict(resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        if args.field and args.field not in doc:
            raise ValueError(f"field must be one of {', '.join(doc)}, got {args.field!r}")
        print(doc[args.field] if args.field else json.dumps(doc, indent=2))
        return 0

    return run_cli("helium info", args, lambda: asyncio.run(go()))

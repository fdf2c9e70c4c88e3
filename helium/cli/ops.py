"""`helium nodes` and `helium stats`: the operator's view, through AdminService.

The admin credential comes from `--admin-token`, `HELIUM_ADMIN_TOKEN`, or the
coordinator's `<data-dir>/admin.token` (`--data-dir`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from helium.cli._common import add_connection_args, open_channel
from helium.v1 import admin_pb2, admin_pb2_grpc, worker_pb2

__all__ = ["nodes_main", "stats_main"]


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    add_connection_args(p)
    p.add_argument("--admin-token", help="admin credential (env HELIUM_ADMIN_TOKEN)")
    p.add_argument("--data-dir", default=".helium/coordinator", help="coordinator data dir holding admin.token")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _token(args) -> str:
    if args.admin_token or os.environ.get("HELIUM_ADMIN_TOKEN"):
        return args.admin_token or os.environ["HELIUM_ADMIN_TOKEN"]
    path = Path(args.data_dir) / "admin.token"
    if not path.exists():
        raise ValueError(f"no admin credential: give --admin-token, HELIUM_ADMIN_TOKEN, or --data-dir with {path.name}")
    return path.read_text().strip()


async def _call(args, method: str, request):
    async with open_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return await getattr(stub, method)(request, timeout=args.timeout,
                                           metadata=(("authorization", f"Bearer {_token(args)}"),))  # fmt: skip


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except grpc.aio.AioRpcError as exc:
        print(f"helium: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"helium: {exc}", file=sys.stderr)
        return 1


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

    return _run(go())


def stats_main(argv: list[str] | None = None) -> int:
    args = _parser("helium stats").parse_args(argv)

    async def go() -> int:
        resp = await _call(args, "GetStats", admin_pb2.GetStatsRequest())
        doc = json_format.MessageToDict(resp, preserving_proto_field_name=True)
        flat = {k: {c["key"]: int(c["value"]) for c in v} if isinstance(v, list) else v for k, v in doc.items()}
        print(json.dumps(flat, indent=2 if not args.json else None))
        return 0

    return _run(go())

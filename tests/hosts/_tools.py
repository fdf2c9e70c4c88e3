"""Small programs the host tests run inside namespaces (`python -m tests.hosts._tools CMD ...`).

    tls-proxy LISTEN_HOST:PORT UPSTREAM_HOST:PORT CERT KEY   TLS in front of a plaintext server (the dev
                                                            chain's JSON-RPC speaks HTTP only)
    stake RPC_URL CHAIN_DIR KEYFILE...                       fund and stake each node key (dev faucet)
    submit --coordinator A --tls-ca F --creator-key HEX --n N  sends N GPT tasks (CreateTasks), waits for
                                                            each outcome, prints one JSON summary line
    http-garbage HOST:PORT                                   a TCP server that answers HTTP/1.1 garbage
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path


async def tls_proxy(listen: str, upstream: str, cert: str, key: str) -> None:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    up_host, up_port = upstream.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port), ssl=ctx)
    print(f"ready tls={listen}", flush=True)
    async with server:
        await server.serve_forever()


async def stake(rpc: str, chain_dir: str, keyfiles: list[str]) -> None:
    from chain.client import http_provider
    from chain.devchain import DevChain, DevKeys
    from chain.models import ContractAddresses
    from chain.signing import load_or_create_key

    meta = json.loads((Path(chain_dir) / "devchain.json").read_text())
    provider = await http_provider(rpc, 30)
    chain = DevChain(Path(chain_dir), provider, DevKeys.from_dict(meta["keys"]),
                     ContractAddresses(**meta["addresses"]), int(meta["chain_id"]), -1)  # fmt: skip
    for f in keyfiles:
        await chain.fund_and_stake(load_or_create_key(f))
    await provider.disconnect()
    print(f"staked {len(keyfiles)}", flush=True)


async def submit(args: argparse.Namespace) -> None:
    import grpc
    from eth_account import Account

    from coordinator.tls import client_credentials
    from helium.client import TaskClient, load_task_file
    from helium.v1 import task_pb2

    creds = client_credentials(args.coordinator, Path(args.tls_ca) if args.tls_ca else None, args.insecure)
    channel = (grpc.aio.secure_channel(args.coordinator, creds) if creds
               else grpc.aio.insecure_channel(args.coordinator))  # fmt: skip
    client = TaskClient(channel, Account.from_key(args.creator_key), rpc_timeout=args.rpc_timeout)
    deadline = int(time.time()) + int(args.task_deadline_s) if args.task_deadline_s else None
    if args.wait:
        await _wait(client, args.wait.split(","), args)
        return
    reqs = []
    for i in range(args.n):
        doc = ({"base_model": "tiny-sd", "prompt": f"hosts {args.tag} {i}"} if args.kind == "sd" else
               {"model": "tiny-gpt", "messages": [{"role": "user", "content": f"hosts {args.tag} {i}"}], "seed": i})
        reqs.append(await client.build(load_task_file(doc), fee=args.fee, deadline=deadline))
    if args.sequential:  # one at a time: each task's own submit-to-outcome latency
        lat = []
        for req in reqs:
            t0 = time.monotonic()
            out = (await client.create_many([req]))[0]
            task = await client.wait(out.created.task_id, timeout=args.timeout)
            lat.append((time.monotonic() - t0) * 1000)
            if task.state != task_pb2.TASK_STATE_VALIDATED:
                raise SystemExit(f"task {out.created.task_id}: {task_pb2.TaskState.Name(task.state)} {task.reason}")
        lat.sort()
        print(json.dumps({"latency_ms": {"p50": round(lat[len(lat) // 2], 2),
                                         "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)}}), flush=True)  # fmt: skip
        return
    ids: list[str] = []
    sent = time.monotonic()
    for start in range(0, len(reqs), 50):
        for out in await client.create_many(reqs[start:start + 50]):
            if out.code != 0:
                raise SystemExit(f"task refused: {out.code} {out.message}")
            ids.append(out.created.task_id)
    print(f"submitted {len(ids)}", flush=True)
    if args.no_wait:
        print(json.dumps({"ids": ids}), flush=True)
        return
    await _wait(client, ids, args, sent)
    await channel.close()


async def _wait(client, ids: list[str], args: argparse.Namespace, sent: float | None = None) -> None:
    from helium.v1 import task_pb2

    sent = time.monotonic() if sent is None else sent
    done_at: dict[str, float] = {}

    async def follow(tid: str) -> task_pb2.Task:
        task = await client.wait(tid, timeout=args.timeout)
        done_at[tid] = time.monotonic()
        return task

    if args.peek:
        tasks = await asyncio.gather(*(client.get(t) for t in ids))
        done_at.update(dict.fromkeys(ids, time.monotonic()))
    else:
        tasks = await asyncio.gather(*(follow(t) for t in ids))
    if args.settled:
        want = {task_pb2.TASK_STATE_SETTLED, task_pb2.TASK_STATE_ABORTED}
        tasks = await asyncio.gather(*(client.wait(t, timeout=args.timeout, states=want) for t in ids))
    states: dict[str, int] = {}
    for t in tasks:
        name = task_pb2.TaskState.Name(t.state)
        states[name] = states.get(name, 0) + 1
    lat = sorted((done_at[t] - sent) * 1000 for t in ids)
    print(json.dumps({
        "ids": ids, "states": states, "seconds": round(time.monotonic() - sent, 3),
        "nodes": [list(t.result.nodes) for t in tasks], "reasons": [t.reason for t in tasks if t.reason][:5],
        "outputs": [t.result.output_json for t in tasks] if args.outputs else [],
        "latency_ms": {"p50": round(lat[len(lat) // 2], 1), "max": round(lat[-1], 1)} if lat else {},
    }), flush=True)  # fmt: skip


async def http_garbage(listen: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\nnot helium\n")
        await writer.drain()
        await asyncio.sleep(3600)  # keep the connection open: a client must not wait on it forever

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print(f"ready http={listen}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tls-proxy")
    for a in ("listen", "upstream", "cert", "key"):
        t.add_argument(a)
    s = sub.add_parser("stake")
    s.add_argument("rpc")
    s.add_argument("chain_dir")
    s.add_argument("keyfiles", nargs="+")
    c = sub.add_parser("submit")
    c.add_argument("--coordinator", required=True)
    c.add_argument("--tls-ca")
    c.add_argument("--insecure", action="store_true")
    c.add_argument("--creator-key", required=True)
    c.add_argument("--n", type=int, default=1)
    c.add_argument("--fee", type=int, default=10**15)
    c.add_argument("--tag", default="")
    c.add_argument("--timeout", type=float, default=60)
    c.add_argument("--rpc-timeout", type=float, default=30)
    c.add_argument("--task-deadline-s", type=float, default=0)
    c.add_argument("--settled", action="store_true", help="also wait until each task is settled")
    c.add_argument("--no-wait", action="store_true", help="print the ids once accepted")
    c.add_argument("--kind", choices=("gpt", "sd"), default="gpt")
    c.add_argument("--sequential", action="store_true", help="one task at a time; print latency percentiles")
    c.add_argument("--peek", action="store_true", help="with --wait: report the states now, without waiting")
    c.add_argument("--outputs", action="store_true", help="print each task's output_json")
    c.add_argument("--wait", metavar="ID,ID", help="send nothing: wait for these tasks")
    g = sub.add_parser("http-garbage")
    g.add_argument("listen")
    args = p.parse_args()
    if args.cmd == "tls-proxy":
        asyncio.run(tls_proxy(args.listen, args.upstream, args.cert, args.key))
    elif args.cmd == "stake":
        asyncio.run(stake(args.rpc, args.chain_dir, args.keyfiles))
    elif args.cmd == "submit":
        asyncio.run(submit(args))
    else:
        asyncio.run(http_garbage(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`helium node stake|unstake|withdraw|status|earnings|events`: a GPU operator's commands, signed with the
node's key.

The key is `--key FILE`, else `HELIUM_NODE_KEY`, else the worker's `<data-dir>/keys/node-<gpu>.key`
(`--data-dir`, default `~/.helium/worker`; `--gpu`, default 0). The chain is `--chain URL`
(`HELIUM_CHAIN`), or the `helium dev` running from this folder. The contracts are found from the
coordinator (`GetNetworkInfo` names the TaskLedger, which names NodeStaking), so an operator gives only
the coordinator's address and the chain's URL.

`events` streams the coordinator's NodeService.WatchNodeEvents (state and QoS changes, signed by the
node), and adds the chain's record of each slash and kick-out (task, kind, amount, transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helium.cli._common import add_connection_args, dev_state, open_channel, run_cli
from helium.v1 import node_pb2, node_pb2_grpc, task_pb2, task_pb2_grpc, worker_pb2

__all__ = ["main"]

ETHER = 10**18


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helium node", description="a GPU operator's commands, signed with the node's key")
    sub = p.add_subparsers(dest="cmd", required=True)
    cmds = {
        "address": "print the node's address (creates its key on first use, as helium worker would)",
        "stake": "stake TOKENS from the node's address (the minimum lets it join)",
        "unstake": "ask to take the stake back; withdraw once the unstake delay has passed",
        "withdraw": "withdraw the stake after the unstake delay",
        "status": "the node's stake on chain and its state and QoS at the coordinator",
        "earnings": "what the node has earned: paid tasks, and the credit it can withdraw",
        "pause": "take no new tasks (the running one finishes)",
        "resume": "take tasks again after a pause",
        "events": "stream kick-outs, slashes (with their evidence), pauses and QoS changes as they happen",
    }
    for name, help_ in cmds.items():
        s = sub.add_parser(name, help=help_)
        add_connection_args(s)
        s.add_argument("--key", help="the node's key file (env HELIUM_NODE_KEY)")
        s.add_argument("--data-dir", help="the worker's data dir (default ~/.helium/worker)")
        s.add_argument("--gpu", type=int, default=0, help="which node of the worker: keys/node-<gpu>.key")
        s.add_argument("--chain", help="the chain's JSON-RPC URL (env HELIUM_CHAIN; default: the running helium dev's)")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "stake":
            s.add_argument("tokens", type=float, help="how many tokens to add to the stake")
        if name == "status":
            s.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="wait up to SECONDS for the node to be connected to the coordinator")  # fmt: skip
        if name == "earnings":
            s.add_argument("--withdraw", action="store_true", help="also withdraw the credit to the node's address")
        if name == "events":
            s.add_argument("--max-events", type=int, default=0, help="stop after N events (0: run until Ctrl-C)")
    return p


def key_path(args: argparse.Namespace) -> Path:
    if args.key or os.environ.get("HELIUM_NODE_KEY"):
        return Path(args.key or os.environ["HELIUM_NODE_KEY"])
    data = Path(args.data_dir) if args.data_dir else Path.home() / ".helium" / "worker"
    return data / "keys" / f"node-{args.gpu}.key"


def _load_key(args: argparse.Namespace):
    from eth_account import Account

    path = key_path(args)
    if not path.exists():
        raise ValueError(f"no node key at {path}: `helium worker` creates it on first run (or give --key FILE)")
    return Account.from_key(bytes.fromhex(path.read_text().strip().removeprefix("0x")))


def _chain_url(args: argparse.Namespace) -> str:
    url = args.chain or os.environ.get("HELIUM_CHAIN")
    if not url:
        state = dev_state()
        url = state.get("rpc") if state else None
    if not url:
        raise ValueError("no chain: give --chain URL (or HELIUM_CHAIN), or run this from a helium dev folder")
    return url


@dataclass
class Operator:
    """The node's key, its view at the coordinator, and a chain client sending as the node."""

    key: object
    address: str
    domain: object
    channel: object
    args: argparse.Namespace
    chain: object = None

    def auth(self) -> node_pb2.NodeAuth:
        from chain import signing

        ts = int(time.time())
        return node_pb2.NodeAuth(address=self.address, timestamp=ts,
                                 signature=signing.sign_node_control(self.key, self.domain, 0, ts))  # fmt: skip

    async def connect_chain(self):
        from chain._artifacts import load_artifact
        from chain.client import ChainClient, http_provider, lean_web3
        from chain.models import ClientSettings, ContractAddresses

        settings = ClientSettings()
        w3 = lean_web3(await http_provider(_chain_url(self.args), settings.rpc_timeout.total_seconds()))
        ledger = w3.eth.contract(address=self.domain.verifying_contract, abi=load_artifact("TaskLedger").abi)
        try:
            staking, stats = await ledger.functions.staking().call(), await ledger.functions.stats().call()
        except Exception as exc:  # noqa: BLE001 - any failure here means the URL is not this network's chain
            await w3.provider.disconnect()
            raise ValueError(f"the chain at {_chain_url(self.args)} does not answer for this network's "
                             f"TaskLedger {self.domain.verifying_contract}: {exc}") from None  # fmt: skip
        self.chain = await ChainClient.create(w3, self.key, ContractAddresses(stats, staking, ledger.address), settings)
        return self.chain


async def _operator(args: argparse.Namespace, channel) -> Operator:
    from chain.signing import Domain

    key = _load_key(args)
    info = await task_pb2_grpc.TaskServiceStub(channel).GetNetworkInfo(task_pb2.GetNetworkInfoRequest(),
                                                                          timeout=args.timeout)  # fmt: skip
    return Operator(key, key.address, Domain(info.chain_id, info.verifying_contract), channel, args)


def _tokens(wei: int) -> str:
    return f"{wei / ETHER:,.4f}".rstrip("0").rstrip(".")


def _revert_line(exc, op: Operator, chain) -> str:
    """A contract's refusal as the operator's sentence."""
    a, name = exc.args_dict, exc.error
    if name == "StakeBelowMinimum":
        return f"stake below the minimum: the node would hold {_tokens(a['total'])} tokens, the minimum is {_tokens(a['minimum'])}"
    if name in ("NoStake", "NotStaked"):
        return f"node {op.address} has no stake (not registered on chain): helium node stake TOKENS first"
    if name == "UnstakeLocked":
        wait = max(0, int(a["unlockAt"]) - int(time.time()))
        return f"the unstake delay is still pending: withdraw after {_when(a['unlockAt'])} (in about {wait // 60} min)"
    if name == "UnstakeNotRequested":
        return "no unstake was requested: helium node unstake first, then withdraw after the delay"
    if name == "UnstakeAlreadyRequested":
        return "an unstake is already requested: helium node withdraw once the delay has passed"
    if name == "NodeBusy":
        return "the node holds work: stop its worker (SIGTERM drains it) and try again"
    if name == "NodeIsSlashed":
        return f"node {op.address} was slashed: its stake is gone"
    return f"the contract refused: {exc}"


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(unix)))


async def _transact(op: Operator, send) -> object:
    from chain.errors import ContractRevert, RpcRefused

    try:
        return await send()
    except ContractRevert as exc:
        raise ValueError(_revert_line(exc, op, op.chain)) from None
    except RpcRefused as exc:
        if "insufficient funds" in str(exc).lower():
            raise ValueError(f"insufficient balance: {op.address} cannot pay for this transaction "
                             f"(it holds {_tokens(await op.chain.balance_of(op.address))} tokens)") from None  # fmt: skip
        raise ValueError(f"the chain refused the transaction: {exc}") from None


async def _stake(op: Operator) -> dict:
    chain = await op.connect_chain()
    amount = int(op.args.tokens * ETHER)
    if amount <= 0:
        raise ValueError(f"tokens must be > 0, got {op.args.tokens:g}")
    balance, current, minimum = (await chain.balance_of(op.address), await chain.stake_of(op.address),
                                 await chain.min_stake())  # fmt: skip
    if balance <= amount:
        raise ValueError(f"insufficient balance: {op.address} holds {_tokens(balance)} tokens, staking "
                         f"{_tokens(amount)} needs that plus gas")  # fmt: skip
    if current + amount < minimum:
        raise ValueError(f"stake below the minimum: the node would hold {_tokens(current + amount)} tokens, "
                         f"the minimum is {_tokens(minimum)}")  # fmt: skip
    receipt = await _transact(op, lambda: chain.stake(op.key, amount))
    return {"node": op.address, "stake": _tokens(await chain.stake_of(op.address)), "tx": "0x" + receipt.tx_hash.hex()}


async def _unstake(op: Operator) -> dict:
    chain = await op.connect_chain()
    receipt = await _transact(op, lambda: chain.request_unstake(op.key))
    info = await chain.node_info(op.address)
    return {"node": op.address, "unlock_at": _when(info.unlock_at), "tx": "0x" + receipt.tx_hash.hex(),
            "next": "helium node withdraw, once unlock_at has passed"}  # fmt: skip


async def _withdraw(op: Operator) -> dict:
    chain = await op.connect_chain()
    receipt = await _transact(op, lambda: chain.withdraw_stake(op.key))
    return {"node": op.address, "stake": _tokens(await chain.stake_of(op.address)), "tx": "0x" + receipt.tx_hash.hex()}


async def _control(op: Operator) -> dict:
    from chain import signing
    from helium.v1 import worker_pb2_grpc

    action = worker_pb2.NODE_ACTION_PAUSE if op.args.cmd == "pause" else worker_pb2.NODE_ACTION_RESUME
    ts = int(time.time())
    req = worker_pb2.ControlNodeRequest(address=op.address, action=action, timestamp=ts,
                                        signature=signing.sign_node_control(op.key, op.domain, action, ts))  # fmt: skip
    resp = await worker_pb2_grpc.WorkerServiceStub(op.channel).ControlNode(req, timeout=op.args.timeout)
    return {"node": op.address, "state": _state(resp.state)}


async def _coordinator_view(op: Operator) -> tuple[dict | None, str]:
    import grpc

    try:
        resp = await node_pb2_grpc.NodeServiceStub(op.channel).GetNodeStatus(
            node_pb2.GetNodeStatusRequest(auth=op.auth()), timeout=op.args.timeout)  # fmt: skip
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None, exc.details() or "not registered"
        raise
    n = resp.node
    return {"state": _state(n.state), "connected": n.connected, "qos": round(n.qos, 3), "reliability": round(n.reliability, 3),
            "scores": n.scores, "reason": resp.reason}, ""  # fmt: skip


def _state(value: int) -> str:
    return worker_pb2.NodeState.Name(value).removeprefix("NODE_STATE_").lower()


async def _status(op: Operator) -> dict:
    chain = await op.connect_chain()
    deadline = time.monotonic() + op.args.wait
    view, why = await _coordinator_view(op)
    while (view is None or not view["connected"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        view, why = await _coordinator_view(op)
    info = await chain.node_info(op.address)
    doc = {"node": op.address, "balance": _tokens(await chain.balance_of(op.address)), "stake": _tokens(info.stake),
           "min_stake": _tokens(await chain.min_stake()), "slashed": info.slashed,
           "unstake_unlocks_at": _when(info.unlock_at) if info.unlock_at else None}  # fmt: skip
    doc["coordinator"] = view if view is not None else f"not registered: {why}"
    return doc


async def _earnings(op: Operator) -> dict:
    chain = await op.connect_chain()
    paid = [e for e in await chain.events() if e.name == "Paid" and str(e.args.get("node", "")).lower() == op.address.lower()]
    doc = {"node": op.address, "tasks_paid": len(paid), "earned": _tokens(sum(int(e.args["amount"]) for e in paid)),
           "credit": _tokens(await chain.credit_of(op.address))}  # fmt: skip
    if op.args.withdraw and await chain.credit_of(op.address) > 0:
        receipt = await _transact(op, lambda: chain.withdraw_credit(op.key))
        doc["withdrawn_tx"] = "0x" + receipt.tx_hash.hex()
    return doc


async def _chain_evidence(op: Operator, name: str) -> dict:
    """The chain's record of the node's latest slash or kick-out, when a chain is reachable."""
    try:
        chain = op.chain or await op.connect_chain()
        found = [e for e in await chain.events() if e.name == name and str(e.args.get("node", "")).lower() == op.address.lower()]
    except (ValueError, OSError):
        return {}
    if not found:
        return {}
    e = found[-1]
    doc = {"tx": "0x" + e.tx_hash.hex(), "amount": _tokens(int(e.args.get("amount", 0)))}
    if "taskId" in e.args:
        doc["task_id"] = "0x" + bytes(e.args["taskId"]).hex()
        doc["kind"] = {0: "gpt", 1: "sd"}.get(int(e.args.get("kind", -1)), str(e.args.get("kind")))
    return doc


async def _events(op: Operator) -> int:
    seen = 0
    stream = node_pb2_grpc.NodeServiceStub(op.channel).WatchNodeEvents(node_pb2.WatchNodeEventsRequest(auth=op.auth()))
    async for ev in stream:
        n = ev.node
        doc = {"at": time.strftime("%H:%M:%S", time.gmtime(ev.at_ms / 1000)), "node": n.address,
               "event": node_pb2.NodeEventKind.Name(ev.kind).removeprefix("NODE_EVENT_KIND_").lower(),
               "state": _state(n.state), "qos": round(n.qos, 3)}  # fmt: skip
        if ev.kind == node_pb2.NODE_EVENT_KIND_STATE:
            doc["was"] = _state(ev.previous_state)
        if ev.kind == node_pb2.NODE_EVENT_KIND_QOS:
            doc["was_qos"] = round(ev.previous_qos, 3)
        if ev.reason:
            doc["reason"] = ev.reason
        if n.state in (worker_pb2.NODE_STATE_SLASHED, worker_pb2.NODE_STATE_KICKED_OUT) and ev.kind != node_pb2.NODE_EVENT_KIND_QOS:
            evidence = await _chain_evidence(op, "Slashed" if n.state == worker_pb2.NODE_STATE_SLASHED else "KickedOut")
            if evidence:
                doc["chain"] = evidence
        print(json.dumps(doc) if op.args.json else "  ".join(f"{k}={v}" for k, v in doc.items()), flush=True)
        seen += 1
        if op.args.max_events and seen >= op.args.max_events:
            stream.cancel()
            return 0
    return 0


async def _run(args: argparse.Namespace) -> int:
    async with open_channel(args) as channel:
        op = await _operator(args, channel)
        try:
            if args.cmd == "events":
                return await _events(op)
            doc = await {"stake": _stake, "unstake": _unstake, "withdraw": _withdraw, "status": _status,
                         "earnings": _earnings, "pause": _control, "resume": _control}[args.cmd](op)  # fmt: skip
        finally:
            if op.chain is not None:
                await op.chain.close()
    if args.json:
        print(json.dumps(doc))
    else:
        for k, v in doc.items():
            print(f"{k + ':':20} {json.dumps(v) if isinstance(v, dict) else v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "address":  # no coordinator needed
        from chain.signing import load_or_create_key

        return run_cli("helium node address", None, lambda: print(load_or_create_key(key_path(args)).address) or 0)
    from helium.log import configure_logging

    configure_logging(False, "warning")
    return run_cli(f"helium node {args.cmd}", args, lambda: asyncio.run(_run(args)))


if __name__ == "__main__":
    sys.exit(main())

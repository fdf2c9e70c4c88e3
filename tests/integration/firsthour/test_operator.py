"""Issue #16: a GPU operator stakes, runs, watches and is paid from the CLI alone (`helium node ...`),
against a real `helium dev`, a real worker process and the real chain; each refusal is one clear line."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from conftest import cli, one_line_error
from eth_account import Account

from tests.support.procs import spawn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("gateway_dev")]


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _kick(devnet, address: str) -> None:
    from helium.v1 import admin_pb2, admin_pb2_grpc

    token = (devnet.home / ".helium/dev/coordinator/admin.token").read_text().strip()
    with grpc.insecure_channel(devnet.state["grpc"]) as ch:
        admin_pb2_grpc.AdminServiceStub(ch).KickNode(admin_pb2.KickNodeRequest(address=address, reason="test kick"),
                                                     metadata=(("authorization", f"Bearer {token}"),), timeout=60)  # fmt: skip


def test_an_operator_stakes_runs_watches_and_leaves_a_node_from_the_cli(devnet):
    home = devnet.home
    op = home / "operator"
    account = Account.create()
    (op / "keys").mkdir(parents=True)
    (op / "keys" / "node-0.key").write_text(account.key.hex())
    node = ["--data-dir", str(op)]

    status = _json(cli(home, "node", "status", *node, "--json"))
    assert status["stake"] == "0" and status["coordinator"].startswith("not registered")
    assert "insufficient balance" in one_line_error(cli(home, "node", "stake", "500", *node))
    assert cli(home, "dev", "fund", account.address, "1000").returncode == 0
    assert "stake below the minimum" in one_line_error(cli(home, "node", "stake", "5", *node))
    assert "has no stake" in one_line_error(cli(home, "node", "unstake", *node))
    assert _json(cli(home, "node", "stake", "400", *node, "--json"))["stake"] == "400"
    assert "no unstake was requested" in one_line_error(cli(home, "node", "withdraw", *node))

    worker = spawn(["-m", "worker", "--coordinator", devnet.state["grpc"], "--data-dir", str(op), "--device", "cpu",
                    "--executor", "instant", "--heartbeat-interval", "1"], "operator worker", cwd=home)  # fmt: skip
    events = None
    try:
        worker.wait_for("ready node=", 120)
        events = spawn(["-m", "helium.cli", "node", "events", *node, "--json"], "node events", cwd=home)
        view = _json(cli(home, "node", "status", *node, "--json"))["coordinator"]
        assert view["connected"] is True and view["state"] in ("available", "busy")
        events.wait_for('{"at"', 60)  # the snapshot
        assert _json(cli(home, "node", "pause", *node, "--json"))["state"] in ("paused", "pending_pause")
        assert _json(cli(home, "node", "resume", *node, "--json"))["state"] == "available"
        unstake = _json(cli(home, "node", "unstake", *node, "--json"))
        assert unstake["unlock_at"] and unstake["tx"].startswith("0x")
        assert "unstake delay is still pending" in one_line_error(cli(home, "node", "withdraw", *node))
        _kick(devnet, account.address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any('"kicked_out"' in x for x in events.lines):
            time.sleep(0.2)
        seen = [json.loads(x) for x in events.lines if x.startswith('{"at"')]
        states = [e["state"] for e in seen]
        assert "paused" in states and "kicked_out" in states, events.tail()
        assert states.index("paused") < states.index("kicked_out")
        kick = next(e for e in seen if e["state"] == "kicked_out")
        assert kick["event"] == "state" and "test kick" in kick["reason"]
        assert kick["chain"]["tx"].startswith("0x") and kick["chain"]["amount"] == "400"  # the chain's record
    finally:
        if events is not None:
            events.terminate(timeout=10)
        worker.terminate(timeout=30)


def test_a_node_sees_what_it_has_earned(devnet):
    home = devnet.home
    (home / "task.json").write_text(json.dumps({"model": "helium/tiny-llama-tools", "seed": 3,
                                                "messages": [{"role": "user", "content": "earn"}],
                                                "generation_config": {"max_new_tokens": 4}}))  # fmt: skip
    assert cli(home, "task", "submit", "task.json", timeout=300).returncode == 0
    keys = [str(home / f".helium/dev/worker-{i}/keys/node-0.key") for i in range(3)]
    deadline = time.monotonic() + 180  # settlement runs in batches
    while time.monotonic() < deadline:
        docs = [_json(cli(home, "node", "earnings", "--key", k, "--json")) for k in keys]
        if any(d["tasks_paid"] >= 1 for d in docs):
            break
        time.sleep(3)
    paid = next(d for d in docs if d["tasks_paid"] >= 1)
    assert float(paid["earned"].replace(",", "")) > 0 and float(paid["credit"].replace(",", "")) > 0

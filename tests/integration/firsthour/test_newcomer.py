"""Issue #16: what failed for a newcomer in the first hour, driven through the real `helium` CLI in
subprocesses, from the folder where `helium dev` runs, as a newcomer would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from conftest import cli, one_line_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("gateway_dev")]

TASK = {"model": "helium/tiny-llama-tools", "messages": [{"role": "user", "content": "hi"}],
        "generation_config": {"max_new_tokens": 4}, "seed": 1}  # fmt: skip


def test_banner_says_where_the_token_the_creator_key_the_api_keys_and_the_pages_are(devnet):
    text = "\n".join(devnet.banner)
    token = re.search(r"admin token:\s+(\S+)", text).group(1)
    assert (devnet.home / token).read_text().strip()
    assert re.search(r"creator key:\s+\.helium/creator\.key = 0x[0-9a-fA-F]{40}", text)
    keys_cmd = re.search(r"API key:\s+(helium keys create .*)", text).group(1).split()[1:]
    made = cli(devnet.home, *keys_cmd)
    assert made.returncode == 0 and "key: sk-" in made.stdout, made.stderr
    chat = re.search(r"(http://\S+/chat)", text).group(1)
    with urllib.request.urlopen(chat, timeout=30) as r:
        assert r.status == 200
    assert "helium dev fund" in text


def test_a_plain_cli_submit_is_validated_with_the_default_key_and_coordinator(devnet):
    (devnet.home / "task.json").write_text(json.dumps(TASK))
    done = cli(devnet.home, "task", "submit", "task.json", timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] in ("validated", "settled") and len(doc["nodes"]) >= 2


def test_stats_prints_zero_counts_instead_of_crashing(devnet):
    for extra in ([], ["--json"]):
        out = cli(devnet.home, "stats", *extra)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["queue_depth_by_type"].get("gpt") == 0  # an idle queue: a zero count, present
        assert doc["gpus"] == 3


def test_nodes_finds_the_dev_networks_admin_token(devnet):
    out = cli(devnet.home, "nodes", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["nodes"]) == 3


def test_a_closed_stdout_is_not_an_error(devnet):
    for args in (["nodes"], ["stats"]):
        proc = subprocess.Popen([sys.executable, "-m", "helium.cli", *args], cwd=devnet.home, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        proc.stdout.close()  # the reader went away, as `| head` does
        err = proc.stderr.read()
        proc.wait(timeout=120)
        assert "Broken pipe" not in err and "Traceback" not in err, err


def test_a_broken_task_file_is_named_with_its_position(devnet):
    (devnet.home / "broken.json").write_text('{"model":\n')
    err = one_line_error(cli(devnet.home, "task", "submit", "broken.json"))
    assert "broken.json" in err and "line 2 column 1" in err


def test_an_unreachable_coordinator_is_one_line(devnet):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nobody listens there
    (devnet.home / "task.json").write_text(json.dumps(TASK))
    err = one_line_error(cli(devnet.home, "task", "submit", "task.json", "--coordinator", f"127.0.0.1:{port}"))
    assert "cannot reach the coordinator" in err and str(port) in err


def test_a_second_dev_in_the_same_folder_says_so_at_once(devnet):
    started = time.monotonic()
    err = one_line_error(cli(devnet.home, "dev", "--port", "0", "--http-port", "0", timeout=120))
    assert "already open in another network" in err
    assert time.monotonic() - started < 60  # no 16 s lock wait, and no chain started


def test_a_second_dev_elsewhere_on_the_same_port_says_the_port_is_in_use(devnet, tmp_path):
    port = devnet.state["grpc"].rsplit(":", 1)[1]
    err = one_line_error(cli(tmp_path, "dev", "--port", port, "--http-port", "0", timeout=120))
    assert f"port {port}" in err and "in use" in err
    assert not (tmp_path / ".helium" / "dev" / "worker-0").exists()  # no worker joined the first network


def test_the_coordinators_grpc_port_is_not_shared(devnet):
    """grpc turns SO_REUSEPORT on by default: a second server could bind the port the coordinator holds."""
    port = int(devnet.state["grpc"].rsplit(":", 1)[1])

    async def bind() -> bool:
        s = grpc.aio.server()  # grpc's defaults: SO_REUSEPORT on
        try:
            s.add_insecure_port(f"127.0.0.1:{port}")
        except RuntimeError:
            return False
        await s.stop(None)
        return True

    assert asyncio.run(bind()) is False


def test_a_dead_worker_is_logged_reaped_and_restarted(devnet):
    pids = devnet.worker_pids()
    assert sorted(pids) == [0, 1, 2], pids
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("dev_worker_restarted" in x and "worker=1" in x
                                                  for x in devnet.proc.lines):  # fmt: skip
        time.sleep(0.2)
    exited = [x for x in devnet.proc.lines if "dev_worker_exited" in x]
    assert exited and "SIGKILL" in exited[-1] and f"pid={victim}" in exited[-1], devnet.proc.tail()
    assert any("dev_worker_restarted" in x for x in devnet.proc.lines), devnet.proc.tail()
    assert not os.path.exists(f"/proc/{victim}")  # reaped: no zombie left
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = cli(devnet.home, "nodes", "--json")
        nodes = json.loads(out.stdout)["nodes"] if out.returncode == 0 else []
        if sum(1 for n in nodes if n.get("connected")) == 3:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the restarted worker did not rejoin: {out.stdout} {out.stderr}")


def test_the_faucet_gives_an_address_tokens(devnet):
    address = "0x000000000000000000000000000000000000dEaD"

    def balance() -> int:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [address, "latest"]})
        req = urllib.request.Request(devnet.state["rpc"], body.encode(), {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.load(r)["result"], 16)

    before = balance()
    out = cli(devnet.home, "dev", "fund", address, "5")
    assert out.returncode == 0, out.stderr
    assert balance() - before == 5 * 10**18
    one_line_error(cli(devnet.home, "dev", "fund", "0xnot-an-address"))

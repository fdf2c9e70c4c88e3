"""The worker as a process: SIGTERM drains, a second signal exits at once, keys, settings, plaintext refusal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import urllib.request
from pathlib import Path

import pytest
import structlog
import torch
from _session_fakes import assignment, fast_config
from eth_account import Account

from helium.config import load_settings
from helium.v1 import worker_pb2
from worker.__main__ import main
from worker.config import WorkerConfig
from worker.errors import ConnectError
from worker.node import build_nodes, device_profile
from worker.session import NodeProfile
from worker.transport import is_loopback, make_channel

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[4]
PROFILE = NodeProfile(card_name="Fake GPU 24GB", vram_bytes=24 << 30, device="cuda:0")

# run_workers with a slow test-double executor, so that SIGTERM lands while a task is in hand.
SLOW_WORKER = """
import asyncio, sys
from datetime import timedelta
from helium.log import configure_logging
from worker.config import WorkerConfig
from worker.node import run_workers
from worker.session import NodeProfile
from worker.testing import SlowExecutor
configure_logging()
cfg = WorkerConfig(coordinator=sys.argv[1], data_dir=sys.argv[2], executor="instant", gpus=(0, 1),
                   reconnect_initial=timedelta(milliseconds=50), ack_timeout=timedelta(seconds=10))
profile = lambda c, gpu: NodeProfile(card_name="Fake GPU", vram_bytes=1 << 30, device=f"cuda:{gpu}")
sys.exit(asyncio.run(run_workers(cfg, executor_factory=lambda c, p: [SlowExecutor(1.0)], profile_factory=profile)))
"""


def _stderr_file(log: Path):
    return log.open("wb")


async def _spawn(args: list[str], log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("HELIUM_CONFIG", None)
    with _stderr_file(log) as err:
        return await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _text(log: Path) -> str:
    return log.read_text()


async def _ready_line(proc: asyncio.subprocess.Process, log: Path) -> str:
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"no ready line; stderr:\n{_text(log)}") from None
    assert line.startswith(b"ready node="), (line, _text(log))
    return line.decode()


async def test_sigterm_drains_every_node_and_the_task_in_hand(fake, tmp_path):
    log = tmp_path / "stderr.log"
    proc = await _spawn(["-c", SLOW_WORKER, fake.address, str(tmp_path / "data")], log)
    try:
        ready = [await _ready_line(proc, log), await _ready_line(proc, log)]  # --gpus 0,1: two nodes
        stream, other = await fake.next_stream(), await fake.next_stream()
        assert {stream.info.device, other.info.device} == {"cuda:0", "cuda:1"}
        assert {line.split()[1] for line in ready} == {f"node={s.info.address}" for s in (stream, other)}
        a = assignment()
        stream.send(assignment=a)
        await stream.recv("started")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(fake.control_seen.wait(), 10)  # signed ControlNode QUIT (checked by the fake)
        assert fake.controls[0].action == worker_pb2.NODE_ACTION_QUIT
        result = await stream.recv("result", within=10)  # the task in hand still finishes and is delivered
        assert result.assignment_id == a.assignment_id
        await asyncio.sleep(0.3)
        assert proc.returncode is None  # waits for the ack
        stream.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
        assert await asyncio.wait_for(proc.wait(), 10) == 0, _text(log)
        assert _text(log).count("node_drained") == 2
        assert {c.address for c in fake.controls} == {stream.info.address, other.info.address}
        assert fake.attempts == 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_ready_line_key_file_and_second_signal_exits_at_once(fake, tmp_path):
    log = tmp_path / "stderr.log"
    data = tmp_path / "data"
    metrics_port = _free_port()
    proc = await _spawn(["-m", "worker", "--coordinator", fake.address, "--data-dir", str(data),
                         "--executor", "instant", "--device", "cpu", "--log-json",
                         "--metrics-port", str(metrics_port)], log)
    try:
        ready = await _ready_line(proc, log)
        key_file = data / "keys" / "node-0.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        address = Account.from_key(bytes.fromhex(key_file.read_text().strip().removeprefix("0x"))).address
        assert ready.split()[1] == f"node={address}" and "device=cpu" in ready and "tasks=gpt,sd" in ready
        stream = await fake.next_stream()
        assert stream.info.card.name.startswith("cpu") and stream.info.card.vram_bytes > 0
        stream.send(assignment=assignment())
        await stream.recv("result")  # never acked: a drain would wait for it (ack_timeout)
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert f'helium_worker_connected{{node="{address}"}} 1.0' in metrics
        assert f'helium_worker_assignments_total{{node="{address}",outcome="submitted",task_type="gpt"}} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(fake.control_seen.wait(), 10)
        await asyncio.sleep(0.2)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 128 + signal.SIGTERM
        assert '"event": "worker_exit_now"' in _text(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_key_files_one_per_gpu_mode_0600_and_stable(tmp_path):
    cfg = fast_config("127.0.0.1:1", tmp_path, gpus=(0, 1))
    nodes = build_nodes(cfg, profile_factory=lambda c, gpu: PROFILE)
    assert len(nodes) == 2 and nodes[0].address != nodes[1].address
    for gpu in (0, 1):
        assert stat.S_IMODE((tmp_path / "keys" / f"node-{gpu}.key").stat().st_mode) == 0o600
    again = build_nodes(cfg, profile_factory=lambda c, gpu: PROFILE)
    assert [n.address for n in again] == [n.address for n in nodes]
    assert sorted(nodes[0].jobs.executors) == ["gpt", "sd"]  # executor=instant: the test doubles


async def test_plaintext_refused_to_non_loopback_host():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("10.1.2.3") and not is_loopback("example.com")
    with pytest.raises(ConnectError) as info:
        make_channel("10.1.2.3:50051")
    assert not info.value.retryable and "--tls-ca" in str(info.value) and "--insecure" in str(info.value)
    await make_channel("10.1.2.3:50051", insecure=True).close()  # said explicitly: allowed
    await make_channel("127.0.0.1:50051").close()  # loopback: allowed


def test_cli_refuses_plaintext_to_non_loopback_host(tmp_path, capsys):
    try:
        code = main(["--coordinator", "10.1.2.3:50051", "--executor", "instant", "--device", "cpu",
                     "--data-dir", str(tmp_path)])
    finally:
        structlog.reset_defaults()
    assert code == 1
    assert "refusing plaintext gRPC to 10.1.2.3:50051" in capsys.readouterr().err


def test_settings_precedence_flags_env_toml_defaults(tmp_path):
    toml = tmp_path / "helium.toml"
    toml.write_text('[worker]\ncoordinator = "toml:1"\nheartbeat_interval = 2\ndevice = "cpu"\n')
    env = {"HELIUM_COORDINATOR": "env:2", "HELIUM_GPUS": "0,1"}
    cfg = load_settings(WorkerConfig, {"gpus": "3"}, section="worker", config_file=toml, environ=env)
    assert cfg.coordinator == "env:2" and cfg.gpus == (3,) and cfg.device == "cpu"
    assert cfg.heartbeat_interval.total_seconds() == 2 and cfg.executor == "real"
    with pytest.raises(ValueError, match="executor must be one of real, instant, lying, got 'fast'"):
        WorkerConfig(executor="fast")
    assert main(["--coordinator", "nohostport", "--data-dir", str(tmp_path)]) == 2
    from worker.__main__ import build_parser, load_config

    assert load_config(build_parser().parse_args(["--max-assignments", "4"])).max_assignments == 4
    with pytest.raises(ValueError, match=r"max_assignments must be in \[1, 64\], got 0"):
        WorkerConfig(max_assignments=0)


def test_device_profile_on_cpu_is_honest(tmp_path):
    p = device_profile(fast_config("127.0.0.1:1", tmp_path, device="cpu"), 0)
    assert p.device == "cpu" and p.card_name.startswith("cpu:") and p.vram_bytes > 0
    assert 0 < p.free_vram_bytes() <= p.vram_bytes
    with pytest.raises(ValueError, match="needs device cuda"):
        build_nodes(fast_config("127.0.0.1:1", tmp_path, device="cpu", gpus=(0, 1)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_profile_reports_each_cuda_card_honestly(tmp_path):
    gpus = tuple(range(torch.cuda.device_count()))
    cfg = fast_config("127.0.0.1:1", tmp_path, gpus=gpus)
    for gpu in gpus:
        p = device_profile(cfg, gpu)
        props = torch.cuda.get_device_properties(gpu)
        assert (p.vram_bytes, p.device) == (props.total_memory, f"cuda:{gpu}")
        assert p.card_name.startswith(props.name + " [transformers; torch ")  # the group key (worker.device)
        assert 0 < p.free_vram_bytes() <= p.vram_bytes


async def test_fleet_process_of_test_doubles(fake, tmp_path):
    log = tmp_path / "stderr.log"
    proc = await _spawn(["-m", "worker.testing", "--coordinator", fake.address, "--nodes", "3", "--liars", "1",
                         "--cards", "Card A=24,Card B=80", "--keys-dir", str(tmp_path / "keys")], log)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"ready nodes=3"), (line, _text(log))
        streams = [await fake.next_stream() for _ in range(3)]
        assert sorted(s.info.card.name for s in streams) == ["Card A", "Card A", "Card B"]
        keyed = {Account.from_key(bytes.fromhex((tmp_path / "keys" / f"node-{i}.key").read_text().strip())).address
                 for i in range(3)}
        assert {s.info.address for s in streams} == keyed
        task = assignment()
        hashes = []
        for s in streams:
            s.send(assignment=task)
            hashes.append((await s.recv("result")).result_hash)
            s.send(ack=worker_pb2.Ack(assignment_id=task.assignment_id))
        assert len(set(hashes)) == 2 and sorted(hashes.count(h) for h in set(hashes)) == [1, 2]  # one liar
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0, _text(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

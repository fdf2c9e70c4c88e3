"""`helium dev`: the whole network on this machine, on embedded defaults.

It opens the embedded chain, builds a tiny local GPT model and SD pipeline into a private
Hugging Face cache (no hub needed), stakes the worker keys, starts the
coordinator with its relay and gateway in this process and N worker processes,
and prints one line once everything serves:

    ready grpc=127.0.0.1:50051 http=127.0.0.1:8080 model=helium/tiny-llama-tools sd_model=helium/tiny-sd15

SIGTERM or Ctrl-C drains the workers, then stops the coordinator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from chain.signing import load_or_create_key
from coordinator.config import CoordinatorConfig
from helium.config import ConfigError, load_settings
from helium.log import configure_logging

__all__ = ["DevNetwork", "main"]

log = structlog.get_logger("coordinator.dev")

DEV_MODEL_KIND = "llama-tools"


@dataclass
class DevNetwork:
    """The embedded network; `await net.start()` then `await net.stop()`."""

    data_dir: Path
    port: int = 0
    http_port: int = 0
    workers: int = 3
    chain: str = "embedded"
    heartbeat_interval_s: float = 1.0
    worker_executor: str = "real"
    log_json: bool = False
    ready_timeout_s: float = 120.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    async def start(self) -> str:
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        hf_cache = data / "hf-cache"
        from worker.tiny import install_tiny_into_hf_cache
        from worker.tiny_sd import install_tiny_sd_into_hf_cache

        self.model = await asyncio.to_thread(install_tiny_into_hf_cache, DEV_MODEL_KIND, hf_cache)
        self.sd_model = await asyncio.to_thread(install_tiny_sd_into_hf_cache, "sd15", hf_cache)
        worker_dirs = [data / f"worker-{i}" for i in range(self.workers)]
        keys = [load_or_create_key(d / "keys" / "node-0.key") for d in worker_dirs]

        self.devchain = None
        parts_factory = None
        if self.chain == "embedded":
            from chain.devchain import DevChain
            from coordinator.service.chain_parts import chain_parts

            self.devchain = await DevChain.spawn(data / "chain")  # the EVM on a core of its own
            for key in keys:
                if await self.devchain.client().stake_of(key.address) == 0:
                    await self.devchain.fund_and_stake(key)
            gw_key = data / "coordinator" / "gateway" / "creator.key"
            if not gw_key.exists():
                gw_key.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(gw_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(bytes(self.devchain.keys.creator.key).hex())
            parts_factory = functools.partial(chain_parts, devchain=self.devchain)
        else:
            from coordinator.server import backbone_parts

            parts_factory = backbone_parts

        from coordinator.server import CoordinatorApp

        config = CoordinatorConfig(
            data_dir=data / "coordinator", port=self.port, http_port=self.http_port, chain=self.chain,
            heartbeat_interval_s=self.heartbeat_interval_s, log_json=self.log_json, shutdown_grace_s=2.0,
        )  # fmt: skip
        self.app = CoordinatorApp(config, parts_factory)
        await self.app.start()
        env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # fmt: skip
        for d in worker_dirs:
            cmd = [sys.executable, "-m", "worker", "--coordinator", self.app.address, "--data-dir", str(d),
                   "--device", "cpu", "--executor", self.worker_executor,
                   "--heartbeat-interval", str(self.heartbeat_interval_s)]  # fmt: skip
            if self.log_json:
                cmd.append("--log-json")
            log_file = open(d / "worker.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                               start_new_session=True))  # fmt: skip
        await self._wait_registered({k.address for k in keys})
        return self.ready_line()

    async def _wait_registered(self, addresses: set[str]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not addresses <= set(self.app.dispatcher.nodes):
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a dev worker exited with {p.returncode}; see {self.data_dir}/worker-*/worker.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dev workers not registered within {self.ready_timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    def ready_line(self) -> str:
        return f"{self.app.ready_line()} model={self.model} sd_model={self.sd_model}"

    async def stop(self) -> None:
        t0 = time.monotonic()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if p.poll() is None:
                p.kill()
                p.wait()
        steps = {"workers_s": time.monotonic() - t0}
        await self.app.stop()
        steps["coordinator_s"] = time.monotonic() - t0 - sum(steps.values())
        if self.devchain is not None:
            await self.devchain.close()
            steps["chain_s"] = time.monotonic() - t0 - sum(steps.values())
        report = log.warning if time.monotonic() - t0 > 10 else log.info
        report("dev_stopped", **{k: round(v, 2) for k, v in steps.items()})


@dataclass(frozen=True)
class DevConfig:
    data_dir: Path = Path(".helium/dev")
    port: int = 50051
    http_port: int = 8080
    workers: int = 3
    chain: str = "embedded"
    heartbeat_interval_s: float = 1.0
    log_json: bool = False
    log_level: str = "warning"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helium dev", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML settings file; [dev] table")
    a("--data-dir", metavar="DIR", help="default .helium/dev")
    a("--port", type=int, help="gRPC port (0 picks a free one; default 50051)")
    a("--http-port", type=int, help="HTTP gateway port (0 picks one, -1 disables; default 8080)")
    a("--workers", type=int, help="worker processes (default 3)")
    a("--chain", help="'embedded' (default) or 'none'")
    a("--heartbeat-interval-s", type=float)
    a("--log-json", action="store_true", default=None)
    a("--log-level", choices=("debug", "info", "warning", "error"))
    return p


async def _serve(cfg: DevConfig) -> None:
    net = DevNetwork(cfg.data_dir, cfg.port, cfg.http_port, cfg.workers, cfg.chain, cfg.heartbeat_interval_s,
                     log_json=cfg.log_json)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        line = await net.start()
        print(line, flush=True)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await net.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    try:
        cfg = load_settings(DevConfig, flags, section="dev", config_file=args.config)
    except ConfigError as exc:
        print(f"helium dev: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.log_json, cfg.log_level)
    try:
        asyncio.run(_serve(cfg))
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"helium dev: {exc}", file=sys.stderr)
        return 1
    return 0

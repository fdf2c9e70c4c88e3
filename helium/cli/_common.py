"""What the client subcommands share: finding the coordinator (and a running `helium dev`), the admin
token, a channel with TLS rules, and one plain line instead of a traceback for each user error.

Without `--coordinator` or `HELIUM_COORDINATOR`, a `helium dev` running from this folder
(`.helium/dev/dev.json`) is used, then 127.0.0.1:50051. The admin token comes from `--admin-token`,
`HELIUM_ADMIN_TOKEN`, `--data-dir`, or the first of `.helium/coordinator` and `.helium/dev/coordinator`
that holds an `admin.token`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

__all__ = ["ADMIN_TOKEN_DIRS", "add_connection_args", "admin_token", "dev_state", "open_channel", "run_cli",
           "target_of"]  # fmt: skip

DEV_DIR = Path(".helium/dev")
ADMIN_TOKEN_DIRS = (Path(".helium/coordinator"), DEV_DIR / "coordinator")


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="coordinator address (env HELIUM_COORDINATOR; default: the helium dev running "
                        "from this folder, else 127.0.0.1:50051)")  # fmt: skip
    p.add_argument("--tls-ca", metavar="FILE", help="CA bundle that signed the coordinator's certificate")
    p.add_argument("--insecure", action="store_true", help="allow plaintext to a non-loopback coordinator")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each RPC, seconds")


def dev_state() -> dict | None:
    """The `helium dev` running from this folder (its dev.json), or None."""
    try:
        from coordinator.devtools import read_state
    except ImportError:  # a worker-only install
        return None
    return read_state(DEV_DIR)


def target_of(args: argparse.Namespace) -> str:
    if args.coordinator or os.environ.get("HELIUM_COORDINATOR"):
        return args.coordinator or os.environ["HELIUM_COORDINATOR"]
    state = dev_state()
    return state["grpc"] if state and state.get("grpc") else "127.0.0.1:50051"


def admin_token(explicit: str | None, data_dir: str | None) -> str:
    """The admin credential; ValueError naming every place looked at when there is none."""
    if explicit or os.environ.get("HELIUM_ADMIN_TOKEN"):
        return explicit or os.environ["HELIUM_ADMIN_TOKEN"]
    dirs = [Path(data_dir)] if data_dir else list(ADMIN_TOKEN_DIRS)
    if not data_dir and dev_state() is not None:  # the running helium dev is the default coordinator
        dirs.reverse()
    for d in dirs:
        if (d / "admin.token").exists():
            return (d / "admin.token").read_text().strip()
    looked = ", ".join(str(d / "admin.token") for d in dirs)
    raise ValueError(f"no admin credential: give --admin-token or HELIUM_ADMIN_TOKEN (looked for {looked})")


def open_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    from coordinator.tls import client_credentials

    target = target_of(args)
    creds = client_credentials(target, Path(args.tls_ca) if args.tls_ca else None, args.insecure)
    return grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)


def rpc_error_line(exc: grpc.aio.AioRpcError, target: str) -> str:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach the coordinator at {target} ({exc.details()}); is it running? "
                f"Give --coordinator HOST:PORT or HELIUM_COORDINATOR")  # fmt: skip
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the coordinator at {target} did not answer in time (--timeout)"
    return f"{exc.code().name}: {exc.details()}"


def run_cli(prog: str, args: argparse.Namespace | None, body: Callable[[], int]) -> int:
    """Runs `body`, turning each user error into one line on stderr (exit 1) instead of a traceback:
    an RPC refused or a coordinator out of reach, a bad file or value, a closed stdout (`| head`)."""
    try:
        rc = body()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return rc
    except grpc.aio.AioRpcError as exc:
        target = target_of(args) if args is not None and hasattr(args, "coordinator") else "?"
        print(f"{prog}: {rpc_error_line(exc, target)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep Python from failing to flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except (OSError, ValueError) as exc:  # unreadable file, bad field, no key
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""`helium worker` (also `python -m worker`): serve this host's GPUs to a coordinator.

Settings precedence: flags > HELIUM_* environment > [worker] table of --config > defaults
(see worker.config.WorkerConfig). Prints one `ready node=<address> ...` line per node on stdout
once it is registered; logs go to stderr (readable, or JSON with --log-json).

Exit status: 0 drained cleanly (SIGTERM / SIGINT, or the coordinator's Drain); 1 refused by the
coordinator (bad signature, no stake), disconnected (kicked out, slashed) or unreachable after the
bounded reconnects; 2 bad settings or no usable device / executor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from helium.config import ConfigError, load_settings
from helium.log import configure_logging
from worker.config import WorkerConfig
from worker.node import EXIT_SETUP, run_workers

__all__ = ["build_parser", "load_config", "main"]


def build_parser(prog: str = "helium worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve this host's GPUs (or CPU / Apple MPS) to a coordinator.")
    a = p.add_argument
    a("--coordinator", metavar="HOST:PORT", help="coordinator gRPC address (env HELIUM_COORDINATOR)")
    a("--data-dir", metavar="DIR", help="where node keys live: DIR/keys/node-<gpu>.key")
    a("--gpus", metavar="0,1,...", help="CUDA device indexes to serve, one node (key, stream) each")
    a("--device", choices=("cuda", "mps", "cpu"), help="force the device kind (default: cuda > mps > cpu)")
    a("--backend", choices=("transformers", "vllm"), help="GPT backend")
    a("--model-budget-bytes", type=int, metavar="N", help="memory the model cache may hold")
    a("--executor", choices=("real", "instant", "lying"),
      help="real: the GPT/SD executors. TEST DOUBLES that run no model (tests and benchmarks only): "
           "instant (honest hashes), lying (wrong hashes)")
    a("--instant-delay", type=float, metavar="SECONDS", help="test doubles only: time each task takes")
    a("--max-assignments", type=int, metavar="N",
      help="assignments this node holds at once: the running one and those queued behind it (default 1)")
    a("--heartbeat-interval", type=float, metavar="SECONDS", help="used when the coordinator names none")
    a("--connect-timeout", type=float, metavar="SECONDS", help="bound of one connection attempt")
    a("--reconnect-max-attempts", type=int, metavar="N")
    a("--reconnect-max-time", type=float, metavar="SECONDS")
    a("--drain-timeout", type=float, metavar="SECONDS", help="how long a drain waits for the task in hand")
    a("--keepalive-time", type=float, metavar="SECONDS",
      help="HTTP/2 keepalive ping interval on the coordinator's connection (30); a peer that stops answering "
           "is noticed within keepalive-time + keepalive-timeout")
    a("--keepalive-timeout", type=float, metavar="SECONDS", help="how long a keepalive ping may go unanswered (10)")
    a("--tls-ca", metavar="FILE", help="PEM CA bundle that signed the coordinator's certificate")
    a("--tls-server-name", metavar="NAME", help="host name to check the certificate against")
    a("--insecure", action="store_true", default=None, help="allow plaintext to a non-loopback coordinator")
    a("--config", metavar="FILE", help="TOML settings file (env HELIUM_CONFIG); [worker] table")
    a("--log-json", action="store_true", default=None, help="JSON log lines")
    a("--log-level", choices=("debug", "info", "warning", "error"))
    a("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")
    a("--metrics-host", metavar="ADDR", help="address the metrics server binds (default 127.0.0.1)")
    return p


def load_config(args: argparse.Namespace) -> WorkerConfig:
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return load_settings(WorkerConfig, flags, section="worker", config_file=args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
    except (ConfigError, ValueError) as exc:
        print(f"helium worker: {exc}", file=sys.stderr)
        return EXIT_SETUP
    configure_logging(config.log_json, config.log_level)
    try:
        return asyncio.run(run_workers(config))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


if __name__ == "__main__":
    sys.exit(main())

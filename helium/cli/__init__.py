"""The `helium` command: one entry point, one subcommand per part.

Each subcommand lives with the part it runs and exposes `main(argv) -> int`;
this module only dispatches, so `helium worker` on a GPU host never imports
the coordinator, and vice versa.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# subcommand -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "coordinator": ("coordinator.__main__:main", "run the coordinator (queue, relay, gateway, chain client)"),
    "worker": ("worker.__main__:main", "run a worker: one node per GPU"),
    "relay": ("relay.__main__:main", "run the relay standalone"),
    "gateway": ("coordinator.gateway.__main__:main", "run the OpenAI-compatible HTTP gateway standalone"),
    "chain": ("helium.cli.chain:main", "run the embedded dev chain as a JSON-RPC node (its own process)"),
    "dev": ("coordinator.dev:main", "embedded network on this machine: chain, coordinator, relay, gateway, workers"),
    "demo": ("coordinator.demo:main", "start the embedded network, ask it one chat question, shut down"),
    "task": ("helium.cli.task:main", "submit a task (task submit FILE.json) or read one (task get ID)"),
    "nodes": ("helium.cli.ops:nodes_main", "list the nodes, with card, state and QoS"),
    "stats": ("helium.cli.ops:stats_main", "network statistics"),
    "info": ("helium.cli.ops:info_main", "the network: chain id, TaskLedger, coordinator address, min fee"),
    "keys": ("coordinator.gateway.keys_cli:main", "create, list and revoke gateway API keys"),
    "node": ("helium.cli.node:main", "a GPU operator's node: stake, unstake, withdraw, status, earnings, events"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: helium <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `helium <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from helium import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"helium: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

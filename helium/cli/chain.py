"""`helium chain --data-dir DIR [--port N]`: the embedded dev chain as a JSON-RPC node (chain.server)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from chain.server import main as serve_main

    return serve_main(argv)

"""Choosing the protocol parts for a coordinator from its settings."""

from __future__ import annotations

from coordinator.config import CoordinatorConfig

__all__ = ["parts_for"]


def parts_for(config: CoordinatorConfig):
    """The parts factory for `config.chain`: "none" runs the backbone alone (open membership, no
    deposits, no settlement); "embedded" or a JSON-RPC URL runs the full protocol on that chain."""
    from coordinator.server import backbone_parts

    if config.chain == "none":
        return backbone_parts
    from coordinator.service.chain_parts import chain_parts

    return chain_parts

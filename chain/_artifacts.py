"""Compiled contract artifacts (``chain/artifacts/<Name>.json``, built by ``node chain/build.js``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: bytes


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name` (``test/<Name>`` for a test-only contract)."""
    data = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return Artifact(name=data["contractName"], abi=data["abi"], bytecode=bytes.fromhex(data["bytecode"][2:]))

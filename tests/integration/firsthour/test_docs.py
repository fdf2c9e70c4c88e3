"""Issue #16: the design document the README and the code point to exists, and every pointer names it by
its path (the README once pointed to a DESIGN.md the repository did not have)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SOURCES = ["README.md", "coordinator", "worker", "relay", "chain", "helium", "tests", "bench"]


def _files():
    for top in SOURCES:
        path = REPO / top
        yield from [path] if path.is_file() else (p for p in path.rglob("*") if p.suffix in (".py", ".md"))


def test_every_reference_to_the_design_document_points_to_docs_design_md():
    assert (REPO / "docs" / "DESIGN.md").is_file()
    bad = []
    for path in _files():
        if "node_modules" in path.parts or path.name == "test_docs.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"(?<![\w/])DESIGN\.md", line):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_the_design_document_covers_the_parts_the_issue_names():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    for heading in ("## The parts", "## The task lifecycle", "## Pricing", "## Validation", "## QoS",
                    "## The chain", "## The relay"):  # fmt: skip
        assert heading in text, heading
    assert 120 <= len(text.splitlines()) <= 320

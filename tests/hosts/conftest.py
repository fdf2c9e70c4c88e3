"""Fixtures of the host tests: `hosts` gives a fresh set of namespaces (tests.hosts.netns.Hosts),
torn down after the test whatever happened; skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

import pytest

from tests.hosts.netns import Hosts, unavailable_reason

_reason: list[str | None] = []


@pytest.fixture
def hosts(tmp_path):
    if not _reason:
        _reason.append(unavailable_reason())
    if _reason[0]:
        pytest.skip(f"no network namespaces here: {_reason[0]}")
    with Hosts(tmp_path) as h:
        yield h

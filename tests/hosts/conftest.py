"""Fixtures of the host tests.

`hosts`: a fresh set of namespaces (tests.hosts.netns.Hosts) for one test. `fast_net` and `slow_net`:
a whole network (tests.hosts.network.HostNet) shared by the tests of one xdist group (starting one costs
half a minute on two cores): three instant workers holding 4 assignments each, or four workers whose
tasks take 3 s (so a test can cut a worker in the middle of one). After each test every link is healed.
All of them are torn down whatever happened, and skipped with the reason where namespaces cannot be made.

Under `pytest -n 2 --dist loadgroup` the tests' xdist_group marks should keep each network's tests on one
worker; with pytest 9.2 and xdist 3.8 they do not (xdist renames `item._nodeid`, which pytest 9 no longer
reads), so each worker starts the networks its tests need. The suite passes either way.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.hosts.netns import Hosts, unavailable_reason
from tests.hosts.network import HostNet

_reason: list[str | None] = []


def _skip_unless_namespaces() -> None:
    if not _reason:
        _reason.append(unavailable_reason())
    if _reason[0]:
        pytest.skip(f"no network namespaces here: {_reason[0]}")


@pytest.fixture
def hosts(tmp_path):
    _skip_unless_namespaces()
    with Hosts(tmp_path) as h:
        yield h


@contextlib.contextmanager
def _network(root, **kw):
    with Hosts(root) as h:
        net = HostNet(h, root, **kw)
        net.start()
        yield net


@pytest.fixture(scope="session")
def fast_net(tmp_path_factory):
    _skip_unless_namespaces()
    # Tasks get the default 15 minutes: a worker 10 minutes fast still sees time left (test_clock).
    with _network(tmp_path_factory.mktemp("fast"), workers=3, relay=True, task_timeout_s=900,
                  worker_args=["--max-assignments", "4"]) as net:  # fmt: skip
        yield net


@pytest.fixture(scope="session")
def slow_net(tmp_path_factory):
    _skip_unless_namespaces()
    # Keepalive 2 s + 2 s: a half-open connection is noticed within ~4 s; the lease lapses after 3 missed
    # 1 s heartbeats.
    with _network(tmp_path_factory.mktemp("slow"), workers=4, heartbeat_s=1.0,
                  worker_args=["--instant-delay", "3", "--keepalive-time", "2", "--keepalive-timeout", "2"],
                  worker_env={"HELIUM_RECONNECT_MAX": "2"}) as net:  # a healed link is used within 2 s  # fmt: skip
        yield net


@pytest.fixture(autouse=True)
def _heal(request):
    """Every link whole again after each test, whatever it cut or slowed."""
    yield
    for name in ("fast_net", "slow_net"):
        if name in request.fixturenames:
            net: HostNet = request.getfixturevalue(name)
            for h in net.hosts.hosts.values():
                with contextlib.suppress(Exception):
                    net.hosts.up(h)
                    net.hosts.clear(h)

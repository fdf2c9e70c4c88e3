"""TLS across hosts: every link of a network spread over namespaces is TLS, and plaintext or a
certificate from another CA is refused with a clear error."""

from __future__ import annotations

import pytest

from tests.hosts.network import HostNet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_tasks_validate_with_tls_on_every_link(hosts, tmp_path):
    net = HostNet(hosts, tmp_path, workers=3)
    net.start()
    out = net.submit(5, settled=True)
    assert out["states"] == {"TASK_STATE_SETTLED": 5}, out
    assert all(len(n) >= 2 for n in out["nodes"]), out

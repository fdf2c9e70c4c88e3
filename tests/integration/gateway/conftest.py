from __future__ import annotations

import pytest
from gateway_tool_model import install_tool_calling_model

from coordinator.demo import DevProcess


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """`helium dev` with three real worker processes; the tool-calling tiny model is in their cache too."""
    data = tmp_path_factory.mktemp("gateway-dev")
    tool_model = install_tool_calling_model(data / "hf-cache")
    net = DevProcess(data).start()
    net.tool_model = tool_model
    yield net
    assert net.stop() == 0

from __future__ import annotations

import pytest
from gateway_tool_model import install_tiny_sd, install_tool_calling_model

from coordinator.demo import DevProcess


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """`helium dev` with three real worker processes; the tool-calling tiny model is in their cache too."""
    data = tmp_path_factory.mktemp("gateway-dev")
    tool_model = install_tool_calling_model(data / "hf-cache")
    sd_model = install_tiny_sd(data / "hf-cache")
    # A loaded shared host takes minutes to start it, and its workers' drain can take half a minute.
    net = DevProcess(data, ready_timeout_s=420).start()
    net.tool_model, net.sd_model = tool_model, sd_model
    yield net
    assert net.stop(grace_s=90) == 0, (data / "dev.log").read_text(errors="replace")[-4000:]

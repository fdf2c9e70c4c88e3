"""Protocol tests run dozens of nodes in one process: keep their logs at warning while a test runs."""

from __future__ import annotations

import pytest
import structlog

from helium.log import configure_logging


@pytest.fixture(autouse=True)
def quiet_logs():
    saved = structlog.get_config()
    configure_logging(False, "warning")
    yield
    structlog.configure(**saved)

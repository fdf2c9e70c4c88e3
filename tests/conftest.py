"""Suite-wide settings. Fixtures live next to the tests that use them (tests/support for shared ones)."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs the property tests derandomized: the same examples on every run of the same code, so a red CI
# is reproducible; locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

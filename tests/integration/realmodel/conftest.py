"""Fixtures for the tests on the embedded real model (SmolLM2-135M-Instruct, worker/realmodel.py).

The model is converted once per machine (`make install` runs `python -m worker.realmodel prepare`); each
test session links it into a Hugging Face hub cache of its own, as `helium dev` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.realmodel import HUB_ID, install_into_hf_cache, prepare


@pytest.fixture(scope="session")
def real_folder() -> Path:
    """The converted Hugging Face folder (converting it here if `make install` has not)."""
    return prepare()


@pytest.fixture(scope="session")
def real_hf_cache(tmp_path_factory, real_folder) -> Path:
    cache = tmp_path_factory.mktemp("real-hf-cache")
    assert install_into_hf_cache(cache) == HUB_ID
    return cache

"""Every model test runs on one torch thread (see the ``one_torch_thread`` fixture in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    pass

"""What a test needs from outside the project: dev dependencies and the shared data, skipped or required.

A test that needs a reference library calls :func:`require` inside itself (or inside a fixture it uses), so only
that test skips when the library is missing, never its neighbours. Under ``.ci/run``
(``SCRATCHLLM_REQUIRE_SHARED_DATA=1``) nothing may skip unseen: a missing dev dependency or shared file fails.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

STRICT_ENV = "SCRATCHLLM_REQUIRE_SHARED_DATA"


def skip_or_fail(message: str) -> NoReturn:
    """Skip the calling test, or fail it under ``.ci/run`` where every dependency is mandatory."""
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(message + " (required under .ci/run)")
    pytest.skip(message)


def require(module: str) -> ModuleType:
    """Import and return ``module`` (e.g. ``"transformers"``, ``"pyarrow.parquet"``), or skip/fail this test."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(f"dev dependency {module} is not installed ({exc}); pip install -e '.[dev]'")

"""A missing reference library skips only the test that needs it, and fails it under .ci/run."""

from __future__ import annotations

import pytest

from dev_deps import STRICT_ENV, require


def test_require_returns_the_module():
    assert require("json").dumps([1]) == "[1]"
    assert require("os.path").join("a", "b").endswith("b")  # submodules too


def test_a_missing_library_skips_here_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_reference_lib is not installed"):
        require("no_such_reference_lib")
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"required under \.ci/run"):
        require("no_such_reference_lib")

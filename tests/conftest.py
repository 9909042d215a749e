"""Shared fixtures.

``shared_data`` is the folder of real data beside the project (``../shared/data``). Tests that need it skip when
it is absent, except when ``SCRATCHLLM_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``), where absence is a failure so
that no test can skip unseen in CI. Dev dependencies follow the same rule: ``from dev_deps import require``, then
``tf = require("transformers")`` inside the test that needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dev_deps import require, skip_or_fail

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"
SMOLLM2_GGUF = SHARED_MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _shared(path: Path, what: str) -> Path:
    """Return ``path`` or skip (fail under CI) when it is missing."""
    if path.exists():
        return path
    skip_or_fail(f"{what} {path} is absent")


def shared_data_dir() -> Path:
    """Return ``../shared/data`` or skip (fail under CI) when it is missing."""
    return _shared(SHARED_DATA, "shared data folder")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real pretrained SmolLM2-135M-Instruct GGUF file in ``../shared/models``."""
    return _shared(SMOLLM2_GGUF, "shared model file")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(shared_data: Path) -> Path:
    return shared_data / "gpt2-tokenizer"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and stay fast when other processes share the CPU.

    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` (a module) or as an argument.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def transformers():
    """Hugging Face transformers, the reference implementation: only the tests that use it skip without it."""
    return require("transformers")

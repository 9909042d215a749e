"""The module-wide test server (see live_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from live_server import RunningServer, serve


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    running = serve(max_tokens_limit=200, max_body_bytes=20_000)
    yield running
    running.stop()
    torch.set_num_threads(previous)

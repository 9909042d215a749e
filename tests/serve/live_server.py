"""A real server for the serving tests: uvicorn in a thread on a free 127.0.0.1 port, a tiny random model."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from scratchllm.inference import Engine
from serving_doubles import AsciiTokenizer, spiky_model

MODEL_NAME = "tiny-test"
API_KEY = "sk-test-key"


@dataclass
class RunningServer:
    url: str
    engine: Engine
    model: Any
    tokenizer: Any
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(app: Any, engine: Engine, model: Any, tokenizer: Any) -> RunningServer:
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return RunningServer(f"http://127.0.0.1:{port}", engine, model, tokenizer, server, thread)


def serve(
    api_key: str | None = API_KEY, slots: int = 4, max_waiting: int = 16, model: Any = None, **settings: Any
) -> RunningServer:
    pytest.importorskip("fastapi")
    from scratchllm.serve.app import ServerSettings, create_app

    model = model if model is not None else spiky_model("gpt", context_length=256)
    tokenizer = AsciiTokenizer()
    engine = Engine(model, tokenizer, slots=slots, max_waiting=max_waiting)
    app = create_app(engine, tokenizer, None, ServerSettings(MODEL_NAME, api_key=api_key, **settings))
    return start_server(app, engine, model, tokenizer)

"""The server over plain HTTP: limits, error JSON for every kind of bad request, queue limit, disconnects."""

from __future__ import annotations

import json
import threading
import time

import pytest
from live_server import API_KEY, MODEL_NAME, RunningServer, serve

from dev_deps import require

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


@pytest.fixture
def http(server: RunningServer):
    httpx = require("httpx")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_health_and_page_need_no_key(http) -> None:
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL_NAME and health["slots"] == 4
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(
    ("path", "method"), [("/v1/models", "GET"), ("/v1/chat/completions", "POST"), ("/v1/completions", "POST")]
)
def test_every_v1_route_wants_the_key(http, path: str, method: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEY}):
        response = http.request(method, path, json=CHAT, headers=headers)
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "could not parse the JSON"),
        (b"[]", None, "Input should be an object"),
        ({**CHAT, "temperature": "0.5"}, "temperature", "valid number"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({**CHAT, "max_tokens": True}, "max_tokens", "valid integer"),
        ({**CHAT, "top_p": 0}, "top_p", "greater than 0"),
        ({**CHAT, "n": 9}, "n", "less than or equal to 8"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 stop"),
        ({**CHAT, "stop": [""]}, "stop", "must not be empty"),
        ({**CHAT, "seed": -1}, "seed", "greater than or equal to 0"),
        ({**CHAT, "messages": []}, "messages", "at least 1 item"),
        ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'system'"),
        ({**CHAT, "messages": [{"role": "user"}]}, "messages.0.content", "Field required"),
        ({**CHAT, "top_logprobs": 2}, None, "requires logprobs"),
        ({**CHAT, "max_tokens": 3, "max_completion_tokens": 3}, None, "not both"),
        ({**CHAT, "stream_options": {"include_usage": True}}, None, "only allowed when stream"),
        ({**CHAT, "presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({**CHAT, "logit_bias": {"1": 2}}, "logit_bias", "Unrecognized request argument"),
        ({"messages": CHAT["messages"]}, "model", "Field required"),
    ],
)
def test_invalid_chat_requests_get_400_with_the_field_named(http, body, param, fragment) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/v1/chat/completions", content=content, headers=AUTH)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and fragment in error["message"]


def test_invalid_completion_requests(http) -> None:
    base = {"model": MODEL_NAME, "max_tokens": 3}
    for prompt, fragment in (("", "must not be empty"), ([], "must not be empty"), ([[1], []], "must not be empty"), ([5, 999], "outside the model"), ([-1], ">= 0")):
        response = http.post("/v1/completions", json={**base, "prompt": prompt}, headers=AUTH)
        assert response.status_code == 400 and fragment in error_of(response)["message"], response.text
    long_prompt = {**base, "prompt": "x" * 256}
    response = http.post("/v1/completions", json=long_prompt, headers=AUTH)
    assert error_of(response)["code"] == "context_length_exceeded"
    # the server still answers normally afterwards
    answer = http.post("/v1/completions", json={**base, "prompt": [[1, 2], [3, 4, 5]], "echo": True}, headers=AUTH)
    assert answer.status_code == 200
    choices = answer.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1] and len(choices[1]["text"]) == 3 + 3
    assert answer.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def test_body_size_limit_unknown_routes_and_methods(http) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 30_000}]}
    response = http.post("/v1/chat/completions", json=big, headers=AUTH)
    assert response.status_code == 413 and "20000 bytes" in error_of(response)["message"]
    assert http.get("/v1/nothing", headers=AUTH).status_code == 404
    response = http.get("/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405 and error_of(response)["message"]


def test_cors_is_off_unless_asked(http) -> None:
    response = http.options(
        "/v1/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in response.headers
    other = serve(api_key=None, cors_origins=("http://localhost:3000",))
    httpx = require("httpx")
    try:
        allowed = httpx.get(f"{other.url}/v1/models", headers={"Origin": "http://localhost:3000"})
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        refused = httpx.get(f"{other.url}/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in refused.headers
    finally:
        other.stop()


def test_full_queue_gives_429_and_a_disconnect_frees_the_slot() -> None:
    httpx = require("httpx")
    server = serve(api_key=None, slots=1, max_waiting=1)
    body = {"model": MODEL_NAME, "prompt": "long", "max_tokens": 250, "temperature": 0, "stream": True}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with client.stream("POST", "/v1/completions", json=body) as first:
                lines = first.iter_lines()
                assert next(lines).startswith("data: ")  # running: it holds the only slot
                running = server.engine.running[0]
                waiting = threading.Thread(
                    target=lambda: client.post("/v1/completions", json={**body, "stream": False, "max_tokens": 3})
                )
                waiting.start()
                deadline = time.monotonic() + 10
                while server.engine.stats()["waiting"] < 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
                refused = client.post("/v1/completions", json={**body, "stream": False})
                assert refused.status_code == 429
                assert error_of(refused)["code"] == "rate_limit_exceeded"
            # leaving the `with` closed the connection mid-stream
            deadline = time.monotonic() + 10
            while not running.finished and time.monotonic() < deadline:
                time.sleep(0.005)
            assert running.cancelled and len(running.generated) < 250
            waiting.join(timeout=10)
            assert not waiting.is_alive()
            deadline = time.monotonic() + 10
            while server.engine.stats()["running"] and time.monotonic() < deadline:
                time.sleep(0.005)
            assert server.engine.stats() == {"running": 0, "waiting": 0, "slots": 1}
    finally:
        server.stop()


def test_streamed_completion_with_echo_and_logprobs(http, server: RunningServer) -> None:
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 6, "temperature": 0, "logprobs": 2,
            "echo": True, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/completions", json=body, headers=AUTH) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    plain = http.post("/v1/completions", json={**body, "stream": False, "stream_options": None}, headers=AUTH).json()
    assert text == plain["choices"][0]["text"] and text.startswith("Hello") and len(text) == 5 + 6
    logprobs = plain["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == 6 and "".join(logprobs["tokens"]) == text[5:]
    assert logprobs["text_offset"] == list(range(5, 11))
    assert all(len(top) == 2 and max(top.values()) == pytest.approx(lp)
               for top, lp in zip(logprobs["top_logprobs"], logprobs["token_logprobs"]))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6

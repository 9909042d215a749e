"""The LLM judge against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.judge import JudgeClient, chat_url, judge, parse_score, read_responses


class FakeJudge(BaseHTTPRequestHandler):
    """Replies by the response under judgement: ``good`` 90, ``fair`` "55/100", ``chatty`` no score,
    ``flaky`` HTTP 503 on its first attempt, ``slow`` too slow for the client, ``bad`` HTTP 400."""

    state: dict = {}

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server.state
        with state["lock"]:
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            state["auth"].add(self.headers.get("Authorization"))
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            response = prompt.split("### Response to grade\n", 1)[1].split("\n", 1)[0]
            state["paths"].add(self.path)
            time.sleep(0.05)
            if response == "flaky":
                with state["lock"]:
                    state["flaky"] += 1
                    first = state["flaky"] == 1
                if first:
                    return self._send(503, {"error": "busy"})
            if response == "slow":
                time.sleep(0.6)
            if response == "bad":
                return self._send(400, {"error": "bad request"})
            content = {"good": "Score: 90", "fair": "I would say 55/100.", "flaky": "70"}.get(response, "Nice!")
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
        finally:
            with state["lock"]:
                state["in_flight"] -= 1

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    httpd.daemon_threads = True
    httpd.state = {"lock": threading.Lock(), "in_flight": 0, "max_in_flight": 0, "auth": set(), "paths": set(), "flaky": 0}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def write_responses(path: Path, responses: list[str]) -> Path:
    records = [
        {"instruction": f"Task {i}", "input": "x" if i % 2 else "", "output": "ref", "response": r}
        for i, r in enumerate(responses)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 85", 85.0),
        ("score = 7", 7.0),
        ("**Score:** 100", 100.0),
        ("I'd give it 42 out of 100.", 42.0),
        ("63/100", 63.0),
        (" 77 ", 77.0),
        ("Score: 150", None),
        ("It is quite good.", None),
        ("", None),
    ],
)
def test_parse_score(reply: str, score: float | None) -> None:
    assert parse_score(reply) == score


def test_chat_url() -> None:
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_judge_summary_retries_key_and_concurrency(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MY_JUDGE_KEY", "sekrit")
    path = write_responses(tmp_path / "r.json", ["good", "fair", "chatty", "good", "bad", "good", "fair"])
    port = server.server_address[1]
    out = tmp_path / "verdicts.json"
    result = judge(path, f"http://127.0.0.1:{port}", "judge-1", api_key_env="MY_JUDGE_KEY", concurrency=2, output=out)
    assert [v["score"] for v in result["verdicts"]] == [90.0, 55.0, None, 90.0, None, 90.0, 55.0]
    assert result["mean"] == pytest.approx((90 * 3 + 55 * 2) / 5)
    assert (result["scored"], result["unparsable"], result["failed"]) == (5, 1, 1)
    assert "HTTP 400" in result["verdicts"][4]["error"]
    assert result["histogram"]["90-100"] == 3 and result["histogram"]["50-59"] == 2
    assert server.state["auth"] == {"Bearer sekrit"}
    assert server.state["paths"] == {"/v1/chat/completions"}
    assert server.state["max_in_flight"] <= 2
    assert json.loads(out.read_text(encoding="utf-8"))["mean"] == result["mean"]


def test_retry_after_503_and_timeout(server) -> None:
    port = server.server_address[1]
    client = JudgeClient(f"http://127.0.0.1:{port}/v1", "j", timeout=0.3, retries=2, backoff=0.0)
    sleeps = []
    client.sleep = sleeps.append
    prompt = "### Response to grade\n{}\n"
    assert client.complete(prompt.format("flaky")) == "70"  # 503 once, then the answer
    assert sleeps == [0.0]
    with pytest.raises(ScratchLLMError, match=r"timed out \(after 3 attempts\)"):
        client.complete(prompt.format("slow"))


def test_bad_responses_file(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"instruction": "a", "response": "b"}]), encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"record 0: needs a string 'reference' \(or 'output'\)"):
        read_responses(path)

"""The server through the official ``openai`` client: what it answers equals what generation gives alone."""

from __future__ import annotations

import threading

import pytest
from live_server import API_KEY, MODEL_NAME, RunningServer

from dev_deps import require
from scratchllm.generation import generate_text
from scratchllm.tokenizer.chat import tokenizer_chat

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture
def client(server: RunningServer):
    openai = require("openai")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def expected_chat(server: RunningServer, messages: list[dict], max_tokens: int, **kwargs) -> str:
    prompt = tokenizer_chat(server.tokenizer, messages)
    return generate_text(server.model, server.tokenizer, prompt, max_new_tokens=max_tokens, **kwargs)


def test_models_and_completion(client, server: RunningServer) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    answer = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=9, temperature=0)
    assert answer.choices[0].text == generate_text(server.model, server.tokenizer, "Hello", max_new_tokens=9)
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (5, 9, 14)
    assert answer.object == "text_completion"


def test_chat_completion_uses_the_chat_template(client, server: RunningServer) -> None:
    answer = client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=12, temperature=0)
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected_chat(server, QUESTION, 12)
    prompt_tokens = len(tokenizer_chat(server.tokenizer, QUESTION))
    assert answer.usage.prompt_tokens == prompt_tokens
    assert answer.usage.completion_tokens == 12
    assert choice.finish_reason == "length"


def test_streamed_chat_completion_with_usage(client, server: RunningServer) -> None:
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,
        max_completion_tokens=15,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_chat(server, QUESTION, 15)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert len([c for c in chunks if c.choices]) > 3  # it really streamed, piece by piece
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 15


def test_stop_strings_are_cut_and_finish_with_stop(client, server: RunningServer) -> None:
    full = expected_chat(server, QUESTION, 30)
    stop = full[12:14]
    for stream in (False, True):
        answer = client.chat.completions.create(
            model=MODEL_NAME, messages=QUESTION, max_tokens=30, temperature=0, stop=[stop], stream=stream
        )
        if stream:
            pieces = [c.choices[0] for c in answer if c.choices]
            text, reason = "".join(p.delta.content or "" for p in pieces), pieces[-1].finish_reason
        else:
            text, reason = answer.choices[0].message.content, answer.choices[0].finish_reason
        assert text == full[: full.index(stop)]
        assert reason == "stop"


def test_n_choices_seed_and_logprobs(client, server: RunningServer) -> None:
    kwargs = dict(model=MODEL_NAME, messages=QUESTION, max_tokens=8, temperature=1.0, seed=11, n=3)
    first = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # each choice samples with its own seed
    assert first.usage.completion_tokens == 24
    texts = ["", "", ""]
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in first.choices]  # streamed choices interleave, each intact
    answer = client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0.0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)  # greedy: the top token


def test_invalid_requests_get_openai_errors(client, server: RunningServer) -> None:
    openai = require("openai")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, temperature=5)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "temperature" and info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: tools"):
        client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, extra_body={"tools": []})
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256") as info:
        client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=250)
    assert info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="allows at most 200"):
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=201)
    with pytest.raises(openai.NotFoundError, match="does not exist") as info:
        client.completions.create(model="gpt-4", prompt="x")
    assert info.value.body["code"] == "model_not_found"


def test_wrong_api_key_is_refused(server: RunningServer) -> None:
    openai = require("openai")
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"


def test_concurrent_streams_equal_the_same_requests_one_at_a_time(client, server: RunningServer) -> None:
    conversations = [[{"role": "user", "content": f"question {i} " * (i + 1)}] for i in range(6)]
    lengths = [20, 35, 12, 28, 40, 16]

    def ask(i: int) -> str:
        stream = client.chat.completions.create(
            model=MODEL_NAME, messages=conversations[i], max_tokens=lengths[i], temperature=0, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    one_at_a_time = [ask(i) for i in range(6)]
    together: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, ask(i))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [together[i] for i in range(6)] == one_at_a_time
    assert one_at_a_time[1] == expected_chat(server, conversations[1], lengths[1])

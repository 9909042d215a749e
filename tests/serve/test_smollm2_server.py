"""The real SmolLM2-135M-Instruct (../shared/models) behind the server, asked through the openai client."""

from __future__ import annotations

import threading

import pytest
from live_server import start_server

from dev_deps import require

pytestmark = pytest.mark.slow


def test_smollm2_answers_through_the_openai_client(smollm2_gguf) -> None:
    openai = require("openai")
    from scratchllm.inference import Engine
    from scratchllm.model import optimize_for_decoding
    from scratchllm.serve.app import ServerSettings, create_app
    from scratchllm.weights import load

    loaded = load(smollm2_gguf)
    engine = Engine(optimize_for_decoding(loaded.model), loaded.tokenizer, slots=4, max_len=512)
    app = create_app(engine, loaded.tokenizer, loaded.chat_template, ServerSettings("smollm2"))
    server = start_server(app, engine, loaded.model, loaded.tokenizer)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    questions = ["What is the capital of France?", "Name three colors.", "What is 2+2?"]

    def ask(question: str) -> tuple[str, str | None]:
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0,
            stream=True,
        )
        pieces = [c.choices[0] for c in stream if c.choices]
        return "".join(p.delta.content or "" for p in pieces), pieces[-1].finish_reason

    try:
        answer = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": questions[0]}], max_tokens=24, temperature=0
        )
        assert answer.choices[0].message.content == "The capital of France is Paris."
        assert answer.choices[0].finish_reason == "stop"  # <|im_end|> ended it and is not in the text
        alone = [ask(q) for q in questions]
        together: dict[int, tuple[str, str | None]] = {}
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, ask(questions[i]))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert [together[i] for i in range(3)] == alone
        assert engine.reused_tokens > 0  # the template's system prompt was shared between the concurrent requests
    finally:
        server.stop()

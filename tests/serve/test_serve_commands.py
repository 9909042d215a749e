"""``scratchllm chat`` fed from stdin, and ``scratchllm serve``'s wiring (model loading, API key, binding)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import scratchllm.weights
from dev_deps import require, skip_or_fail
from scratchllm.cli import main
from scratchllm.generation import generate_text
from scratchllm.tokenizer.chat import tokenizer_chat
from scratchllm.weights import LoadedModel
from serving_doubles import AsciiTokenizer, spiky_model


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, one_torch_thread: None):
    """`weights.load` returns a tiny random model with a readable tokenizer, whatever the path."""
    model, tok = spiky_model("gpt", context_length=256), AsciiTokenizer()
    calls: list[Path] = []

    def load(path, device="cpu", dtype=None, tokenizer=None) -> LoadedModel:
        calls.append(Path(path))
        return LoadedModel(model=model, tokenizer=tok, chat_template=None, source="scratchllm", path=Path(path))

    monkeypatch.setattr(scratchllm.weights, "load", load)
    return model, tok, calls


def reply(model, tok, messages: list[dict], max_tokens: int) -> str:
    prompt = tokenizer_chat(tok, messages)
    return generate_text(model, tok, prompt, max_new_tokens=max_tokens)


def run_chat(monkeypatch, capsys, lines: list[str], *args: str) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    assert main(["chat", "--model", "some/model", "--temperature", "0", "--device", "cpu", *args]) == 0
    return capsys.readouterr().out


def test_chat_is_multi_turn_and_obeys_commands(fake_model, monkeypatch, capsys) -> None:
    model, tok, calls = fake_model
    lines = ["hello", "and then?", "/reset", "hello", "/system Be short.", "hi", "/temperature x", "/nope", "/quit", "x"]
    out = run_chat(monkeypatch, capsys, lines, "--max_tokens", "10")
    assert calls == [Path("some/model")]
    first = reply(model, tok, [{"role": "user", "content": "hello"}], 10)
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "and then?"},
    ]
    second = reply(model, tok, history, 10)
    with_system = reply(model, tok, [{"role": "system", "content": "Be short."}, {"role": "user", "content": "hi"}], 10)
    assert f"model> {first}\n" in out
    assert f"model> {second}\n" in out
    assert out.count(f"model> {first}\n") == 2  # after /reset, the same question gets the same first answer
    assert f"model> {with_system}\n" in out
    assert "(conversation reset)" in out and "(system prompt set; conversation reset)" in out
    assert "expected a number >= 0, got 'x'" in out and "commands: /reset" in out
    assert out.count("model> ") == 4  # "/quit" ended the chat before the last line


def test_chat_drops_the_oldest_turns_to_fit_the_context(fake_model, monkeypatch, capsys) -> None:
    model, tok, _ = fake_model
    words = ["first " * 8, "second " * 8, "third " * 8]
    out = run_chat(monkeypatch, capsys, words, "--max_tokens", "20", "--max_len", "200")
    assert out.count("(the oldest turn was dropped") == 1
    replies = [line.removeprefix("you> ").removeprefix("model> ") for line in out.splitlines() if "model> " in line]
    assert len(replies) == 3
    # the last reply saw only the turns that fit: the second exchange and the third question
    kept = [
        {"role": "user", "content": words[1].strip()},
        {"role": "assistant", "content": replies[1]},
        {"role": "user", "content": words[2].strip()},
    ]
    assert len(tok.encode(tokenizer_chat(tok, kept))) + 20 <= 200
    assert replies[2] == reply(model, tok, kept, 20)
    first = reply(model, tok, [{"role": "user", "content": words[0].strip()}], 20)
    assert replies[0] == first
    assert replies[1] == reply(model, tok, [{"role": "user", "content": words[0].strip()},
                                            {"role": "assistant", "content": first}, kept[0]], 20)


def test_chat_decodes_with_the_weights_asked_for(fake_model, monkeypatch, capsys) -> None:
    import copy

    from scratchllm.model.quantize import Int8Linear, quantize_for_decoding

    model, tok, _ = fake_model
    int8 = quantize_for_decoding(copy.deepcopy(model), "int8")
    out = run_chat(monkeypatch, capsys, ["hello"], "--max_tokens", "10", "--weights", "int8")
    assert isinstance(model.blocks[0].att.qkv, Int8Linear)  # the loaded model was converted
    assert f"model> {reply(int8, tok, [{'role': 'user', 'content': 'hello'}], 10)}\n" in out


def test_chat_refuses_a_message_that_cannot_fit(fake_model, monkeypatch, capsys) -> None:
    out = run_chat(monkeypatch, capsys, ["x" * 200, "ok"], "--max_tokens", "5", "--max_len", "100")
    assert "(error: this message does not fit" in out
    assert out.count("model> ") == 2  # the chat went on


def test_serve_loads_the_model_and_reads_the_key_from_the_environment(fake_model, monkeypatch, capsys) -> None:
    require("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    monkeypatch.setenv("SCRATCHLLM_API_KEY", "sk-env")
    assert main(["serve", "--model", "models/tiny.gguf", "--port", "8123", "--device", "cpu", "--slots", "2"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    assert "serving 'tiny.gguf' (2 slots of 256 tokens)" in capsys.readouterr().err
    with testclient.TestClient(started["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        models = client.get("/v1/models", headers={"Authorization": "Bearer sk-env"}).json()
        assert [m["id"] for m in models["data"]] == ["tiny.gguf"]
    monkeypatch.delenv("SCRATCHLLM_API_KEY")
    assert main(["serve", "--model", "m", "--host", "0.0.0.0", "--device", "cpu"]) == 0
    assert "WITHOUT an API key" in capsys.readouterr().err
    assert torch.get_num_threads() == 1
    assert main(["serve", "--model", "m", "--device", "cpu", "--dtype", "float32", "--weights", "int8"]) == 2
    assert "give --dtype or --weights, not both" in capsys.readouterr().err


@pytest.mark.parametrize("slots", [2, 16])
def test_serve_decodes_few_slots_with_the_kernel_and_many_with_packed_weights(fake_model, slots: int) -> None:
    """Up to 8 rows per step the matrix-vector kernel is the fastest fp32 product; beyond, oneDNN's packing."""
    from scratchllm.cli.serve import _engine
    from scratchllm.model.decoding_layout import PackedLinear, packing_available
    from scratchllm.model.matvec import MatVecLinear, matvec_available

    if not (matvec_available() and packing_available()):
        skip_or_fail("needs the matrix-vector kernel and oneDNN packing")
    engine, loaded = _engine(Path("m"), None, "cpu", None, slots, 64, 4, None)
    assert isinstance(loaded.model.blocks[0].att.qkv, MatVecLinear if slots == 2 else PackedLinear)
    assert engine.slots == slots

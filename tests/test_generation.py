"""Generation: KV cache exactness, batching, sampling options, stopping, streaming."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.generation import generate, generate_text, sample_next, stream
from scratchllm.model import GPTModel
from text_doubles import ByteTokenizer
from tiny_models import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spiky_model(context_length: int = 64, vocab_size: int = 257, seed: int = 0) -> GPTModel:
    """A tiny model with large random weights, so its next-token distribution is far from uniform and greedy
    choices are not decided by float noise."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=32, n_heads=4, n_layers=2)
    model = GPTModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def test_cached_greedy_equals_uncached_for_220_steps() -> None:
    model = spiky_model(context_length=256)
    prompts = [[5, 17, 99, 3, 42, 7]]
    cached = generate(model, prompts, 220, use_cache=True)
    uncached = generate(model, prompts, 220, use_cache=False)
    assert len(cached[0]) == 220
    assert cached == uncached
    assert len(set(cached[0])) > 5  # the test is not trivially a constant sequence


def test_cached_equals_uncached_past_the_context() -> None:
    model = spiky_model(context_length=24)
    prompts = [list(range(30, 60))]  # longer than the context: cropped to the last 24 tokens
    for kwargs in ({}, {"temperature": 1.0, "top_k": 50, "seed": 3}):
        cached = generate(model, prompts, 60, use_cache=True, **kwargs)
        assert cached == generate(model, prompts, 60, use_cache=False, **kwargs)
    # Cropping the prompt ourselves gives the same result: only the last context_length tokens count.
    assert generate(model, prompts, 10) == generate(model, [prompts[0][-24:]], 10)
    with pytest.raises(ScratchLLMError, match="context_length 24"):
        generate(model, prompts, 5, strict_context=True)


def test_cached_sampling_equals_uncached_with_same_seed() -> None:
    model = spiky_model(context_length=256)
    prompt = [[1, 2, 3, 4]]
    for kwargs in (
        {"temperature": 1.0},
        {"temperature": 0.8, "top_k": 20},
        {"temperature": 1.2, "top_p": 0.9},
    ):
        cached = generate(model, prompt, 200, seed=7, use_cache=True, **kwargs)
        assert cached == generate(model, prompt, 200, seed=7, use_cache=False, **kwargs)
        assert cached != generate(model, prompt, 200, seed=8, use_cache=True, **kwargs)
    greedy = generate(model, prompt, 200)
    assert greedy != generate(model, prompt, 200, temperature=1.0, seed=7)


@pytest.mark.parametrize("use_cache", [True, False])
def test_batch_of_different_lengths_equals_each_alone(use_cache: bool) -> None:
    model = spiky_model(context_length=40)
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [200, 100, 50, 25]]
    batched = generate(model, prompts, 45, use_cache=use_cache)  # runs past the context too
    alone = [generate(model, [p], 45, use_cache=use_cache)[0] for p in prompts]
    assert batched == alone
    sampled = generate(model, prompts, 20, temperature=1.0, seed=1, use_cache=use_cache)
    assert [len(s) for s in sampled] == [20, 20, 20]


def test_tensor_prompts_and_train_mode_restored() -> None:
    model = spiky_model()
    model.train()
    out = generate(model, torch.tensor([[1, 2, 3], [4, 5, 6]]), 5)
    assert model.training
    assert out == generate(model, [[1, 2, 3], [4, 5, 6]], 5)


def test_sample_next_filters() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    assert sample_next(logits).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    drawn = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert drawn == {1, 2}
    # probs of [3, 2, 1, 0] logits: 0.644, 0.237, 0.087, 0.032 -> top_p 0.7 keeps the first two.
    drawn = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert drawn == {1, 2}
    drawn = {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(50)}
    assert drawn == {1}
    drawn = {int(sample_next(logits, 1.0, generator=g)) for _ in range(400)}
    assert drawn == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_invalid_sampling_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ScratchLLMError, match=message):
        generate(spiky_model(), [[1]], 3, **kwargs)


def test_empty_or_out_of_vocabulary_prompt_is_an_error() -> None:
    with pytest.raises(ScratchLLMError, match="prompt 1 is empty"):
        generate(spiky_model(), [[1], []], 3)
    with pytest.raises(
        ScratchLLMError, match=r"prompt 0: token id 300 is outside the model's vocabulary \[0, 257\)"
    ):
        generate(spiky_model(), [[1, 300]], 3)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_static_cache_gives_the_growing_caches_logits(family: str) -> None:
    """A static cache (fixed shapes, for compiled steps) attends over every slot with a mask; the unwritten
    and left-padding slots must change nothing: same logits as the cache that grows, step by step."""
    torch.manual_seed(0)
    model = GPTModel(tiny_config(family)).eval()
    prompts = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7]])
    pad = torch.tensor([3, 0])
    growing = model.new_kv_cache(2, max_len=20, pad=pad)
    static = model.new_kv_cache(2, max_len=20, pad=pad, static=True)
    with torch.inference_mode():
        ids = prompts
        for step in range(6):
            expected = model(ids, kv_cache=growing, last_only=True)
            got = model(ids, kv_cache=static, last_only=True)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=f"step {step}")
            ids = expected[:, -1].argmax(-1, keepdim=True)
    assert static.position.tolist() == [7 + 5]
    static.reset()
    assert static.position.tolist() == [0] and static.pad is None


def test_compiled_steps_decode_the_same_tokens() -> None:
    """torch.compile'd one-token steps (static cache) against eager decoding: a left-padded batch that runs
    past the context (the window then slides, which refills eagerly), for a grouped-query Llama."""
    torch.manual_seed(0)
    model = GPTModel(tiny_config("llama", vocab_size=257)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)  # spiky, as spiky_model: greedy choices are not decided by float noise
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [200, 100, 50, 25]]
    eager = generate(model, prompts, 70)  # context_length 64
    assert generate(model, prompts, 70, compile=True) == eager
    assert len(set(eager[1])) > 5
    # A call of another length in the same cache bucket reuses the graph: nothing recompiles.
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert generate(model, prompts, 20, compile=True) == generate(model, prompts, 20)
    with pytest.raises(ScratchLLMError, match="need the KV cache"):
        generate(model, prompts, 3, compile=True, use_cache=False)


class ScriptedModel(nn.Module):
    """A fake model that emits a fixed sequence of token ids, one per step, whatever the input."""

    def __init__(self, script: list[int], prompt_len: int, vocab_size: int = 257) -> None:
        super().__init__()
        self.config = ModelConfig(
            vocab_size=vocab_size, context_length=1000, emb_dim=4, n_heads=1, n_layers=1
        )
        self.tok_emb = nn.Embedding(vocab_size, 4)
        self.script = script
        self.prompt_len = prompt_len

    def forward(self, idx: torch.Tensor, kv_cache=None, pad=None, last_only=False) -> torch.Tensor:
        step = idx.shape[1] - self.prompt_len
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.config.vocab_size)
        logits[:, -1, self.script[step]] = 1.0
        return logits


def test_stream_yields_only_complete_characters() -> None:
    tok = ByteTokenizer()
    text = "aé世🙂b"
    script = list(text.encode("utf-8")) + [tok.eot_id, 65, 66]
    model = ScriptedModel(script, prompt_len=2)
    pieces = list(stream(model, tok, "hi", max_new_tokens=20, use_cache=False))
    assert pieces == ["a", "é", "世", "🙂", "b"]  # eot stopped it before "AB"
    assert generate_text(model, tok, "hi", max_new_tokens=20, use_cache=False) == text
    ids = generate(model, [tok.encode("hi")], 20, eos_id=tok.eot_id, use_cache=False)
    assert ids == [list(text.encode("utf-8"))]
    # Without an end token, every scripted token is produced, and max_new_tokens caps the length.
    assert len(generate(model, [[1, 2]], 3, use_cache=False)[0]) == 3


def test_stream_stops_at_stop_string_without_yielding_it() -> None:
    tok = ByteTokenizer()
    script = list(b"one S two STOP three") + [tok.eot_id]
    model = ScriptedModel(script, prompt_len=1)
    pieces = list(stream(model, tok, "x", max_new_tokens=40, stop_strings=["STOP"], use_cache=False))
    assert "".join(pieces) == "one S two "
    assert all("STOP" not in p for p in pieces)
    ids = generate(model, [[0]], 40, stop_strings=["STOP"], tokenizer=tok, use_cache=False)
    assert tok.decode(ids[0]) == "one S two STOP"
    with pytest.raises(ScratchLLMError, match="tokenizer"):
        generate(model, [[0]], 5, stop_strings=["x"])


def test_stream_with_real_model_matches_generate() -> None:
    model = spiky_model()
    tok = ByteTokenizer()
    ids = generate(model, [tok.encode("hello")], 30, eos_id=tok.eot_id)[0]
    text = generate_text(model, tok, "hello", max_new_tokens=30)
    assert text == tok.decode(ids)

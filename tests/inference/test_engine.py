"""The continuous-batching engine: batched decoding gives what one-at-a-time generation gives, and the
scheduler's bookkeeping (joining, leaving, cancelling, queue limit) holds."""

from __future__ import annotations

import threading

import pytest
import torch

from scratchllm.errors import ScratchLLMError
from scratchllm.generation import generate, generate_text
from scratchllm.inference import Engine, Output, QueueFull, SamplingParams
from serving_doubles import spiky_model
from text_doubles import ByteTokenizer

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


class Collector:
    """Gathers one request's outputs."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def __call__(self, out: Output) -> None:
        self.outputs.append(out)

    @property
    def tokens(self) -> list[int]:
        return [t for o in self.outputs for t in o.token_ids]

    @property
    def text(self) -> str:
        return "".join(o.text for o in self.outputs)

    @property
    def last(self) -> Output:
        return self.outputs[-1]


def run_until_idle(engine: Engine, limit: int = 1000) -> None:
    for _ in range(limit):
        if not engine.step():
            return
    raise AssertionError("the engine did not become idle")


def submit(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY) -> Collector:
    sink = Collector()
    engine.submit(prompt, params, sink)
    return sink


PROMPTS = [[5, 17, 99, 3, 42, 7], [1, 2], list(range(60, 90)), [200, 100, 50, 25], [9] * 11]
MAX_TOKENS = [12, 20, 7, 15, 30]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_batched_greedy_equals_one_at_a_time_with_requests_joining_midway(kind: str) -> None:
    model = spiky_model(kind)
    tok = ByteTokenizer()
    engine = Engine(model, tok, slots=3, eos_id=-1)  # no end token: every request runs to its own length
    sinks = []
    for prompt, n in zip(PROMPTS[:3], MAX_TOKENS[:3]):
        sinks.append(submit(engine, prompt, SamplingParams(max_tokens=n, temperature=0.0)))
    for _ in range(4):
        engine.step()
    assert engine.stats()["running"] == 3  # all three decode together
    for prompt, n in zip(PROMPTS[3:], MAX_TOKENS[3:]):  # two more arrive mid-way; they wait for free slots
        sinks.append(submit(engine, prompt, SamplingParams(max_tokens=n, temperature=0.0)))
    assert engine.stats()["waiting"] == 2
    run_until_idle(engine)
    assert engine.stats() == {"running": 0, "waiting": 0, "slots": 3}
    for prompt, n, sink in zip(PROMPTS, MAX_TOKENS, sinks):
        alone = generate(model, [prompt], n)[0]
        assert sink.tokens == alone
        assert len(set(alone)) > 3  # not a trivially constant sequence
        assert sink.last.finish_reason == "length"
        assert (sink.last.prompt_tokens, sink.last.completion_tokens) == (len(prompt), n)


def test_packed_weights_serve_the_same_greedy_tokens() -> None:
    from scratchllm.model import optimize_for_decoding
    from scratchllm.model.decoding_layout import packing_available

    if not packing_available():
        pytest.skip("this PyTorch build has no oneDNN packing")
    model = spiky_model("llama")
    alone = [generate(model, [prompt], n)[0] for prompt, n in zip(PROMPTS, MAX_TOKENS)]
    engine = Engine(optimize_for_decoding(model, pack=True), ByteTokenizer(), slots=4, eos_id=-1)
    sinks = [submit(engine, prompt, SamplingParams(max_tokens=n, temperature=0.0)) for prompt, n in zip(PROMPTS, MAX_TOKENS)]
    run_until_idle(engine)
    assert [sink.tokens for sink in sinks] == alone


def test_int8_weights_serve_the_same_greedy_tokens_as_generate_does() -> None:
    """The engine decodes an int8 weight-only model (bf16 activations and cache) as ``generate`` does. One slot:
    in bf16, rows multiplied together round differently from rows multiplied alone, and a random model's close
    greedy choices then flip (fp32 batches are compared with single rows above)."""
    from scratchllm.model.quantize import Int8Linear, prepare_for_decoding

    model = prepare_for_decoding(spiky_model("llama"), "int8", pack=True)
    assert isinstance(model.blocks[0].att.qkv, Int8Linear)
    alone = [generate(model, [prompt], n)[0] for prompt, n in zip(PROMPTS, MAX_TOKENS)]
    engine = Engine(model, ByteTokenizer(), slots=1, eos_id=-1)
    sinks = [submit(engine, prompt, SamplingParams(max_tokens=n, temperature=0.0)) for prompt, n in zip(PROMPTS, MAX_TOKENS)]
    run_until_idle(engine)
    assert [sink.tokens for sink in sinks] == alone


def test_end_of_sequence_token_finishes_with_stop_and_is_not_returned() -> None:
    model = spiky_model("gpt")
    prompt = PROMPTS[0]
    free = generate(model, [prompt], 12)[0]
    eos = free[5]  # pretend the 6th token ends the sequence
    engine = Engine(model, ByteTokenizer(), slots=2, eos_id=eos)
    sink = submit(engine, prompt)
    run_until_idle(engine)
    cut = free[: free.index(eos)]
    assert sink.last.finish_reason == "stop"
    assert [t for t in sink.tokens if t != eos] == cut
    assert sink.last.completion_tokens == len(cut) + 1  # the end token was generated, so it counts


def test_stop_strings_are_never_returned_and_text_equals_generate_text() -> None:
    model = spiky_model("gpt")
    tok = ByteTokenizer()
    prompt = "Hello"
    full = generate_text(model, tok, prompt, max_new_tokens=40, eos_id=-1)
    stop = full[10:12]
    expected = generate_text(model, tok, prompt, max_new_tokens=40, eos_id=-1, stop_strings=[stop, "\x00never"])
    assert stop not in expected and len(expected) >= 1
    engine = Engine(model, tok, slots=2, eos_id=-1)
    sink = submit(engine, tok.encode(prompt), SamplingParams(max_tokens=40, temperature=0.0, stop=(stop, "\x00never")))
    other = submit(engine, tok.encode("other prompt"), SamplingParams(max_tokens=40, temperature=0.0))
    run_until_idle(engine)
    assert sink.text == expected
    assert sink.last.finish_reason == "stop"
    assert other.text == generate_text(model, tok, "other prompt", max_new_tokens=40, eos_id=-1)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch() -> None:
    model = spiky_model("llama")
    params = SamplingParams(max_tokens=15, temperature=1.0, top_p=0.9, seed=7)
    alone = generate(model, [PROMPTS[0]], 15, temperature=1.0, top_p=0.9, seed=7)[0]
    engine = Engine(model, ByteTokenizer(), slots=4, eos_id=-1)
    noise = [submit(engine, p, SamplingParams(max_tokens=9, temperature=1.3)) for p in PROMPTS[1:4]]
    sink = submit(engine, PROMPTS[0], params)
    run_until_idle(engine)
    assert sink.tokens == alone
    assert all(len(n.tokens) == 9 for n in noise)


def test_logprobs_match_the_full_forward_pass() -> None:
    model = spiky_model("gpt")
    prompt = PROMPTS[0]
    engine = Engine(model, ByteTokenizer(), slots=2, eos_id=-1)
    sink = submit(engine, prompt, SamplingParams(max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=3))
    submit(engine, PROMPTS[1])
    run_until_idle(engine)
    logprobs = [lp for o in sink.outputs for lp in o.logprobs]
    assert [lp.token_id for lp in logprobs] == sink.tokens
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.tensor([prompt + sink.tokens])).float(), dim=-1)[0]
    for i, lp in enumerate(logprobs):
        expected = reference[len(prompt) - 1 + i]
        assert lp.logprob == pytest.approx(float(expected[lp.token_id]), abs=1e-4)
        assert [t for t, _, _ in lp.top] == expected.topk(3).indices.tolist()
        assert lp.top[0][0] == lp.token_id  # greedy picks the most likely token
        assert lp.text == bytes([lp.token_id]).decode("utf-8", errors="replace")


def test_a_slot_ends_with_length_at_the_end_of_its_positions() -> None:
    model = spiky_model("gpt")
    engine = Engine(model, ByteTokenizer(), slots=1, max_len=20, eos_id=-1)
    sink = submit(engine, list(range(15)), SamplingParams(max_tokens=100, temperature=0.0))
    run_until_idle(engine)
    assert sink.last.finish_reason == "length"
    assert sink.last.completion_tokens == 5
    with pytest.raises(ScratchLLMError, match="slot holds 20"):
        engine.submit(list(range(20)), GREEDY, Collector())


def test_cancelled_request_frees_its_slot_at_once() -> None:
    model = spiky_model("gpt")
    engine = Engine(model, ByteTokenizer(), slots=1, eos_id=-1)
    long = Collector()
    request = engine.submit(PROMPTS[0], SamplingParams(max_tokens=80, temperature=0.0), long)
    waiting = submit(engine, PROMPTS[1])
    engine.step()
    engine.step()
    assert engine.stats() == {"running": 1, "waiting": 1, "slots": 1}
    engine.cancel(request)
    engine.step()  # the cancelled request leaves and the waiting one takes its slot in the same step
    assert long.last.error == "cancelled" and len(long.tokens) == 3
    assert engine.running[0].prompt == PROMPTS[1]
    run_until_idle(engine)
    assert waiting.tokens == generate(model, [PROMPTS[1]], 12)[0]
    # a request cancelled while it waits never runs
    first, second = Collector(), Collector()
    engine.submit(PROMPTS[2], GREEDY, first)
    engine.cancel(engine.submit(PROMPTS[3], GREEDY, second))
    run_until_idle(engine)
    assert second.tokens == [] and second.last.error == "cancelled"
    assert first.last.finish_reason == "length"


def test_waiting_queue_is_bounded() -> None:
    engine = Engine(spiky_model("gpt"), ByteTokenizer(), slots=1, max_waiting=2, eos_id=-1)
    submit(engine, PROMPTS[0])
    submit(engine, PROMPTS[1])
    with pytest.raises(QueueFull, match="2 requests are already waiting"):
        submit(engine, PROMPTS[2])
    engine.step()  # one is admitted, so one more may wait
    submit(engine, PROMPTS[2])
    assert engine.stats() == {"running": 1, "waiting": 2, "slots": 1}


def test_bad_requests_are_refused_with_one_line() -> None:
    engine = Engine(spiky_model("gpt"), ByteTokenizer(), slots=1)
    with pytest.raises(ScratchLLMError, match="empty"):
        engine.submit([], GREEDY, Collector())
    with pytest.raises(ScratchLLMError, match="outside the model's vocabulary"):
        engine.submit([3, 999], GREEDY, Collector())
    with pytest.raises(ScratchLLMError, match="top_p"):
        engine.submit([3], SamplingParams(top_p=1.5), Collector())
    with pytest.raises(ScratchLLMError, match="max_tokens"):
        engine.submit([3], SamplingParams(max_tokens=0), Collector())
    with pytest.raises(ScratchLLMError, match="call start"):
        next(engine.generate([3], GREEDY))


def test_background_thread_serves_concurrent_clients() -> None:
    model = spiky_model("llama")
    engine = Engine(model, ByteTokenizer(), slots=4, eos_id=-1).start()
    results: dict[int, list[int]] = {}

    def client(i: int) -> None:
        params = SamplingParams(max_tokens=MAX_TOKENS[i], temperature=0.0)
        results[i] = [t for out in engine.generate(PROMPTS[i], params) for t in out.token_ids]

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # a client that stops reading early cancels its request
        stream = engine.generate(PROMPTS[0], SamplingParams(max_tokens=80, temperature=0.0))
        next(stream)
        stream.close()
    finally:
        engine.close()
    for i, prompt in enumerate(PROMPTS):
        assert results[i] == generate(model, [prompt], MAX_TOKENS[i])[0]
    assert engine.stats()["running"] == 0


def test_a_failing_step_fails_the_requests_in_flight_and_the_loop_keeps_serving() -> None:
    model = spiky_model("gpt")
    calls = {"n": 0}
    forward = model.forward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return forward(*args, **kwargs)

    model.forward = flaky
    engine = Engine(model, ByteTokenizer(), slots=2, eos_id=-1).start()
    try:
        failed = list(engine.generate(PROMPTS[0], GREEDY))
        assert failed[-1].error == "generation failed: RuntimeError: boom"
        assert engine.stats()["running"] == 0
        served = [t for out in engine.generate(PROMPTS[1], GREEDY) for t in out.token_ids]
    finally:
        engine.close()
    assert served == generate(spiky_model("gpt"), [PROMPTS[1]], 12)[0]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_a_shared_prompt_prefix_is_copied_not_recomputed_and_changes_nothing(kind: str) -> None:
    model = spiky_model(kind)
    system = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    prompts = [system + [40, 41], system + [50], system + [40, 41, 42], system[:4]]
    engine = Engine(model, ByteTokenizer(), slots=4, eos_id=-1)
    sinks = [submit(engine, prompts[0])]
    engine.step()  # the first one runs; the others find its keys in the cache
    sinks += [submit(engine, p) for p in prompts[1:]]
    run_until_idle(engine)
    assert engine.reused_tokens == 10 + 12 + 3  # prompts[2] extends prompts[0]; prompts[3] keeps its last token
    for prompt, sink in zip(prompts, sinks):
        assert sink.tokens == generate(model, [prompt], 12)[0]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_requests_admitted_together_are_prefilled_in_one_forward_pass(kind: str) -> None:
    model = spiky_model(kind)
    shapes = []
    model.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    engine = Engine(model, ByteTokenizer(), slots=4, eos_id=-1)
    sinks = [submit(engine, p, SamplingParams(max_tokens=6, temperature=0.0)) for p in PROMPTS[:4]]
    engine.step()
    longest = max(len(p) for p in PROMPTS[:4])
    assert shapes == [(4, longest), (4, 1)]  # one prefill, right-padded to the longest prompt; one decode step
    run_until_idle(engine)
    for prompt, sink in zip(PROMPTS[:4], sinks):
        assert sink.tokens == generate(model, [prompt], 6)[0]  # padding after a short prompt changes nothing


def test_a_shared_prefix_is_trimmed_when_the_batch_would_not_fit_its_slot() -> None:
    model = spiky_model("llama")
    system = list(range(7, 17))
    engine = Engine(model, ByteTokenizer(), slots=3, max_len=16, eos_id=-1)
    first = submit(engine, system + [40, 41], SamplingParams(max_tokens=4, temperature=0.0))
    engine.step()
    # prefilled together: the batch is 14 wide, so the first prompt may reuse only 16 - 14 = 2 cached positions
    extends, other = system + [40, 41, 42, 43], list(range(100, 114))
    sinks = [submit(engine, extends), submit(engine, other)]
    run_until_idle(engine)
    assert engine.reused_tokens == 2
    assert first.tokens == generate(model, [system + [40, 41]], 4)[0]
    for prompt, sink in zip([extends, other], sinks):
        assert sink.tokens == generate(model, [prompt], 16 - len(prompt))[0]

"""Multiple-choice scoring: the fast paths give the log-likelihoods of one plain forward pass per choice."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.choice import (
    Request,
    encode_request,
    evaluate_subject,
    first_index_of_max,
    pick_shots,
    score_requests,
)
from scratchllm.evaluate.tasks import Question, Subject


def reference(model, request: Request) -> list[float]:
    """lm-eval's computation: each choice alone, input (context + choice)[-(ctx+1):][:-1], summed log-probs."""
    ctx = model.config.context_length
    out = []
    for cont in request.continuations:
        whole = list(request.context) + list(cont)
        inputs = whole[-(ctx + 1) :][:-1]
        with torch.no_grad():
            logprobs = F.log_softmax(model(torch.tensor([inputs]))[0].double(), dim=-1)
        positions = range(len(inputs) - len(cont), len(inputs))
        out.append(sum(float(logprobs[p, t]) for p, t in zip(positions, cont)))
    return out


def random_requests(n: int, prefix: int, lengths: tuple[int, int], cont_lengths: tuple[int, int], seed: int):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, 97, (prefix,), generator=g).tolist()
    requests = []
    for _ in range(n):
        length = int(torch.randint(*lengths, (1,), generator=g))
        context = shared + torch.randint(0, 97, (length,), generator=g).tolist()
        conts = []
        for _ in range(4):
            k = int(torch.randint(*cont_lengths, (1,), generator=g))
            conts.append(tuple(torch.randint(0, 97, (k,), generator=g).tolist()))
        requests.append(Request(tuple(context), tuple(conts)))
    return requests


CASES = {
    "single-token choices, shared prefix": dict(prefix=12, lengths=(1, 9), cont_lengths=(1, 2)),
    "single-token choices, no prefix": dict(prefix=0, lengths=(1, 9), cont_lengths=(1, 2)),
    "multi-token choices": dict(prefix=0, lengths=(1, 12), cont_lengths=(1, 6)),
    "multi-token choices, truncated": dict(prefix=30, lengths=(20, 30), cont_lengths=(1, 8)),
    "single-token choices, truncated": dict(prefix=40, lengths=(20, 30), cont_lengths=(1, 2)),
}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_scores_equal_one_pass_per_choice(tiny_model, family: str, case: str) -> None:
    model = tiny_model(family)
    requests = random_requests(7, seed=len(case), **CASES[case])
    got = score_requests(model, requests, batch_size=3)
    for request, scores in zip(requests, got):
        assert scores == pytest.approx(reference(model, request), abs=1e-5)


def test_batch_size_does_not_change_scores(tiny_model) -> None:
    model = tiny_model("llama")
    requests = random_requests(6, prefix=10, lengths=(1, 9), cont_lengths=(1, 4), seed=3)
    one = score_requests(model, requests, batch_size=1)
    many = score_requests(model, requests, batch_size=6)
    assert torch.allclose(torch.tensor(one), torch.tensor(many), atol=1e-5)


def test_choice_longer_than_context_is_refused(tiny_model) -> None:
    model = tiny_model(context_length=8)
    with pytest.raises(ScratchLLMError, match="choice 0 has 9 tokens, more than the model's context"):
        score_requests(model, [Request((1, 2), (tuple(range(9)), (3,)))])


class CharTokenizer:
    """One id per character (ids 0..96 are printable ASCII minus offset); end-of-text is id 96."""

    bos_id = None
    eot_id = 96

    def encode(self, text: str, allowed_special: str = "all") -> list[int]:
        return [ord(ch) - 32 for ch in text]


def test_trailing_context_space_moves_to_the_continuation() -> None:
    request = encode_request(CharTokenizer(), "Answer: ", ["yes", "no"])
    assert request.context == tuple(ord(c) - 32 for c in "Answer:")
    assert request.continuations == (tuple(ord(c) - 32 for c in " yes"), tuple(ord(c) - 32 for c in " no"))


def test_empty_context_scores_after_end_of_text() -> None:
    request = encode_request(CharTokenizer(), "", ["ab"])
    assert request == Request((96,), ((ord("a") - 32, ord("b") - 32),))


def test_acc_and_acc_norm(tiny_model) -> None:
    """acc takes the highest summed log-prob, acc_norm divides by the choice's characters first."""
    model = tiny_model()
    question = Question("Pick:", ("x", "yyyyyyyyyyyy"), answer=1)
    subject = Subject("toy", [question])
    result = evaluate_subject(model, CharTokenizer(), subject)
    lls = result["loglikelihoods"][0]
    assert result["acc"] == float(first_index_of_max(lls) == 1)
    assert result["acc_norm"] == float(first_index_of_max([lls[0] / 1, lls[1] / 12]) == 1)
    assert lls == pytest.approx(reference(model, encode_request(CharTokenizer(), "Pick:", [" x", " yyyyyyyyyyyy"])))


def test_first_index_of_max_breaks_ties_like_numpy() -> None:
    assert first_index_of_max([1.0, 3.0, 3.0]) == 1


def test_too_many_shots_is_refused(tiny_model) -> None:
    subject = Subject("toy", [Question("q", ("a", "b"), 0)], dev=[Question("d", ("a", "b"), 1)])
    with pytest.raises(ScratchLLMError, match="subject toy: 2 shots asked for but its dev split has 1"):
        evaluate_subject(tiny_model(), CharTokenizer(), subject, shots=2)


def test_few_shot_samplers() -> None:
    pool = [Question(f"d{i}", ("a", "b"), i % 2) for i in range(6)]
    questions = [Question(f"q{i}", ("a", "b"), 0) for i in range(5)] + [pool[2]]
    subject = Subject("toy", questions, dev=pool)
    assert pick_shots(subject, questions, 2, "first") == [pool[:2]] * 6
    drawn = pick_shots(subject, questions, 2, "random", seed=3)
    assert drawn == pick_shots(subject, questions, 2, "random", seed=3)  # seeded
    assert len({tuple(d) for d in drawn}) > 1  # a new draw for every question, as lm-eval's sampler
    # the same generator consumed question after question: lm-eval's sequence of draws
    rng = random.Random(3)
    assert drawn[:5] == [rng.sample(pool, 3)[:2] for _ in range(5)]  # k + 1 drawn, first k kept
    assert pool[2] not in drawn[5] and len(drawn[5]) == 2  # a question in the pool is not its own example
    for shots in (2, 0):  # a misspelt sampler is refused even when no examples are drawn
        with pytest.raises(ScratchLLMError, match="unknown few-shot sampler 'any'"):
            pick_shots(subject, questions, shots, "any")


def test_shared_prefix_runs_once(tiny_model) -> None:
    """Few-shot prompts share their start: it runs once (batch 1), then each batch only runs what follows it."""
    model = tiny_model("llama")
    requests = random_requests(6, prefix=20, lengths=(1, 5), cont_lengths=(1, 2), seed=5)
    calls = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((tuple(args[0].shape), kwargs.get("packing"))), with_kwargs=True
    )
    score_requests(model, requests, batch_size=3)
    assert calls[0] == ((1, 20), None)
    assert len(calls) == 3
    for shape, packing in calls[1:]:  # 3 rows of what follows the prefix, packed without padding
        assert packing.batch == 3 and packing.width <= 4 and shape == (1, sum(packing.lengths))

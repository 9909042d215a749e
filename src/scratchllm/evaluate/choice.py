"""Multiple-choice evaluation by log-likelihood, with lm-eval's numbers and less computation.

Each choice is scored by the summed log-probability of its tokens given the question's context. ``acc`` takes
the choice with the highest sum; ``acc_norm`` divides each sum by the choice's length in characters first
(so long answers are not penalised for having more tokens), as lm-evaluation-harness does.

Tokens are those lm-eval feeds the model: trailing whitespace of the context moves to the continuation, and the
continuation's tokens are those of ``context + continuation`` after the context's own (:func:`encode_request`);
a text longer than the model's context keeps its last tokens.

Where the speed comes from (:func:`score_requests`):

* **One context pass per question.** When every choice is one token (CMMLU's ``" A"`` .. ``" D"``), the
  question's row ends at the context and the four log-probabilities are read from its last position. Otherwise
  the contexts run once, left-padded, into a KV cache, which is then repeated once per choice and only the
  choices' tokens run through it.
* **One shared prefix per subject.** With ``k`` shots, every prompt of a subject starts with the same
  description and examples: the longest common token prefix runs once, and each batch continues from its keys
  and values.
* **No padding.** A batch's rows go through the per-token layers back to back (:class:`~scratchllm.model.Packing`);
  only attention sees them as padded rows. CMMLU's questions differ in length, so right-padding a batch of 4
  wasted about 14 % of the tokens.
* **The LM head only where it is needed.** The vocabulary projection is a large matrix multiply; rows are scored
  at one position each, so it runs on those positions only.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.tasks import Question, Subject, build_context, continuations
from scratchllm.model import Packing

#: shortest common prefix worth a forward pass of its own, in tokens and as a share of the mean context: rows that
#: continue a cache attend through an explicit mask (about 15 % slower per token than plain causal rows), so a
#: prefix pays only when it saves more than that
MIN_SHARED_PREFIX = 8
MIN_SHARED_FRACTION = 0.25


@dataclass(frozen=True)
class Request:
    """One question as token ids: the context and each choice's continuation."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


# ---------------------------------------------------------------------------------------------- encoding
def _encode(tokenizer: Any, text: str) -> list[int]:
    """``text`` as a Hugging Face tokenizer encodes it by default: special-token text is the special token, and
    BOS goes in front when the tokenizer's config asks for it (unless the text already starts with it)."""
    ids = tokenizer.encode(text, allowed_special="all")
    bos = getattr(tokenizer, "bos_id", None)
    if getattr(tokenizer, "add_bos_token", False) and bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    return ids


def _prefix_id(tokenizer: Any) -> int:
    """What stands before a continuation whose context is empty: BOS, else end-of-text (lm-eval's choice)."""
    for name in ("bos_id", "eot_id"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            return token
    raise ScratchLLMError("an empty context needs a BOS or end-of-text token, and this tokenizer has neither")


def encode_request(tokenizer: Any, context: str, choices: Sequence[str]) -> Request:
    """Token ids of a context and its continuations, split exactly as lm-eval splits them."""
    if not context:
        prefix = _prefix_id(tokenizer)
        conts = [tokenizer.encode(c, allowed_special="all") for c in choices]
        return Request((prefix,), tuple(tuple(c) for c in conts))
    spaces = len(context) - len(context.rstrip())
    moved = context[len(context) - spaces :] if spaces else ""
    context = context[: len(context) - spaces]
    context_ids = _encode(tokenizer, context)
    conts = []
    for choice in choices:
        whole = _encode(tokenizer, context + moved + choice)
        conts.append(tuple(whole[len(context_ids) :]))
        if not conts[-1]:
            raise ScratchLLMError(f"choice {choice!r} encodes to no tokens after its context")
    return Request(tuple(context_ids), tuple(conts))


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class _Job:
    """Choices of one request that share one (possibly truncated) context."""

    request: int
    choices: list[int]
    context: tuple[int, ...]
    continuations: list[tuple[int, ...]]


def _jobs(requests: Sequence[Request], context_length: int) -> list[_Job]:
    """Split requests into jobs; a choice whose input would exceed the context gets its own truncated context.

    lm-eval keeps the last ``context_length + 1`` tokens of ``context + continuation`` and drops the final one.
    """
    jobs = []
    for r, req in enumerate(requests):
        fits = [len(req.context) + len(c) - 1 <= context_length for c in req.continuations]
        if all(fits):
            jobs.append(_Job(r, list(range(len(req.continuations))), req.context, list(req.continuations)))
            continue
        for j, cont in enumerate(req.continuations):
            if len(cont) > context_length:
                raise ScratchLLMError(
                    f"question {r}: choice {j} has {len(cont)} tokens, more than the model's context ({context_length})"
                )
            keep = context_length + 1 - len(cont)
            jobs.append(_Job(r, [j], req.context[-keep:], [cont]))
    return jobs


@contextmanager
def _hidden_states(model: nn.Module) -> Iterator[nn.Module]:
    """Make ``model(...)`` return final hidden states instead of logits; yields the LM head to apply later."""
    head = model.lm_head
    model.lm_head = nn.Identity()
    try:
        yield head
    finally:
        model.lm_head = head


def _common_prefix(contexts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all contexts share (leaving each its last token), or 0 when too short
    to pay for itself."""
    n = min(len(c) for c in contexts) - 1
    first = contexts[0]
    for c in contexts[1:]:
        k = 0
        while k < n and c[k] == first[k]:
            k += 1
        n = k
    mean = sum(len(c) for c in contexts) / len(contexts)
    return n if n >= MIN_SHARED_PREFIX and n >= MIN_SHARED_FRACTION * mean else 0


def _rows_of(cache: Any, n: int) -> Any:
    """A view of the first ``n`` rows of a KV cache (same storage)."""
    view = object.__new__(type(cache))
    view.__dict__.update(cache.__dict__)
    view.k, view.v = cache.k[:, :n], cache.v[:, :n]
    return view


def _repeat_rows(cache: Any, repeats: Tensor) -> Any:
    """A new KV cache whose row ``i`` is repeated ``repeats[i]`` times (one copy per choice)."""
    out = object.__new__(type(cache))
    out.__dict__.update(cache.__dict__)
    out.k = cache.k.repeat_interleave(repeats, dim=1)
    out.v = cache.v.repeat_interleave(repeats, dim=1)
    if cache.pad is not None:
        out.pad = cache.pad.repeat_interleave(repeats)
    return out


def _score_single_tokens(model: nn.Module, jobs: list[_Job], out: list[list[float]], batch_size: int) -> None:
    """Jobs whose continuations are all one token: one row per job, read at its last position."""
    device = next(model.parameters()).device
    shared = _common_prefix([job.context for job in jobs])
    longest = max(len(job.context) for job in jobs)
    cache = None
    with _hidden_states(model) as head:
        if shared:
            prefix = model.new_kv_cache(1, max_len=shared)
            model(torch.tensor([jobs[0].context[:shared]], device=device), kv_cache=prefix)
            cache = model.new_kv_cache(min(batch_size, len(jobs)), max_len=longest)
            cache.k[:, :, :, :shared] = prefix.k
            cache.v[:, :, :, :shared] = prefix.v
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].context))  # similar lengths share a batch
        for start in range(0, len(order), batch_size):
            batch = [jobs[i] for i in order[start : start + batch_size]]
            rest = [job.context[shared:] for job in batch]
            tokens = torch.tensor([[t for r in rest for t in r]], device=device)  # back to back, no padding
            packing = Packing([len(r) for r in rest], device)
            if cache is not None:
                cache.length = shared  # the prefix stays; this batch overwrites what follows it
                final = model(tokens, kv_cache=_rows_of(cache, len(batch)), last_only=True, packing=packing)
            else:
                final = model(tokens, last_only=True, packing=packing)
            logprobs = F.log_softmax(head(final[0]).float(), dim=-1)
            for i, job in enumerate(batch):
                for j, cont in zip(job.choices, job.continuations):
                    out[job.request][j] = float(logprobs[i, cont[0]])


def _fitting_batches(jobs: list[_Job], batch_size: int, context_length: int) -> Iterator[list[_Job]]:
    """Batches of jobs, longest contexts first, whose longest context plus longest continuation fits the model.

    Contexts are left-padded to the longest of the batch and continuations follow it, so a job that fits alone
    may not fit beside a longer context; it then starts the next batch.
    """
    batch: list[_Job] = []
    for job in sorted(jobs, key=lambda job: -len(job.context)):
        width = len(batch[0].context) if batch else len(job.context)
        longest = max(len(c) for j in [*batch, job] for c in j.continuations)
        if batch and (len(batch) == batch_size or width + longest - 1 > context_length):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def _score_continuations(model: nn.Module, jobs: list[_Job], out: list[list[float]], batch_size: int) -> None:
    """Other jobs: contexts once (left-padded) into a KV cache, repeated per choice for the continuations."""
    device = next(model.parameters()).device
    for batch in _fitting_batches(jobs, batch_size, model.config.context_length):
        width = max(len(job.context) for job in batch)
        rows = torch.zeros(len(batch), width, dtype=torch.long, device=device)
        for i, job in enumerate(batch):
            rows[i, width - len(job.context) :] = torch.tensor(job.context, device=device)
        pad = torch.tensor([width - len(job.context) for job in batch], device=device)
        conts = [cont for job in batch for cont in job.continuations]
        cont_width = max(len(c) for c in conts) - 1
        cache = model.new_kv_cache(len(batch), max_len=width + max(cont_width, 0), pad=pad)
        first = F.log_softmax(model(rows, kv_cache=cache, last_only=True)[:, -1].float(), dim=-1)  # [B, V]
        repeats = torch.tensor([len(job.continuations) for job in batch], device=device)
        sums = first.repeat_interleave(repeats, dim=0)[torch.arange(len(conts)), [c[0] for c in conts]]
        if cont_width > 0:
            inputs = torch.zeros(len(conts), cont_width, dtype=torch.long, device=device)
            for i, c in enumerate(conts):
                inputs[i, : len(c) - 1] = torch.tensor(c[:-1], device=device)
            logprobs = F.log_softmax(model(inputs, kv_cache=_repeat_rows(cache, repeats)).float(), dim=-1)
            for i, c in enumerate(conts):
                if len(c) > 1:
                    targets = torch.tensor(c[1:], device=device)
                    sums[i] += logprobs[i, torch.arange(len(c) - 1, device=device), targets].sum()
        k = 0
        for job in batch:
            for j in job.choices:
                out[job.request][j] = float(sums[k])
                k += 1


@torch.inference_mode()
def score_requests(model: nn.Module, requests: Sequence[Request], batch_size: int = 8) -> list[list[float]]:
    """Log-likelihood of every continuation of every request (see the module docstring for the method).

    Args:
        model: a causal LM with the :class:`~scratchllm.model.GPTModel` interface (KV cache, ``lm_head``).
        requests: contexts and continuations as token ids.
        batch_size: questions per forward pass.
    """
    if batch_size < 1:
        raise ScratchLLMError(f"batch_size must be at least 1, got {batch_size}")
    out: list[list[float]] = [[float("nan")] * len(r.continuations) for r in requests]
    jobs = _jobs(requests, model.config.context_length)
    single = [job for job in jobs if all(len(c) == 1 for c in job.continuations)]
    multi = [job for job in jobs if any(len(c) > 1 for c in job.continuations)]
    was_training = model.training
    model.eval()
    try:
        if single:
            _score_single_tokens(model, single, out, batch_size)
        if multi:
            _score_continuations(model, multi, out, batch_size)
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------- subjects
def first_index_of_max(values: Sequence[float]) -> int:
    """``argmax`` that, like numpy's, picks the first of equal maxima."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def pick_shots(
    subject: Subject, questions: Sequence[Question], shots: int, sampler: str = "first", seed: int = 1234
) -> list[list[Question]]:
    """The few-shot examples in front of each question, chosen as lm-eval chooses them.

    * ``first`` (lm-eval's ``first_n``, what CMMLU and C-Eval use): the first ``shots`` dev questions, the same
      for every question (so their tokens are computed once per subject; see :func:`score_requests`).
    * ``random`` (lm-eval's default sampler, what HellaSwag uses): one ``random.Random(seed)`` per subject draws
      new examples for every question, in question order. Like lm-eval's HellaSwag task (whose few-shot split
      and test split are both unset, so its sampler is handed the question to leave out), each draw takes
      ``shots + 1`` examples, drops the question itself if it is among them, and keeps the first ``shots``.
      With lm-eval's ``fewshot_random_seed`` (1234 by default) and the same pool order, the prompts are
      lm-eval's, question for question.
    """
    if sampler not in ("first", "random"):
        raise ScratchLLMError(f"unknown few-shot sampler {sampler!r}; expected 'first' or 'random'")
    if shots < 0:
        raise ScratchLLMError(f"shots must be 0 or more, got {shots}")
    if shots > len(subject.dev):
        raise ScratchLLMError(
            f"subject {subject.name}: {shots} shots asked for but its dev split has {len(subject.dev)} "
            "questions (give --dev)"
        )
    if shots == 0 or sampler == "first":
        return [subject.dev[:shots]] * len(questions)
    rng = random.Random(seed)
    picked = []
    for q in questions:
        drawn = [x for x in rng.sample(subject.dev, min(shots + 1, len(subject.dev))) if x != q][:shots]
        if len(drawn) < shots:  # the pool holds copies of q: draw again from the pool without them
            drawn = rng.sample([x for x in subject.dev if x != q], shots)
        picked.append(drawn)
    return picked


def evaluate_subject(
    model: nn.Module,
    tokenizer: Any,
    subject: Subject,
    shots: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    sampler: str = "first",
    seed: int = 1234,
) -> dict[str, Any]:
    """Score one subject: ``acc``, ``acc_norm``, question count and each question's choice log-likelihoods."""
    questions = subject.questions[:limit] if limit is not None else subject.questions
    if not questions:
        raise ScratchLLMError(f"subject {subject.name}: no questions to score")
    examples = pick_shots(subject, questions, shots, sampler, seed)
    requests = [
        encode_request(tokenizer, build_context(subject, q, shots_q), continuations(q))
        for q, shots_q in zip(questions, examples)
    ]
    started = time.perf_counter()
    loglikelihoods = score_requests(model, requests, batch_size)
    seconds = time.perf_counter() - started
    correct = correct_norm = 0
    for q, lls in zip(questions, loglikelihoods):
        correct += first_index_of_max(lls) == q.answer
        normed = [ll / len(choice) for ll, choice in zip(lls, q.choices)]
        correct_norm += first_index_of_max(normed) == q.answer
    n = len(questions)
    return {
        "subject": subject.name,
        "questions": n,
        "acc": correct / n,
        "acc_norm": correct_norm / n,
        "seconds": seconds,
        "loglikelihoods": loglikelihoods,
    }


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall scores: weighted by question count (lm-eval's CMMLU group) and the plain mean over subjects."""
    n = sum(r["questions"] for r in results)
    return {
        "questions": n,
        "subjects": len(results),
        "acc": sum(r["acc"] * r["questions"] for r in results) / n,
        "acc_norm": sum(r["acc_norm"] * r["questions"] for r in results) / n,
        "acc_subject_mean": sum(r["acc"] for r in results) / len(results),
        "seconds": sum(r["seconds"] for r in results),
    }


def results_table(per_subject: Sequence[dict[str, Any]], overall: dict[str, Any]) -> str:
    """An aligned text table: one line per subject and the overall line."""
    width = max([len("overall"), *(len(r["subject"]) for r in per_subject)])
    lines = [f"{'subject'.ljust(width)}  questions     acc  acc_norm"]
    for r in [*per_subject, {**overall, "subject": "overall"}]:
        lines.append(f"{r['subject'].ljust(width)}  {r['questions']:9d}  {r['acc']:6.4f}    {r['acc_norm']:6.4f}")
    return "\n".join(lines)


def progress(i: int, total: int, result: dict[str, Any], resumed: bool = False) -> None:
    """One stderr line per finished subject."""
    rate = result["questions"] / result["seconds"] if result["seconds"] else float("inf")
    how = "resumed" if resumed else f"{rate:.1f} q/s"
    print(
        f"[{i}/{total}] {result['subject']}: acc {result['acc']:.4f} ({result['questions']} questions, {how})",
        file=sys.stderr,
        flush=True,
    )

"""Text generation: greedy decoding, temperature, top-k, top-p, stop tokens/strings, KV cache, streaming.

A language model gives a distribution over the next token; generation appends a token chosen from it and asks
again. Three entry points share one decoding loop (:func:`iter_tokens`):

* :func:`generate` - token ids in, **only the new** token ids out (one list per prompt, without the prompt,
  the ``eos_id`` token or anything after it);
* :func:`stream` - text in, text pieces out as soon as they are complete UTF-8 characters;
* :func:`generate_text` - text in, the continuation as one string.

**KV cache.** Without a cache, step ``n`` runs the model over all ``n`` tokens again. With one
(:class:`~scratchllm.model.KVCache`: preallocated keys/values for every layer), the prompt is processed once
("prefill") and each later step feeds just the newest token, which attends to the cached keys/values.

**Context overflow.** The learned position embedding has ``context_length`` slots. The uncached path slides a
window: each step sees the last ``context_length`` tokens. The cached path does the same thing exactly: once
the cache is full, every step re-fills it from the last ``context_length`` tokens (the positions of all cached
tokens shift, so old keys cannot be reused). Cached and uncached decoding therefore give the same tokens even
past the context; only the speed advantage ends there.

**Compiled steps.** With ``compile=True`` each one-token step runs through ``torch.compile``: the step's
dozens of small operations per layer (norms, rotations, residual adds) are fused into a few generated kernels,
which is where eager decoding of a small model spends much of its time. The cache is then a
:class:`~scratchllm.model.StaticKVCache` (every step attends over the same number of slots, the empty ones
masked), so one graph serves every step and every later call with the same batch size and cache size; cache
sizes are rounded up to a power of two (at least 256) for that reason. The prompt (prefill) still runs eagerly:
its length varies from call to call. On CPU a model prepared for decoding multiplies with our matrix-vector
kernel (:mod:`scratchllm.model.matvec`), which the compiled step calls as an operator; any other matrix
product is inductor's own C++ GEMM kernel or ATen's, whichever was faster when timed at compile time
(``max_autotune``; without our kernel that made bf16 and int8 decoding about 25-35 % faster on an AVX2 CPU).
The first call compiles for a minute or two (a C++ compiler is needed on CPU); later ones, also in new
processes, reuse the result.

**Batches of different lengths** are left-padded; the model is told each row's padding (``pad``), masks those
slots and starts each row's positions at its first real token, so every row decodes as if it were alone.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from scratchllm.errors import ScratchLLMError


class Tokenizer(Protocol):
    """What generation needs from a tokenizer (see :mod:`scratchllm.tokenizer`)."""

    def encode(self, text: str, allowed_special: Any = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...


# ---------------------------------------------------------------------------------------- sampling
def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a one-line :class:`ScratchLLMError` for sampling settings that mean nothing."""
    if not temperature >= 0.0:  # also rejects NaN
        raise ScratchLLMError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ScratchLLMError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ScratchLLMError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose one token per row from ``logits`` ``[B, V]``; returns ``[B]`` ids.

    ``temperature == 0`` is greedy (argmax). Otherwise logits are divided by the temperature (< 1 sharpens,
    > 1 flattens), ``top_k`` keeps the k most likely tokens, ``top_p`` keeps the smallest set whose
    probability reaches p (nucleus sampling), and one token is drawn from what remains.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the most likely one always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------- decoding loop
def _as_rows(prompts: Sequence[Sequence[int]] | Tensor) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        return [row.tolist() for row in prompts]
    rows = [list(map(int, p)) for p in prompts]
    if not rows:
        raise ScratchLLMError("generate: no prompts given")
    for i, row in enumerate(rows):
        if not row:
            raise ScratchLLMError(f"generate: prompt {i} is empty; it needs at least one token")
    return rows


def compile_options(device: torch.device) -> dict[str, Any]:
    """Inductor options for a compiled decoding step on ``device``.

    ``cpp_wrapper``: the graph's kernels are called from generated C++, not Python; a step calls a few hundred
    small ones, and that alone made CPU decoding about 20 % faster. ``max_autotune`` with the ``CPP`` GEMM
    backend (CPU only): each matrix product of the step is timed as inductor's generated C++ kernel and as
    ATen's, once at compile time, and the faster one is kept.
    """
    options: dict[str, Any] = {"cpp_wrapper": True}
    if device.type == "cpu":
        options.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")
    return options


def iter_tokens(
    model: torch.nn.Module,
    rows: list[list[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    strict_context: bool = False,
    compile: bool = False,
) -> Iterator[Tensor]:
    """Yield the next token of every row (``[B]`` tensor) ``max_new_tokens`` times. The decoding loop itself.

    ``rows`` are the prompts as :func:`generate` and :func:`stream` pass them (non-empty lists of ids).
    Prompts longer than ``context_length`` keep their last ``context_length`` tokens (or raise with
    ``strict_context``). ``compile`` runs the one-token steps through ``torch.compile`` (needs ``use_cache``;
    see the module's docstring). The model is put in eval mode while decoding and restored afterwards.
    """
    if compile and not use_cache:
        raise ScratchLLMError("compiled decoding steps need the KV cache (use_cache=True)")
    check_sampling(temperature, top_k, top_p)
    ctx = model.config.context_length
    vocab = model.config.vocab_size
    for i, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < vocab), None)
        if bad is not None:
            raise ScratchLLMError(
                f"prompt {i}: token id {bad} is outside the model's vocabulary [0, {vocab}) "
                "(tokenizer and model do not match?)"
            )
    longest = max(len(r) for r in rows)
    if strict_context and longest > ctx:
        raise ScratchLLMError(f"prompt has {longest} tokens, more than the model's context_length {ctx}")
    device = model.tok_emb.weight.device
    B = len(rows)
    # One buffer holds prompt + everything generated; rows are left-padded to a common length.
    tokens = torch.zeros(B, longest + max_new_tokens, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        tokens[i, longest - len(row) : longest] = torch.tensor(row, dtype=torch.long)
    pad = torch.tensor([longest - len(r) for r in rows], device=device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    cache, step = None, model
    # The step's input has its own buffer: a view of ``tokens`` would carry that buffer's row stride, which
    # changes with the call's length, and a compiled step would be recompiled for every new stride.
    step_ids = torch.empty(B, 1, dtype=torch.long, device=device)
    if use_cache:
        max_len = longest + max_new_tokens
        if compile:  # one graph per cache size: round up so that calls of similar lengths share it
            max_len = max(256, 1 << (max_len - 1).bit_length())
            step = torch.compile(model, fullgraph=True, dynamic=False, options=compile_options(device))
        cache = model.new_kv_cache(B, max_len=max_len, static=compile)
    was_training = model.training
    model.eval()
    try:
        n = longest  # tokens[:, :n] are known
        cached = 0  # tokens the cache holds
        for _ in range(max_new_tokens):
            with torch.inference_mode():
                start = max(0, n - ctx)
                window_pad = (pad - start).clamp_(min=0)
                window_pad = window_pad if bool((window_pad > 0).any()) else None
                if cache is None:
                    logits = model(tokens[:, start:n], pad=window_pad, last_only=True)
                elif cached == n - 1 and n <= cache.max_len:
                    step_ids.copy_(tokens[:, n - 1 : n])
                    logits = step(step_ids, kv_cache=cache, last_only=True)  # one new token
                    cached = n
                else:  # prefill, or the window slid past the context: refill from the last ctx tokens
                    cache.reset(pad=window_pad)
                    logits = model(tokens[:, start:n], kv_cache=cache, last_only=True)
                    cached = n - start
                next_ids = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
                tokens[:, n] = next_ids
            n += 1
            yield next_ids
    finally:
        model.train(was_training)


def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]] | Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    stop_strings: Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    strict_context: bool = False,
    compile: bool = False,
) -> list[list[int]]:
    """Continue each prompt; return only the new token ids, one list per prompt.

    A row stops at ``eos_id`` (not included in its list) or when its decoded new text contains one of
    ``stop_strings`` (needs ``tokenizer``; the token that completed the stop string is the last one kept, so
    decode and cut at the string, as :func:`generate_text` does). Decoding ends when every row has stopped or
    after ``max_new_tokens``. ``seed`` makes sampling reproducible (the cached and uncached paths draw the same
    tokens for the same seed). ``compile`` compiles the one-token steps (see the module's docstring).
    """
    if stop_strings and tokenizer is None:
        raise ScratchLLMError("generate: stop_strings need a tokenizer to decode the generated text")
    rows = _as_rows(prompts)
    out: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    steps = iter_tokens(
        model, rows, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache,
        seed=seed, strict_context=strict_context, compile=compile,
    )  # fmt: skip
    for next_ids in steps:
        for i, token in enumerate(next_ids.tolist()):
            if done[i]:
                continue
            if eos_id is not None and token == eos_id:
                done[i] = True
                continue
            out[i].append(token)
            if stop_strings and any(s in tokenizer.decode(out[i]) for s in stop_strings):
                done[i] = True
        if all(done):
            steps.close()
            break
    return out


# ---------------------------------------------------------------------------------------- text
def default_eos(tokenizer: Any, eos_id: int | None) -> int | None:
    """The tokenizer's end-of-sequence id (a chat model's end-of-turn, e.g. ``<|im_end|>``), else ``<|endoftext|>``."""
    if eos_id is not None:
        return eos_id
    own = getattr(tokenizer, "eos_id", None)
    return own if own is not None else getattr(tokenizer, "eot_id", None)


def stream(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    stop_strings: Sequence[str] | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    strict_context: bool = False,
    compile: bool = False,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece as tokens are produced.

    A token may end in the middle of a multi-byte UTF-8 character (common for Chinese or emoji with byte-level
    BPE), so bytes go through an incremental UTF-8 decoder and only complete characters are yielded. Text that
    could be the start of a stop string is held back until it is clear it is not one; the stop string itself is
    never yielded. ``eos_id`` defaults to the tokenizer's ``eot_id``.
    """
    eos_id = default_eos(tokenizer, eos_id)
    stops = [s for s in (stop_strings or []) if s]
    ids = tokenizer.encode(prompt, allowed_special="all")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""  # decoded, not yet yielded
    steps = iter_tokens(
        model, _as_rows([ids]), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        use_cache=use_cache, seed=seed, strict_context=strict_context, compile=compile,
    )  # fmt: skip
    try:
        for next_ids in steps:
            token = int(next_ids[0])
            if eos_id is not None and token == eos_id:
                break
            text += decoder.decode(tokenizer.decode_bytes([token]), final=False)
            hit = min((text.find(s) for s in stops if s in text), default=-1)
            if hit >= 0:
                if hit:
                    yield text[:hit]
                return
            keep = held_back(text, stops)
            if len(text) > keep:
                yield text[: len(text) - keep]
                text = text[len(text) - keep :]
        text += decoder.decode(b"", final=True)
        hit = min((text.find(s) for s in stops if s in text), default=-1)
        text = text[:hit] if hit >= 0 else text
        if text:
            yield text
    finally:
        steps.close()


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def generate_text(model: torch.nn.Module, tokenizer: Tokenizer, prompt: str, **kwargs: Any) -> str:
    """The continuation of ``prompt`` as one string (same options as :func:`stream`)."""
    return "".join(stream(model, tokenizer, prompt, **kwargs))

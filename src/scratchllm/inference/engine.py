"""Continuous batching: many requests decoded together, each joining and leaving the batch between steps.

Generating one token costs about the same for one sequence as for eight: decoding is bound by reading the
weights from memory, and one batched forward pass reads them once for every row. A server that answers
requests one after another wastes that. The engine here keeps a fixed pool of KV-cache *slots* (rows of one
:class:`~scratchllm.model.KVCache`) and runs a loop; each :meth:`Engine.step`:

1. drops the sequences whose client left (their slots are free again at once);
2. admits waiting requests while a slot is free: their prompts run through the model into their slots together,
   in one forward pass ("prefill", batched; a prefix that a running sequence already holds is copied from its
   row) and each one's first token is sampled;
3. decodes one token for *every* running sequence in **one** batched forward pass; each row continues from its
   own length and position (:meth:`KVCache.rows` with ``lengths``), so sequences of any age share the batch;
4. hands each sequence its new text and frees the slots of those that finished (end of sequence, a stop
   string, ``max_tokens`` or the end of the slot).

Running sequences always occupy rows ``0 .. n-1``: when one leaves, the last one's cache row is copied into
its place, so step 3 is a dense batch of exactly the running sequences (vLLM's scheduler and llama.cpp's
server slots are the models; this is the small readable version, without paged memory or chunked prefill).

Each request brings its own :class:`SamplingParams` (greedy or temperature/top-p, a seed, stop strings, log
probabilities) and receives :class:`Output` events through a callback, from the engine's thread. Waiting
requests are bounded: :meth:`Engine.submit` raises :class:`QueueFull` rather than letting a queue grow
without limit.
"""

from __future__ import annotations

import codecs
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scratchllm.errors import ScratchLLMError
from scratchllm.generation import check_sampling, default_eos, held_back, sample_next


class QueueFull(ScratchLLMError):
    """The waiting queue holds its maximum; the client should retry later (HTTP 429)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. ``temperature`` 0 is greedy; ``seed`` makes sampling reproducible.

    ``stop`` strings end the sequence and are never part of the returned text. ``logprobs`` asks for the
    log probability of every chosen token and, with ``top_logprobs`` > 0, of that many most likely tokens.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0

    def check(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.max_tokens < 1:
            raise ScratchLLMError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.top_logprobs <= 20:
            raise ScratchLLMError(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's id, text and log probability, with the ``top`` alternatives as (id, text, logprob)."""

    token_id: int
    text: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass
class Output:
    """What one step produced for one request: new text (never part of a stop string), the new token ids,
    their log probabilities when asked for, and, on the last event, why it finished and the token counts."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (end of sequence or stop string), "length", or None: not yet
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass(eq=False)
class Request:
    """One sequence in the engine. ``cancel()`` (from any thread) frees its slot before the next step."""

    id: int
    prompt: list[int]
    params: SamplingParams
    on_output: Callable[[Output], None]
    limit: int  # tokens it may generate: max_tokens, or less where the slot ends
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    row: int = -1
    cancelled: bool = False
    finished: bool = False
    held: str = ""  # decoded text held back (it may be the start of a stop string)
    decoder: Any = None  # incremental UTF-8: a token may end inside a character

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """A pool of ``slots`` KV-cache rows of ``max_len`` positions, and the step loop that serves them.

    Drive it yourself with :meth:`step` (tests do, to control exactly when requests join), or call
    :meth:`start` to run the loop in a background thread that sleeps while there is nothing to do.

    Args:
        model: a :class:`~scratchllm.model.GPTModel` (put in eval mode).
        tokenizer: its tokenizer (``decode_bytes``; ``eos_id``/``eot_id`` end a sequence).
        slots: how many sequences decode together at most.
        max_len: positions per slot, prompt included (default and maximum: the model's context length).
        max_waiting: how many requests may wait for a slot before :meth:`submit` raises :class:`QueueFull`.
        eos_id: the token that ends a sequence (default: the tokenizer's ``eos_id``, else ``eot_id``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        slots: int = 8,
        max_len: int | None = None,
        max_waiting: int = 64,
        eos_id: int | None = None,
    ) -> None:
        if slots < 1:
            raise ScratchLLMError(f"slots must be >= 1, got {slots}")
        if max_waiting < 0:
            raise ScratchLLMError(f"max_waiting must be >= 0, got {max_waiting}")
        ctx = model.config.context_length
        self.max_len = min(max_len or ctx, ctx)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_id = default_eos(tokenizer, eos_id)
        self.max_waiting = max_waiting
        self.device = model.tok_emb.weight.device
        self.cache = model.new_kv_cache(slots, max_len=self.max_len)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=self.device)  # cached positions per row
        self.running: list[Request] = []  # running[i].row == i
        self.waiting: deque[Request] = deque()
        self._ids = itertools.count()
        self.reused_tokens = 0  # prompt tokens whose keys/values were copied from another row (prefix caching)
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def slots(self) -> int:
        return self.cache.k.shape[1]

    # ------------------------------------------------------------------------------------ requests
    def submit(
        self, prompt: Sequence[int], params: SamplingParams, on_output: Callable[[Output], None]
    ) -> Request:
        """Queue ``prompt`` (token ids); ``on_output`` receives its :class:`Output` events (engine thread).

        Raises :class:`ScratchLLMError` for a prompt that cannot run (empty, unknown ids, no room left in a
        slot) and :class:`QueueFull` when ``max_waiting`` requests already wait.
        """
        params.check()
        prompt = [int(t) for t in prompt]
        vocab = self.model.config.vocab_size
        if not prompt:
            raise ScratchLLMError("the prompt is empty; it needs at least one token")
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise ScratchLLMError(f"prompt token id {bad} is outside the model's vocabulary [0, {vocab})")
        if len(prompt) >= self.max_len:
            raise ScratchLLMError(
                f"the prompt has {len(prompt)} tokens; a slot holds {self.max_len}, so nothing could be generated"
            )
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        request = Request(
            id=next(self._ids),
            prompt=prompt,
            params=params,
            on_output=on_output,
            limit=min(params.max_tokens, self.max_len - len(prompt)),
            generator=generator,
            decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
        )
        with self._lock:
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting (the limit); retry later")
            self.waiting.append(request)
            self._lock.notify()
        return request

    def cancel(self, request: Request) -> None:
        """Stop ``request``; its slot (or queue place) is freed before the next step. Safe from any thread."""
        request.cancel()
        with self._lock:
            self._lock.notify()

    def generate(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[Output]:
        """Submit ``prompt`` and yield its outputs as they come (the loop must be running: :meth:`start`).

        Closing the iterator early cancels the request.
        """
        import queue

        if self._thread is None:
            raise ScratchLLMError("Engine.generate needs the step loop running: call start() first")
        outputs: queue.Queue[Output] = queue.Queue()
        request = self.submit(prompt, params, outputs.put)
        try:
            while True:
                out = outputs.get()
                yield out
                if out.finished:
                    return
        finally:
            if not request.finished:
                self.cancel(request)

    # ------------------------------------------------------------------------------------ the loop
    def step(self) -> bool:
        """One scheduling step (see the module docstring); False when there was nothing to do."""
        with self._lock:
            gone = [r for r in self.waiting if r.cancelled]
            for request in gone:
                self.waiting.remove(request)
                request.finished = True
        for request in [r for r in self.running if r.cancelled]:
            self._release(request)
            gone.append(request)
        for request in gone:
            self._emit(request, Output(error="cancelled"))
        admitted = []
        with self._lock:
            while self.waiting and len(self.running) + len(admitted) < self.slots:
                admitted.append(self.waiting.popleft())
        if admitted:
            self._prefill(admitted)
        if not self.running:
            return bool(admitted)
        self._decode()
        return True

    @torch.inference_mode()
    def _prefill(self, requests: list[Request]) -> None:
        """Run the prompts of ``requests`` into the next free rows in one forward pass; sample each first token.

        Prompts often begin alike (a chat template's system prompt): the keys and values of a prefix that a
        running sequence already holds are copied from its row instead of computed again (*prefix caching*;
        a key depends only on the tokens up to it, so the copy is what the computation would give). The rest
        of each prompt is right-padded to the longest: a row writes its padding *after* its real tokens, where
        no real query looks (attention is causal) and decoding overwrites it, and its logits are read at its
        last real token.
        """
        first = len(self.running)
        prefixes = [self._shared_prefix(r.prompt, self.running[:first]) for r in requests]
        width = max(len(r.prompt) - shared for r, (_, shared) in zip(requests, prefixes))
        rests = []
        for request, (source, shared) in zip(requests, prefixes):
            # A row writes `width` positions after its prefix: reuse less of a long prefix if they would not fit
            # (the prompt still does: it is shorter than a slot, so its rest stays within `width`).
            shared = max(0, min(shared, self.max_len - width))
            row = len(self.running)
            request.row = row
            self.running.append(request)
            if shared:
                self.cache.copy_row(source, row, shared)
                self.reused_tokens += shared
            self.lengths[row] = shared
            rests.append(request.prompt[shared:])
        tokens = torch.zeros(len(rests), width, dtype=torch.long, device=self.device)
        for i, rest in enumerate(rests):
            tokens[i, : len(rest)] = torch.tensor(rest)
        stop = first + len(requests)
        view = self.cache.rows(first, stop, lengths=self.lengths[first:stop])
        last = torch.tensor([len(rest) - 1 for rest in rests], device=self.device)
        logits = self.model(tokens, kv_cache=view, logits_at=last)[:, 0]
        for request in requests:
            self.lengths[request.row] = len(request.prompt)  # the padding is not part of the sequence
        for request, row_logits in zip(requests, logits):
            self._accept(request, row_logits)

    def _shared_prefix(self, prompt: list[int], candidates: list[Request]) -> tuple[int, int]:
        """The row among ``candidates`` whose cache starts with the longest part of ``prompt``, and that part's
        length (at most ``len(prompt) - 1``: the last prompt token must run to give the next token's logits)."""
        best_row, best = -1, 0
        for other in candidates:
            cached = other.prompt + other.generated[:-1]  # the newest token is not in the cache yet
            limit, n = min(len(cached), len(prompt) - 1), 0
            while n < limit and cached[n] == prompt[n]:
                n += 1
            if n > best:
                best_row, best = other.row, n
        return best_row, best

    @torch.inference_mode()
    def _decode(self) -> None:
        """One token for every running sequence, in one forward pass over rows ``0 .. n-1``."""
        batch = list(self.running)
        last = torch.tensor([[r.generated[-1]] for r in batch], device=self.device)
        view = self.cache.rows(0, len(batch), lengths=self.lengths[: len(batch)])
        logits = self.model(last, kv_cache=view, last_only=True)[:, -1]
        for request, row_logits in zip(batch, logits):
            self._accept(request, row_logits)

    def _accept(self, request: Request, logits: Tensor) -> None:
        """Sample ``request``'s next token from ``logits`` ``[V]``, tell its client, release it when done."""
        p = request.params
        token = int(sample_next(logits[None], p.temperature, p.top_k, p.top_p, request.generator)[0])
        request.generated.append(token)
        out = Output(token_ids=[token])
        if p.logprobs:
            out.logprobs.append(self._logprob(logits, token, p.top_logprobs))
        if token == self.eos_id:
            out.finish_reason = "stop"
        else:
            request.held += request.decoder.decode(self.tokenizer.decode_bytes([token]), final=False)
            if len(request.generated) >= request.limit:
                out.finish_reason = "length"
        if out.finish_reason is not None:
            request.held += request.decoder.decode(b"", final=True)
        out.text = self._release_text(request, out)
        if out.finish_reason is not None:
            out.prompt_tokens, out.completion_tokens = len(request.prompt), len(request.generated)
            self._release(request)
        self._emit(request, out)

    def _release_text(self, request: Request, out: Output) -> str:
        """The text ``request`` may show now: up to a stop string (which finishes it), else all but what could
        still turn out to be the beginning of one."""
        text, stops = request.held, [s for s in request.params.stop if s]
        hit = min((text.find(s) for s in stops if s in text), default=-1)
        if hit >= 0:
            out.finish_reason = "stop"
            request.held = ""
            return text[:hit]
        keep = 0 if out.finish_reason is not None else held_back(text, stops)
        request.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def _logprob(self, logits: Tensor, token: int, top: int) -> TokenLogprob:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        best = torch.topk(logprobs, top) if top else None
        alternatives = ()
        if best is not None:
            alternatives = tuple(
                (i, self._token_text(i), _finite(v)) for v, i in zip(best.values.tolist(), best.indices.tolist())
            )
        return TokenLogprob(token, self._token_text(token), _finite(float(logprobs[token])), alternatives)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode_bytes([token]).decode("utf-8", errors="replace")

    def _release(self, request: Request) -> None:
        """Free ``request``'s row; the last running sequence moves into it, so rows stay ``0 .. n-1``."""
        request.finished = True
        row = request.row
        moved = self.running.pop()
        if moved is not request:
            length = int(self.lengths[moved.row])
            self.cache.copy_row(moved.row, row, length)
            self.lengths[row] = length
            moved.row = row
            self.running[row] = moved
        request.row = -1

    def _emit(self, request: Request, out: Output) -> None:
        try:
            request.on_output(out)
        except Exception:  # a client's callback failing must not stop everyone else's generation
            request.cancel()

    # ------------------------------------------------------------------------------------ the thread
    def start(self) -> Engine:
        """Run the step loop in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="scratchllm-engine", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop thread (requests still queued or running are finished with an error)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._fail_all("the server is shutting down")

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self.waiting and not self.running:
                    self._lock.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception as exc:  # keep serving: fail the requests in flight, not the server
                self._fail_all(f"generation failed: {type(exc).__name__}: {exc}")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            victims = [*self.running, *self.waiting]
            self.waiting.clear()
        self.running.clear()
        for request in victims:
            request.finished = True
            self._emit(request, Output(error=message))

    def stats(self) -> dict[str, int]:
        """Running and waiting request counts, and the pool's size."""
        return {"running": len(self.running), "waiting": len(self.waiting), "slots": self.slots}


def _finite(x: float) -> float:
    """JSON has no -inf: a token with probability 0 gets the most negative float instead."""
    return x if math.isfinite(x) else -9999.0

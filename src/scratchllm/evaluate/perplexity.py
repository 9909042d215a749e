"""Perplexity and bits per byte with a sliding window.

A text longer than the model's context cannot be scored in one forward pass. The sliding window (the method of
Hugging Face's perplexity guide) moves a window of ``window`` tokens forward ``stride`` tokens at a time and
scores, in each window, only the targets that no earlier window scored. Every token is therefore scored exactly
once, and each with at least ``window - stride`` tokens of context (all of it when the text fits one window).
``stride == window`` is fastest (no overlap, but tokens at the start of a window see little context);
``stride == 1`` gives every token the full window and costs one forward pass per token.

The first token has no context of its own. When the tokenizer has ``<|endoftext|>`` it is put in front of the
text as the first input (as lm-eval's rolling log-likelihood does), so all ``N`` tokens are scored; otherwise
tokens ``1..N-1`` are, and :attr:`PerplexityResult.tokens` says how many.

Bits per byte divides the total loss by the text's UTF-8 bytes instead of its tokens, converting nats to bits:
``nll / (ln 2 * bytes)``. Unlike perplexity it does not depend on the tokenizer, so models with different
vocabularies can be compared on the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_utf8


@dataclass(frozen=True)
class Window:
    """One forward pass: inputs are ``ids[begin:end]``; the last ``scored`` of its targets are scored.

    The targets of inputs ``ids[begin:end]`` are ``ids[begin + 1:end + 1]``.
    """

    begin: int
    end: int
    scored: int


def sliding_windows(n_inputs: int, window: int, stride: int) -> Iterator[Window]:
    """The windows that score each of ``n_inputs`` targets once (target ``i`` is predicted from input ``i``).

    Each window ends ``stride`` inputs after the previous one and is ``window`` long (shorter at the start);
    it scores the targets the previous window did not reach.
    """
    if window < 1:
        raise ScratchLLMError(f"perplexity: window must be at least 1, got {window}")
    if not 1 <= stride <= window:
        raise ScratchLLMError(f"perplexity: stride must be between 1 and the window ({window}), got {stride}")
    done = 0
    end = min(window, n_inputs)
    while done < n_inputs:
        begin = max(0, end - window)
        yield Window(begin, end, end - done)
        done = end
        end = min(end + stride, n_inputs)


@dataclass
class PerplexityResult:
    """Totals over the texts scored: summed loss in nats, scored tokens and UTF-8 bytes."""

    nll: float
    tokens: int
    bytes: int
    windows: int

    @property
    def loss(self) -> float:
        """Mean cross-entropy per scored token (nats)."""
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / (math.log(2) * self.bytes) if self.bytes else float("nan")

    def add(self, other: PerplexityResult) -> PerplexityResult:
        return PerplexityResult(
            self.nll + other.nll, self.tokens + other.tokens, self.bytes + other.bytes, self.windows + other.windows
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
        }


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def token_nll(
    model: torch.nn.Module,
    ids: Sequence[int],
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
) -> tuple[torch.Tensor, int]:
    """Negative log-likelihood (nats, float64) of each target of ``ids[1:]``, and the number of windows.

    Args:
        model: a causal LM: ``model(ids [B, T]) -> logits [B, T, V]`` with ``model.config.context_length``.
        ids: token ids; ``ids[0]`` is context only.
        window: tokens per forward pass (default and maximum: the model's context length).
        stride: inputs the window moves each step (default: half the window).
        batch_size: windows per forward pass (windows of one batch have equal length except the first).
    """
    context = model.config.context_length
    window = window or context
    if window > context:
        raise ScratchLLMError(f"perplexity: window {window} exceeds the model's context length {context}")
    stride = stride or max(1, window // 2)
    tokens = torch.tensor(list(ids), dtype=torch.long, device=_model_device(model))
    n_inputs = len(tokens) - 1
    out = torch.empty(max(n_inputs, 0), dtype=torch.float64)
    if n_inputs <= 0:
        return out, 0
    plan = list(sliding_windows(n_inputs, window, stride))
    was_training = model.training
    model.eval()
    try:
        by_length: dict[int, list[Window]] = {}  # only the first window (and a short text's) differ in length
        for w in plan:
            by_length.setdefault(w.end - w.begin, []).append(w)
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                _score(model, tokens, group[start : start + batch_size], out)
    finally:
        model.train(was_training)
    return out, len(plan)


def _score(model: torch.nn.Module, tokens: torch.Tensor, batch: list[Window], out: torch.Tensor) -> None:
    """Run windows of one length as one batch; write the losses of their scored targets into ``out``."""
    inputs = torch.stack([tokens[w.begin : w.end] for w in batch])
    targets = torch.stack([tokens[w.begin + 1 : w.end + 1] for w in batch])
    logits = model(inputs).float()
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, T]
    for row, w in zip(losses, batch):
        out[w.end - w.scored : w.end] = row[-w.scored :].double().cpu()


def perplexity_of_text(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
) -> PerplexityResult:
    """Score one text (see the module docstring for how its first token is handled)."""
    ids = tokenizer.encode(text, allowed_special="all")
    eot = getattr(tokenizer, "eot_id", None)
    if eot is not None:
        ids = [eot, *ids]
    losses, windows = token_nll(model, ids, window, stride, batch_size)
    return PerplexityResult(float(losses.sum()), len(losses), len(text.encode("utf-8")), windows)


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    files: Sequence[str | Path],
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Loss, perplexity and bits per byte of each file (one text each) and of all files together."""
    if not files:
        raise ScratchLLMError("perplexity: no input files")
    per_file: dict[str, Any] = {}
    total = PerplexityResult(0.0, 0, 0, 0)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ScratchLLMError(f"{path}: input file not found")
        result = perplexity_of_text(model, tokenizer, read_utf8(path), window, stride, batch_size)
        if result.tokens == 0:
            raise ScratchLLMError(f"{path}: too short to score (needs at least 2 tokens)")
        per_file[str(path)] = result.as_dict()
        total = total.add(result)
    return {"files": per_file, "overall": total.as_dict()}

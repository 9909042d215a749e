"""Sliding-window perplexity: every token scored once, and the direct cross-entropy when the text fits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.perplexity import perplexity, perplexity_of_text, sliding_windows, token_nll


@pytest.mark.parametrize(
    ("n_inputs", "window", "stride"),
    [(1, 4, 2), (10, 4, 1), (10, 4, 2), (10, 4, 3), (10, 4, 4), (9, 16, 8), (100, 32, 7), (33, 32, 32)],
)
def test_every_target_is_scored_exactly_once(n_inputs: int, window: int, stride: int) -> None:
    counts = [0] * n_inputs
    windows = list(sliding_windows(n_inputs, window, stride))
    for w in windows:
        assert 0 < w.end - w.begin <= window and 1 <= w.scored <= w.end - w.begin
        for target in range(w.end - w.scored, w.end):
            counts[target] += 1
            # a target scored in a later window sees at least window - stride inputs before it
            context = target + 1 - w.begin
            assert context == target + 1 or context >= window - stride + 1
    assert counts == [1] * n_inputs
    assert windows[0].begin == 0


def direct_nll(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    return F.cross_entropy(logits.double(), torch.tensor(ids[1:]), reduction="none")


def test_one_window_equals_direct_cross_entropy(tiny_model) -> None:
    model = tiny_model(context_length=64)
    ids = torch.randint(0, 97, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    losses, windows = token_nll(model, ids)
    assert windows == 1
    assert torch.allclose(losses, direct_nll(model, ids), atol=1e-6)


@pytest.mark.parametrize(("stride", "batch_size"), [(1, 4), (5, 1), (5, 3), (16, 2)])
def test_sliding_window_scores_with_the_context_the_window_allows(tiny_model, stride: int, batch_size: int) -> None:
    """Each target's loss is the one its window computes: checked against a window run alone."""
    model = tiny_model("llama", context_length=16)
    ids = torch.randint(0, 97, (50,), generator=torch.Generator().manual_seed(2)).tolist()
    losses, windows = token_nll(model, ids, window=16, stride=stride, batch_size=batch_size)
    expected = torch.empty(49, dtype=torch.float64)
    for w in sliding_windows(49, 16, stride):
        expected[w.end - w.scored : w.end] = direct_nll(model, ids[w.begin : w.end + 1])[-w.scored :]
    assert torch.allclose(losses, expected, atol=1e-6)


class CharTokenizer:
    eot_id = 96

    def encode(self, text: str, allowed_special: str = "all") -> list[int]:
        return [ord(ch) - 32 for ch in text]


def test_text_perplexity_and_bits_per_byte(tiny_model, tmp_path) -> None:
    model = tiny_model(context_length=64)
    text = "The quick brown fox jumps over the lazy dog."
    result = perplexity_of_text(model, CharTokenizer(), text)
    ids = [96] + [ord(c) - 32 for c in text]
    nll = float(direct_nll(model, ids).sum())
    assert result.tokens == len(text)  # end-of-text in front: the first character is scored too
    assert result.loss == pytest.approx(nll / len(text))
    assert result.perplexity == pytest.approx(math.exp(nll / len(text)))
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / len(text.encode()))
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_text(text + text, encoding="utf-8")
    report = perplexity(model, CharTokenizer(), [tmp_path / "a.txt", tmp_path / "b.txt"], window=32, stride=16)
    assert report["overall"]["tokens"] == 3 * len(text)
    assert report["overall"]["bytes"] == 3 * len(text)


def test_bad_settings_are_refused(tiny_model, tmp_path) -> None:
    model = tiny_model(context_length=16)
    with pytest.raises(ScratchLLMError, match="window 32 exceeds the model's context length 16"):
        token_nll(model, [1, 2, 3], window=32)
    with pytest.raises(ScratchLLMError, match="stride must be between 1 and the window"):
        token_nll(model, [1, 2, 3], window=8, stride=9)
    with pytest.raises(ScratchLLMError, match="missing.txt: input file not found"):
        perplexity(model, CharTokenizer(), [tmp_path / "missing.txt"])

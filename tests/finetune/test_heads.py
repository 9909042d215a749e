"""The classification head: padding never changes a prediction; what trains is what was chosen."""

from __future__ import annotations

import pytest
import torch
from finetune_models import tiny_model

from scratchllm.data.classify import ClassExample, collate
from scratchllm.errors import ScratchLLMError
from scratchllm.model.heads import SequenceClassifier


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_padding_never_changes_the_probabilities(family: str, pooling: str) -> None:
    clf = SequenceClassifier(tiny_model(family), num_classes=3, pooling=pooling).eval()
    text = [11, 12, 13, 14, 15]
    alone = clf(torch.tensor([text])).softmax(-1)
    for other_length in (7, 12, 30):
        ids, lengths, _ = collate([ClassExample(text, 0), ClassExample(list(range(1, other_length + 1)), 1)], 0)
        padded = clf(ids, lengths).softmax(-1)[0:1]
        torch.testing.assert_close(padded, alone, rtol=0, atol=1e-6)
    # reading the last *padded* position instead would differ: the check above is not vacuous
    ids, _, _ = collate([ClassExample(text, 0), ClassExample(list(range(1, 13)), 1)], 0)
    assert (clf(ids).softmax(-1)[0] - alone[0]).abs().max() > 1e-4


def test_trainable_parts() -> None:
    clf = SequenceClassifier(tiny_model(), num_classes=2)
    clf.trainable_parts("last", last_blocks=1)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.blocks.1.", "model.final_norm", "model.lm_head")) for n in trainable)
    assert "model.lm_head.weight" in trainable and not any(n.startswith("model.blocks.0.") for n in trainable)
    clf.trainable_parts("head")
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {"model.lm_head.weight", "model.lm_head.bias"}
    clf.trainable_parts("all")
    assert all(p.requires_grad for p in clf.parameters())
    assert clf.model.lm_head.weight.data_ptr() != clf.model.tok_emb.weight.data_ptr()  # untied
    with pytest.raises(ScratchLLMError, match="last_blocks: between 1 and 2"):
        clf.trainable_parts("last", last_blocks=3)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_head_started_from_label_tokens_gives_the_language_models_logits(family: str) -> None:
    """Started from the LM head's rows of tokens 5 and 9, the untrained classifier's logits are the language
    model's logits for those two tokens (at the last real token of each row)."""
    model = tiny_model(family)
    ids, lengths, _ = collate([ClassExample([3, 4, 5, 6, 7], 0), ClassExample([8, 9], 1)], 0)
    with torch.no_grad():
        lm = model(ids)[torch.arange(2), lengths - 1][:, [5, 9]]
        clf = SequenceClassifier(model, num_classes=2, head_tokens=[5, 9]).eval()
        torch.testing.assert_close(clf(ids, lengths), lm, rtol=0, atol=1e-6)
    assert clf.head.weight.data_ptr() != clf.model.tok_emb.weight.data_ptr()  # a copy: the embedding stays
    with pytest.raises(ScratchLLMError, match="one token per class"):
        SequenceClassifier(tiny_model(family), num_classes=2, head_tokens=[5])
    with pytest.raises(ScratchLLMError, match="outside the vocabulary"):
        SequenceClassifier(tiny_model(family), num_classes=2, head_tokens=[5, 96])

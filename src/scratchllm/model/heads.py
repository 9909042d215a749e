"""Heads on top of the decoder: the LM head it is trained with, and a classification head for finetuning.

To turn a language model into a classifier (Radford et al., 2018; Raschka, *Build a Large Language Model*,
ch. 6) the LM head (``emb_dim -> vocab_size``) is replaced by a small linear layer ``emb_dim -> num_classes``.
The decoder still produces one vector per position, and under causal attention only the *last* position has
seen the whole text, so by default the prediction is read there. With right padding "last" must mean the last
*real* token: reading the last padded position would let the padding decide. ``pooling="mean"`` averages over
the real positions instead (the head is linear, so averaging its outputs equals applying it to the average).
Because padding sits after the real tokens and attention is causal, the real positions never see it: the
same text gets the same probabilities however long the batch it is padded into.

The new head starts random unless it is given one vocabulary token per class (``head_tokens``): then its rows
start as the LM head's rows of those tokens. With a template that asks the question (``"...Is this message
spam? Answer:"``) and the words ``" no"``/``" yes"``, the untrained classifier already gives the language
model's own answer (softmax over the two words' logits), and finetuning starts from that judgement rather than
from noise (the "verbalizer" of prompt-based finetuning; Schick & Schütze, 2021; Gao et al., 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from scratchllm.errors import ScratchLLMError
from scratchllm.model.gpt import GPTModel

Pooling = Literal["last", "mean"]
POOLINGS = ("last", "mean")


class SequenceClassifier(nn.Module):
    """A decoder whose LM head is replaced by a class head: ``(ids, lengths) -> class logits [B, C]``.

    Args:
        model: the pretrained decoder (its ``lm_head`` is replaced; a tied head stops being tied).
        num_classes: number of labels.
        pooling: ``"last"`` (the last real token) or ``"mean"`` (over the real tokens).
        head_tokens: one token id per class: the head starts as the LM head's rows of these tokens (zero bias).
    """

    def __init__(
        self, model: GPTModel, num_classes: int, pooling: Pooling = "last", head_tokens: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ScratchLLMError(f"pooling: one of {', '.join(POOLINGS)}, got {pooling!r}")
        if num_classes < 2:
            raise ScratchLLMError(f"a classifier needs at least 2 classes, got {num_classes}")
        weight = model.tok_emb.weight
        head = nn.Linear(model.config.emb_dim, num_classes, device=weight.device, dtype=weight.dtype)
        if head_tokens is not None:
            if len(head_tokens) != num_classes:
                raise ScratchLLMError(f"head_tokens: one token per class ({num_classes}), got {len(head_tokens)}")
            vocab = model.lm_head.weight.shape[0]
            bad = [t for t in head_tokens if not 0 <= t < vocab]
            if bad:
                raise ScratchLLMError(f"head_tokens: {bad[0]} is outside the vocabulary [0, {vocab})")
            with torch.no_grad():
                head.weight.copy_(model.lm_head.weight[list(head_tokens)])
                head.bias.zero_()
        model.lm_head = head
        self.model = model
        self.num_classes = num_classes
        self.pooling = pooling

    @property
    def head(self) -> nn.Linear:
        return self.model.lm_head

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits ``[B, num_classes]``; ``lengths`` (``[B]``) are the real tokens of each right-padded row."""
        per_position = self.model(ids)  # [B, T, C]: the class head applied at every position
        B, T, _ = per_position.shape
        if lengths is None:
            lengths = torch.full((B,), T, device=ids.device, dtype=torch.long)
        if self.pooling == "last":
            return per_position[torch.arange(B, device=ids.device), lengths - 1]
        real = (torch.arange(T, device=ids.device)[None, :] < lengths[:, None]).to(per_position.dtype)
        return (per_position * real[..., None]).sum(1) / lengths[:, None].to(per_position.dtype)

    def trainable_parts(self, trains: str, last_blocks: int = 1) -> None:
        """Freeze what should not train: ``all`` trains everything, ``last`` the last ``last_blocks`` blocks +
        final norm + head, ``head`` the head only. (LoRA freezes through :func:`~scratchllm.model.lora.inject_lora`
        and then unfreezes the head with ``head``.)"""
        n_blocks = len(self.model.blocks)
        if trains == "all":
            for p in self.parameters():
                p.requires_grad_(True)
            return
        for p in self.parameters():
            p.requires_grad_(False)
        if trains == "last":
            if not 1 <= last_blocks <= n_blocks:
                raise ScratchLLMError(f"last_blocks: between 1 and {n_blocks} (the model's blocks), got {last_blocks}")
            for block in self.model.blocks[n_blocks - last_blocks :]:
                for p in block.parameters():
                    p.requires_grad_(True)
            for p in self.model.final_norm.parameters():
                p.requires_grad_(True)
        elif trains != "head":
            raise ScratchLLMError(f"trains: one of all, last, head, lora; got {trains!r}")
        for p in self.head.parameters():
            p.requires_grad_(True)

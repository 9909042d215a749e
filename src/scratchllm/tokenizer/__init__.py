"""Tokenizers: text <-> token ids behind one interface (:class:`Tokenizer`).

* :class:`SimpleTokenizer`: a word-level vocabulary, the teaching starting point;
* :class:`BPETokenizer`: byte-level BPE over a rank table, trained with :func:`train_bpe` or loaded from
  GPT-2's files, encoded by a readable Python loop or by tiktoken (same ids, proved by tests);
* :func:`load`: open any tokenizer folder (ours, OpenAI GPT-2, Hugging Face GPT-2), detecting its kind.

Special tokens behave as in tiktoken: ``encode`` refuses ``<|endoftext|>`` in user text unless it is allowed.
"""

from __future__ import annotations

from scratchllm.tokenizer.base import ENDOFTEXT, Tokenizer
from scratchllm.tokenizer.bpe import GPT2_PATTERN, BPETokenizer
from scratchllm.tokenizer.bpe_train import train_bpe
from scratchllm.tokenizer.gpt2 import load_gpt2
from scratchllm.tokenizer.loading import load
from scratchllm.tokenizer.simple import SimpleTokenizer

__all__ = [
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "BPETokenizer",
    "SimpleTokenizer",
    "Tokenizer",
    "load",
    "load_gpt2",
    "train_bpe",
]

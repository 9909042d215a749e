"""Instruction data: Alpaca and chat records -> token ids with a loss mask, truncated and padded for training.

Two record shapes are read from ``.json`` (a list) or ``.jsonl`` (one object per line):

* **Alpaca**: ``{"instruction": ..., "input": ... (optional), "output": ...}``;
* **chat**: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``, any number of turns.

Two prompt formats turn them into text:

* ``alpaca`` (Taori et al., 2023; the default for our own GPTs, which have no chat template)::

      Below is an instruction that describes a task. Write a response that appropriately completes the request.

      ### Instruction:
      {instruction}

      ### Input:            <- only when the input is not empty
      {input}

      ### Response:
      {output}<|endoftext|>

* ``chat``: the model's own chat template (:func:`~scratchllm.tokenizer.chat.tokenizer_chat`; our default
  template for a model without one). Each assistant turn is found by rendering the conversation up to it
  with and without that turn: the difference is the text the model must learn to produce, end-of-turn
  token included (our default template writes none, so the end id is added, as in the Alpaca format).

The loss is taken on the response tokens only by default (the model should learn to answer, not to write
instructions); ``train_on_prompt`` takes it on the whole sequence. :func:`collate` pads on the right and sets
the target of every padded position to -100 (ignored), so an example's loss does not depend on its batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_jsonl_objects, read_utf8

if TYPE_CHECKING:
    import torch

PromptFormat = Literal["auto", "alpaca", "chat"]
IGNORE_INDEX = -100
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class InstructRecord:
    """One record: the conversation as messages, and the Alpaca fields when it came as an Alpaca record."""

    messages: tuple[dict[str, str], ...]
    where: str
    instruction: str | None = None
    input: str = ""
    output: str | None = None

    @property
    def reference(self) -> str:
        """The expected answer: the Alpaca output, or the last assistant turn."""
        return self.output if self.output is not None else self.messages[-1]["content"]


@dataclass
class InstructExample:
    """Token ids and, per id, whether the loss is taken on it."""

    ids: list[int]
    loss_mask: list[bool] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- reading
def json_records(path: Path) -> list[tuple[str, Any]]:
    """``(where, record)`` for each record of a ``.jsonl`` file (one per line) or a ``.json`` list."""
    if path.suffix.lower() == ".jsonl":
        return [(f"{path}:{n}", record) for n, record in read_jsonl_objects(path)]
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise ScratchLLMError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise ScratchLLMError(f"{path}: expected a JSON list of records (or a .jsonl file)")
    return [(str(path), row) for row in data]


def _text(record: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    if key not in record:
        if required:
            raise ScratchLLMError(f"{where}: missing key {key!r}")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise ScratchLLMError(f"{where}: key {key!r} must be a string, got {type(value).__name__}")
    return value


def parse_record(row: Any, where: str) -> InstructRecord:
    """An Alpaca or chat record (told apart by a ``messages`` key), checked field by field."""
    if not isinstance(row, dict):
        raise ScratchLLMError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise ScratchLLMError(f"{where}: 'messages' must be a non-empty list")
        checked = []
        for j, message in enumerate(messages):
            at = f"{where} messages[{j}]"
            if not isinstance(message, dict):
                raise ScratchLLMError(f"{at}: expected an object with 'role' and 'content'")
            role = _text(message, "role", at)
            if role not in ROLES:
                raise ScratchLLMError(f"{at}: role {role!r} is not one of {', '.join(ROLES)}")
            checked.append({"role": role, "content": _text(message, "content", at)})
        if not any(m["role"] == "assistant" for m in checked):
            raise ScratchLLMError(f"{where}: no assistant message to learn from")
        return InstructRecord(tuple(checked), where)
    instruction = _text(row, "instruction", where)
    extra = _text(row, "input", where, required=False)
    output = _text(row, "output", where)
    user = instruction + (f"\n\n{extra}" if extra.strip() else "")
    messages = ({"role": "user", "content": user}, {"role": "assistant", "content": output})
    return InstructRecord(messages, where, instruction, extra, output)


def read_instructions(path: str | Path) -> list[InstructRecord]:
    """Every record of a ``.json`` list or ``.jsonl`` file; a bad record names its index (and line) and key."""
    path = Path(path)
    if not path.is_file():
        raise ScratchLLMError(f"{path}: data file not found")
    rows = json_records(path)
    return [parse_record(row, f"{where} record {i}") for i, (where, row) in enumerate(rows)]


# ---------------------------------------------------------------------------------------------- formatting
def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt, ending where the response starts."""
    text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
    if input.strip():
        text += f"\n\n### Input:\n{input}"
    return text + "\n\n### Response:\n"


def end_id(tokenizer: Any) -> int | None:
    """The id that ends a response: the tokenizer's end of sequence, else ``<|endoftext|>``."""
    own = getattr(tokenizer, "eos_id", None)
    return own if own is not None else tokenizer.eot_id


def resolve_format(prompt_format: PromptFormat, chat_template: str | None) -> str:
    """``auto``: the model's chat template where it has one, else Alpaca."""
    if prompt_format == "auto":
        return "chat" if chat_template else "alpaca"
    return prompt_format


def segments(
    record: InstructRecord, tokenizer: Any, prompt_format: str, template: str | None
) -> list[tuple[str, bool]]:
    """The text of a record as (piece, is_response) pieces in order."""
    if prompt_format == "alpaca" and record.instruction is not None:
        return [(alpaca_prompt(record.instruction, record.input), False), (record.reference, True)]
    from scratchllm.tokenizer.chat import tokenizer_chat

    pieces: list[tuple[str, bool]] = []
    done = ""
    messages = list(record.messages)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer_chat(tokenizer, messages[:i], add_generation_prompt=True, template=template)
        upto = tokenizer_chat(tokenizer, messages[: i + 1], add_generation_prompt=False, template=template)
        if not (before.startswith(done) and upto.startswith(before)):
            raise ScratchLLMError(
                f"{record.where}: the chat template does not render the conversation incrementally, so the "
                "assistant turns cannot be told apart; use --prompt-format alpaca"
            )
        pieces += [(before[len(done) :], False), (upto[len(before) :], True)]
        done = upto
    return [(text, is_response) for text, is_response in pieces if text]


def prompt_text(record: InstructRecord, tokenizer: Any, prompt_format: str, template: str | None) -> str:
    """What the model is given to answer the record's last turn (everything before the final response)."""
    if prompt_format == "alpaca" and record.instruction is not None:
        return alpaca_prompt(record.instruction, record.input)
    from scratchllm.tokenizer.chat import tokenizer_chat

    last = max(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
    return tokenizer_chat(tokenizer, list(record.messages[:last]), add_generation_prompt=True, template=template)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of template text: the special tokens a template writes are tokens, not characters."""
    return tokenizer.encode(text, allowed_special="all")


def encode_record(
    record: InstructRecord, tokenizer: Any, prompt_format: str, template: str | None, train_on_prompt: bool
) -> InstructExample:
    """Token ids and loss mask of a record.

    The end id closes every response unless the model's own chat template writes an end-of-turn token itself
    (the Alpaca format and our default template write none): a model that never sees it never learns to stop.
    """
    own_template = prompt_format == "chat" or record.instruction is None
    own_template = own_template and (template or getattr(tokenizer, "chat_template", None)) is not None
    end = None if own_template else end_id(tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    for text, is_response in segments(record, tokenizer, prompt_format, template):
        piece = encode_text(tokenizer, text) + ([end] if is_response and end is not None else [])
        ids += piece
        mask += [is_response or train_on_prompt] * len(piece)
    return InstructExample(ids, mask)


def encode_all(
    records: Sequence[InstructRecord],
    tokenizer: Any,
    prompt_format: str,
    template: str | None,
    *,
    max_length: int,
    train_on_prompt: bool = False,
) -> tuple[list[InstructExample], int, int]:
    """Encode every record; return the examples, how many were cut, and how many were dropped.

    ``max_length`` is the model's input length: a sequence of ``n`` tokens gives ``n - 1`` (input, target)
    pairs, so longer sequences are cut to ``max_length + 1`` tokens. An example left with no response token
    to learn from (its prompt alone fills the context) is dropped.
    """
    examples, cut, dropped = [], 0, 0
    for record in records:
        example = encode_record(record, tokenizer, prompt_format, template, train_on_prompt)
        if len(example.ids) > max_length + 1:
            example = InstructExample(example.ids[: max_length + 1], example.loss_mask[: max_length + 1])
            cut += 1
        if any(example.loss_mask[1:]):
            examples.append(example)
        else:
            dropped += 1
    return examples, cut, dropped


def collate(examples: Sequence[InstructExample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [B, T], targets [B, T])``: next-token pairs, right-padded; masked and padded targets are -100."""
    import torch

    longest = max(len(e.ids) for e in examples) - 1
    inputs = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.tensor(example.ids, dtype=torch.long)
        keep = torch.tensor(example.loss_mask[1:], dtype=torch.bool)
        n = len(example.ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = torch.where(keep, ids[1:], torch.full_like(ids[1:], IGNORE_INDEX))
    return inputs, targets

"""Preference data for DPO: a prompt and two answers to it, the ``chosen`` one better than the ``rejected`` one.

Records come from ``.json`` (a list) or ``.jsonl`` (one object per line); the prompt takes one of three shapes:

* ``{"instruction": ..., "input": ... (optional), "chosen": ..., "rejected": ...}``: rendered with the model's
  prompt format, exactly as instruction finetuning renders it (:mod:`scratchllm.data.instruct`: the chat
  template where the model has one, else the Alpaca format), so DPO trains on the text the model was tuned on;
* ``{"prompt": [{"role": "user", "content": ...}, ...], "chosen": ..., "rejected": ...}``: a conversation,
  rendered with the chat template;
* ``{"prompt": "raw text", "chosen": ..., "rejected": ...}``: the prompt text as it is (TRL's "standard" format).

Each answer ends with the end-of-response token (the chat template's end of turn, or the tokenizer's end id),
as in instruction finetuning. A pair whose answers are the same text teaches nothing and is skipped (counted);
so is a pair whose prompt alone fills the context. Answers that do not fit are cut (counted).

:func:`collate` stacks a batch as 2B rows, the B chosen sequences first, then the B rejected ones, padded on
the right, with a mask marking the answer tokens: the DPO loss (:mod:`scratchllm.train.dpo`) scores only those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchllm.data.instruct import encode_record, encode_text, end_id, json_records, parse_record
from scratchllm.errors import ScratchLLMError

if TYPE_CHECKING:
    import torch

ANSWER_KEYS = ("chosen", "rejected")


@dataclass(frozen=True)
class PreferenceRecord:
    """One record, checked: the prompt (raw text, or the record the model's format renders) and both answers."""

    where: str
    chosen: str
    rejected: str
    prompt: str | None = None  # raw prompt text, used as it is
    source: dict[str, Any] | None = None  # instruction/input or messages, rendered by the prompt format


@dataclass(frozen=True)
class PreferenceExample:
    """Token ids of the prompt and of both answers; the reference's log-probabilities once precomputed."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    ref_chosen: float | None = None
    ref_rejected: float | None = None

    def with_reference(self, chosen: float, rejected: float) -> PreferenceExample:
        return dataclasses.replace(self, ref_chosen=chosen, ref_rejected=rejected)


@dataclass
class EncodeCounts:
    """What :func:`encode_pairs` left out or shortened."""

    identical: int = 0  # chosen == rejected: skipped
    prompt_too_long: int = 0  # the prompt alone fills the context: skipped
    cut: int = 0  # an answer was cut to fit the context

    def describe(self) -> str:
        return (
            f"{self.identical} pair(s) with identical answers skipped, {self.prompt_too_long} pair(s) whose "
            f"prompt fills the context skipped, {self.cut} pair(s) with an answer cut to fit"
        )


# ---------------------------------------------------------------------------------------------- reading
def parse_preference(row: Any, where: str) -> PreferenceRecord:
    """A record's prompt and answers; a missing or mistyped field is one line naming the record and key."""
    if not isinstance(row, dict):
        raise ScratchLLMError(f"{where}: expected a JSON object, got {type(row).__name__}")
    answers = []
    for key in ANSWER_KEYS:
        if key not in row:
            raise ScratchLLMError(f"{where}: missing key {key!r} (a preference record needs chosen and rejected)")
        if not isinstance(row[key], str):
            raise ScratchLLMError(f"{where}: key {key!r} must be a string, got {type(row[key]).__name__}")
        answers.append(row[key])
    chosen, rejected = answers
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return PreferenceRecord(where, chosen, rejected, prompt=prompt)
    if isinstance(prompt, list):
        parse_record({"messages": [*prompt, {"role": "assistant", "content": chosen}]}, where)  # checks the turns
        return PreferenceRecord(where, chosen, rejected, source={"messages": prompt})
    if prompt is not None:
        raise ScratchLLMError(f"{where}: key 'prompt' must be a string or a list of messages")
    if "instruction" not in row:
        raise ScratchLLMError(f"{where}: missing key 'prompt' (or 'instruction'): the question both answers answer")
    source = {"instruction": row["instruction"], "input": row.get("input", "")}
    parse_record({**source, "output": chosen}, where)  # checks the fields' types
    return PreferenceRecord(where, chosen, rejected, source=source)


def read_preferences(path: str | Path) -> list[PreferenceRecord]:
    """Every record of a ``.json`` list or ``.jsonl`` file, checked (errors name the record index and key)."""
    path = Path(path)
    if not path.is_file():
        raise ScratchLLMError(f"{path}: data file not found")
    return [parse_preference(row, f"{where} record {i}") for i, (where, row) in enumerate(json_records(path))]


# ---------------------------------------------------------------------------------------------- token ids
def _prompt_and_answer(
    record: PreferenceRecord, answer: str, tokenizer: Any, prompt_format: str, template: str | None
) -> tuple[list[int], list[int]]:
    if record.prompt is not None:
        end = end_id(tokenizer)
        ending = [end] if end is not None else []
        return encode_text(tokenizer, record.prompt), encode_text(tokenizer, answer) + ending
    if "messages" in record.source:
        row = {"messages": [*record.source["messages"], {"role": "assistant", "content": answer}]}
    else:
        row = {**record.source, "output": answer}
    example = encode_record(parse_record(row, record.where), tokenizer, prompt_format, template, False)
    # The answer is the last run of masked-in tokens (earlier assistant turns of a conversation are prompt).
    start = len(example.loss_mask)
    while start > 0 and example.loss_mask[start - 1]:
        start -= 1
    return example.ids[:start], example.ids[start:]


def encode_pair(
    record: PreferenceRecord, tokenizer: Any, prompt_format: str, template: str | None = None
) -> PreferenceExample:
    """The token ids of a record's prompt and answers (not yet fitted to a context)."""
    prompt, chosen = _prompt_and_answer(record, record.chosen, tokenizer, prompt_format, template)
    prompt_r, rejected = _prompt_and_answer(record, record.rejected, tokenizer, prompt_format, template)
    if prompt != prompt_r:
        raise ScratchLLMError(f"{record.where}: the prompt format renders the prompt differently for the two answers")
    if not chosen or not rejected:
        raise ScratchLLMError(f"{record.where}: an answer encodes to no tokens")
    return PreferenceExample(tuple(prompt), tuple(chosen), tuple(rejected))


def encode_pairs(
    records: Sequence[PreferenceRecord],
    tokenizer: Any,
    prompt_format: str,
    template: str | None = None,
    *,
    max_length: int,
) -> tuple[list[PreferenceExample], EncodeCounts]:
    """Encode every record: skip identical answers and prompts that fill the context, cut long answers.

    ``max_length`` is the model's input length: a sequence of ``n`` tokens gives ``n - 1`` predictions, so a
    prompt + answer may hold ``max_length + 1`` tokens.
    """
    counts = EncodeCounts()
    examples = []
    for record in records:
        if record.chosen == record.rejected:
            counts.identical += 1
            continue
        example = encode_pair(record, tokenizer, prompt_format, template)
        room = max_length + 1 - len(example.prompt_ids)
        if room < 1:
            counts.prompt_too_long += 1
            continue
        if max(len(example.chosen_ids), len(example.rejected_ids)) > room:
            counts.cut += 1
            example = dataclasses.replace(
                example, chosen_ids=example.chosen_ids[:room], rejected_ids=example.rejected_ids[:room]
            )
        examples.append(example)
    return examples, counts


# ---------------------------------------------------------------------------------------------- tensors
def collate(examples: Sequence[PreferenceExample], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``response_mask`` [2B, T] (chosen rows, then rejected rows; right-padded) and, when
    every example has them, the precomputed reference log-probabilities ``ref_logps`` [2B]."""
    import torch

    rows = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    longest = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for row, (prompt, answer) in enumerate(rows):
        input_ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer, dtype=torch.long)
        response_mask[row, len(prompt) : len(prompt) + len(answer)] = True
    batch = {"input_ids": input_ids, "response_mask": response_mask}
    if all(e.ref_chosen is not None for e in examples):
        refs = [e.ref_chosen for e in examples] + [e.ref_rejected for e in examples]
        batch["ref_logps"] = torch.tensor(refs, dtype=torch.float32)
    return batch


__all__ = [
    "EncodeCounts",
    "PreferenceExample",
    "PreferenceRecord",
    "collate",
    "encode_pair",
    "encode_pairs",
    "parse_preference",
    "read_preferences",
]

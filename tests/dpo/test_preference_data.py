"""Preference records: the three prompt shapes, the model's prompt format, skips, cuts and one-line errors."""

from __future__ import annotations

import json

import pytest

from scratchllm.data.instruct import alpaca_prompt
from scratchllm.data.preference import encode_pair, encode_pairs, read_preferences
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.bpe_train import train_bpe

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    text = "Below is an instruction that describes a task. ### Response: hello there, what is two plus two four"
    return train_bpe(text * 5, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), workers=1)


def _write(path, rows, jsonl=False):
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows), encoding="utf-8")
    return path


def _texts(tok, example):
    return tok.decode(list(example.prompt_ids)), tok.decode(list(example.chosen_ids)), tok.decode(list(example.rejected_ids))


def test_instruction_records_use_the_models_prompt_format(tok, tmp_path) -> None:
    rows = [{"instruction": "Add.", "input": "2+2", "chosen": "four", "rejected": "two"}]
    (record,) = read_preferences(_write(tmp_path / "p.json", rows))
    alpaca = encode_pair(record, tok, "alpaca")
    assert _texts(tok, alpaca) == (alpaca_prompt("Add.", "2+2"), "four<|endoftext|>", "two<|endoftext|>")
    chat = encode_pair(record, tok, "chat", CHATML)  # the template writes the end of turn itself
    assert _texts(tok, chat) == (
        "<|im_start|>user\nAdd.\n\n2+2<|im_end|>\n<|im_start|>assistant\n", "four<|im_end|>\n", "two<|im_end|>\n"
    )


def test_conversation_and_raw_prompts(tok, tmp_path) -> None:
    convo = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello there"},
             {"role": "user", "content": "two plus two"}]  # fmt: skip
    rows = [{"prompt": convo, "chosen": "four", "rejected": "two"}, {"prompt": "what is two plus two? ", "chosen": "four", "rejected": "two"}]
    conversation, raw = read_preferences(_write(tmp_path / "p.jsonl", rows, jsonl=True))
    prompt, chosen, rejected = _texts(tok, encode_pair(conversation, tok, "chat", CHATML))
    assert prompt.endswith("hello there<|im_end|>\n<|im_start|>user\ntwo plus two<|im_end|>\n<|im_start|>assistant\n")
    assert (chosen, rejected) == ("four<|im_end|>\n", "two<|im_end|>\n")  # earlier assistant turns are prompt
    assert _texts(tok, encode_pair(raw, tok, "chat", CHATML)) == ("what is two plus two? ", "four<|endoftext|>", "two<|endoftext|>")


def test_identical_answers_and_long_prompts_are_counted_skips_long_answers_cut(tok, tmp_path) -> None:
    rows = [
        {"prompt": "two plus two", "chosen": "four", "rejected": "four"},
        {"prompt": "hello " * 40, "chosen": "hi", "rejected": "bye"},
        {"prompt": "two", "chosen": "four " * 30, "rejected": "two"},
        {"prompt": "two", "chosen": "four", "rejected": "two"},
    ]
    records = read_preferences(_write(tmp_path / "p.json", rows))
    examples, counts = encode_pairs(records, tok, "alpaca", max_length=16)
    assert (counts.identical, counts.prompt_too_long, counts.cut, len(examples)) == (1, 1, 1, 2)
    assert len(examples[0].prompt_ids) + len(examples[0].chosen_ids) == 17  # max_length + 1 tokens
    assert "1 pair(s) with identical answers skipped" in counts.describe()


def test_the_shared_preference_set_reads(shared_data, tok) -> None:
    records = read_preferences(shared_data / "rasbt" / "instruction-data-with-preference.json")
    assert len(records) == 1100 and records[0].source["instruction"].startswith("Evaluate the following phrase")
    assert sum(r.chosen == r.rejected for r in records) == 6


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "a", "rejected": "b"}, "record 0: missing key 'chosen'"),
        ({"instruction": "a", "chosen": "b"}, "record 0: missing key 'rejected'"),
        ({"chosen": "a", "rejected": "b"}, "record 0: missing key 'prompt' \\(or 'instruction'\\)"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "record 0: key 'prompt' must be a string or a list"),
        ({"instruction": "a", "chosen": 1, "rejected": "b"}, "record 0: key 'chosen' must be a string"),
        ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}, "record 0 messages\\[0\\]"),
    ],
)
def test_bad_records_are_one_line_errors(tmp_path, row, message) -> None:
    with pytest.raises(ScratchLLMError, match=message) as info:
        read_preferences(_write(tmp_path / "bad.json", [row]))
    assert "\n" not in str(info.value) and "bad.json" in str(info.value)

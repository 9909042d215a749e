"""Instruction data: Alpaca and chat records, prompt formats, response-only loss mask, truncation, padding."""

from __future__ import annotations

import json

import pytest

from scratchllm.data.instruct import (
    IGNORE_INDEX,
    alpaca_prompt,
    collate,
    encode_all,
    encode_record,
    prompt_text,
    read_instructions,
)
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.bpe_train import train_bpe

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    text = "Below is an instruction that describes a task. ### Response: hello there, what is two plus two"
    return train_bpe(text * 5, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), workers=1)


def _write(path, rows, jsonl=False):
    text = "\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    return path


def test_alpaca_prompt_and_response_only_mask(tok, tmp_path) -> None:
    rows = [{"instruction": "Add.", "input": "2+2", "output": "4"}, {"instruction": "Hi.", "output": "hello"}]
    records = read_instructions(_write(tmp_path / "a.json", rows))
    assert alpaca_prompt("Add.", "2+2").endswith("### Instruction:\nAdd.\n\n### Input:\n2+2\n\n### Response:\n")
    assert "### Input" not in alpaca_prompt("Hi.", "")
    example = encode_record(records[0], tok, "alpaca", None, train_on_prompt=False)
    response = [i for i, keep in zip(example.ids, example.loss_mask) if keep]
    assert tok.decode(response) == "4<|endoftext|>"  # the response and the end id that teaches stopping
    assert tok.decode(example.ids) == alpaca_prompt("Add.", "2+2") + "4<|endoftext|>"
    whole = encode_record(records[0], tok, "alpaca", None, train_on_prompt=True)
    assert all(whole.loss_mask) and whole.ids == example.ids


def test_chat_multi_turn_masks_every_assistant_turn(tok, tmp_path) -> None:
    convo = [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hello there"}, {"role": "user", "content": "two plus two"},
        {"role": "assistant", "content": "four"},
    ]  # fmt: skip
    (record,) = read_instructions(_write(tmp_path / "c.jsonl", [{"messages": convo}], jsonl=True))
    example = encode_record(record, tok, "chat", CHATML, train_on_prompt=False)
    spans, current = [], []
    for i, keep in zip(example.ids, example.loss_mask):
        if keep:
            current.append(i)
        elif current:
            spans, current = spans + [current], []
    spans += [current] if current else []
    assert [tok.decode(s) for s in spans] == ["hello there<|im_end|>\n", "four<|im_end|>\n"]
    assert prompt_text(record, tok, "chat", CHATML).endswith("two plus two<|im_end|>\n<|im_start|>assistant\n")
    # our default template (no end-of-turn token of its own): the end id closes each response
    default = encode_record(record, tok, "chat", None, train_on_prompt=False)
    assert tok.decode([i for i, k in zip(default.ids, default.loss_mask) if k]).count("<|endoftext|>") == 2


def test_collate_pads_with_ignored_targets_and_truncation_is_counted(tok, tmp_path) -> None:
    rows = [{"instruction": "Hi.", "output": "hello"}, {"instruction": "Add." * 40, "input": "", "output": "4"}]
    records = read_instructions(_write(tmp_path / "a.json", rows))
    short_n = len(encode_record(records[0], tok, "alpaca", None, False).ids)
    examples, cut, dropped = encode_all(records, tok, "alpaca", None, max_length=short_n)
    assert (cut, dropped, len(examples)) == (1, 1, 1)  # the long prompt fills the context: nothing to learn
    examples, cut, dropped = encode_all(records, tok, "alpaca", None, max_length=400)
    assert (cut, dropped) == (0, 0)
    inputs, targets = collate(examples, pad_id=tok.eot_id)
    assert inputs.shape == targets.shape == (2, max(len(e.ids) for e in examples) - 1)
    row = targets[0].tolist()
    kept = [t for t in row if t != IGNORE_INDEX]
    assert tok.decode(kept) == "hello<|endoftext|>"  # the first end-of-text is a target ...
    assert all(t == IGNORE_INDEX for t in row[short_n - 1 :])  # ... every padded position after it is ignored
    assert inputs[0, short_n - 1 :].eq(tok.eot_id).all()
    examples, cut, _ = encode_all(records[:1], tok, "alpaca", None, max_length=short_n - 3)
    assert cut == 1 and len(examples[0].ids) == short_n - 2


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "x"}, r"record 1: missing key 'output'"),
        ({"instruction": 3, "output": "y"}, r"record 1: key 'instruction' must be a string, got int"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "record 1: no assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, r"record 1 messages\[0\]: role 'bot' is not one of"),
    ],
)
def test_bad_records_name_index_and_key(tmp_path, row, message) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, row], jsonl=True)
    with pytest.raises(ScratchLLMError, match=message) as err:
        read_instructions(path)
    assert "bad.jsonl:2" in str(err.value) and "\n" not in str(err.value)

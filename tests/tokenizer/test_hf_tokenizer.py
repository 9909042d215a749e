"""Hugging Face ``tokenizer.json`` tokenizers: our ids equal the ``tokenizers`` library's on hard text.

The reference tokenizers are built with ``tokenizers`` itself (GPT-2's shared vocabulary under the pre-tokenizers
of GPT-2, SmolLM2, Llama 3 and Qwen2, and a vocabulary trained by its own trainer), saved as ``tokenizer.json`` and
loaded by our code; none of our code touches the reference side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dev_deps import require
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer import load
from scratchllm.tokenizer.hf import (
    LLAMA3_SPLIT,
    QWEN2_SPLIT,
    HFTokenizer,
    from_tokenizer_json,
    load_hf_tokenizer,
    to_hf_tokenizer,
)

TEXTS = [
    "Hello world! It's 2024, isn't it?  Yes   123456789 ok\n\n\tdone  ",
    "I'LL say: we've   they'D ... !!!",
    "中文测试，你好世界。我们今天去北京吧！",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\r\n",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷 and ✨",
    "   leading spaces",
    "trailing spaces   ",
    " \n \n\n  \t ",
    "",
    "naïve café ﬁ e\u0301 Å Ω",
    "numbers 3.14159 and 1,000,000 and ١٢٣ and ²",
    "<|endoftext|>inside<|endoftext|> text <|im_start|>user",
]


def _pre_tokenizers():
    from tokenizers import Regex, normalizers, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return {
        "gpt2": (pre_tokenizers.ByteLevel(add_prefix_space=False), None),
        "gpt2-prefix-space": (pre_tokenizers.ByteLevel(add_prefix_space=True), None),
        "smollm2": (
            pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
            ),
            None,
        ),
        "llama3": (
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), byte_level]),
            None,
        ),
        "qwen2": (
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"), byte_level]),
            normalizers.NFC(),
        ),
    }


@pytest.fixture(scope="module")
def gpt2_reference(gpt2_tokenizer_dir: Path):
    """A function building GPT-2's vocabulary in ``tokenizers`` under a named pre-tokenizer."""
    tokenizers = require("tokenizers")
    from tokenizers import AddedToken, decoders, models

    def build(kind: str):
        pre, norm = _pre_tokenizers()[kind]
        d = gpt2_tokenizer_dir
        tok = tokenizers.Tokenizer(models.BPE.from_file(str(d / "encoder.json"), str(d / "vocab.bpe")))
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        if norm is not None:
            tok.normalizer = norm
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
        tok.add_tokens([AddedToken("<|im_start|>", special=False, normalized=False)])
        return tok

    return build


def _assert_same(ours: HFTokenizer, ref, texts=TEXTS) -> None:
    for text in texts:
        expected = ref.encode(text, add_special_tokens=False).ids
        got = ours.encode(text, allowed_special="all")
        assert got == expected, (text, got, expected)
        assert ours.decode(got) == ref.decode(expected, skip_special_tokens=False)


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-prefix-space", "smollm2", "llama3", "qwen2"])
def test_ids_equal_tokenizers_library(gpt2_reference, kind: str, tmp_path: Path) -> None:
    ref = gpt2_reference(kind)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = load(tmp_path)  # the folder loader recognises tokenizer.json
    assert isinstance(ours, HFTokenizer)
    _assert_same(ours, ref)


def test_merges_in_string_form_give_the_same_tokenizer(gpt2_reference) -> None:
    data = json.loads(gpt2_reference("smollm2").to_str())
    assert isinstance(data["model"]["merges"][0], list)
    as_strings = dict(data, model=dict(data["model"], merges=[" ".join(m) for m in data["model"]["merges"]]))
    a, b = from_tokenizer_json(data), from_tokenizer_json(as_strings)
    assert a.merges == b.merges
    assert a.encode(TEXTS[0]) == b.encode(TEXTS[0])


def test_vocabulary_trained_by_tokenizers(tmp_path: Path) -> None:
    """Hugging Face's own trainer: specials take ids 0..2, the merges follow the byte alphabet."""
    tokenizers = require("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    ref = tokenizers.Tokenizer(models.BPE())
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    ref.decoder = decoders.ByteLevel()
    corpus = [t * 3 for t in TEXTS] + ["the theme then thesis there these them 12 345"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    ref.train_from_iterator(corpus, trainer)
    ref.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": True,
                    "chat_template": "{{ messages[0]['content'] }}"})
    )
    ours = load_hf_tokenizer(tmp_path)
    assert ours.special_tokens["<|endoftext|>"] == 0
    _assert_same(ours, ref, TEXTS + ["unseen words: thesaurus, athenaeum, 9876543210"])
    assert (ours.bos_id, ours.eos_id, ours.add_bos_token) == (1, 2, True)
    assert ours.chat_template == "{{ messages[0]['content'] }}"


def test_bos_added_by_the_post_processor_is_recorded(gpt2_reference) -> None:
    """Llama 3 adds BOS through a TemplateProcessing post-processor, not through tokenizer_config.json."""
    from tokenizers import processors

    ref = gpt2_reference("llama3")
    ref.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 50256)]),
        ]
    )
    ours = from_tokenizer_json(json.loads(ref.to_str()))
    assert (ours.bos_token, ours.bos_id, ours.add_bos_token) == ("<|endoftext|>", 50256, True)
    assert [ours.bos_id, *ours.encode("Hi there")] == ref.encode("Hi there").ids
    assert from_tokenizer_json(json.loads(ref.to_str()), {"add_bos_token": False}).add_bos_token is False


def test_special_tokens_follow_tiktoken_rules(gpt2_reference, tmp_path: Path) -> None:
    ref = gpt2_reference("gpt2")
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = load_hf_tokenizer(tmp_path)
    with pytest.raises(ScratchLLMError, match="special token '<|endoftext|>'"):
        ours.encode("a<|endoftext|>")
    assert ours.encode("a<|endoftext|>", disallowed_special=()) == ours.encode_ordinary("a<|endoftext|>")
    assert ours.encode("a<|endoftext|>", allowed_special="all") == ref.encode("a<|endoftext|>").ids
    # a non-special added token is matched whole, as tokenizers does
    assert ours.encode("x<|im_start|>y") == ref.encode("x<|im_start|>y").ids


def test_save_writes_a_tokenizer_json_the_library_loads(gpt2_reference, tmp_path: Path) -> None:
    tokenizers = require("tokenizers")
    ref = gpt2_reference("qwen2")
    ours = from_tokenizer_json(json.loads(ref.to_str()))
    ours.save(tmp_path / "saved")
    again = load(tmp_path / "saved")
    assert isinstance(again, HFTokenizer)
    reloaded_by_library = tokenizers.Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    for text in TEXTS:
        ids = ours.encode(text, allowed_special="all")
        assert again.encode(text, allowed_special="all") == ids
        assert reloaded_by_library.encode(text, add_special_tokens=False).ids == ids


def test_transformers_loads_the_saved_folder(gpt2_reference, tmp_path: Path) -> None:
    """What we save is a Hugging Face tokenizer folder: AutoTokenizer reads it to the same ids and specials."""
    transformers = require("transformers")
    ours = from_tokenizer_json(
        json.loads(gpt2_reference("smollm2").to_str()),
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "chat_template": "{{ bos_token }}"},
    )
    ours.save(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert theirs.encode(text, add_special_tokens=False) == ours.encode(text, allowed_special="all")
    assert (theirs.bos_token, theirs.eos_token, theirs.chat_template) == ("<|endoftext|>", "<|endoftext|>", "{{ bos_token }}")


def test_our_bpe_tokenizer_as_merges_keeps_its_ids(gpt2_python) -> None:
    converted = to_hf_tokenizer(gpt2_python)
    for text in TEXTS:
        assert converted.encode(text, allowed_special="all") == gpt2_python.encode(text, allowed_special="all")
    assert converted.eos_token == "<|endoftext|>"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"].update(type="WordPiece"), "model.type is 'WordPiece'"),
        (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), r"pre_tokenizer.type: unsupported .*'Whitespace'"),
        (lambda d: d.update(pre_tokenizer=None), "no ByteLevel step"),
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer.type: unsupported normalizer 'Lowercase'"),
        (lambda d: d["model"].update(continuing_subword_prefix="##"), "model.continuing_subword_prefix"),
        (lambda d: d["model"]["merges"].append(["zzz", "q"]), r"merges\[50000\] 'zzz q' uses 'zzz'"),
        (lambda d: d["added_tokens"][0].update(lstrip=True), r"added_tokens\[0\] .*lstrip"),
        (lambda d: d["model"]["merges"].append(["a b c"]), r"merges\[50000\] must be 'a b'"),
    ],
)
def test_unsupported_or_broken_files_get_one_clear_line(gpt2_reference, change, message: str) -> None:
    data = json.loads(gpt2_reference("gpt2").to_str())
    change(data)
    with pytest.raises(ScratchLLMError, match=message):
        from_tokenizer_json(data)

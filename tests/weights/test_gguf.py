"""GGUF files: read (config, dequantized tensors under Hugging Face names, tokenizer, chat template) and write.

Most tests use tiny random models written by :func:`write_gguf` (and by ``gguf.GGUFWriter`` directly for the
storage types we do not write). The last ones use the real SmolLM2 file with transformers as the reference
(loaded once per session, see conftest.py): tensors, tokenizer ids and chat prompts must match what
transformers makes of the same file.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from dev_deps import require
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer import load, train_bpe
from scratchllm.tokenizer.chat import render_chat
from scratchllm.tokenizer.hf import HFTokenizer, to_hf_tokenizer
from scratchllm.weights.gguf import _permute_rows, gguf_tokenizer, read_gguf, write_gguf

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEXTS = ["Hello world, it's 42!", "中文测试", "def f(x):\n    return x  # 😀", "  spaces  ", "<|im_start|>user"]


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    """Our own BPE (trained here) as merges, with chat tokens: the tokenizer a model trained here would export."""
    text = " ".join(TEXTS) * 20 + " the quick brown fox jumps over the lazy dog " * 50
    bpe = train_bpe(text, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), workers=1)
    tok = to_hf_tokenizer(bpe)
    tok.bos_token, tok.eos_token, tok.chat_template = "<|im_start|>", "<|im_end|>", CHATML
    return tok


def llama_config(arch: str = "LlamaForCausalLM", vocab_size: int = 300, tied: bool = True) -> dict:
    return {
        "architectures": [arch],
        "model_type": {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}[arch],
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16 if arch != "Qwen3ForCausalLM" else 32,
        "rms_norm_eps": 1e-06,
        "rope_theta": 500000.0,
        "rope_scaling": None,
        "max_position_embeddings": 256,
        "vocab_size": vocab_size,
        "hidden_act": "silu",
        "attention_bias": arch == "Qwen2ForCausalLM",
        "tie_word_embeddings": tied,
    }


def random_tensors(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the Hugging Face names and shapes of ``config`` (random values)."""
    g = torch.Generator().manual_seed(seed)
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
        }
        if config["model_type"] == "qwen2":
            shapes |= {p + f"self_attn.{n}_proj.bias": (d,) for n, d in (("q", q), ("k", kv), ("v", kv))}
        if config["model_type"] == "qwen3":
            shapes |= {p + "self_attn.q_norm.weight": (config["head_dim"],)}
            shapes |= {p + "self_attn.k_norm.weight": (config["head_dim"],)}
    return {name: torch.randn(shape, generator=g) * 0.5 for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"])
@pytest.mark.parametrize("tied", [True, False])
def test_f32_round_trip_is_exact(tokenizer, tmp_path: Path, arch: str, tied: bool) -> None:
    config = llama_config(arch, tokenizer.vocab_size, tied)
    tensors = random_tensors(config)
    path = write_gguf(config, tensors, tokenizer, None, tmp_path / "m.gguf", "f32")
    model = read_gguf(path)
    assert model.tensors.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(model.tensors[name], t), name
    expected = {k: v for k, v in config.items()}
    expected |= {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    assert model.hf_config == expected
    assert model.chat_template == CHATML
    for text in TEXTS:
        assert model.tokenizer.encode(text, allowed_special="all") == tokenizer.encode(text, allowed_special="all")
    assert not list(tmp_path.glob(".*")), "the temporary file is renamed, not left behind"


@pytest.mark.parametrize(("file_type", "bound"), [("f16", 5e-4), ("q8_0", 1 / 127 * 0.51)])
def test_f16_and_q8_0_within_quantisation_error(tokenizer, tmp_path: Path, file_type: str, bound: float) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    tensors = random_tensors(config)
    model = read_gguf(write_gguf(config, tensors, tokenizer, None, tmp_path / "m.gguf", file_type))
    for name, t in tensors.items():
        got = model.tensors[name]
        if t.ndim == 1:  # norms stay F32, as llama.cpp keeps them
            assert torch.equal(got, t)
            continue
        scale = t.abs().max() if file_type == "f16" else t.reshape(-1, 32).abs().amax(1).max()
        assert (got - t).abs().max() <= bound * scale, name
        assert not torch.equal(got, t)


def test_llama3_rope_scaling_travels_as_rope_freqs(tokenizer, tmp_path: Path) -> None:
    """llama.cpp keeps Llama 3.x's rope scaling as a ``rope_freqs.weight`` tensor; we write it and recover the dict."""
    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    config = llama_config(vocab_size=tokenizer.vocab_size) | {"rope_scaling": scaling, "head_dim": 64}
    config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"] = 2, 1, 128
    tensors = random_tensors(config)
    path = write_gguf(config, tensors, tokenizer, None, tmp_path / "m.gguf", "f32")
    freqs = {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"]
    assert freqs.shape == (32,) and freqs[0] == 1 and freqs[-1] == 32 and ((freqs > 1) & (freqs < 32)).any()
    model = read_gguf(path)
    assert model.hf_config["rope_scaling"] == scaling
    assert model.tensors.keys() == tensors.keys()


def test_bf16_request(tokenizer, tmp_path: Path) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    tensors = random_tensors(config)
    model = read_gguf(write_gguf(config, tensors, tokenizer, None, tmp_path / "m.gguf", "f32"), torch.bfloat16)
    for name, t in tensors.items():
        assert torch.equal(model.tensors[name], t.bfloat16())


def test_gpt2_round_trip_with_padded_vocabulary(tmp_path: Path, tokenizer) -> None:
    """GPT-2 names and Conv1D layout; embedding rows beyond the tokenizer become llama.cpp's [PADn] tokens."""
    vocab = tokenizer.vocab_size + 5
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4,
        "n_positions": 64, "n_inner": 128, "layer_norm_epsilon": 1e-05, "vocab_size": vocab,
        "tie_word_embeddings": True,
    }
    g = torch.Generator().manual_seed(1)
    shapes = {"transformer.wte.weight": (vocab, 32), "transformer.wpe.weight": (64, 32),
              "transformer.ln_f.weight": (32,), "transformer.ln_f.bias": (32,)}
    for i in range(2):
        p = f"transformer.h.{i}."
        shapes |= {p + "ln_1.weight": (32,), p + "ln_1.bias": (32,), p + "ln_2.weight": (32,), p + "ln_2.bias": (32,),
                   p + "attn.c_attn.weight": (32, 96), p + "attn.c_attn.bias": (96,),
                   p + "attn.c_proj.weight": (32, 32), p + "attn.c_proj.bias": (32,),
                   p + "mlp.c_fc.weight": (32, 128), p + "mlp.c_fc.bias": (128,),
                   p + "mlp.c_proj.weight": (128, 32), p + "mlp.c_proj.bias": (32,)}
    tensors = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    model = read_gguf(write_gguf(config, tensors, tokenizer, None, tmp_path / "gpt2.gguf", "f32"))
    assert model.hf_config == config | {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    for name, t in tensors.items():
        assert torch.equal(model.tensors[name], t), name
    assert model.tokenizer.vocab_size == vocab and model.tokenizer.decode([vocab - 1]) == f"[PAD{vocab - 1}]"
    assert model.tokenizer.encode(TEXTS[2]) == tokenizer.encode(TEXTS[2])


def test_llama_rows_are_permuted_in_the_file_and_back(tokenizer, tmp_path: Path) -> None:
    """The file holds llama.cpp's interleaved q/k order for llama; qwen2 keeps Hugging Face's (as llama.cpp's
    converter writes them: qwen2/qwen3 use the NeoX rotation, which is Hugging Face's rotate-half)."""
    for arch, permuted in (("LlamaForCausalLM", True), ("Qwen2ForCausalLM", False)):
        config = llama_config(arch, tokenizer.vocab_size)
        tensors = random_tensors(config)
        path = write_gguf(config, tensors, tokenizer, None, tmp_path / f"{arch}.gguf", "f32")
        raw = {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}
        for gguf_name, hf_name, heads in (("attn_q", "q_proj", 4), ("attn_k", "k_proj", 2)):
            hf = tensors[f"model.layers.0.self_attn.{hf_name}.weight"]
            stored = torch.from_numpy(raw[f"blk.0.{gguf_name}.weight"])
            assert torch.equal(stored, _permute_rows(hf, heads, undo=False) if permuted else hf)
            # per head, llama.cpp's row 1 is Hugging Face's row head_dim / 2
            if permuted:
                assert torch.equal(stored[1], hf[8])


def test_every_dequantizable_type_lands_under_its_name(tokenizer, tmp_path: Path) -> None:
    """Tensors stored as F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K dequantize exactly as the gguf package says."""
    kinds = gguf.GGMLQuantizationType
    config = llama_config(vocab_size=tokenizer.vocab_size)
    config["hidden_size"] = config["intermediate_size"] = 256
    config["head_dim"] = 64
    tensors = random_tensors(config)
    path = write_gguf(config, tensors, tokenizer, None, tmp_path / "base.gguf", "f32")
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(tmp_path / "mixed.gguf", "llama")
    for key, f in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            value = f.contents()
            writer.add_key_value(key, value, f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    types = [kinds.F16, kinds.BF16, kinds.Q4_0, kinds.Q4_1, kinds.Q8_0, kinds.Q4_K, kinds.Q6_K]
    rng = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}
    for i, t in enumerate(reader.tensors):
        values = np.array(t.data, dtype=np.float32)
        if values.ndim == 1:
            writer.add_tensor(t.name, values)
            continue
        kind = types[i % len(types)]
        block, size = gguf.GGML_QUANT_SIZES[kind]
        if kind in (kinds.Q4_K, kinds.Q6_K):  # no Python quantizer: any bytes are a valid block
            data = rng.integers(0, 256, (values.shape[0], values.shape[1] // block * size), dtype=np.uint8)
            scales = slice(0, 4) if kind == kinds.Q4_K else slice(size - 2, size)  # f16 d (and dmin)
            blocks = data.reshape(data.shape[0], -1, size)
            blocks[:, :, scales] = np.frombuffer(np.float16(0.01).tobytes() * 2, np.uint8)[: scales.stop - scales.start]
        else:
            data = gguf.quants.quantize(values, kind)
        writer.add_tensor(t.name, data, raw_dtype=kind)
        expected[t.name] = gguf.quants.dequantize(data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model = read_gguf(tmp_path / "mixed.gguf")
    name_of = {"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
               "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
               "token_embd.weight": "model.embed_tokens.weight"}
    for gguf_name, hf_name in name_of.items():
        want = torch.from_numpy(expected[gguf_name])
        if "attn_q" in gguf_name:
            want = _permute_rows(want, 4, undo=True)
        assert torch.isfinite(want).all()
        assert torch.equal(model.tensors[hf_name], want), gguf_name
    seen = {t.tensor_type for t in gguf.GGUFReader(tmp_path / "mixed.gguf").tensors}
    assert set(types) <= seen


# ---------------------------------------------------------------------------------------------- bad input
def _rewrite(src: Path, dst: Path, change, types: dict | None = None) -> Path:
    """Copy a GGUF file field by field and tensor by tensor, letting ``change(key_or_name, value)`` edit it
    (None drops it) and ``types`` re-declare tensors' storage types."""
    reader = gguf.GGUFReader(src)
    arch = change("general.architecture", reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = change(key, f.contents())
        if value is not None:
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value, f.types[0], sub)
    for t in reader.tensors:
        data = change(t.name, np.array(t.data))
        if data is not None:
            writer.add_tensor(t.name, data, raw_dtype=(types or {}).get(t.name, t.tensor_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"general.architecture": "falcon"}, "general.architecture is 'falcon'; supported: gpt2, llama, qwen2, qwen3"),
        ({"blk.1.ffn_up.weight": None}, "tensor 'model.layers.1.mlp.up_proj.weight' is missing"),
        ({"llama.embedding_length": None}, "metadata key 'llama.embedding_length' missing"),
        ({"llama.feed_forward_length": 95}, r"'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\), expected \(95, 64\)"),
        ({"tokenizer.ggml.pre": "jais"}, "tokenizer.ggml.pre is 'jais'; supported:"),
        ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.model is 'llama'; expected 'gpt2'"),
    ],
)
def test_bad_files_get_one_line(tokenizer, tmp_path: Path, edit: dict, message: str) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    good = write_gguf(config, random_tensors(config), tokenizer, None, tmp_path / "good.gguf", "f32")
    bad = _rewrite(good, tmp_path / "bad.gguf", lambda key, value: edit.get(key, value))
    with pytest.raises(ScratchLLMError, match=message):
        read_gguf(bad)


def test_undequantizable_type_and_truncated_file(tokenizer, tmp_path: Path) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    good = write_gguf(config, random_tensors(config), tokenizer, None, tmp_path / "good.gguf", "f32")
    data = good.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScratchLLMError, match="cut.gguf: not a readable GGUF file"):
        read_gguf(tmp_path / "cut.gguf")

    def as_q8_1(key, value):  # 32 values -> 40 bytes per block, a type the package cannot dequantize
        return np.zeros((value.shape[0], value.shape[1] // 32 * 40), np.uint8) if key == "blk.0.attn_v.weight" else value

    q8_1 = {"blk.0.attn_v.weight": gguf.GGMLQuantizationType.Q8_1}
    bad = _rewrite(good, tmp_path / "q81.gguf", as_q8_1, q8_1)
    with pytest.raises(ScratchLLMError, match="tensor 'blk.0.attn_v.weight' is stored as Q8_1"):
        read_gguf(bad)


def test_write_refuses_what_it_cannot_write(tokenizer, tmp_path: Path) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    tensors = random_tensors(config)
    with pytest.raises(ScratchLLMError, match="file_type: expected f32, f16 or q8_0"):
        write_gguf(config, tensors, tokenizer, None, tmp_path / "x.gguf", "q4_0")  # type: ignore[arg-type]
    with pytest.raises(ScratchLLMError, match="architectures \\['BertModel'\\]"):
        write_gguf(config | {"architectures": ["BertModel"]}, tensors, tokenizer, None, tmp_path / "x.gguf")
    with pytest.raises(ScratchLLMError, match=r"'model.norm.weight' has shape \(3,\), expected \(64,\)"):
        write_gguf(config, tensors | {"model.norm.weight": torch.ones(3)}, tokenizer, None, tmp_path / "x.gguf")
    del tensors["model.layers.1.mlp.gate_proj.weight"]
    with pytest.raises(ScratchLLMError, match="'model.layers.1.mlp.gate_proj.weight' is missing"):
        write_gguf(config, tensors, tokenizer, None, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir()), "nothing half-written"


# ---------------------------------------------------------------------------------------------- the real file
@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_gguf: Path) -> HFTokenizer:
    return gguf_tokenizer(smollm2_gguf)


def test_real_file_tokenizer_equals_smollm2_tokenizer_json(smol_tokenizer: HFTokenizer) -> None:
    """SmolLM2's own tokenizer.json (Digits(individual) + ByteLevel) built by ``tokenizers`` from the same vocab."""
    tokenizers = require("tokenizers")
    import json

    ref = tokenizers.Tokenizer.from_str(json.dumps(smol_tokenizer.to_json()))
    assert ref.pre_tokenizer.__getstate__()  # a real pre-tokenizer, not None
    texts = TEXTS + ["Pi is 3.14159, not 22/7; 2024-11-29 at 10:45.", "<|im_start|>user\nHi<|im_end|>\n"]
    for text in texts:
        assert smol_tokenizer.encode(text, allowed_special="all") == ref.encode(text).ids
    assert (smol_tokenizer.bos_id, smol_tokenizer.eos_id, smol_tokenizer.pad_id) == (1, 2, 2)
    assert smol_tokenizer.encode("<|im_start|>", allowed_special="all") == [1]
    # the digits are split one by one, as SmolLM2 was trained
    assert len(smol_tokenizer.encode("123456")) == 6


def test_load_accepts_a_gguf_file(tokenizer, tmp_path: Path) -> None:
    config = llama_config(vocab_size=tokenizer.vocab_size)
    path = write_gguf(config, random_tensors(config), tokenizer, None, tmp_path / "m.gguf", "f16")
    loaded = load(path)
    assert isinstance(loaded, HFTokenizer)
    assert loaded.encode(TEXTS[0]) == tokenizer.encode(TEXTS[0])


def test_real_tokenizer_round_trips_through_export(smol_tokenizer: HFTokenizer, tmp_path: Path) -> None:
    config = llama_config(vocab_size=smol_tokenizer.vocab_size)
    config |= {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 32, "head_dim": 8}
    path = write_gguf(config, random_tensors(config), smol_tokenizer, None, tmp_path / "t.gguf", "f16")
    again = gguf_tokenizer(path)
    assert again.vocab == smol_tokenizer.vocab and again.merges == smol_tokenizer.merges
    assert again.chat_template == smol_tokenizer.chat_template
    for text in TEXTS + ["Pi is 3.14159"]:
        assert again.encode(text, allowed_special="all") == smol_tokenizer.encode(text, allowed_special="all")


def test_real_file_tensors_equal_transformers(smollm2_gguf: Path, hf_smollm2) -> None:
    model = hf_smollm2
    ours = read_gguf(smollm2_gguf)
    print(f"read_gguf({smollm2_gguf.name}): {ours.load_seconds:.1f} s")
    reference = model.state_dict()
    reference.pop("lm_head.weight")  # tied: transformers exposes the embedding a second time
    assert ours.hf_config["tie_word_embeddings"] and model.config.tie_word_embeddings
    assert ours.tensors.keys() == reference.keys()
    for name, t in reference.items():
        torch.testing.assert_close(ours.tensors[name], t, rtol=0, atol=1e-6, msg=name)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings", "vocab_size",
                "bos_token_id", "eos_token_id"):
        # float32 metadata: we give the decimal config.json has (1e-05), transformers the float32 value
        assert ours.hf_config[key] == pytest.approx(getattr(model.config, key), rel=1e-7), key
    assert ours.hf_config["rope_theta"] == model.config.rope_parameters["rope_theta"]


def test_real_file_tokenizer_and_chat_equal_transformers(smol_tokenizer: HFTokenizer, hf_smollm2_tokenizer) -> None:
    reference = hf_smollm2_tokenizer
    # transformers gives this file GPT-2's pre-tokenizer, without SmolLM2's one-digit split: texts without digits
    texts = ["Hello world, it's a test!", "中文测试，你好世界。", "def f(x):\n    return x  # 😀 ok",
             "  spaces\n\n and tabs\t", "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>"]
    for text in texts:
        assert smol_tokenizer.encode(text, allowed_special="all") == reference.encode(text, add_special_tokens=False)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with_system = [{"role": "system", "content": "Answer briefly."}, *messages,
                   {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"}]
    for conversation in (messages, with_system):
        for prompt in (True, False):
            expected = reference.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt)
            assert render_chat(smol_tokenizer.chat_template, conversation, prompt) == expected


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"])
def test_transformers_reads_our_export_as_we_do(tokenizer, transformers, tmp_path: Path, arch: str) -> None:
    """transformers' own GGUF reader (its q/k un-permutation for llama, none for qwen2/qwen3) gets our tensors."""
    require("accelerate")
    config = llama_config(arch, tokenizer.vocab_size, tied=False)
    if arch == "Qwen3ForCausalLM":  # transformers ignores qwen3.attention.key_length and assumes Qwen3's 128
        config["head_dim"] = 128
    tensors = random_tensors(config)
    write_gguf(config, tensors, tokenizer, None, tmp_path / "m.gguf", "f32")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    reference = model.state_dict()
    assert type(model).__name__ == arch
    assert reference.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(reference[name], t), name
    if arch == "LlamaForCausalLM":  # and its tokenizer reads our tokenizer.ggml.* the same way
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
        for text in TEXTS:
            assert hf_tok.encode(text, add_special_tokens=False) == tokenizer.encode(text, allowed_special="all")


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "llama-bpe", "qwen2", "default"])
def test_each_pre_tokenizer_name_round_trips(tokenizer, tmp_path: Path, pre: str) -> None:
    """A tokenizer splitting like ``pre`` is written under that llama.cpp name and read back splitting the same."""
    from scratchllm.weights.gguf import GGUF_PRE

    splitting = GGUF_PRE[pre]
    tok = HFTokenizer(tokenizer.vocab, tokenizer.merges, added_tokens=tokenizer.added_tokens, **splitting)
    config = llama_config(vocab_size=tok.vocab_size)
    path = write_gguf(config, random_tensors(config), tok, None, tmp_path / "m.gguf", "f16")
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == pre
    again = gguf_tokenizer(path)
    assert again.ignore_merges == (pre == "llama-bpe")
    for text in TEXTS + ["Total: 1234567 items, x+=1; <tag>"]:
        assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_export_refuses_a_pre_tokenizer_llama_cpp_cannot_name(tokenizer, tmp_path: Path) -> None:
    from scratchllm.tokenizer.hf import byte_level, regex_split

    custom = {"type": "Sequence", "pretokenizers": [regex_split(r"\w+|\W"), byte_level(use_regex=False)]}
    tok = HFTokenizer(tokenizer.vocab, tokenizer.merges, custom)
    config = llama_config(vocab_size=tok.vocab_size)
    with pytest.raises(ScratchLLMError, match="has no llama.cpp name"):
        write_gguf(config, random_tensors(config), tok, None, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())

"""Hugging Face Llama, Qwen2 and Qwen3 folders, with transformers as the reference implementation.

Each tiny model is random (norm gains and biases too, so that every name and layout is exercised), and our
logits must equal transformers' within 1e-4 in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchllm.config import MODEL_PRESETS, ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel, model_summary
from scratchllm.weights import (
    config_from_hf,
    from_hf,
    hf_config_from,
    load_model,
    model_from_hf_tensors,
    state_dict_from_hf,
    state_dict_to_hf,
    to_hf,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,  # wavelengths of 8..32 positions blend, longer ones stretch
}
# (HF config class, fields); "untied" in a name unties the LM head. GQA ratios 1, 3 and 4 (4 with one kv head:
# multi-query), explicit and unusual head_dim (10, 6), tied and untied, llama3 scaling.
CASES = {
    "llama-mha-tied": ("LlamaConfig", dict(hidden_size=24, num_attention_heads=2, num_key_value_heads=2)),
    "llama-mqa4-untied-llama3": (
        "LlamaConfig",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, rope_scaling=LLAMA3_SCALING),
    ),
    "llama-gqa2-head_dim10": (
        "LlamaConfig",
        dict(hidden_size=24, num_attention_heads=4, num_key_value_heads=2, head_dim=10),
    ),
    "qwen2-gqa3-tied": (
        "Qwen2Config",
        dict(hidden_size=36, num_attention_heads=6, num_key_value_heads=2, rope_theta=1_000_000.0),
    ),
    "qwen2-mha-untied": ("Qwen2Config", dict(hidden_size=24, num_attention_heads=4, num_key_value_heads=4)),
    "qwen3-gqa3-head_dim10": (
        "Qwen3Config",
        dict(hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=10),
    ),
    "qwen3-gqa4-head_dim6-untied": (
        "Qwen3Config",
        dict(hidden_size=16, num_attention_heads=4, num_key_value_heads=1, head_dim=6),
    ),
}


def hf_model(transformers, case: str, seed: int = 0):
    class_name, fields = CASES[case]
    config = getattr(transformers, class_name)(
        tie_word_embeddings="untied" not in case,
        vocab_size=103,
        intermediate_size=40,
        num_hidden_layers=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        attention_dropout=0.0,
        **fields,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms are ones and biases zeros at init: make them random so the mapping is tested
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_hf_logits_match_transformers(tmp_path: Path, case: str, transformers) -> None:
    hf = hf_model(transformers, case)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")  # auto-detected from config.json
    assert ours.config.tie_embeddings == ("untied" not in case) == hf.config.tie_word_embeddings
    assert ours.config.n_kv_heads == CASES[case][1]["num_key_value_heads"]
    idx = torch.randint(0, 103, (2, 48))  # past original_max_position_embeddings, where llama3 scaling acts
    with torch.no_grad():
        expected = hf(idx).logits
        assert torch.allclose(ours(idx), expected, atol=1e-4), (ours(idx) - expected).abs().max()
        # Cached decoding gives the same logits as the reference's full forward.
        cache = ours.new_kv_cache(batch_size=2)
        assert cache.k.shape[2] == ours.config.n_kv_heads
        steps = [ours(idx[:, :40], kv_cache=cache)]
        steps += [ours(idx[:, t : t + 1], kv_cache=cache) for t in range(40, 48)]
        assert torch.allclose(torch.cat(steps, dim=1), expected, atol=1e-4)


@pytest.mark.parametrize("case", ["llama-mqa4-untied-llama3", "qwen2-gqa3-tied", "qwen3-gqa3-head_dim10"])
def test_our_export_loads_in_transformers_with_same_logits(tmp_path: Path, case: str, transformers) -> None:
    reference = from_hf_model(tmp_path, transformers, case)
    torch.manual_seed(3)
    model = GPTModel(reference.config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    to_hf(model, tmp_path / "export")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(hf).__name__ == json.loads((tmp_path / "export" / "config.json").read_text())["architectures"][0]
    idx = torch.randint(0, 103, (2, 40))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model(idx), atol=1e-4)
    back = from_hf(tmp_path / "export")
    assert back.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def from_hf_model(tmp_path: Path, transformers, case: str) -> GPTModel:
    hf_model(transformers, case).save_pretrained(tmp_path / case)
    return from_hf(tmp_path / case)


def test_sharded_folder_with_index_loads(tmp_path: Path, transformers) -> None:
    hf = hf_model(transformers, "qwen2-mha-untied")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    ours = from_hf(tmp_path / "hf")
    idx = torch.randint(0, 103, (1, 30))
    with torch.no_grad():
        assert torch.allclose(ours(idx), hf(idx).logits, atol=1e-4)
    # Exporting into that folder replaces the shards with one file and keeps other files.
    (tmp_path / "hf" / "README.md").write_text("kept")
    to_hf(ours, tmp_path / "hf")
    names = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp or old folder left behind


def test_bf16_folder_loads_in_bf16_and_generates(tmp_path: Path, transformers) -> None:
    from scratchllm.generation import generate
    from scratchllm.model import optimize_for_decoding

    hf = hf_model(transformers, "llama-gqa2-head_dim10").to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    ours = optimize_for_decoding(from_hf(tmp_path / "hf"))
    assert ours.tok_emb.weight.dtype == torch.bfloat16
    idx = torch.randint(0, 103, (1, 12))
    with torch.no_grad():
        expected = hf(idx).logits.float()
        got = ours(idx).float()
    assert (got - expected).abs().max() < 0.05  # bf16: same ops, rounding differs in places
    cached = generate(ours, idx, max_new_tokens=8, temperature=0.0)
    assert len(cached[0]) == 8
    assert cached == generate(ours, idx, max_new_tokens=8, temperature=0.0, use_cache=False)
    assert from_hf(tmp_path / "hf", dtype=torch.float32).tok_emb.weight.dtype == torch.float32


# ---------------------------------------------------------------------------------------- pure functions
def test_pure_functions_round_trip(transformers) -> None:
    hf = hf_model(transformers, "qwen3-gqa3-head_dim10")
    hf_config = hf.config.to_dict()
    config = config_from_hf(hf_config)
    assert (config.qk_norm, config.head_dim, config.n_kv_heads, config.qkv_bias) == (True, 10, 2, False)
    tensors = dict(hf.state_dict())
    model = model_from_hf_tensors(hf_config, tensors, where="test")
    state = state_dict_from_hf(tensors, config, "test")
    back = state_dict_to_hf(model, config)
    assert sorted(back) == sorted(k for k in tensors if k != "lm_head.weight")  # tied head stored once
    for name, tensor in back.items():
        assert torch.equal(tensor, tensors[name]), name
    assert set(state) == {k for k in model.state_dict() if k != "lm_head.weight"}
    assert config_from_hf(hf_config_from(config)) == config


def test_errors_name_the_tensor_or_key(tmp_path: Path, transformers) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    hf_model(transformers, "llama-gqa2-head_dim10").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")

    def write(cfg: dict | None = None, tensors: dict | None = None) -> None:
        (folder / "config.json").write_text(json.dumps(cfg or config))
        save_file(tensors or weights, folder / "model.safetensors")

    bad = {**weights, "model.layers.1.self_attn.k_proj.weight": torch.zeros(40, 24)}
    write(tensors=bad)
    with pytest.raises(
        ScratchLLMError, match=r"model.layers.1.self_attn.k_proj.weight has shape \[40, 24\], expected \[20, 24\]"
    ):
        from_hf(folder)
    write(tensors={k: v for k, v in weights.items() if k != "model.layers.0.mlp.up_proj.weight"})
    with pytest.raises(ScratchLLMError, match=r"missing tensor\(s\) model.layers.0.mlp.up_proj.weight"):
        from_hf(folder)
    write(tensors={**weights, "model.layers.0.self_attn.q_proj.bias": torch.zeros(40)})
    with pytest.raises(ScratchLLMError, match=r"unexpected tensor\(s\) model.layers.0.self_attn.q_proj.bias"):
        from_hf(folder)
    for key, value, message in [
        ("hidden_act", "gelu", "hidden_act='gelu' is not supported; expected 'silu'"),
        ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling type 'yarn' is not supported"),
        ("attention_bias", True, "attention_bias=True is not supported"),
        ("architectures", ["MixtralForCausalLM"], "MixtralForCausalLM"),
    ]:
        cfg = {**config, key: value}
        if key == "architectures":
            cfg["model_type"] = "mixtral"
        cfg.pop("rope_parameters", None) if key == "rope_scaling" else None
        write(cfg=cfg)
        with pytest.raises(ScratchLLMError, match=message.replace("(", r"\(").replace("[", r"\[")):
            from_hf(folder)
    write()
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ScratchLLMError, match="model.safetensors: cannot read safetensors file"):
        from_hf(folder)


def test_sharded_index_naming_a_missing_shard_or_tensor(tmp_path: Path, transformers) -> None:
    folder = tmp_path / "hf"
    hf_model(transformers, "qwen2-mha-untied").save_pretrained(folder, max_shard_size="20KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.0.mlp.extra.weight"] = next(iter(index["weight_map"].values()))
    index_path.write_text(json.dumps(index))
    with pytest.raises(ScratchLLMError, match="tensor model.layers.0.mlp.extra.weight listed in"):
        from_hf(folder)
    index["weight_map"]["model.norm.weight"] = "model-99999.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ScratchLLMError, match="shard model-99999.safetensors not found"):
        from_hf(folder)


def test_export_refuses_a_mix_no_architecture_has() -> None:
    config = ModelConfig.from_preset("llama-tiny", vocab_size=64, bias=True)
    with pytest.raises(ScratchLLMError, match="no Hugging Face architecture matches this model"):
        hf_config_from(config)


# ---------------------------------------------------------------------------------------- presets
# Parameter counts as the published checkpoints report them (tied embeddings counted once).
PUBLISHED = {
    "smollm2-135m": 134_515_008,
    "smollm2-360m": 361_821_120,
    "llama-3.2-1b": 1_235_814_400,
    "qwen2.5-0.5b": 494_032_768,
    "qwen3-0.6b": 596_049_920,
}


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_presets_have_the_published_shapes(preset: str, transformers) -> None:
    config = ModelConfig.from_preset(preset)
    assert model_summary(config).parameters == PUBLISHED[preset]
    hf_config = transformers.AutoConfig.for_model(**hf_config_from(config))
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert sum(p.numel() for p in hf.parameters()) == PUBLISHED[preset]
    assert config_from_hf(hf_config.to_dict()) == config
    assert preset in MODEL_PRESETS

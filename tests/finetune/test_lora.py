"""LoRA: zero update at start, only adapters train, merge == unmerged, disable, save/load, peft parity."""

from __future__ import annotations

import json

import pytest
import torch
from finetune_models import tiny_model

from dev_deps import require
from scratchllm.errors import ScratchLLMError
from scratchllm.model.lora import (
    LoRALinear,
    adapters_disabled,
    inject_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    resolve_targets,
    trainable_parameters,
)
from scratchllm.weights.adapters import apply_adapter, save_adapter, save_peft_adapter


def _randomise_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """B starts at zero (no change); give it values so the adapters actually do something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_inject_starts_as_the_base_model_and_only_adapters_train(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(0, 96, (2, 10))
    before = model(ids)
    config = inject_lora(model, rank=4, alpha=8, targets=["all"])
    assert len(config.modules) == 4 * 2
    assert torch.equal(model(ids), before)  # B = 0: the adapted model is the pretrained one
    trainable, total = trainable_parameters(model)
    expected = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in lora_layers(model).values())
    assert trainable == expected < total
    assert "blocks.0.att.qkv.weight" in model.state_dict()  # base names unchanged
    loss = model(ids).float().pow(2).mean()
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.endswith((".lora_A", ".lora_B")) for n in grads)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_merged_equals_unmerged_and_disable_gives_the_base(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(0, 96, (2, 12))
    base = model(ids)
    inject_lora(model, rank=4, alpha=16, targets=["attn", "mlp"])
    _randomise_adapters(model)
    adapted = model(ids)
    assert (adapted - base).abs().max() > 1e-3
    with adapters_disabled(model):
        torch.testing.assert_close(model(ids), base, rtol=0, atol=1e-6)
    merged = merge_lora(model)
    assert not lora_layers(merged)
    assert all(type(m) is torch.nn.Linear for n, m in merged.named_modules() if n.endswith(("qkv", "fc")))
    torch.testing.assert_close(merged(ids), adapted, rtol=0, atol=1e-5)


def test_targets_friendly_names_globs_and_unknown() -> None:
    model = tiny_model()
    assert resolve_targets(model, ["attn"]) == [
        "blocks.0.att.qkv", "blocks.0.att.out_proj", "blocks.1.att.qkv", "blocks.1.att.out_proj",
    ]  # fmt: skip
    assert resolve_targets(model, ["blocks.1.ff.*"]) == ["blocks.1.ff.fc", "blocks.1.ff.proj"]
    assert resolve_targets(model, ["qkv"]) == ["blocks.0.att.qkv", "blocks.1.att.qkv"]
    with pytest.raises(ScratchLLMError, match="lora target 'q_proj' matches no linear layer") as err:
        inject_lora(model, targets=["q_proj"])
    assert "\n" not in str(err.value)
    assert not lora_layers(model)  # nothing half-done


def test_bf16_base_weights_keep_fp32_adapters() -> None:
    model = tiny_model()
    ids = torch.randint(0, 96, (1, 8))
    base = model(ids)
    inject_lora(model, rank=2, alpha=2, targets=["all"], base_dtype=torch.bfloat16)
    layer = next(iter(lora_layers(model).values()))
    assert layer.weight.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.float32
    assert model(ids).dtype == torch.float32
    torch.testing.assert_close(model(ids), base, rtol=0.05, atol=0.05)  # bf16 rounding of the weights only


def test_adapter_folder_round_trip(tmp_path) -> None:
    model = tiny_model()
    config = inject_lora(model, rank=4, alpha=8, dropout=0.1, targets=["mlp"])
    _randomise_adapters(model)
    model.eval()
    ids = torch.randint(0, 96, (2, 9))
    expected = model(ids)
    folder = save_adapter(model, config, tmp_path / "adapter", base_model="tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    fresh = tiny_model()
    lora, extra = apply_adapter(fresh, folder)
    assert (lora.rank, lora.alpha, lora.dropout, extra) == (4, 8, 0.1, {})
    assert set(lora_state_dict(fresh)) == set(lora_state_dict(model))
    torch.testing.assert_close(fresh.eval()(ids), expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_peft_loads_our_adapter_and_gives_our_outputs(family: str, tmp_path, transformers) -> None:
    peft = require("peft")
    from scratchllm.weights.hf import to_hf

    model = tiny_model(family)
    to_hf(model, tmp_path / "hf")
    config = inject_lora(model, rank=4, alpha=8, targets=["all"])
    _randomise_adapters(model, seed=3)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.normal_(0, 0.2)
    save_peft_adapter(model, config, model.config, tmp_path / "peft", base_model=str(tmp_path / "hf"))
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32)
    hf_lora = peft.PeftModel.from_pretrained(hf, tmp_path / "peft").eval()
    ids = torch.randint(0, 96, (2, 11))
    with torch.no_grad():
        ours = model(ids)
        theirs = hf_lora(ids).logits
        with adapters_disabled(model):
            base = model(ids)
    assert (ours - base).abs().max() > 1e-2  # the adapters matter
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
    assert isinstance(next(iter(lora_layers(model).values())), LoRALinear)

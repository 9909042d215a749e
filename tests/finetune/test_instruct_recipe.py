"""The instruction recipe end to end on a tiny model, LoRA export, and merge-lora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from finetune_models import tiny_checkpoint

from scratchllm.cli.parser import main

WORDS = ["good", "happy", "great", "fine", "day", "bad", "awful", "sad", "poor", "night"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    from scratchllm.data.instruct import alpaca_prompt

    text = " ".join([alpaca_prompt("Repeat.", "good") + "good"] * 10 + WORDS * 10)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny", text=text, context_length=96)


def _data(path: Path, n: int = 40) -> Path:
    rows = [{"instruction": "Repeat.", "input": WORDS[i % 10], "output": WORDS[i % 10]} for i in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "instruct", "--model", str(ckpt), "--data", str(data), "--out-dir", str(out),
        "--train.precision", "fp32", "--train.device", "cpu", "--train.micro-batch-size", "4",
        "--train.lr", "3e-3", "--train.min-lr", "3e-3", "--train.peak-flops", "1e11", "--max-new-tokens", "4", "--max-length", "95", *extra,
    ]  # fmt: skip


def test_finetune_instruct_full(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    extra = ("--epochs", "2", "--baseline-responses", "--dropout", "0.1")
    assert main(_args(ckpt, _data(tmp_path / "d.json"), out, *extra)) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "prompt format: alpaca" in captured.err and "trainable parameters:" in captured.err
    assert "dropout 0.1 while training" in captured.err
    responses = json.loads((out / "responses.json").read_text())
    assert len(responses) == 4 and set(responses[0]) == {"instruction", "input", "reference", "response"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["rouge_l"] <= 1.0 and "test_before" in metrics
    assert len(metrics["history"]) == 2 and metrics["history"][1]["val_loss"] < metrics["history"][0]["val_loss"] + 1
    assert summary["model"] == str(out / "model") and (out / "model" / "tokenizer").is_dir()
    assert main(["generate", "--model", str(out / "model"), "--prompt", "good", "--max-new-tokens", "2"]) == 0


def _adapted(ckpt: Path):
    from scratchllm.model.lora import inject_lora
    from scratchllm.weights import load

    model = load(ckpt).model
    inject_lora(model, rank=4, targets=["all"])
    return model


def test_lora_run_exports_adapters_and_merge_lora_writes_a_plain_checkpoint(ckpt, tmp_path, capsys) -> None:
    from scratchllm.model.lora import lora_layers
    from scratchllm.weights import load
    from scratchllm.weights.adapters import apply_adapter

    out = tmp_path / "run"
    extra = ("--epochs", "1", "--trains", "lora", "--lora.rank", "4", "--test-responses", "false")
    assert main(_args(ckpt, _data(tmp_path / "d.json", 24), out, *extra)) == 0
    err = capsys.readouterr().err
    expected = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in lora_layers(_adapted(ckpt)).values())
    assert f"trainable parameters: {expected:,} of " in err, err  # the adapters only
    assert (out / "adapter" / "adapter.safetensors").is_file()
    assert (out / "adapter-peft" / "adapter_model.safetensors").is_file()
    assert main(["merge-lora", "--model", str(ckpt), "--adapter", str(out / "adapter"), "--out", str(tmp_path / "m")]) == 0
    merged = load(tmp_path / "m").model
    adapted = load(ckpt).model
    apply_adapter(adapted, out / "adapter")
    assert json.loads((out / "adapter-peft" / "adapter_config.json").read_text())["r"] == 4
    assert any(layer.lora_B.abs().max() > 0 for layer in lora_layers(adapted).values())  # it trained
    ids = torch.randint(0, 290, (2, 12))
    torch.testing.assert_close(merged(ids), adapted.eval()(ids), rtol=0, atol=1e-5)


def test_a_lora_run_is_reproducible_from_its_seed(ckpt, tmp_path, capsys) -> None:
    """PyTorch starts from a random seed: the adapters' initialisation must come from --train.seed."""
    from safetensors.torch import load_file

    data = _data(tmp_path / "d.json", 24)
    extra = ("--epochs", "1", "--trains", "lora", "--lora.rank", "4", "--test-responses", "false", "--train.seed", "9")
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(_args(ckpt, data, run, *extra)) == 0
    a, b = (load_file(run / "adapter" / "adapter.safetensors") for run in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

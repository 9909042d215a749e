"""Pretraining is family-agnostic: the llama-tiny preset trains, checkpoints, resumes exactly and generates."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scratchllm.config import DataSpec, ModelSpec, TrainConfig
from scratchllm.recipes.pretrain import pretrain
from scratchllm.train.checkpoint import latest_checkpoint

SPEC = ModelSpec(preset="llama-tiny", context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def settings(**overrides) -> TrainConfig:
    base = dict(micro_batch_size=4, max_steps=4, warmup_steps=1, lr=3e-3, precision="fp32", eval_every=2,
                eval_batches=2, log_every=1, save_every=2, sample_tokens=4, peak_flops=1e11, device="cpu")
    return TrainConfig(**{**base, **overrides})


def losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["kind"] == "train"}


def test_llama_tiny_pretrains_resumes_exactly_and_loads(tmp_path: Path, shards, capsys) -> None:
    from scratchllm import weights
    from scratchllm.generation import generate

    data = DataSpec(dirs=[shards])
    summary = pretrain(data, SPEC, settings(), tmp_path / "straight")
    assert summary["step"] == 4 and summary["val_loss"] is not None
    pretrain(data, SPEC, settings(stop_at_step=2), tmp_path / "split")
    pretrain(data, SPEC, settings(), tmp_path / "split", resume=True)
    straight = losses(tmp_path / "straight")
    assert sorted(straight) == [1, 2, 3, 4] and straight[4] < straight[1]
    assert losses(tmp_path / "split") == pytest.approx(straight, rel=1e-6)

    model = weights.load_model(latest_checkpoint(tmp_path / "straight" / "checkpoints"))
    cfg = model.config
    assert (cfg.pos, cfg.norm, cfg.mlp, cfg.n_kv_heads, cfg.vocab_size) == ("rope", "rmsnorm", "swiglu", 2, 300)
    assert model.pos_emb is None
    assert len(generate(model, [[1, 2, 3]], max_new_tokens=5)[0]) == 5

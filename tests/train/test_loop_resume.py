"""The training loop: learning happens, accumulation is exact, resume is bit-identical, NaN never lands."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scratchllm.train.loop import Callback, Trainer, evaluate_loss
from scratchllm.train.optim import build_adamw, parameter_groups
from scratchllm.train.schedule import WarmupCosineSchedule


def make_trainer(cfg, reader, *, max_steps, accum=1, seed=0, callbacks=(), **kwargs):
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    optimizer = build_adamw(model, lr=1e-2, weight_decay=0.1)
    schedule = WarmupCosineSchedule(max_lr=1e-2, min_lr=1e-3, warmup_steps=2, max_steps=max_steps)
    return Trainer(
        model,
        optimizer,
        reader,
        max_steps=max_steps,
        schedule=schedule,
        grad_accum_steps=accum,
        callbacks=callbacks,
        **kwargs,
    )


class Recorder(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, trainer, metrics):
        self.losses.append(metrics.loss)


def test_weight_decay_groups_exclude_biases_norms_and_embeddings(tiny_config):
    model = GPTModel(tiny_config())
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "blocks.0.att.qkv.weight" in decayed and "blocks.1.ff.proj.weight" in decayed
    assert not any(n.endswith("bias") or "norm" in n or "emb" in n for n in decayed)
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_training_lowers_loss_and_eval_is_fixed(tiny_config, token_stream, reader_class):
    tokens = token_stream[:200].repeat(10)  # a short repeated text is learnable
    reader = reader_class(tokens, context_length=16, batch_size=8, seed=1)
    rec = Recorder()
    trainer = make_trainer(tiny_config(), reader, max_steps=30, callbacks=[rec])
    val = reader_class(tokens, context_length=16, batch_size=8, seed=7)
    before = evaluate_loss(trainer.model, val, 3)
    summary = trainer.fit()
    after = evaluate_loss(trainer.model, val, 3)
    assert summary["step"] == 30 and summary["stop_reason"] == "max_steps"
    assert summary["tokens_seen"] == 30 * 8 * 16
    assert after < before - 1.0
    assert evaluate_loss(trainer.model, val, 3) == after  # reset() gives the same batches


def test_accumulation_equals_one_big_batch(tiny_config, token_stream, reader_class):
    big = make_trainer(
        tiny_config(), reader_class(token_stream, context_length=16, batch_size=8), max_steps=3
    )
    # 4 micro-batches of 2 read the same 8 rows as one batch of 8 (sequential windows make that exact).
    big.batches.random = False
    small_reader = reader_class(token_stream, context_length=16, batch_size=2, random=False)
    small = make_trainer(tiny_config(), small_reader, max_steps=3, accum=4)
    rb, rs = Recorder(), Recorder()
    big.callbacks, small.callbacks = [rb], [rs]
    big.fit()
    small.fit()
    assert rs.losses == pytest.approx(rb.losses, rel=1e-5)
    for pb, ps in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(pb, ps, rtol=1e-3, atol=1e-4)  # Adam amplifies float noise in tiny grads


def test_resume_is_bit_identical(tmp_path, tiny_config, token_stream, reader_class):
    """2N steps straight == N steps, checkpoint, fresh objects, resume, N steps (dropout on, random windows)."""
    cfg = tiny_config(drop_rate=0.2)
    n = 4

    def fresh(seed):
        reader = reader_class(token_stream, context_length=16, batch_size=4, seed=3)
        return make_trainer(cfg, reader, max_steps=2 * n, accum=2, seed=seed)

    straight = fresh(seed=0)
    rec_straight = Recorder()
    straight.callbacks = [rec_straight]
    straight.fit()

    first = fresh(seed=0)
    rec_first = Recorder()
    first.callbacks = [rec_first]
    first.stop_at_step = n
    first.fit()
    path = save_checkpoint(
        tmp_path / "ckpt", n, model=first.model, optimizer=first.optimizer, trainer_state=first.state_dict()
    )
    torch.manual_seed(999)  # the RNG must come from the checkpoint, not from here
    torch.rand(10)

    second = fresh(seed=1)  # different init: everything must come from the checkpoint
    assert latest_checkpoint(tmp_path / "ckpt") == path
    state = load_checkpoint(path, model=second.model, optimizer=second.optimizer)
    second.load_state_dict(state)
    rec_second = Recorder()
    second.callbacks = [rec_second]
    second.fit()

    assert rec_first.losses + rec_second.losses == rec_straight.losses  # bit-identical, not approx
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.state.tokens_seen == second.state.tokens_seen


def nan_loss_at(step_to_poison, counter):
    from scratchllm.train.loop import next_token_loss

    def loss_fn(model, batch):
        loss = next_token_loss(model, batch)
        counter["calls"] += 1
        if counter["calls"] == step_to_poison:
            loss = loss * float("nan")
        return loss

    return loss_fn


def test_nonfinite_loss_stops_before_optimizer_step(tmp_path, tiny_config, token_stream, reader_class):
    reader = reader_class(token_stream, context_length=16, batch_size=4)
    trainer = make_trainer(tiny_config(), reader, max_steps=10, loss_fn=nan_loss_at(3, {"calls": 0}))
    trainer.train_step()
    trainer.train_step()
    save_checkpoint(tmp_path, 2, model=trainer.model, optimizer=trainer.optimizer, trainer_state={})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    with pytest.raises(ScratchLLMError, match=r"step 3: non-finite loss"):
        trainer.train_step()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in trainer.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, moments[k]), k
    saved = load_file(str(latest_checkpoint(tmp_path) / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_skip_nonfinite_counts_and_continues(tiny_config, token_stream, reader_class):
    reader = reader_class(token_stream, context_length=16, batch_size=4)
    rec = Recorder()
    trainer = make_trainer(
        tiny_config(),
        reader,
        max_steps=5,
        loss_fn=nan_loss_at(2, {"calls": 0}),
        skip_nonfinite=True,
        callbacks=[rec],
    )
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["step"] == 5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_checkpoint_refuses_nan_weights(tmp_path, tiny_config):
    model = GPTModel(tiny_config())
    with torch.no_grad():
        model.blocks[0].ff.fc.weight[0, 0] = float("nan")
    with pytest.raises(ScratchLLMError, match=r"blocks\.0\.ff\.fc\.weight holds NaN"):
        save_checkpoint(tmp_path, 1, model=model, optimizer=None, trainer_state={})
    assert latest_checkpoint(tmp_path) is None


def test_checkpoint_layout_and_keep_last_plus_best(tmp_path, tiny_config):
    from scratchllm import weights

    cfg = tiny_config()
    model = GPTModel(cfg)
    config_json = {"format": "scratchllm", "model": cfg.to_dict()}
    val_losses = {1: 5.0, 2: 3.0, 3: 4.0, 4: 4.5, 5: 6.0}
    for step, val in val_losses.items():
        save_checkpoint(
            tmp_path,
            step,
            model=model,
            optimizer=None,
            trainer_state={"val_loss": val},
            model_config=config_json,
            keep_last=2,
        )
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["step-2", "step-4", "step-5"]  # newest two + best val loss
    (tmp_path / "step-9").mkdir()  # a crash before the marker: ignored
    assert latest_checkpoint(tmp_path).name == "step-5"
    loaded = weights.load_model(tmp_path / "step-5")  # a checkpoint is a plain model folder too
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert json.loads((tmp_path / "step-5" / "trainer.json").read_text())["step"] == 5


def test_activation_checkpointing_gives_the_same_training(tiny_config, token_stream, reader_class):
    """Recomputing block activations in backward (applied from outside the model) changes memory, not math."""
    from scratchllm.train.distributed import DistEnv, parallelize

    runs = []
    for checkpointing in (False, True):
        reader = reader_class(token_stream, context_length=16, batch_size=4, seed=2)
        trainer = make_trainer(tiny_config(drop_rate=0.1), reader, max_steps=3)
        trainer.model = parallelize(trainer.model, DistEnv(), activation_checkpointing=checkpointing)
        rec = Recorder()
        trainer.callbacks = [rec]
        trainer.fit()
        runs.append(rec.losses)
    assert runs[0] == runs[1]

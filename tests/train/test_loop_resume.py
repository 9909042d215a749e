"""The training loop: learning happens, accumulation is exact, resume is bit-identical, NaN never lands."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.train.checkpoint import latest_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from scratchllm.train.loop import Callback, Trainer, evaluate_loss
from scratchllm.train.optim import build_adamw, parameter_groups
from scratchllm.train.schedule import WarmupCosineSchedule


def make_trainer(
    cfg, reader, *, max_steps, accum=1, seed=0, callbacks=(), lr=1e-2, min_lr=1e-3, weight_decay=0.1, **kwargs
):
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    optimizer = build_adamw(model, lr=lr, weight_decay=weight_decay)
    schedule = WarmupCosineSchedule(max_lr=lr, min_lr=min_lr, warmup_steps=2, max_steps=max_steps)
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
        self.lrs = []

    def on_step_end(self, trainer, metrics):
        self.losses.append(metrics.loss)
        self.lrs.append(metrics.lr)


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


class ListBatches:
    """Fixed batches, in order (what a finetuning loader hands the trainer)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return batch

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def test_accumulation_of_masked_targets_equals_one_big_batch(tiny_config):
    """Instruction tuning scores only some tokens (-100 elsewhere): micro-batches that score 3 and 40 targets
    weigh 3 and 40, so accumulating them equals one batch of both (a mean of the two means would not)."""
    torch.manual_seed(1)
    inputs = torch.randint(0, 64, (4, 16))
    targets = torch.randint(0, 64, (4, 16))
    targets[:2, 3:] = -100
    targets[:2, :2] = -100  # rows 0-1: 1 target each; rows 2-3: 16 each, minus 4 below
    targets[2:, :2] = -100
    first, second = (inputs[:2], targets[:2]), (inputs[2:], targets[2:])
    trainers = {
        "big": make_trainer(tiny_config(), ListBatches([(inputs, targets)]), max_steps=1, lr=1e-2),
        "small": make_trainer(tiny_config(), ListBatches([first, second]), max_steps=1, accum=2, lr=1e-2),
    }
    losses = {}
    for name, trainer in trainers.items():
        losses[name] = trainer.train_step().loss
    assert losses["small"] == pytest.approx(losses["big"], rel=1e-6)
    for pb, ps in zip(trainers["big"].model.parameters(), trainers["small"].model.parameters()):
        torch.testing.assert_close(pb, ps, rtol=1e-5, atol=1e-6)
    # what the weighting changes: the plain mean of the two micro-batch means is another number
    from scratchllm.train.loop import next_token_loss

    assert next_token_loss.count_items(first) == 2 and next_token_loss.count_items(second) == 28
    torch.manual_seed(0)  # make_trainer's seed: the weights both trainers started from
    start = GPTModel(tiny_config())
    with torch.no_grad():
        plain = (next_token_loss(start, first) + next_token_loss(start, second)) / 2
    assert abs(float(plain) - losses["big"]) > 1e-3


def sampling_evaluator(trainer, reader_class, token_stream):
    """An EvalCallback every 3 steps whose loss and 'sample' draw random numbers, as generating a sample does."""
    from scratchllm.train.callbacks import EvalCallback

    val = reader_class(token_stream, context_length=16, batch_size=4, seed=9)
    return EvalCallback(
        3,
        {"val": lambda: evaluate_loss(trainer.model, val, 2)},
        sample=lambda: str(torch.randint(0, 300, (8,)).tolist()),
    )


@pytest.mark.parametrize("restore_around_eval", [True, False])
def test_resume_is_bit_identical(
    tmp_path, tiny_config, token_stream, reader_class, monkeypatch, restore_around_eval
):
    """2N steps straight == N steps, checkpoint, fresh objects, resume, N steps.

    Dropout is on, windows are random, and an evaluation that draws random numbers runs mid-run (step 3, before
    the checkpoint, and step 6, after the resume). The control (``restore_around_eval=False``) disables the RNG
    save/restore around evaluation and shows the test notices: evaluation then shifts the dropout masks.
    """
    if not restore_around_eval:
        monkeypatch.setattr("scratchllm.train.callbacks.restore_rng_state", lambda state: None)
    cfg = tiny_config(drop_rate=0.2)
    n = 4

    def fresh(seed, evaluate=True):
        reader = reader_class(token_stream, context_length=16, batch_size=4, seed=3)
        trainer = make_trainer(cfg, reader, max_steps=2 * n, accum=2, seed=seed)
        trainer.callbacks = [sampling_evaluator(trainer, reader_class, token_stream)] if evaluate else []
        return trainer

    plain = fresh(seed=0, evaluate=False)  # no evaluation at all: the curve evaluation must not change
    rec_plain = Recorder()
    plain.callbacks.append(rec_plain)
    plain.fit()

    straight = fresh(seed=0)
    rec_straight = Recorder()
    straight.callbacks.append(rec_straight)
    straight.fit()
    if not restore_around_eval:
        assert rec_straight.losses[3:] != rec_plain.losses[3:]
        return
    assert rec_straight.losses == rec_plain.losses
    assert straight.callbacks[0].last["step"] == 2 * n

    first = fresh(seed=0)
    rec_first = Recorder()
    first.callbacks.append(rec_first)
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
    second.callbacks.append(rec_second)
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


def test_a_checkpoint_that_cannot_be_written_is_removed_and_the_last_one_kept(tmp_path, tiny_config, monkeypatch):
    import errno

    from scratchllm.train import checkpoint

    model = GPTModel(tiny_config())
    save_checkpoint(tmp_path, 1, model=model, optimizer=None, trainer_state={})
    write = checkpoint._write_tensors

    def disk_fills_up(path, tensors):
        write(path, tensors)  # the bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_tensors", disk_fills_up)
    with pytest.raises(ScratchLLMError, match=r"checkpoint step-2: writing it in .* failed .*No space left on dev"):
        save_checkpoint(tmp_path, 2, model=model, optimizer=None, trainer_state={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]  # no half-written folder holds the space
    assert latest_checkpoint(tmp_path).name == "step-1"


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


def four_of_eight_steps(root, cfg, reader):
    """A trainer stopped at step 4 of an 8-step schedule, and its checkpoint."""
    trainer = make_trainer(cfg, reader, max_steps=8, stop_at_step=4)
    trainer.fit()
    state = trainer.state_dict()
    return trainer, save_checkpoint(root, 4, model=trainer.model, optimizer=trainer.optimizer, trainer_state=state)


def test_resume_refuses_a_changed_schedule_naming_each_change(tmp_path, tiny_config, token_stream, reader_class):
    reader = reader_class(token_stream, context_length=16, batch_size=4)
    first, path = four_of_eight_steps(tmp_path, tiny_config(), reader)
    changed = make_trainer(tiny_config(), reader, max_steps=16, lr=2e-2, weight_decay=0.05)
    with pytest.raises(ScratchLLMError) as info:
        changed.resume_from(path)
    message = str(info.value)
    assert "\n" not in message and "--train.reschedule" in message
    for change in ("max_steps 8 -> 16", "lr 0.01 -> 0.02", "weight_decay 0.1 -> 0.05"):
        assert change in message
    assert "min_lr" not in message and "warmup_steps" not in message  # unchanged settings are not named

    same = make_trainer(tiny_config(), reader, max_steps=8)
    same.resume_from(path)  # the same settings resume without a word
    assert same.state.step == 4

    torch.manual_seed(0)
    model = GPTModel(tiny_config())
    constant = Trainer(model, build_adamw(model, lr=5e-3), reader, max_steps=8)  # no schedule: lr is a setting
    saved_lr = first.optimizer.param_groups[0]["lr"]
    with pytest.raises(ScratchLLMError, match=rf"\(lr {saved_lr} -> 0.005\)"):
        constant.resume_from(path)


def test_reschedule_applies_the_new_schedule_from_the_resumed_step(
    tmp_path, tiny_config, token_stream, reader_class
):
    reader = reader_class(token_stream, context_length=16, batch_size=4)
    first, path = four_of_eight_steps(tmp_path, tiny_config(), reader)
    longer = make_trainer(tiny_config(), reader, max_steps=16, min_lr=5e-4, weight_decay=0.05)
    said = []
    longer.resume_from(path, reschedule=True, log=said.append)
    assert len(said) == 1 and said[0].startswith("reschedule: from step 4 on")
    assert "max_steps 8 -> 16" in said[0] and "min_lr 0.001 -> 0.0005" in said[0]
    assert [g["weight_decay"] for g in longer.optimizer.param_groups] == [0.05, 0.0]  # the new value, kept
    rec = Recorder()
    longer.callbacks = [rec]
    longer.fit()
    new = WarmupCosineSchedule(max_lr=1e-2, min_lr=5e-4, warmup_steps=2, max_steps=16)
    assert rec.lrs == [new(step) for step in range(4, 16)]  # not the old curve, which ends at step 8
    assert rec.lrs[3] > 5e-3  # step 7: mid-way down the new cosine; the old one would be near its floor


def test_rng_restored_on_another_process_count_is_announced(tmp_path, tiny_config, capsys, monkeypatch):
    model = GPTModel(tiny_config())
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=None, trainer_state={})
    states = json.loads((path / "rng.json").read_text())
    (path / "rng.json").write_text(json.dumps(states * 2))  # as if two processes had saved it
    load_checkpoint(path, model=model)
    err = capsys.readouterr().err
    assert "RNG:" in err and "saved by 2 process(es), this run has 1" in err
    said = []
    (path / "rng.json").write_text(json.dumps(states))
    load_checkpoint(path, model=model, log=said.append)
    assert said == []  # same process count: nothing to say
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restore_rng_state({**states[0], "cuda": ["AAAA"]}, log=said.append)  # saved on one GPU, restored on none
    assert len(said) == 1 and "CUDA generator states for 1 GPU(s), this process sees 0" in said[0]


def test_a_crash_while_replacing_a_complete_checkpoint_keeps_one(tmp_path, tiny_config, monkeypatch):
    """Saving step-N over a complete step-N (a rerun from an earlier step) never loses a complete step-N."""
    from scratchllm.train import checkpoint

    model = GPTModel(tiny_config())
    save_checkpoint(tmp_path, 2, model=model, optimizer=None, trainer_state={"tag": "old"})
    real_replace = checkpoint.os.replace

    def crash_on_publish(src, dst):  # the old folder has gone aside; the crash comes before the new one is in
        if str(src).endswith(f".tmp-step-2-{os.getpid()}"):
            raise KeyboardInterrupt("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_publish)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model=model, optimizer=None, trainer_state={"tag": "new"})
    monkeypatch.undo()
    assert not (tmp_path / "step-2").exists()
    survivor = latest_checkpoint(tmp_path)  # the hidden old copy stands in for step-2
    assert survivor is not None and checkpoint.step_of(survivor) == 2
    assert load_checkpoint(survivor, model=model)["tag"] == "old"

    save_checkpoint(tmp_path, 2, model=model, optimizer=None, trainer_state={"tag": "new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2"]  # leftovers gone, replacement in place
    assert load_checkpoint(tmp_path / "step-2", model=model)["tag"] == "new"


def test_checkpoints_record_the_validation_loss_of_their_own_step(tmp_path, tiny_config, token_stream, reader_class):
    """The evaluation result travels through ``Trainer.last_eval``; a checkpoint at a step without an
    evaluation records no validation loss rather than an older one."""
    from scratchllm.train.callbacks import CheckpointCallback, EvalCallback

    reader = reader_class(token_stream, context_length=16, batch_size=4)
    trainer = make_trainer(tiny_config(), reader, max_steps=4)
    val = reader_class(token_stream, context_length=16, batch_size=4, seed=5)
    evaluator = EvalCallback(2, {"val": lambda: evaluate_loss(trainer.model, val, 1)})
    trainer.callbacks = [evaluator, CheckpointCallback(tmp_path, 1, keep_last=10)]
    assert trainer.last_eval is None
    trainer.fit()
    recorded = {p.name: json.loads((p / "trainer.json").read_text())["val_loss"] for p in tmp_path.iterdir()}
    assert recorded["step-1"] is None and recorded["step-3"] is None
    assert recorded["step-4"] == trainer.last_eval["val_loss"] == evaluator.last["val_loss"]
    assert isinstance(recorded["step-2"], float)

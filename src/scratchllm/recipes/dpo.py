"""Preference tuning with DPO: the last step of the life cycle, after instruction finetuning.

:func:`finetune_dpo` is the run in steps:

1. read the preference pairs and split them (seeded 85/5/10, as the book splits its 1,100 pairs, or given
   split files); encode them in the model's prompt format (:mod:`scratchllm.data.preference`), counting the
   pairs skipped (identical answers, prompts that fill the context) and cut;
2. load the model to tune (:func:`~scratchllm.recipes.finetune.load_base`) and choose the reference
   (:func:`build_reference`): a frozen copy of the starting model, ``--reference Y``, or, with LoRA, the
   policy itself with its adapters switched off (no second copy in memory); optionally score every pair with
   it once (``--precompute-reference``) and free it;
3. train on the one training core with the DPO loss (:class:`~scratchllm.train.dpo.DPOLoss`): the pretraining
   recipe's :func:`~scratchllm.recipes.pretrain.build_trainer`, :func:`~scratchllm.recipes.pretrain.resume_or_refuse`
   and :func:`~scratchllm.recipes.pretrain.attach_callbacks` (checkpoints, exact resume, metrics.csv, loss.png);
   each evaluation (before the first step, every ``eval_every`` steps, at the end) also measures the rewards, the
   margin and the reward accuracy on a fixed train sample and the validation split: ``dpo_metrics.csv`` and
   ``margins.png`` (:class:`PreferenceEvaluation`);
4. measure the train sample and the whole val and test splits at the end (``metrics.json``), answer a few
   test prompts before and after (``responses.json``) and save ``RUN/model`` or ``RUN/adapter`` as instruction finetuning does.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scratchllm.config import LoRAConfig, TrainConfig
from scratchllm.data.instruct import PromptFormat, end_id, resolve_format
from scratchllm.data.preference import PreferenceExample, collate, encode_pairs, read_preferences
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes import finetune

if TYPE_CHECKING:
    from scratchllm.train.dpo import DPOLoss

#: DPO's defaults (the book's: lr 5e-6, weight decay 0.01, batch 8, evaluation every 5 steps on 5 batches).
DPO_TRAIN = dataclasses.replace(
    finetune.FINETUNE_TRAIN, lr=5e-6, min_lr=5e-6, weight_decay=0.01, eval_every=5, eval_batches=5,
    log_every=5,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the reference
def build_reference(
    net: Any, trains: str, reference: Path | None, env: Any, say: finetune.Log
) -> tuple[str, Any]:
    """``(kind, model)`` for :class:`DPOLoss`: ``--reference``, adapters off (LoRA) or a frozen copy of ``net``.

    Call it before LoRA goes in (the copy is the starting model) and before resuming (a resumed run keeps the
    reference of the run's start, not the checkpoint's weights).
    """
    import torch

    if reference is not None:
        from scratchllm.weights import load

        ref = load(reference, device=env.device, dtype=torch.float32).model
        if ref.config.vocab_size != net.config.vocab_size:
            raise ScratchLLMError(
                f"{reference}: the reference's vocabulary ({ref.config.vocab_size}) differs from the model's "
                f"({net.config.vocab_size}); DPO compares their probabilities of the same tokens"
            )
        say(f"reference: {reference} (frozen)")
        return "model", ref
    if trains == "lora":
        say("reference: the model with its LoRA adapters switched off (no second copy)")
        return "adapters_off", None
    say("reference: a frozen copy of the starting model")
    return "model", copy.deepcopy(net)


def with_reference_logprobs(
    examples: Sequence[PreferenceExample], objective: DPOLoss, model: Any, batch_size: int, pad_id: int, device: Any
) -> list[PreferenceExample]:
    """The examples with the reference's log-probabilities attached (scored once, in order)."""
    from scratchllm.train.dpo import reference_logprobs

    batches = in_batches(examples, batch_size, lambda batch: collate(batch, pad_id))
    net = objective.reference_model if objective.reference == "model" else model
    scores = reference_logprobs(
        net, batches, average=objective.average, adapters_off=objective.reference == "adapters_off", device=device
    )
    return [example.with_reference(c, r) for example, (c, r) in zip(examples, scores)]


def sample(examples: Sequence[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``examples`` drawn without replacement by ``seed`` (all of them when there are fewer)."""
    import torch

    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for i in sorted(order[:n])]


def in_batches(examples: Sequence[Any], batch_size: int, collate_batch: Callable[[list[Any]], Any]) -> list[Any]:
    return [collate_batch(list(examples[i : i + batch_size])) for i in range(0, len(examples), batch_size)]


# ---------------------------------------------------------------------------------------------- responses
def answer(model: Any, tokenizer: Any, examples: Sequence[PreferenceExample], max_new_tokens: int) -> list[str]:
    """Greedy answers to the examples' prompts (eval mode inside)."""
    import torch

    from scratchllm.generation import generate

    room = max(1, model.config.context_length - max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prompts = [list(e.prompt_ids)[-room:] for e in examples]
            ids = generate(model, prompts, max_new_tokens, eos_id=end_id(tokenizer))
    finally:
        model.train(was_training)
    return [tokenizer.decode(row).strip() for row in ids]


# ---------------------------------------------------------------------------------------------- the recipe
def finetune_dpo(
    model: Path,
    data: Path,
    out_dir: Path = Path("runs/dpo"),
    tokenizer: Path | None = None,
    reference: Path | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    average_logprobs: bool = False,
    precompute_reference: bool = False,
    prompt_format: PromptFormat = "auto",
    max_length: int | None = 1024,
    split: tuple[float, float, float] = (0.85, 0.05, 0.1),
    split_seed: int | None = None,
    val_data: Path | None = None,
    test_data: Path | None = None,
    trains: Literal["all", "lora"] = "all",
    lora: LoRAConfig = LoRAConfig(),
    epochs: int = 1,
    examples: int = 3,
    max_new_tokens: int = 128,
    train: TrainConfig = DPO_TRAIN,
    resume: bool = False,
) -> dict[str, Any]:
    """Align a model with preferences (prompt, chosen and rejected answers) by Direct Preference Optimization.

    Example: scratchllm finetune dpo --model runs/instruct/model
    --data ../shared/data/rasbt/instruction-data-with-preference.json --out-dir runs/dpo

    Args:
        model: the model to tune (usually instruction-tuned): our checkpoint, a Hugging Face folder or a .gguf.
        data: .json list or .jsonl of records with chosen, rejected and a prompt (text or messages) or
            instruction/input (rendered in the model's prompt format).
        out_dir: run folder (metrics.csv, loss.png, dpo_metrics.csv, margins.png, metrics.json, responses.json,
            model/ or adapter/).
        tokenizer: use this tokenizer instead of the model's own.
        reference: the reference model (default: the starting model; with LoRA, it with adapters switched off).
        beta: strength of the pull towards the reference; the rewards are beta * log(policy / reference).
        label_smoothing: assumed probability that a preference label is wrong (conservative DPO; 0 = the paper).
        average_logprobs: average the answers' token log-probabilities instead of summing them (the paper sums).
        precompute_reference: score every pair with the reference once before training, then free it.
        prompt_format: alpaca, chat (the model's chat template), or auto (chat where the model has a template).
        max_length: tokens per prompt + answer at most (and at most the model's context); answers are cut.
        split: train/val/test fractions of a seeded shuffle of the data.
        split_seed: seed of that shuffle (default: train.seed); fix it to compare training seeds on one split.
        val_data: validation file (with test_data: use these instead of splitting data).
        test_data: test file.
        trains: what trains: all weights, or LoRA adapters.
        lora: LoRA settings (with trains=lora).
        epochs: passes over the training pairs.
        examples: test prompts answered before and after training (responses.json); 0 for none.
        max_new_tokens: longest generated answer.
        train: optimizer, batch, precision, evaluation and checkpoint settings (max_steps follows from epochs).
        resume: continue the newest complete checkpoint in out_dir.
    """
    from scratchllm.atomic import write_json_atomic
    from scratchllm.data.batches import ExampleBatches
    from scratchllm.recipes.instruct import save_result
    from scratchllm.recipes.pretrain import attach_callbacks, build_trainer, resume_or_refuse, wrap_model
    from scratchllm.train.checkpoint import unwrap_model
    from scratchllm.train.dpo import DPOLoss, describe, preference_metrics
    from scratchllm.train.dpo_metrics import PreferenceEvaluation

    if train.global_batch_tokens is not None:
        raise ScratchLLMError(
            "finetune dpo: --train.global-batch-tokens does not apply (a batch is a number of preference pairs); "
            "use --train.micro-batch-size"
        )
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with finetune.session(train, fsdp=False) as (env, say, precision):
        if train.sample_prompt:
            say("train.sample_prompt is not used by DPO (see responses.json for answers before and after)")
        # 1. data, in the model's prompt format
        parts = finetune.split_data(
            data, val_data, test_data, read_preferences, split=split,
            seed=train.seed if split_seed is None else split_seed, say=say,
        )
        loaded = finetune.load_base(model, env, seed=train.seed, tokenizer=tokenizer, say=say)
        net, tok, template = loaded.model, loaded.tokenizer, loaded.chat_template
        fmt = resolve_format(prompt_format, template)
        length = min(max_length or net.config.context_length, net.config.context_length)
        say(f"prompt format: {fmt}" + (" (the model's chat template)" if fmt == "chat" and template else ""))
        encoded: dict[str, list[PreferenceExample]] = {}
        for name, part in parts.items():
            encoded[name], counts = encode_pairs(part, tok, fmt, template, max_length=length)
            say(f"{name}: {len(encoded[name])} of {len(part)} pairs; {counts.describe()}")
            if not encoded[name]:
                raise ScratchLLMError(f"{data}: no usable preference pair in the {name} split")
        pad_id = end_id(tok) if end_id(tok) is not None else 0

        # 2. the reference, what trains, and the objective
        kind, ref_model = build_reference(net, trains, reference, env, say)
        # With LoRA only the adapters train: the reference is the model with them off, so nothing else may move.
        freeze_rest = lambda: net.requires_grad_(trains != "lora")  # noqa: E731
        lora_config = finetune.choose_trainable(net, net, trains, lora, say, freeze_rest=freeze_rest, seed=train.seed)
        objective = DPOLoss(
            beta, label_smoothing=label_smoothing, average=average_logprobs, reference=kind, reference_model=ref_model
        )
        bs = train.micro_batch_size
        if precompute_reference:
            tick = time.perf_counter()
            encoded = {
                name: with_reference_logprobs(part, objective, net, bs, pad_id, env.device)
                for name, part in encoded.items()
            }
            objective = DPOLoss(
                beta, label_smoothing=label_smoothing, average=average_logprobs, reference="precomputed"
            )
            ref_model = None  # freed: training runs one model
            say(f"reference log-probabilities precomputed for every pair in {time.perf_counter() - tick:.1f} s")

        def collate_batch(batch: list[PreferenceExample]) -> Any:
            return collate(batch, pad_id)

        prompts = encoded["test"][: max(0, examples)]
        before = answer(net, tok, prompts, max_new_tokens) if prompts and env.is_main and not resume else None

        # 3. train on the one core, with the DPO metrics at every evaluation
        batches = ExampleBatches(
            encoded["train"], bs, collate_batch, seed=train.seed, drop_last=True, rank=env.rank,
            world_size=env.world_size,
        )
        n_eval = train.eval_batches * bs  # fixed evaluation sets: a seeded train sample and the val split's start
        sets = {
            "train": in_batches(sample(encoded["train"], n_eval, train.seed + 1), bs, collate_batch),
            "val": in_batches(encoded["val"][:n_eval], bs, collate_batch),
        }
        max_steps = epochs * len(batches)
        if train.max_steps != max_steps:
            say(f"{epochs} epoch(s) of {len(batches)} steps: train.max_steps = {max_steps}")
            train = dataclasses.replace(train, max_steps=max_steps)
        run_info = {
            "model": net.config.to_dict(), "base_model": str(Path(model).resolve()), "data": str(data),
            "reference": str(reference) if reference else kind, "beta": beta, "label_smoothing": label_smoothing,
            "average_logprobs": average_logprobs, "precompute_reference": precompute_reference, "prompt_format": fmt,
            "split": list(split), "split_seed": split_seed, "max_length": length, "trains": trains,
            "lora": lora_config.to_dict() if lora_config else None, "epochs": epochs, "train": train.to_dict(),
            "precision": precision, "tokenizer": "tokenizer",
        }  # fmt: skip
        if env.is_main:
            finetune.prepare_run_folder(out_dir, tok, run_info, resume)
        checkpoint_config = finetune.checkpoint_config(net, run_info, lora_config)
        trainer = build_trainer(wrap_model(net, train, env), batches, train, env, precision, 1, objective)
        resumed_from = resume_or_refuse(trainer, out_dir / "checkpoints", resume, train.reschedule, say)
        # attach_callbacks' own evaluation sets are placeholders: PreferenceEvaluation takes over the losses
        placeholders = {"train": batches, "val": batches}
        inputs = finetune.TrainingData(batches, placeholders, net.config.vocab_size, out_dir / "tokenizer")
        hooks = attach_callbacks(
            trainer, inputs, train, env, precision, out_dir=out_dir, run_info=run_info, resumed_from=resumed_from,
            flops_per_token=0.0, say=say, loss_fn=objective, sample_text=False, model_config=checkpoint_config,
        )  # fmt: skip
        eval_net = unwrap_model(trainer.model)

        def measure(eval_batches: list[Any]) -> dict[str, float]:
            return preference_metrics(eval_net, objective, eval_batches, env.device)

        evaluation = PreferenceEvaluation(
            hooks.evaluator, sets, measure, out_dir, enabled=env.is_main,
            resume_step=trainer.state.step if resumed_from else None, say=say,
        )  # fmt: skip
        trainer.callbacks.insert(1, evaluation)
        try:
            summary = trainer.fit()
        finally:
            hooks.logger.close()

        # 4. every split measured, answers before and after, the result saved
        final = {"train": measure(sets["train"])}  # the fixed train sample; val and test in full
        final.update({name: measure(in_batches(encoded[name], bs, collate_batch)) for name in ("val", "test")})
        for name, metrics in final.items():
            say(f"{name}: {describe(metrics)}")
        start = next((r for r in evaluation.rows if int(r["step"]) == 0 and r["split"] == "val"), None)
        report: dict[str, Any] = {"final": final, "val_before": start, "history": evaluation.rows}
        saved: dict[str, str] = {}
        if env.is_main:
            if prompts:
                after = answer(net, tok, prompts, max_new_tokens)
                responses = [
                    {"prompt": tok.decode(list(e.prompt_ids)), "chosen": tok.decode(list(e.chosen_ids)),
                     "rejected": tok.decode(list(e.rejected_ids)), "before": b, "after": a}
                    for e, b, a in zip(prompts, before or [None] * len(prompts), after)
                ]  # fmt: skip
                write_json_atomic(out_dir / "responses.json", responses)
            write_json_atomic(out_dir / "metrics.json", report)
            saved = save_result(out_dir, net, tok, lora_config, str(Path(model).resolve()), say)
        return {
            **summary, "out_dir": str(out_dir), **saved,
            **{f"{name}_{key}": final[name][key] for name in ("val", "test") for key in ("accuracy", "margin")},
            "wall_seconds": round(time.perf_counter() - started, 1), "resumed_from": resumed_from,
        }  # fmt: skip

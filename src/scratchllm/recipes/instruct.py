"""Instruction finetuning: teach a pretrained model to answer, on Alpaca or chat records.

:func:`finetune_instruct` reads and splits the records (seeded 85/5/10, as the book splits its 1,100
instructions 935/55/110, or given split files), encodes them in the model's prompt format with a loss mask on
the responses (:mod:`scratchllm.data.instruct`), trains all weights or LoRA adapters on the one training core
(next-token loss; masked targets are -100) and then answers every test instruction with greedy decoding:
``responses.json`` holds instruction, input, reference and response, and ``metrics.json`` their ROUGE-L (the
longest common subsequence F-measure, from the ``rouge-score`` library) and exact match.

The result is ``RUN/model`` (a plain checkpoint with its tokenizer) or, for LoRA, ``RUN/adapter`` (ours) and,
for the families transformers implements, ``RUN/adapter-peft`` (what Hugging Face peft loads).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from scratchllm.config import LoRAConfig, TrainConfig, check_dropout
from scratchllm.data.instruct import (
    InstructRecord,
    PromptFormat,
    encode_all,
    end_id,
    prompt_text,
    read_instructions,
    resolve_format,
)
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes import finetune


def text_scores(responses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L F-measure (stemmed, as usually reported) and exact match (after stripping whitespace)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    n = len(references)
    rouge = sum(scorer.score(ref, out)["rougeL"].fmeasure for ref, out in zip(references, responses))
    exact = sum(ref.strip() == out.strip() for ref, out in zip(references, responses))
    return {"rouge_l": rouge / n if n else 0.0, "exact_match": exact / n if n else 0.0, "examples": n}


def respond(
    model: Any,
    tokenizer: Any,
    records: Sequence[InstructRecord],
    prompt_format: str,
    template: str | None,
    *,
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[dict[str, str]]:
    """Greedy answers to the records' last turns: ``{instruction, input, reference, response}`` each."""
    import torch

    from scratchllm.data.instruct import encode_text
    from scratchllm.generation import generate

    eos = end_id(tokenizer)
    context = model.config.context_length
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            prompts = [encode_text(tokenizer, prompt_text(r, tokenizer, prompt_format, template)) for r in chunk]
            room = max(1, context - max_new_tokens)
            prompts = [p[-room:] for p in prompts]  # keep the end of an over-long prompt: the question is there
            with torch.no_grad():
                answers = generate(model, prompts, max_new_tokens, eos_id=eos)
            for record, ids in zip(chunk, answers):
                last_user = next((m["content"] for m in reversed(record.messages[:-1]) if m["role"] == "user"), "")
                out.append(
                    {
                        "instruction": record.instruction if record.instruction is not None else last_user,
                        "input": record.input,
                        "reference": record.reference,
                        "response": tokenizer.decode(ids).strip(),
                    }
                )
    finally:
        model.train(was_training)
    return out


def finetune_instruct(
    model: Path,
    data: Path,
    out_dir: Path = Path("runs/instruct"),
    tokenizer: Path | None = None,
    prompt_format: PromptFormat = "auto",
    train_on_prompt: bool = False,
    split: tuple[float, float, float] = (0.85, 0.05, 0.1),
    split_seed: int | None = None,
    val_data: Path | None = None,
    test_data: Path | None = None,
    max_length: int | None = 1024,
    trains: Literal["all", "lora"] = "all",
    lora: LoRAConfig = LoRAConfig(),
    epochs: int = 2,
    from_scratch: bool = False,
    dropout: float | None = None,
    max_new_tokens: int = 256,
    test_responses: bool = True,
    baseline_responses: bool = False,
    train: TrainConfig = finetune.FINETUNE_TRAIN,
    resume: bool = False,
) -> dict[str, Any]:
    """Finetune a model to follow instructions (Alpaca or chat records); answers the test split afterwards.

    Example: scratchllm finetune instruct --model runs/pretrain/checkpoints/step-1000
    --data ../shared/data/rasbt/instruction-data.json --out-dir runs/instruct

    Args:
        model: the model to start from: our checkpoint, a Hugging Face folder or a .gguf file.
        data: .json list or .jsonl of Alpaca records (instruction, input, output) or chat records (messages).
        out_dir: run folder (metrics.csv, loss.png, responses.json, metrics.json, model/ or adapter/).
        tokenizer: use this tokenizer instead of the model's own.
        prompt_format: alpaca, chat (the model's chat template), or auto (chat where the model has a template).
        train_on_prompt: take the loss on the whole sequence, not only on the responses.
        split: train/val/test fractions of a seeded shuffle of the data.
        split_seed: seed of that shuffle (default: train.seed); fix it to compare training seeds on one split.
        val_data: validation file (with test_data: use these instead of splitting data).
        test_data: test file.
        max_length: tokens per training sequence at most (and at most the model's context); longer ones are cut.
        trains: what trains: all weights, or LoRA adapters.
        lora: LoRA settings (with trains=lora).
        epochs: passes over the training split; the weights of the best epoch (validation loss) are kept.
        from_scratch: random weights in the model's shape (a baseline).
        dropout: dropout rate while finetuning (default: the model's own; published models have 0). It
            regularises full finetuning of a small data set; LoRA has its own ``lora.dropout``.
        max_new_tokens: longest generated response.
        test_responses: answer the test split after training (responses.json, ROUGE-L, exact match).
        baseline_responses: also answer it before training, to compare.
        train: optimizer, batch, precision and checkpoint settings (max_steps follows from epochs).
        resume: continue the newest complete checkpoint in out_dir.
    """
    from scratchllm.atomic import write_json_atomic
    from scratchllm.data.batches import ExampleBatches
    from scratchllm.data.instruct import collate as collate_examples
    from scratchllm.train.loop import next_token_loss

    if dropout is not None:
        check_dropout("dropout", dropout)  # before the data and the model are read
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with finetune.session(train) as (env, say, precision):
        parts = finetune.split_data(
            data, val_data, test_data, read_instructions, split=split,
            seed=train.seed if split_seed is None else split_seed, say=say,
        )
        loaded = finetune.load_base(
            model, env, seed=train.seed, from_scratch=from_scratch, tokenizer=tokenizer, dropout=dropout, say=say
        )
        net, tok, template = loaded.model, loaded.tokenizer, loaded.chat_template
        fmt = resolve_format(prompt_format, template)
        context = net.config.context_length
        length = min(max_length or context, context)
        say(f"prompt format: {fmt}" + (" (the model's chat template)" if fmt == "chat" and template else ""))
        encoded = {}
        for name, part in parts.items():
            encoded[name], cut, dropped = encode_all(
                part, tok, fmt, template, max_length=length, train_on_prompt=train_on_prompt
            )
            if cut or dropped:
                say(f"{name}: {cut} of {len(part)} examples longer than {length + 1} tokens were cut"
                    + (f", {dropped} left with no response token were dropped" if dropped else ""))  # fmt: skip
            if not encoded[name]:
                raise ScratchLLMError(f"{data}: no {name} example has a response token within {length} tokens")

        pad_id = end_id(tok) if end_id(tok) is not None else 0

        def collate(examples):
            return collate_examples(examples, pad_id)

        baseline = None
        if baseline_responses and test_responses:
            say(f"answering {len(parts['test'])} test instructions before training")
            baseline = respond(net, tok, parts["test"], fmt, template, max_new_tokens=max_new_tokens)
        lora_config = finetune.choose_trainable(
            net, net, trains, lora, say, freeze_rest=lambda: net.requires_grad_(trains != "lora"), seed=train.seed
        )
        bs = train.micro_batch_size
        batches = ExampleBatches(
            encoded["train"], bs, collate, seed=train.seed, drop_last=True, rank=env.rank, world_size=env.world_size
        )
        eval_sets = {
            "train": ExampleBatches(encoded["train"], bs, collate, seed=train.seed + 1),
            "val": ExampleBatches(encoded["val"], bs, collate, shuffle=False),
        }
        run_info = {
            "model": net.config.to_dict(), "base_model": str(Path(model).resolve()), "data": str(data),
            "prompt_format": fmt, "train_on_prompt": train_on_prompt, "split": list(split),
            "split_seed": split_seed, "max_length": length, "trains": trains,
            "lora": lora_config.to_dict() if lora_config else None, "epochs": epochs,
            "from_scratch": from_scratch, "train": train.to_dict(), "precision": precision, "tokenizer": "tokenizer",
        }  # fmt: skip
        if env.is_main:
            finetune.prepare_run_folder(out_dir, tok, run_info, resume)
        checkpoint_config = finetune.checkpoint_config(net, run_info, lora_config)
        result = finetune.train_epochs(
            net, finetune.TrainingData(batches, eval_sets, net.config.vocab_size, out_dir / "tokenizer"),
            next_token_loss,
            epochs=epochs, train=train, env=env, precision=precision, out_dir=out_dir, run_info=run_info,
            resume=resume, model_config=checkpoint_config, score=None, say=say,
        )  # fmt: skip
        net = result.model  # the best epoch's weights (whole again after FSDP2)

        report: dict[str, Any] = {"history": result.history, "best_epoch": result.best}
        saved: dict[str, str] = {}
        if test_responses and env.is_main:
            say(f"answering {len(parts['test'])} test instructions")
            answers = respond(net, tok, parts["test"], fmt, template, max_new_tokens=max_new_tokens)
            write_json_atomic(out_dir / "responses.json", answers)
            report["test"] = text_scores([a["response"] for a in answers], [a["reference"] for a in answers])
            if baseline is not None:
                write_json_atomic(out_dir / "responses-before.json", baseline)
                before = [a["response"] for a in baseline]
                report["test_before"] = text_scores(before, [a["reference"] for a in baseline])
            say(f"test: ROUGE-L {report['test']['rouge_l']:.4f}, exact match {report['test']['exact_match']:.4f}")
        if env.is_main:
            write_json_atomic(out_dir / "metrics.json", report)
            if lora_config is not None and from_scratch:  # no file holds this base: save the merged model
                from scratchllm.model.lora import merge_lora

                merge_lora(net)
                lora_config = None
            saved = save_result(out_dir, net, tok, lora_config, str(Path(model).resolve()), say)
        return {
            **result.summary, "out_dir": str(out_dir), **saved,
            **{f"test_{k}": v for k, v in report.get("test", {}).items() if k != "examples"},
            "best_epoch": result.best.get("epoch") if result.best else None,
            "wall_seconds": round(time.perf_counter() - started, 1), "resumed_from": result.resumed_from,
        }  # fmt: skip


def save_result(
    out_dir: Path, net: Any, tokenizer: Any, lora: LoRAConfig | None, base_model: str, say: finetune.Log
) -> dict:
    """``RUN/model`` (full finetune) or ``RUN/adapter`` + ``RUN/adapter-peft`` (LoRA); their paths."""
    from scratchllm.weights import save_model

    if lora is None:
        tokenizer.save(out_dir / "model" / "tokenizer")  # first: write_folder keeps it when the weights land
        save_model(net, out_dir / "model")
        return {"model": str(out_dir / "model")}
    from scratchllm.weights.adapters import save_adapter, save_peft_adapter

    saved = {"adapter": str(save_adapter(net, lora, out_dir / "adapter", base_model=base_model))}
    try:
        saved["adapter_peft"] = str(save_peft_adapter(net, lora, net.config, out_dir / "adapter-peft", base_model))
    except ScratchLLMError as exc:
        say(f"no peft export: {exc}")
    return saved


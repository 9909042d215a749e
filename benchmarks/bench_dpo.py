"""DPO step time: ours (``scratchllm.train.dpo`` on the one training core) vs TRL's ``DPOTrainer``, same run.

Both train the same model (ours exported with ``scratchllm.weights.to_hf`` and loaded by transformers) on the
same preference pairs (the first ``--pairs`` of the book's preference set, prompt = instruction + input) with
the same settings: sigmoid loss, beta 0.1, summed log-probabilities, a frozen reference model, AdamW, fp32,
gradient clipping at 1.0, no gradient checkpointing, every step on the same batch. The tokenizer is a word-level
vocabulary of the data, built with ``tokenizers``, so both sides see identical token ids. Timing: the median
step after ``--warmup`` untimed ones. TRL runs first (its tokenization gives the ids both sides train on), then
ours twice, so a change in background load shows.

    .venv/bin/python benchmarks/bench_dpo.py                            # smollm2-135m shape, 4 pairs a step
    .venv/bin/python benchmarks/bench_dpo.py --preset llama-tiny --steps 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scratchllm.config import ModelConfig
from scratchllm.data.batches import ExampleBatches
from scratchllm.data.preference import PreferenceExample, collate
from scratchllm.model import GPTModel
from scratchllm.train.dpo import DPOLoss
from scratchllm.train.loop import Callback, Trainer
from scratchllm.train.optim import build_adamw
from scratchllm.weights import to_hf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rasbt" / "instruction-data-with-preference.json"


def pairs_and_tokenizer(path: Path, n: int, folder: Path):
    """The first ``n`` usable pairs as TRL rows and a word-level HF tokenizer covering them."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    rows = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        if record["chosen"] != record["rejected"]:
            prompt = record["instruction"] + (" " + record["input"] if record["input"] else "")
            rows.append({"prompt": prompt, "chosen": " " + record["chosen"], "rejected": " " + record["rejected"]})
        if len(rows) == n:
            break
    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({word for r in rows for text in r.values() for word, _ in split(text)})
    vocab = {"<pad>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return rows, fast


class _Times(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_end(self, trainer, metrics) -> None:
        self.seconds.append(metrics.seconds)


def time_ours(model: GPTModel, examples: list[PreferenceExample], steps: int, lr: float, beta: float) -> list[float]:
    policy = copy.deepcopy(model).train()
    batches = ExampleBatches(examples, len(examples), lambda ex: collate(ex, pad_id=0), shuffle=False)
    optimizer = build_adamw(policy, lr=lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    times = _Times()
    objective = DPOLoss(beta, reference_model=copy.deepcopy(model))
    Trainer(policy, optimizer, batches, max_steps=steps, loss_fn=objective, grad_clip=1.0, callbacks=[times]).fit()
    return times.seconds


def time_trl(folder: Path, rows: list[dict], tokenizer, steps: int, lr: float, beta: float, out: Path):
    import datasets
    import transformers
    import trl

    stamps: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps[-1] = time.perf_counter() - stamps[-1]

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    args = trl.DPOConfig(
        output_dir=str(out), beta=beta, loss_type=["sigmoid"], learning_rate=lr, max_steps=steps,
        per_device_train_batch_size=len(rows), lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch", max_grad_norm=1.0, gradient_checkpointing=False, logging_steps=10**6,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, max_length=None, bf16=False,
    )  # fmt: skip
    trainer = trl.DPOTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[Clock()],
    )  # fmt: skip
    data = trainer.train_dataset
    examples = [
        PreferenceExample(tuple(p), tuple(c), tuple(r))
        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])
    ]
    trainer.train()
    return stamps, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (one batch)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lr, beta, total = 1e-5, 0.1, args.warmup + args.steps

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        rows, tokenizer = pairs_and_tokenizer(args.data, args.pairs, folder)
        torch.manual_seed(0)
        model = GPTModel(ModelConfig.from_preset(args.preset, vocab_size=len(tokenizer), drop_rate=0.0))
        to_hf(model, folder)
        trl_times, examples = time_trl(folder, rows, tokenizer, total, lr, beta, Path(tmp) / "trl")
        ours_before = time_ours(model, examples, total, lr, beta)
        ours_after = time_ours(model, examples, total, lr, beta)

    tokens = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.preset} ({n_params / 1e6:.1f} M parameters, vocab {len(tokenizer)}), {args.pairs} pairs "
          f"({tokens} tokens) a step, fp32, {torch.get_num_threads()} threads; median of {args.steps} steps")  # fmt: skip
    for name, seconds in (("TRL DPOTrainer", trl_times), ("ours", ours_before), ("ours (again)", ours_after)):
        median = statistics.median(seconds[args.warmup :])
        print(f"  {name:<16} {median:8.3f} s/step   ({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()

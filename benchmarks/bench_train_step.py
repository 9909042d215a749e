"""Training-step throughput: our GPTModel vs Hugging Face GPT2LMHeadModel with the same weights.

One step = forward + cross-entropy + backward + AdamW update, fp32, dropout off for both (modern pretraining
setting; GPT-2's 0.1 can be chosen with --drop-rate). Both models hold identical weights: ours is exported with
scratchllm.weights.to_hf and loaded by transformers. Steps alternate between the two models so that background
load (other processes on the machine) affects both alike.

    .venv/bin/python benchmarks/bench_train_step.py                     # gpt2-small, batch 4 x 256
    .venv/bin/python benchmarks/bench_train_step.py --preset tiny --steps 2 --batch-size 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel
from scratchllm.weights import to_hf


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument(
        "--hf-labels", action="store_true", help="also time HF computing its own loss from labels= (shifted)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(args.preset, drop_rate=args.drop_rate)
    ours = GPTModel(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        to_hf(ours, Path(tmp) / "hf")
        hf = transformers.GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf")
    ours.train()
    hf.train()
    B, T, V = args.batch_size, args.seq_len, cfg.vocab_size
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))

    def ours_loss() -> torch.Tensor:
        return F.cross_entropy(ours(x).flatten(0, 1), y.flatten())

    def hf_loss() -> torch.Tensor:
        return F.cross_entropy(hf(input_ids=x).logits.flatten(0, 1), y.flatten())

    # HF's idiomatic call: labels are the inputs, shifted inside the model (one position fewer to predict).
    labels = torch.cat([x[:, :1], y], dim=1)[:, :T]

    def hf_labels_loss() -> torch.Tensor:
        return hf(input_ids=x, labels=labels).loss

    runs = {
        "scratchllm GPTModel": (ours_loss, torch.optim.AdamW(ours.parameters(), lr=1e-4, foreach=True)),
        "HF GPT2LMHeadModel": (hf_loss, torch.optim.AdamW(hf.parameters(), lr=1e-4, foreach=True)),
    }
    if args.hf_labels:
        runs["HF, labels= (own loss)"] = (hf_labels_loss, runs["HF GPT2LMHeadModel"][1])
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, float] = {}
    for step in range(args.warmup + args.steps):
        for name, (loss_fn, opt) in runs.items():
            t0 = time.perf_counter()
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - t0
            if step == 0 and name != "HF, labels= (own loss)":  # that one runs after HF's update
                losses[name] = loss.item()
            if step >= args.warmup:
                times[name].append(elapsed)

    print(
        f"training step, {args.preset} ({ours.num_parameters():,} params), batch {B} x {T}, fp32, "
        f"dropout {args.drop_rate}, {torch.get_num_threads()} threads, HF attn "
        f"{hf.config._attn_implementation}, transformers {transformers.__version__}, torch {torch.__version__}"
    )
    print("first-step loss: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    print(f"{'model':<24} {'median s/step':>14} {'tokens/s':>10} {'ours vs it':>11}")
    ours_median = statistics.median(times["scratchllm GPTModel"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<24} {med:>14.3f} {B * T / med:>10.0f} {med / ours_median:>10.2f}x")
    print(
        "Ours and 'HF GPT2LMHeadModel' compute the same loss on the same weights (equal first-step losses), so "
        "their ratio measures the models; 'labels=' is HF's own (shifted) loss path."
    )


if __name__ == "__main__":
    main()

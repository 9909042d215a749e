"""SMS spam classification: ours vs Hugging Face transformers + peft, same weights, split and hyperparameters.

Both sides start from the same GGUF file (transformers reads GGUF too), classify the book's balanced SMS Spam
set (all 747 spam + 747 ham drawn with a fixed seed, split 70/10/20 = 1,045/149/300 by our seeded split, which
both sides use), train with AdamW, the same warmup-cosine schedule, batch size, epochs and order of examples,
predict from the last real token, keep the epoch with the best validation accuracy, and report test accuracy,
seconds per epoch and peak resident memory. Each run is a separate process, so peak memory is its own.

Run: ``.venv/bin/python benchmarks/bench_classify.py --mode lora`` (``--mode full``, ``--epochs``,
``--limit N`` to train on N examples for a quick check; ``--sides ours`` to skip the peer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GGUF = SHARED / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMS = SHARED / "data" / "sms-spam-collection" / "SMSSpamCollection"
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def the_split(seed: int, limit: int | None):
    """The balanced 70/10/20 split, records as (text, label) with labels ham=0, spam=1 (sorted names)."""
    from scratchllm.data.classify import balance, label_names, read_labelled, split

    records = read_labelled(SMS, format="tsv", header=False, text_column="1", label_column="0")
    names = label_names(records)
    train, val, test = split(balance(records, seed), (0.7, 0.1, 0.2), seed)
    if limit:
        train, val, test = train[:limit], val[: max(8, limit // 7)], test[: max(8, limit // 3)]
    return names, train, val, test


# ---------------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace) -> dict:
    from scratchllm.config import LoRAConfig
    from scratchllm.recipes.classify import finetune_classify
    from scratchllm.recipes.finetune import FINETUNE_TRAIN

    _, train, val, test = the_split(args.seed, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, part in (("train", train), ("val", val), ("test", test)):
            files[name] = Path(tmp) / f"{name}.jsonl"
            files[name].write_text("\n".join(json.dumps({"text": r.text, "label": r.label}) for r in part))
        import dataclasses

        train_cfg = dataclasses.replace(
            FINETUNE_TRAIN, micro_batch_size=args.batch_size, lr=args.lr, min_lr=args.lr * args.min_lr_ratio,
            warmup_steps=args.warmup, weight_decay=args.weight_decay, precision="fp32", seed=args.seed,
            device="cpu", log_every=10,
        )  # fmt: skip
        summary = finetune_classify(
            GGUF, files["train"], out_dir=Path(tmp) / "run", val_data=files["val"], test_data=files["test"],
            trains="lora" if args.mode == "lora" else "all",
            lora=LoRAConfig(rank=16, alpha=args.lora_alpha, targets=["all"]), epochs=args.epochs, train=train_cfg,
            template=args.template,
        )  # fmt: skip
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text(encoding="utf-8"))
    return {
        "mistakes": [m["text"] for m in metrics["splits"]["test"]["mistakes"]],
        "test_accuracy": summary["test_accuracy"],
        "val_accuracy": summary["val_accuracy"],
        "seconds_per_epoch": summary["train_seconds"] / args.epochs,  # training steps only, as for the peer
        "peak_rss_mib": peak_rss_mib(),
    }


# ---------------------------------------------------------------------------------------------- peer
def run_peer(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from scratchllm.train.schedule import WarmupCosineSchedule

    torch.manual_seed(args.seed)
    names, train, val, test = the_split(args.seed, args.limit)
    index = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    model = AutoModelForSequenceClassification.from_pretrained(
        GGUF.parent, gguf_file=GGUF.name, num_labels=len(names), torch_dtype=torch.float32
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.config.pad_token_id = pad
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=16, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules=LINEARS, task_type="SEQ_CLS"
        )
        model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"peer trainable parameters: {sum(p.numel() for p in params):,}", file=sys.stderr)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.999),
    )  # fmt: skip

    def batch(records):
        texts = [r.text if args.template is None else args.template.replace("{text}", r.text) for r in records]
        ids = [tok(text)["input_ids"] for text in texts]
        longest = max(map(len, ids))
        x = torch.full((len(ids), longest), pad)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for row, seq in enumerate(ids):
            x[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return x, mask, torch.tensor([index[r.label] for r in records])

    @torch.no_grad()
    def mistakes(records):
        model.eval()
        wrong = []
        for i in range(0, len(records), args.batch_size):
            x, mask, y = batch(records[i : i + args.batch_size])
            hit = (model(input_ids=x, attention_mask=mask).logits.argmax(-1) == y).tolist()
            wrong += [r.text for r, ok in zip(records[i : i + args.batch_size], hit) if not ok]
        model.train()
        return wrong

    def accuracy(records):
        return 1 - len(mistakes(records)) / len(records)

    steps_per_epoch = len(train) // args.batch_size
    schedule = WarmupCosineSchedule(
        max_lr=args.lr, min_lr=args.lr * args.min_lr_ratio, warmup_steps=args.warmup,
        max_steps=args.epochs * steps_per_epoch,
    )  # fmt: skip
    model.train()
    step, best, best_state, train_seconds = 0, -1.0, None, 0.0
    for epoch in range(args.epochs):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + epoch)).tolist()
        start = time.perf_counter()
        for b in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = schedule(step)
            x, mask, y = batch([train[i] for i in order[b * args.batch_size : (b + 1) * args.batch_size]])
            loss = F.cross_entropy(model(input_ids=x, attention_mask=mask).logits.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        train_seconds += time.perf_counter() - start
        val_acc = accuracy(val)
        print(f"peer epoch {epoch + 1}: val accuracy {val_acc:.4f}", file=sys.stderr)
        if val_acc > best:
            best, best_state = val_acc, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        named = dict(model.named_parameters())
        for n, t in (best_state or {}).items():
            named[n].copy_(t)
    missed = mistakes(test)
    return {
        "mistakes": missed,
        "test_accuracy": 1 - len(missed) / len(test),
        "val_accuracy": best,
        "seconds_per_epoch": train_seconds / args.epochs,
        "peak_rss_mib": peak_rss_mib(),
    }


# ---------------------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["lora", "full"], default="lora")
    parser.add_argument("--sides", nargs="+", choices=["ours", "peer"], default=["ours", "peer"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (full finetuning: try 5e-5)")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale numerator (rank 16)")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--limit", type=int, default=None, help="train examples (quick check)")
    parser.add_argument("--template", default=None, help='wrap every text, e.g. "SMS: {text}\\nSpam?" (both sides)')
    parser.add_argument("--child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (run_ours if args.child == "ours" else run_peer)(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for side in args.sides:
        argv = [sys.executable, __file__, *sys.argv[1:], "--child", side]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{side} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results[side] = json.loads(lines[-1][len("RESULT ") :])
    print(f"SMS spam, SmolLM2-135M ({args.mode}, {args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr})")
    print(f"{'':8} {'test acc':>9} {'val acc':>9} {'s/epoch':>9} {'peak MiB':>9}")
    for side, r in results.items():
        print(
            f"{side:8} {100 * r['test_accuracy']:>8.2f}% {100 * r['val_accuracy']:>8.2f}% "
            f"{r['seconds_per_epoch']:>9.1f} {r['peak_rss_mib']:>9.0f}"
        )
    if len(results) == 2:  # does the gap come from the code or from the data? compare the texts each misses
        ours, peer = (set(r["mistakes"]) for r in results.values())
        for title, texts in (("missed by both", ours & peer), ("only ours", ours - peer), ("only peer", peer - ours)):
            print(f"{title} ({len(texts)}):")
            for text in sorted(texts):
                print(f"  {text[:100]!r}")
    if not math.isfinite(sum(r["seconds_per_epoch"] for r in results.values())):
        sys.exit(1)


if __name__ == "__main__":
    main()

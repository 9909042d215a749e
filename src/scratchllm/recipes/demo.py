"""The whole pipeline in one readable script: text -> tokenizer -> shards -> GPT -> generated text.

This is what ``bash scripts/demo.sh`` (``scratchllm demo``) runs. With no input it uses the embedded default
corpus: the docstrings and comments of the installed Python standard library, which exist on every machine that
has Python. Each step is one call into the library, so the script doubles as a map of the public API:

1. corpus      :func:`scratchllm.data.embedded.stdlib_corpus` (or your files)
2. tokenizer   :func:`scratchllm.tokenizer.train_bpe` -> ``out_dir/tokenizer``
3. shards      :func:`scratchllm.data.prepare.prepare` -> ``out_dir/data``
4. pretrain    :func:`scratchllm.recipes.pretrain.run_pretrain` -> ``out_dir/pretrain`` (metrics.csv, loss.png,
               checkpoints)
5. generate    :func:`scratchllm.generation.generate_text` from the final checkpoint
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scratchllm.config import DataSpec, ModelSpec, TrainConfig

# A few-million-parameter GPT sized for about ten minutes on two CPU cores (mirrored by configs/demo-cpu.yaml,
# which a test keeps equal to these values).
DEMO_MODEL = ModelSpec(preset="tiny", context_length=128, emb_dim=192, n_heads=6, n_layers=4, drop_rate=0.0)
DEMO_TRAIN = TrainConfig(
    micro_batch_size=16,
    max_steps=1000,
    max_minutes=10,
    lr=2.0e-3,
    min_lr=2.0e-4,
    warmup_steps=30,
    weight_decay=0.1,
    grad_clip=1.0,
    precision="auto",
    eval_every=125,
    eval_batches=8,
    log_every=10,
    save_every=250,
    keep_last=1,
    sample_prompt="The",
    sample_tokens=40,
)
DEMO_PROMPTS = ("Return the", "The default value", "If the file")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _corpus_texts(files: Sequence[Path]) -> list[str]:
    """Every document of the given files, read the same way ``prepare`` reads them."""
    from scratchllm.data.readers import read_documents

    return [doc.text for path in files for doc in read_documents(path)]


def _val_losses(metrics_csv: Path) -> list[tuple[int, float]]:
    """(tokens seen, val loss) at each evaluation, read back from the metrics log."""
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val_loss")]
    return [(int(float(row.get("tokens_seen") or 0)), float(row["val_loss"])) for row in rows]


def run_demo(
    inputs: Sequence[str | Path] | None = None,
    out_dir: str | Path = "runs/demo",
    *,
    vocab_size: int = 4096,
    model: ModelSpec = DEMO_MODEL,
    train: TrainConfig = DEMO_TRAIN,
    prompts: Sequence[str] = DEMO_PROMPTS,
    max_new_tokens: int = 60,
    workers: int = 2,
    log: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Run the five steps and return a summary (paths, losses, generated texts)."""
    from scratchllm.data.embedded import stdlib_corpus
    from scratchllm.data.prepare import prepare
    from scratchllm.data.readers import expand_inputs
    from scratchllm.generation import generate_text
    from scratchllm.model import optimize_for_decoding
    from scratchllm.recipes.pretrain import run_pretrain
    from scratchllm.tokenizer import load, train_bpe
    from scratchllm.weights import load_model

    out = Path(out_dir)
    started = time.perf_counter()

    log("== 1/5 corpus")
    if inputs:
        files = expand_inputs(list(inputs))
    else:
        files = [stdlib_corpus(out / "corpus")]
        log(
            f"embedded default corpus: Python {sys.version.split()[0]} standard-library docstrings and comments"
        )
    texts = _corpus_texts(files)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    log(f"{len(texts):,} documents, {n_bytes / 1e6:.2f} MB from {len(files)} file(s)")

    log(f"== 2/5 tokenizer: byte-level BPE, vocabulary {vocab_size:,}")
    tokenizer = train_bpe(texts, vocab_size, progress=True, name="demo-bpe")
    tokenizer_dir = out / "tokenizer"
    tokenizer.save(tokenizer_dir)
    sample = texts[0][:200]
    log(f"{len(sample)} characters of the corpus -> {len(tokenizer.encode_ordinary(sample))} tokens")

    log("== 3/5 token shards")
    meta = prepare(files, tokenizer_dir, out / "data", workers=workers, overwrite=True, val_fraction=0.02)
    splits = meta.get("splits", {})
    log(", ".join(f"{name}: {info.get('tokens', 0):,} tokens" for name, info in splits.items()))

    log("== 4/5 pretrain")
    train = replace(train, sample_prompt=prompts[0] if prompts else train.sample_prompt)
    summary = run_pretrain(model, DataSpec(dirs=[out / "data"]), train, out / "pretrain", log=log)
    curve = _val_losses(out / "pretrain" / "metrics.csv")
    if curve:
        log(f"val loss {curve[0][1]:.3f} -> {curve[-1][1]:.3f} over {curve[-1][0]:,} tokens")
    log(f"loss curve: {out / 'pretrain' / 'loss.png'}")

    log("== 5/5 generate")
    checkpoint = summary.get("checkpoint")
    net = optimize_for_decoding(load_model(checkpoint)) if checkpoint else None
    generated: dict[str, str] = {}
    if net is not None:
        tok = load(tokenizer_dir)
        for prompt in prompts:
            text = generate_text(
                net, tok, prompt, max_new_tokens=max_new_tokens, temperature=0.8, top_k=40, seed=0
            )
            generated[prompt] = text
            print(f"\n>>> {prompt}{text}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    log(f"\ndone in {minutes:.1f} min; everything is in {out}/")
    return {
        "out_dir": str(out),
        "tokenizer": str(tokenizer_dir),
        "data": str(out / "data"),
        "checkpoint": checkpoint,
        "val_losses": curve,
        "generated": generated,
        "pretrain": summary,
    }

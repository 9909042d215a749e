"""BPE training: ours vs Hugging Face ``tokenizers`` (BpeTrainer, ByteLevel pre-tokenizer), same vocab, same run.

English: train a vocab of 8192 on gutenberg-en minus one held-out book (~8.5 MB), report training time and
held-out bytes per token (higher = better compression) for both. Chinese: train 8192 on gutenberg-zh minus one
held-out book and compare tokens per character on it with GPT-2's tokenizer (lower = better).
Run: ``.venv/bin/python benchmarks/bench_bpe_train.py`` (``--zh-chars`` limits the Chinese training text).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def hf_train(files: list[Path], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(f) for f in files], trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--zh-chars", type=int, default=2_000_000, help="Chinese training characters")
    args = parser.parse_args()

    from scratchllm.tokenizer import load, train_bpe

    en_files = sorted((args.data / "gutenberg-en").glob("*.txt"))
    en_train, en_held = en_files[:-1], en_files[-1].read_text(encoding="utf-8")
    mb = sum(f.stat().st_size for f in en_train) / 1e6
    start = time.perf_counter()
    ours = train_bpe(en_train, args.vocab_size)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    hf = hf_train(en_train, args.vocab_size)
    t_hf = time.perf_counter() - start
    held_bytes = len(en_held.encode("utf-8"))
    bpt_ours = held_bytes / len(ours.encode_ordinary(en_held))
    bpt_hf = held_bytes / len(hf.encode(en_held).ids)

    print(f"BPE training, vocab {args.vocab_size}, {mb:.1f} MB of gutenberg-en (CPU: {os.cpu_count()} cores)")
    print(f"{'trainer':<26}{'seconds':>9}{'held-out bytes/token':>22}")
    print(f"{'scratchllm train_bpe':<26}{t_ours:>9.1f}{bpt_ours:>22.3f}")
    print(f"{'HF tokenizers BpeTrainer':<26}{t_hf:>9.1f}{bpt_hf:>22.3f}")
    print(
        f"time ratio ours/HF: {t_ours / t_hf:.2f} (target <= 3); bytes/token ratio ours/HF: {bpt_ours / bpt_hf:.3f}"
    )

    zh_files = sorted((args.data / "gutenberg-zh").glob("*.txt"))
    zh_train = "".join(f.read_text(encoding="utf-8") for f in zh_files[:-1])[: args.zh_chars]
    zh_held = zh_files[-1].read_text(encoding="utf-8")
    start = time.perf_counter()
    zh = train_bpe(zh_train, args.vocab_size)
    t_zh = time.perf_counter() - start
    gpt2 = load(args.data / "gpt2-tokenizer")
    tpc_zh = len(zh.encode_ordinary(zh_held)) / len(zh_held)
    tpc_gpt2 = len(gpt2.encode_ordinary(zh_held)) / len(zh_held)
    print()
    print(f"Chinese: vocab {args.vocab_size} trained on {len(zh_train) / 1e6:.1f}M characters in {t_zh:.1f}s")
    print(f"held-out tokens/char: ours {tpc_zh:.3f}, GPT-2 {tpc_gpt2:.3f} (ratio {tpc_zh / tpc_gpt2:.2f})")


if __name__ == "__main__":
    main()

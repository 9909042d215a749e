"""Throughput of ``prepare`` (read, clean, filter, dedup, tokenize, write shards) against raw tiktoken.

Run: ``.venv/bin/python benchmarks/bench_prepare.py`` (needs ../shared/data). The corpus is the Project Gutenberg
books in gutenberg-en and gutenberg-zh (~18 MB of English and Chinese). The peer is tiktoken's own
``encode_ordinary_batch`` with the same GPT-2 ranks on the same, already decoded texts: tokenization alone, no
I/O. Our figure includes everything ``prepare`` does. Each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import tiktoken
    import tiktoken.load

    from scratchllm.data.prepare import prepare
    from scratchllm.tokenizer import GPT2_PATTERN

    tokenizer_dir = DATA / "gpt2-tokenizer"
    files = sorted((DATA / "gutenberg-en").glob("*.txt")) + sorted((DATA / "gutenberg-zh").glob("*.txt"))
    if not files:
        sys.exit(f"no data under {DATA}")
    texts = [f.read_text(encoding="utf-8") for f in files]
    megabytes = sum(f.stat().st_size for f in files) / 1e6

    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        str(tokenizer_dir / "vocab.bpe"), str(tokenizer_dir / "encoder.json")
    )
    enc = tiktoken.Encoding("gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})

    def cpu_seconds() -> float:
        """User + system time of this process and of its finished children (the prepare workers)."""
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def best(fn) -> tuple[float, float]:
        """(best wall seconds, CPU seconds of that run) over ``--repeat`` runs."""
        runs = []
        for _ in range(args.repeat):
            cpu, start = cpu_seconds(), time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start, cpu_seconds() - cpu))
        return min(runs)

    rows = []
    for threads in (1, 2):
        seconds = best(lambda threads=threads: enc.encode_ordinary_batch(texts, num_threads=threads))
        rows.append((f"tiktoken encode_ordinary_batch, {threads} thread(s)", seconds))
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            seconds = best(
                lambda workers=workers, out=out: prepare(
                    [str(f) for f in files],
                    tokenizer_dir,
                    out,
                    workers=workers,
                    overwrite=True,
                    progress=False,
                )
            )
            rows.append((f"scratchllm prepare, {workers} worker(s)", seconds))

    print(f"corpus: {len(files)} books, {megabytes:.1f} MB (gutenberg-en + gutenberg-zh), GPT-2 tokenizer")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (wall figures need idle CPUs)"
    )
    print(f"{'':48}  {'seconds':>8}  {'MB/s':>6}  {'CPU s':>6}")
    for name, (seconds, cpu) in rows:
        print(f"{name:48}  {seconds:8.2f}  {megabytes / seconds:6.2f}  {cpu:6.2f}")
    ratio = rows[1][1][0] / rows[3][1][0]
    print(f"prepare (2 workers) / tiktoken raw (2 threads), throughput: {ratio:.2f}x  (target >= 0.8x)")
    print(f"CPU time, tiktoken raw / prepare (2 workers): {rows[1][1][1] / rows[3][1][1]:.2f}x")


if __name__ == "__main__":
    main()

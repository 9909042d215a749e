"""Generation throughput: our KV-cached and uncached decoding vs Hugging Face ``generate``, same weights.

Greedy decoding, batch 1, a random prompt of --prompt-len tokens and --new-tokens new tokens (the EOS token is
never allowed to stop either side early: ours has no eos_id, HF gets ``min_new_tokens``). Weights are random
(no downloads); ours are exported with scratchllm.weights.to_hf and loaded by transformers. Tokens/s counts new
tokens over the whole call (prefill included). The run also checks that all decoders produce the same tokens.

"ours" is the model as ``scratchllm generate`` prepares it (:func:`scratchllm.model.optimize_for_decoding`:
column-major weights on CPU); the "row-major" row is the same model without that step. Decoding one token
reads every weight once, so the last line gives the ceiling that this machine's memory bandwidth (measured
here by summing a 512 MiB tensor) puts on any implementation at each precision.

    .venv/bin/python benchmarks/bench_generation.py                       # gpt2-small, 32 + 200, fp32 and bf16
    .venv/bin/python benchmarks/bench_generation.py --preset tiny --new-tokens 20 --dtypes fp32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from _common import hf_greedy, read_bandwidth, time_interleaved  # benchmarks/_common.py
from scratchllm.config import ModelConfig
from scratchllm.generation import generate
from scratchllm.model import GPTModel, optimize_for_decoding, set_weight_layout
from scratchllm.weights import to_hf

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timed rounds (median shown; uncached runs once)"
    )
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--skip-uncached", action="store_true", help="skip our uncached path (the slowest)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(args.preset)
    base = GPTModel(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        to_hf(base, Path(tmp) / "hf")
        hf_base = transformers.GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_len))
    n = args.new_tokens

    print(
        f"generation, {args.preset} ({base.num_parameters():,} params), prompt {args.prompt_len} + {n} new, "
        f"greedy, batch 1, {torch.get_num_threads()} threads, transformers {transformers.__version__}, "
        f"torch {torch.__version__}"
    )
    print(f"{'dtype':<6} {'model':<28} {'tokens/s':>9} {'vs HF':>7} {'vs uncached':>12} {'same tokens':>12}")
    bandwidth = read_bandwidth()
    for name in args.dtypes:
        dtype = DTYPES[name]
        ours = optimize_for_decoding(base.to(dtype))
        row_major = set_weight_layout(copy.deepcopy(ours), "row")
        run_dtype(name, ours, row_major, hf_base.to(dtype), prompt, n, args.repeats, args.skip_uncached)
        weight_bytes = ours.num_parameters(exclude_embeddings=True) * dtype.itemsize
        print(
            f"{name:<6} memory-bandwidth ceiling: {bandwidth / 1e9:.1f} GB/s read / "
            f"{weight_bytes / 1e6:.0f} MB of weights per token = {bandwidth / weight_bytes:.1f} tokens/s"
        )


def run_dtype(
    name: str,
    ours: GPTModel,
    row_major: GPTModel,
    hf: Any,
    prompt: torch.Tensor,
    n: int,
    repeats: int,
    skip_uncached: bool,
) -> None:
    """Time the three decoders for one dtype and print their rows."""
    hf_generate = hf_greedy(hf, prompt)

    rows = {
        "ours, KV cache": lambda k: generate(ours, prompt, k, use_cache=True)[0],
        "ours, KV cache, row-major": lambda k: generate(row_major, prompt, k, use_cache=True)[0],
        "HF generate (use_cache)": hf_generate,
    }
    if not skip_uncached:
        rows["ours, no cache"] = lambda k: generate(ours, prompt, k, use_cache=False)[0]
    for fn in rows.values():  # warm-up: allocator, kernels, lazy initialisation
        fn(min(n, 4))
    # The slow uncached path runs in the first round only.
    fns = {label: (lambda fn=fn: fn(n)) for label, fn in rows.items()}
    times, outputs = time_interleaved(fns, repeats, first_round_only={"ours, no cache"})
    results = {label: (statistics.median(times[label]), outputs[label]) for label in rows}
    ref_tokens = results["ours, KV cache"][1]
    hf_rate = n / results["HF generate (use_cache)"][0]
    uncached = results.get("ours, no cache")
    for label, (seconds, tokens) in results.items():
        rate = n / seconds
        vs_uncached = f"{rate / (n / uncached[0]):.2f}x" if uncached else "-"
        # bf16 logits are coarse: near-ties can break differently, so only fp32 is expected to match exactly.
        same = "yes" if tokens == ref_tokens else f"{sum(a == b for a, b in zip(tokens, ref_tokens))}/{n}"
        print(f"{name:<6} {label:<28} {rate:>9.1f} {rate / hf_rate:>6.2f}x {vs_uncached:>12} {same:>12}")


if __name__ == "__main__":
    main()

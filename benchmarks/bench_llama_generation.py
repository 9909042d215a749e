"""Decoding a real Llama-family model: ours in fp32, bf16 and int8 vs Hugging Face ``generate`` and llama.cpp.

SmolLM2-135M-Instruct from its Q4_1 GGUF file, on CPU, batch 1: a --prompt-len token prompt (English text
from our tokenizer) and exactly --tokens greedy new tokens for every implementation (the end-of-turn token never
stops anyone: ours gets no eos_id, HF gets ``min_new_tokens``, llama.cpp's token stream is simply read on).
Tokens/s counts new tokens over the whole call, prefill included; the median of --rounds interleaved rounds.

* **ours**: ``scratchllm.weights.load`` (dequantizes to float), then
  :func:`scratchllm.model.quantize.quantize_for_decoding` in each format: fp32, bf16, or int8 weight-only
  (int8 weights with a per-row scale, bf16 activations); every one-token product goes through our
  matrix-vector kernel (:mod:`scratchllm.model.matvec`). "ours, packed" is fp32 with oneDNN-packed weights
  instead (what ``serve`` uses beyond 8 slots).
* **ours, compiled** (``--compile``): the same, with each one-token step run through ``torch.compile``
  (``generate(..., compile=True)``: a static KV cache, the step's small operations fused); the time of the
  first call, which compiles, is printed apart and not counted.
* **HF**: ``transformers`` loads the same GGUF (dequantized to fp32) and runs ``generate``, in fp32 and bf16
  (it has no int8 CPU path of its own, so ours in int8 is compared with its fastest, bf16).
* **llama.cpp** (``llama-cpp-python``, the ``bench`` extra) reads the Q4_1 file directly, with the same number
  of threads; skipped with a note when it is not installed.

Decoding one token reads every weight matrix once, so each row also shows the megabytes of weights read per
token and the ceiling that puts on tokens/s: memory bandwidth (measured in this run) / bytes per token. The
run checks that ours and HF produce the same tokens in fp32 and counts agreement for the others.

    .venv/bin/python benchmarks/bench_llama_generation.py                   # 3 rounds, 200 tokens
    .venv/bin/python benchmarks/bench_llama_generation.py --rounds 1 --tokens 20 --formats int8
    .venv/bin/python benchmarks/bench_llama_generation.py --compile     # adds torch.compile'd steps
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from _common import hf_greedy, read_bandwidth, time_interleaved
from scratchllm.generation import generate
from scratchllm.model.decoding_layout import optimize_for_decoding, packing_available
from scratchllm.model.quantize import WEIGHT_FORMATS, quantize_for_decoding
from scratchllm.weights import load

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based ink and a wooden press adapted from those used to make wine. "
)
HF_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a Llama-family .gguf file")
    parser.add_argument("--threads", type=int, default=0, help="torch and llama.cpp threads (0 = torch default)")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per call")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (median shown)")
    parser.add_argument("--formats", nargs="+", default=list(WEIGHT_FORMATS), choices=WEIGHT_FORMATS)
    parser.add_argument("--skip-hf", action="store_true", help="leave Hugging Face out")
    parser.add_argument(
        "--compile", action="store_true", help="also ours with torch.compile'd decoding steps, in every format"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    n = args.tokens

    t0 = time.perf_counter()
    loaded = load(args.model, device="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - t0
    ids = loaded.tokenizer.encode(PROMPT_TEXT * (1 + args.prompt_len // 8))[: args.prompt_len]
    prompt = torch.tensor([ids])
    print(
        f"{args.model.name}: {loaded.model.num_parameters():,} params, prompt {len(ids)} + {n} new tokens, "
        f"greedy, batch 1, {threads} threads, torch {torch.__version__}"
    )
    loads = [f"ours (scratchllm.weights.load) {load_s:.1f} s"]

    # name -> (format, implementation, peer format for "vs HF", bytes read per token, run(k) -> tokens)
    rows: dict[str, tuple[str, str, str | None, int, Callable[[int], list[int]]]] = {}
    for fmt in args.formats:
        model = quantize_for_decoding(copy.deepcopy(loaded.model), fmt)
        rows[f"ours {fmt}"] = (fmt, "ours", "fp32" if fmt == "fp32" else "bf16", weight_bytes(model), ours_fn(model, prompt))
        if fmt == "fp32" and packing_available():  # the same weights, packed by oneDNN (what our CLIs use)
            model = optimize_for_decoding(copy.deepcopy(loaded.model).float(), pack=True)
            rows["ours fp32 packed"] = (fmt, "ours, packed", "fp32", weight_bytes(model), ours_fn(model, prompt))
        if args.compile:
            model = quantize_for_decoding(copy.deepcopy(loaded.model), fmt)
            peer = "fp32" if fmt == "fp32" else "bf16"
            rows[f"ours {fmt} compiled"] = (
                fmt, "ours, compiled", peer, weight_bytes(model), ours_fn(model, prompt, compile=True)
            )  # fmt: skip
    if not args.skip_hf:
        hf_load_s, hf_rows = hf_generators(args.model, prompt, [f for f in args.formats if f in HF_DTYPES])
        loads.append(f"HF transformers {hf_load_s:.1f} s")
        for fmt, (nbytes, fn) in hf_rows.items():
            rows[f"HF {fmt}"] = (fmt, "HF generate", None, nbytes, fn)
    llama = llama_cpp_generator(args.model, ids, threads)
    if llama is None:
        print("llama.cpp: skipped (llama_cpp is not importable; pip install -e '.[bench]')")
    else:
        llama_load_s, nbytes, fn = llama
        loads.append(f"llama.cpp {llama_load_s:.1f} s")
        rows["llama.cpp Q4_1"] = ("Q4_1", "llama.cpp", None, nbytes, fn)
    del loaded
    print(f"time to load the GGUF file: {', '.join(loads)}")

    for name, (_, _, _, _, fn) in rows.items():  # warm-up: allocator, kernels, lazy initialisation, compiling
        t0 = time.perf_counter()
        fn(min(n, 4))
        if name.endswith("compiled"):
            print(f"{name}: first call (compiles, or reuses the on-disk cache) {time.perf_counter() - t0:.1f} s")
    bandwidth = read_bandwidth()
    times, outputs = time_interleaved({name: (lambda fn=row[4]: fn(n)) for name, row in rows.items()}, args.rounds)
    rate = {name: n / statistics.median(seconds) for name, seconds in times.items()}
    print(f"memory bandwidth (read, {threads} threads): {bandwidth / 1e9:.1f} GB/s; {args.rounds} rounds, median")
    print(
        f"{'format':<7} {'implementation':<15} {'tokens/s':>9} {'vs HF':>11} {'vs llama.cpp':>13} "
        f"{'MB/token':>9} {'bound tok/s':>12} {'of bound':>9} {'same tokens as ours fp32':>25}"
    )
    reference = outputs.get("ours fp32")
    for name, (fmt, impl, hf_peer, nbytes, _) in rows.items():
        bound = bandwidth / nbytes
        vs_hf = f"HF {hf_peer}" if hf_peer and f"HF {hf_peer}" in rate else None
        vs_hf_text = f"{rate[name] / rate[vs_hf]:.2f}x" if vs_hf else "-"
        if vs_hf and hf_peer != fmt:
            vs_hf_text += f" ({hf_peer})"
        vs_llama = f"{rate[name] / rate['llama.cpp Q4_1']:.2f}x" if "llama.cpp Q4_1" in rate else "-"
        same = "-" if reference is None else agreement(outputs[name], reference)
        print(
            f"{fmt:<7} {impl:<15} {rate[name]:>9.1f} {vs_hf_text:>11} {vs_llama:>13} {nbytes / 1e6:>9.0f} "
            f"{bound:>12.1f} {rate[name] / bound:>8.0%} {same:>25}"
        )
    if reference is not None and "HF fp32" in outputs:
        verdict = "yes" if outputs["HF fp32"] == reference else "NO"
        print(f"ours and HF produce the same {n} tokens in fp32: {verdict}")


def agreement(tokens: list[int], reference: list[int]) -> str:
    """``"yes"`` for identical lists, else how many positions agree before and after the first difference."""
    if tokens == reference:
        return "yes"
    pairs = list(zip(tokens, reference, strict=False))
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
    same = sum(a == b for a, b in pairs)
    return f"first {first}, {same}/{len(reference)}"


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every tensor except the embedding table (one row per token;
    a table tied to the LM head is read whole by the head and counted there)."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def ours_fn(model: nn.Module, prompt: torch.Tensor, compile: bool = False) -> Callable[[int], list[int]]:
    return lambda k: generate(model, prompt, k, use_cache=True, compile=compile)[0]


def hf_generators(
    path: Path, prompt: torch.Tensor, formats: list[str]
) -> tuple[float, dict[str, tuple[int, Callable[[int], list[int]]]]]:
    """Load the GGUF with transformers once (fp32) and return its load time and ``generate`` per format."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    base = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    load_s = time.perf_counter() - t0
    out = {}
    for fmt in formats:
        hf = copy.deepcopy(base).to(HF_DTYPES[fmt])
        out[fmt] = (weight_bytes(hf), hf_greedy(hf, prompt))
    return load_s, out


def llama_cpp_generator(
    path: Path, ids: list[int], threads: int
) -> tuple[float, int, Callable[[int], list[int]]] | None:
    """llama.cpp on the same file and threads: (load seconds, bytes per token, greedy run), or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    import gguf

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=len(ids) + 1024,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}
    nbytes = sum(tensors.values())
    if "output.weight" in tensors:  # untied head: the embedding table is looked up, not read whole
        nbytes -= tensors["token_embd.weight"]

    def run(k: int) -> list[int]:
        llm.reset()
        out: list[int] = []
        # temp=0 is greedy; the stream does not stop at end-of-turn, it goes on until it is closed.
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            out.append(token)
            if len(out) == k:
                break
        return out

    return load_s, nbytes, run


if __name__ == "__main__":
    main()

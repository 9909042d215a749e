"""One linear layer while decoding: our matrix-vector kernel against PyTorch's kernels, in fp32, bf16 and int8.

The shapes are SmolLM2-135M's (qkv, attention output, gate+up, down, and the 49152-row LM head); ``rows`` is
how many sequences decode together (1: ``generate``; 4-16: a server's batch). Each layer's weights are spread
over 30 copies (one per transformer block) so that, as in a real decoding step, they come from memory, not
from the cache; the LM head is one matrix. Per format, the contenders run interleaved, ``--rounds`` times:

* fp32: ``F.linear`` on row-major and column-major weights (MKL), oneDNN-packed weights, and ours;
* bf16: ``F.linear`` on row-major weights, and ours;
* int8 (weight-only, one scale per row, bf16 activations): ``torch.ops.aten._weight_int8pack_mm``, and ours.

It prints the median milliseconds per call, ours' read bandwidth, and ours' speed-up over the best of PyTorch's.

Run: ``.venv/bin/python benchmarks/bench_decode_linear.py [--rows 1 8] [--formats fp32 bf16 int8] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from _common import time_interleaved
from scratchllm.model.decoding_layout import packing_available
from scratchllm.model.matvec import matvec, matvec_available
from scratchllm.model.quantize import quantize_int8

REPEATS = 4  # passes over the blocks per timed call
SHAPES = {"qkv": (960, 576), "out": (576, 576), "gate+up": (3072, 576), "down": (576, 1536), "lm_head": (49152, 576)}


def all_blocks(calls: list[Callable[[], torch.Tensor]]) -> Callable[[], None]:
    """One timed unit: every block's call (``calls``), :data:`REPEATS` times over."""

    def run() -> None:
        for _ in range(REPEATS):
            for call in calls:
                call()

    return run


def contenders(fmt: str, weights: list[torch.Tensor], x: torch.Tensor) -> dict[str, list[Callable[[], torch.Tensor]]]:
    """Name -> one call per copy of the weights, for ``fmt``; ours last."""
    if fmt == "int8":
        quantized = [quantize_int8(w) for w in weights]
        quantized = [(q, s.bfloat16()) for q, s in quantized]
        x = x.bfloat16()
        return {
            "torch int8": [lambda q=q, s=s: torch.ops.aten._weight_int8pack_mm(x, q, s) for q, s in quantized],
            "ours": [lambda q=q, s=s: matvec(x, q, s) for q, s in quantized],
        }
    dtype = torch.float32 if fmt == "fp32" else torch.bfloat16
    weights = [w.to(dtype) for w in weights]
    x = x.to(dtype)
    calls = {"row-major": [lambda w=w: F.linear(x, w) for w in weights]}
    if fmt == "fp32":
        columns = [w.t().contiguous().t() for w in weights]
        calls["col-major"] = [lambda w=w: F.linear(x, w) for w in columns]
        if packing_available():
            packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
            calls["packed"] = [
                lambda p=p: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for p in packed
            ]
    calls["ours"] = [lambda w=w: matvec(x, w) for w in weights]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="+", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not matvec_available():
        raise SystemExit("the matrix-vector kernel is unavailable here (see the message above)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"ms per call, median of {args.rounds} interleaved rounds, {args.threads} threads, torch {torch.__version__}")
    for fmt in args.formats:
        bytes_per_weight = {"fp32": 4, "bf16": 2, "int8": 1}[fmt]
        step: dict[tuple[int, str], float] = {}  # (rows, contender) -> ms for one decoding step's products
        for name, (out_features, in_features) in SHAPES.items():
            copies = 1 if name == "lm_head" else 30
            weights = [torch.randn(out_features, in_features) for _ in range(copies)]
            for rows in args.rows:
                calls = contenders(fmt, weights, torch.randn(rows, in_features))
                if name == "qkv" and rows == args.rows[0]:
                    print(f"\n{fmt}: {'layer':<8} {'shape':>11} {'rows':>5} "
                          + " ".join(f"{k:>10}" for k in calls) + f" {'ours GB/s':>10} {'speed-up':>9}")
                for fns in calls.values():  # warm-up: kernel selection, first-touch of the weights
                    fns[0]()
                times, _ = time_interleaved({k: all_blocks(v) for k, v in calls.items()}, args.rounds)
                ms = {k: statistics.median(v) / (REPEATS * copies) * 1e3 for k, v in times.items()}
                for k, v in ms.items():
                    step[rows, k] = step.get((rows, k), 0.0) + v * (1 if name == "lm_head" else 30)
                best_peer = min(v for k, v in ms.items() if k != "ours")
                gbps = out_features * in_features * bytes_per_weight / (ms["ours"] * 1e-3) / 1e9
                print(f"{'':6}{name:<8} {f'{out_features}x{in_features}':>11} {rows:>5} "
                      + " ".join(f"{v:>10.3f}" for v in ms.values()) + f" {gbps:>10.1f} {best_peer / ms['ours']:>8.2f}x")
        for rows in args.rows:
            totals = {k: v for (r, k), v in step.items() if r == rows}
            best_peer = min(v for k, v in totals.items() if k != "ours")
            print(f"{'':6}{'one step':<8} {'(30 blocks)':>11} {rows:>5} "
                  + " ".join(f"{v:>10.2f}" for v in totals.values()) + f" {'':>10} {best_peer / totals['ours']:>8.2f}x")


if __name__ == "__main__":
    main()

"""One linear layer while decoding: plain row-major and column-major weights (MKL) vs oneDNN-packed weights.

The shapes are SmolLM2-135M's (qkv, attention output, gate+up, down, and the 49152-row LM head); ``rows`` is
how many sequences decode together (1: ``generate``; 4-16: a server's batch). Each layer's weights are spread
over 30 copies (one per transformer block) so that, as in a real decoding step, they come from memory, not
from the cache; the LM head is one matrix. The three layouts run interleaved, ``--rounds`` times, and the
median milliseconds per call are shown with the packed layout's speed-up over the better plain one.

Run: ``.venv/bin/python benchmarks/bench_decode_linear.py [--rows 1 8] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from _common import time_interleaved

REPEATS = 4  # passes over the blocks per timed call
SHAPES = {"qkv": (960, 576), "out": (576, 576), "gate+up": (3072, 576), "down": (576, 1536), "lm_head": (49152, 576)}


def all_blocks(calls: list[Callable[[], torch.Tensor]]) -> Callable[[], None]:
    """One timed unit: every block's call (``calls``), :data:`REPEATS` times over."""

    def run() -> None:
        for _ in range(REPEATS):
            for call in calls:
                call()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"ms per call, median of {args.rounds} interleaved rounds, {args.threads} threads, torch {torch.__version__}")
    print(f"{'layer':<8} {'shape':>11} {'rows':>5} {'row-major':>10} {'col-major':>10} {'packed':>8} {'speed-up':>9}")
    for name, (out_features, in_features) in SHAPES.items():
        copies = 1 if name == "lm_head" else 30
        weights = [torch.randn(out_features, in_features) for _ in range(copies)]
        columns = [w.t().contiguous().t() for w in weights]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
        for rows in args.rows:
            x = torch.randn(rows, in_features)
            layouts = {
                "row": [lambda w=w, x=x: F.linear(x, w) for w in weights],
                "column": [lambda w=w, x=x: F.linear(x, w) for w in columns],
                "packed": [
                    lambda p=p, x=x: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for p in packed
                ],
            }
            for calls in layouts.values():  # warm-up: kernel selection, first-touch of the weights
                calls[0]()
            units = {layout: all_blocks(calls) for layout, calls in layouts.items()}
            times, _ = time_interleaved(units, args.rounds)
            ms = {k: statistics.median(v) / (REPEATS * copies) * 1e3 for k, v in times.items()}
            best_plain = min(ms["row"], ms["column"])
            print(
                f"{name:<8} {f'{out_features}x{in_features}':>11} {rows:>5} {ms['row']:>10.3f} {ms['column']:>10.3f} "
                f"{ms['packed']:>8.3f} {best_plain / ms['packed']:>8.2f}x"
            )


if __name__ == "__main__":
    main()

"""Helpers shared by the generation benchmarks: memory bandwidth and interleaved timing rounds."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import torch


def read_bandwidth(size_mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s this machine streams from memory into torch, with torch's threads: the best of a few sums."""
    x = torch.ones(size_mib * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best


def time_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, first_round_only: Collection[str] = ()
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Call every function once per round, in turn, and return ``(seconds per call, last result)`` by name.

    Interleaving makes changing background load hit every contender alike; the names in ``first_round_only``
    (slow reference paths) run in the first round only.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for round_ in range(rounds):
        for name, fn in fns.items():
            if round_ > 0 and name in first_round_only:
                continue
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, results


def hf_greedy(hf: Any, prompt: Any) -> Callable[[int], list[int]]:
    """``k -> exactly k greedy new token ids`` from a Hugging Face model (no early stop at eos), with the KV cache."""
    import torch

    hf.generation_config.pad_token_id = hf.generation_config.eos_token_id
    prompt_len = prompt.shape[1]

    def run(k: int) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=k,
                min_new_tokens=k,
                do_sample=False,
                use_cache=True,
            )
        return out[0, prompt_len:].tolist()

    return run

"""CMMLU questions per second: ``scratchllm``'s evaluator vs lm-eval's ``HFLM``, same model, batch size and dtype.

Both score the same requests: the prompts of the first ``--subjects`` CMMLU subjects (``--limit`` questions
each, ``--shots`` dev examples), built once by our task reader (the parity test proves they are lm-eval's).
lm-eval gets them as its own ``Instance`` objects through ``HFLM.loglikelihood`` (its task and dataset
machinery is left out, which only flatters it); ours runs :func:`encode_request` + :func:`score_requests`. The
two run alternately ``--rounds`` times and the best round of each is reported, with the largest difference
between their log-likelihoods as a check that they computed the same thing. Times are CPU seconds of this
process (all threads), so that other programs sharing the machine distort the ratio less; with ``--threads 1``
there is no thread synchronisation either, and questions per CPU-second is questions per second on one idle
core.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py --model HF_FOLDER --limit 30``. ``--from-gguf FILE``
first converts a GGUF file (e.g. ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf) into an HF folder at
``--model`` (as ``scratchllm convert --to hf`` does), so both sides load the same weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF file into a Hugging Face folder (what ``scratchllm convert --to hf`` does)."""
    from scratchllm.weights import load
    from scratchllm.weights.saving import save

    save(load(gguf), folder, "hf")


def requests_of(subjects, tokenizer, shots: int, limit: int):
    from scratchllm.evaluate.tasks import build_context, continuations

    pairs = []
    for subject in subjects:
        examples = subject.dev[:shots]
        for q in subject.questions[:limit]:
            pairs.append((subject.name, build_context(subject, q, examples), continuations(q)))
    return pairs


def run_ours(model, tokenizer, pairs, batch_size: int) -> tuple[float, list[float]]:
    from scratchllm.evaluate.choice import encode_request, score_requests

    start = time.process_time()
    lls = []
    # one call per subject, as the evaluator does (questions of a subject share their few-shot prefix)
    by_subject: dict[str, list] = {}
    for subject, context, conts in pairs:
        by_subject.setdefault(subject, []).append((context, conts))
    for group in by_subject.values():
        requests = [encode_request(tokenizer, c, k) for c, k in group]
        for scores in score_requests(model, requests, batch_size):
            lls.extend(scores)
    return time.process_time() - start, lls


def run_lm_eval(lm, pairs) -> tuple[float, list[float]]:
    from lm_eval.api.instance import Instance

    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, cont), idx=j)
        for _, context, conts in pairs
        for j, cont in enumerate(conts)
    ]
    start = time.process_time()
    results = lm.loglikelihood(instances, disable_tqdm=True)
    return time.process_time() - start, [ll for ll, _ in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face folder (both sides load it)")
    parser.add_argument("--from-gguf", type=Path, help="convert this GGUF file into --model first")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "cmmlu")
    parser.add_argument("--subjects", type=int, default=3, help="first N CMMLU subjects")
    parser.add_argument("--limit", type=int, default=30, help="questions per subject")
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 measures CPU work most exactly)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.from_gguf and not (args.model / "config.json").is_file():
        convert_gguf(args.from_gguf, args.model)

    from lm_eval.models.huggingface import HFLM

    from scratchllm.evaluate.tasks import read_task
    from scratchllm.weights import load

    dtype = getattr(torch, args.dtype)
    loaded = load(args.model, dtype=dtype)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    lm = HFLM(pretrained=str(args.model), batch_size=args.batch_size, device="cpu", dtype=args.dtype)
    subjects = read_task("cmmlu", args.data)[: args.subjects]
    pairs = requests_of(subjects, tokenizer, args.shots, args.limit)
    n = len(pairs)

    best = {"scratchllm": float("inf"), "lm-eval HFLM": float("inf")}
    for r in range(args.rounds):  # alternate, so that both see the same machine state
        t_ours, ours = run_ours(model, tokenizer, pairs, args.batch_size)
        t_theirs, theirs = run_lm_eval(lm, pairs)
        print(f"round {r + 1}: scratchllm {t_ours:.2f} CPU s, lm-eval {t_theirs:.2f} CPU s", flush=True)
        best["scratchllm"] = min(best["scratchllm"], t_ours)
        best["lm-eval HFLM"] = min(best["lm-eval HFLM"], t_theirs)
    diff = max(abs(a - b) for a, b in zip(ours, theirs))

    print(
        f"CMMLU, {len(subjects)} subjects x {args.limit} questions ({n}), {args.shots}-shot, batch {args.batch_size}, "
        f"{args.dtype}, {torch.get_num_threads()} threads; model {args.model.name}"
    )
    print(f"{'evaluator':<16}{'CPU seconds':>13}{'questions/CPU-s':>17}")
    for name, seconds in best.items():
        print(f"{name:<16}{seconds:>13.2f}{n / seconds:>17.3f}")
    print(f"speed-up: {best['lm-eval HFLM'] / best['scratchllm']:.2f}x; max |log-likelihood difference| {diff:.2e}")


if __name__ == "__main__":
    main()

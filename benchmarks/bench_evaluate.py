"""CMMLU questions per second: ``scratchllm``'s evaluator vs lm-eval's ``HFLM``, same model, batch size and dtype.

Both score the same requests: the prompts of the first ``--subjects`` CMMLU subjects (``--limit`` questions
each, ``--shots`` dev examples), built once by our task reader (the parity test proves they are lm-eval's).
lm-eval gets them as its own ``Instance`` objects through ``HFLM.loglikelihood`` (its task and dataset
machinery is left out, which only flatters it); ours runs :func:`encode_request` + :func:`score_requests`.
Subject by subject the two alternate (who goes first alternates too), ``--rounds`` times, so that a slower or
faster spell of a shared machine hits both alike. Printed: questions per second (wall) and per CPU-second of
each, the median and range of the per-round speed-ups, and the largest difference between their
log-likelihoods as a check that they computed the same thing.

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


def run_ours(model, tokenizer, pairs, batch_size: int) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds and the log-likelihoods, one ``score_requests`` call per subject (as the evaluator
    does: a subject's questions share their prompt's start)."""
    from scratchllm.evaluate.choice import encode_request, score_requests

    wall, cpu = time.perf_counter(), time.process_time()
    requests = [encode_request(tokenizer, context, conts) for _, context, conts in pairs]
    lls = [ll for scores in score_requests(model, requests, batch_size) for ll in scores]
    return time.perf_counter() - wall, time.process_time() - cpu, lls


def run_lm_eval(lm, pairs) -> tuple[float, float, list[float]]:
    from lm_eval.api.instance import Instance

    wall, cpu = time.perf_counter(), time.process_time()
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, cont), idx=j)
        for _, context, conts in pairs
        for j, cont in enumerate(conts)
    ]
    results = lm.loglikelihood(instances, disable_tqdm=True)
    return time.perf_counter() - wall, time.process_time() - cpu, [ll for ll, _ in results]


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
    parser.add_argument("--rounds", type=int, default=3)
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

    by_subject: dict[str, list] = {}
    for pair in pairs:
        by_subject.setdefault(pair[0], []).append(pair)
    names = ("scratchllm", "lm-eval HFLM")
    totals = {name: [0.0, 0.0] for name in names}  # wall, CPU
    ratios = []
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(args.rounds):
        # subject by subject, the two alternate (who goes first alternates too), so that a slower or faster
        # spell of a shared machine hits both alike; each round's ratio compares neighbours in time
        round_wall = {name: 0.0 for name in names}
        for i, group in enumerate(by_subject.values()):
            runs = [("scratchllm", lambda g=group: run_ours(model, tokenizer, g, args.batch_size)),
                    ("lm-eval HFLM", lambda g=group: run_lm_eval(lm, g))]  # fmt: skip
            for name, run in runs[:: 1 if (r + i) % 2 == 0 else -1]:
                wall, cpu, lls = run()
                round_wall[name] += wall
                totals[name][0] += wall
                totals[name][1] += cpu
                if r == 0:
                    (ours if name == "scratchllm" else theirs).extend(lls)
        ratios.append(round_wall["lm-eval HFLM"] / round_wall["scratchllm"])
        print(f"round {r + 1}: scratchllm {round_wall['scratchllm']:.1f} s, lm-eval {round_wall['lm-eval HFLM']:.1f} s, "
              f"speed-up {ratios[-1]:.2f}x", flush=True)  # fmt: skip
    diff = max(abs(a - b) for a, b in zip(ours, theirs))

    print(
        f"CMMLU, {len(subjects)} subjects x {args.limit} questions ({n}), {args.shots}-shot, batch {args.batch_size}, "
        f"{args.dtype}, {torch.get_num_threads()} threads, {args.rounds} rounds; model {args.model.name}"
    )
    print(f"{'evaluator':<16}{'questions/s':>13}{'questions/CPU-s':>17}")
    for name in names:
        wall, cpu = totals[name]
        print(f"{name:<16}{n * args.rounds / wall:>13.3f}{n * args.rounds / cpu:>17.3f}")
    ratios.sort()
    print(
        f"speed-up (wall): median of rounds {ratios[len(ratios) // 2]:.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x; "
        f"max |log-likelihood difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()

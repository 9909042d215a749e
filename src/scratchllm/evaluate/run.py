"""Evaluation runs as the command line starts them: load the model, score, write the results, print a table.

A multiple-choice run over many subjects (CMMLU has 67) saves each finished subject into ``OUTPUT.parts/`` as it
goes; started again with the same settings it skips those subjects, so an interrupted run resumes where it
stopped. The final results file is written atomically and the parts are then removed.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch

from scratchllm.atomic import write_json_atomic
from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.tasks import TaskFormat

DType = Literal["auto", "float32", "bfloat16", "float16"]
Sampler = Literal["first", "random"]


def load_for_evaluation(
    model: Path, tokenizer: Path | None = None, device: str = "auto", dtype: DType = "auto"
) -> tuple[torch.nn.Module, Any]:
    """The model (eval mode, on ``device``, in ``dtype``; ``auto`` keeps the stored one) and its tokenizer."""
    from scratchllm.train.device import resolve_device
    from scratchllm.weights import load

    where = resolve_device(device, option="--device")
    loaded = load(model, device=where, dtype=None if dtype == "auto" else getattr(torch, dtype), tokenizer=tokenizer)
    return loaded.model.eval(), loaded.tokenizer


def _version() -> str:
    from scratchllm import __version__

    return __version__


def _write(output: Path | None, results: dict[str, Any]) -> None:
    if output is not None:
        write_json_atomic(output, results)
        print(f"wrote {output}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- perplexity
def run_perplexity(
    model: Path,
    input: list[Path],
    output: Path | None = None,
    tokenizer: Path | None = None,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    dtype: DType = "auto",
) -> dict[str, Any]:
    """Loss, perplexity and bits per byte of each input file and of all together.

    Args:
        model: our checkpoint folder, a Hugging Face folder or a .gguf file.
        input: text files, each scored as one text.
        output: write the results here as JSON.
        tokenizer: use this tokenizer instead of the model's own.
        window: tokens per forward pass (default: the model's context length).
        stride: tokens the window moves each step (default: half the window); each token is scored once, with at least window - stride tokens of context.
        batch_size: windows per forward pass.
        device: cpu, cuda, cuda:N, mps, or auto.
        dtype: weights' dtype: auto (as stored), float32, bfloat16, float16.
    """
    from scratchllm.evaluate.perplexity import perplexity

    net, tok = load_for_evaluation(model, tokenizer, device, dtype)
    report = perplexity(net, tok, input, window, stride, batch_size)
    results = {
        "model": str(model),
        "window": window or net.config.context_length,
        "stride": stride or max(1, (window or net.config.context_length) // 2),
        "scratchllm_version": _version(),
        **report,
    }
    width = max(len("overall"), *(len(name) for name in report["files"]))
    print(f"{'file'.ljust(width)}  {'tokens':>9}  {'loss':>7}  {'perplexity':>10}  bits/byte")
    for name, r in [*report["files"].items(), ("overall", report["overall"])]:
        print(
            f"{name.ljust(width)}  {r['tokens']:9d}  {r['loss']:7.4f}  {r['perplexity']:10.3f}  "
            f"{r['bits_per_byte']:.4f}"
        )
    _write(output, results)
    return results


# ---------------------------------------------------------------------------------------------- choice
def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _resumed(parts: Path | None, subject: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished subject's saved result, when it was scored with the same settings."""
    if parts is None or not (parts / f"{subject}.json").is_file():
        return None
    from scratchllm.utf8 import read_json

    saved = read_json(parts / f"{subject}.json")
    if saved.get("settings") != settings:
        raise ScratchLLMError(
            f"{parts / (subject + '.json')}: saved by a run with other settings ({saved.get('settings')}); "
            "remove that folder or choose another --output"
        )
    return saved["result"]


def run_choice(
    model: Path,
    task: TaskFormat,
    data: Path,
    dev: Path | None = None,
    shots: int = 0,
    limit: int | None = None,
    subjects: list[str] | None = None,
    batch_size: int = 8,
    sampler: Sampler | None = None,
    seed: int = 1234,
    tokenizer: Path | None = None,
    device: str = "auto",
    dtype: DType = "auto",
    output: Path | None = None,
) -> dict[str, Any]:
    """Multiple-choice accuracy (acc, acc_norm) per subject and overall, scored as lm-eval scores it.

    Args:
        model: our checkpoint folder, a Hugging Face folder or a .gguf file.
        task: data format: cmmlu, ceval (CSV), hellaswag or jsonl (context, choices, answer).
        data: a file, a folder of subject files, or a folder with test/ (C-Eval: val/) and dev/ folders.
        dev: few-shot examples (a file or a folder of subject files); default: DATA's dev/ folder.
        shots: number of dev examples in front of each question.
        limit: score at most this many questions per subject.
        subjects: only these subjects (file names without .csv / .jsonl).
        batch_size: questions per forward pass.
        sampler: which dev examples: first (the first K, lm-eval's first_n) or random (a new seeded draw for
            each question, lm-eval's default sampler); default: what lm-eval's task uses (random for hellaswag,
            first for the others).
        seed: seed of the random sampler (lm-eval's fewshot_random_seed, 1234 by default).
        tokenizer: use this tokenizer instead of the model's own.
        device: cpu, cuda, cuda:N, mps, or auto.
        dtype: weights' dtype: auto (as stored), float32, bfloat16, float16.
        output: results JSON; finished subjects are kept in OUTPUT.parts/ so that a stopped run resumes.
    """
    from scratchllm.evaluate.choice import evaluate_subject, progress, results_table, summarize
    from scratchllm.evaluate.tasks import read_task

    if limit is not None and limit < 1:
        raise ScratchLLMError(f"--limit must be at least 1, got {limit}")
    chosen = read_task(task, data, dev)
    if subjects:
        unknown = sorted(set(subjects) - {s.name for s in chosen})
        if unknown:
            raise ScratchLLMError(f"{data}: no subject(s) {', '.join(unknown)}")
        chosen = [s for s in chosen if s.name in subjects]
    sampler = sampler or ("random" if task == "hellaswag" else "first")
    settings = {
        "model": str(model),
        "task": task,
        "data": str(data),
        "dev": str(dev) if dev is not None else None,
        "shots": shots,
        "limit": limit,
        "sampler": sampler,
        "seed": seed,
        "tokenizer": str(tokenizer) if tokenizer is not None else None,
        "dtype": dtype,
    }
    parts = _parts_dir(output) if output is not None else None
    net = tok = None
    per_subject = []
    started = time.perf_counter()
    for i, subject in enumerate(chosen, start=1):
        result = _resumed(parts, subject.name, settings)
        if result is None:
            if net is None:
                net, tok = load_for_evaluation(model, tokenizer, device, dtype)
            result = evaluate_subject(net, tok, subject, shots, limit, batch_size, sampler, seed)
            if parts is not None:
                write_json_atomic(parts / f"{subject.name}.json", {"settings": settings, "result": result})
            progress(i, len(chosen), result)
        else:
            progress(i, len(chosen), result, resumed=True)
        per_subject.append(result)
    overall = summarize(per_subject)
    summary = [{k: v for k, v in r.items() if k != "loglikelihoods"} for r in per_subject]
    results = {
        **settings,
        "batch_size": batch_size,
        "scratchllm_version": _version(),
        "wall_seconds": time.perf_counter() - started,
        "overall": overall,
        "subjects": summary,
    }
    print(results_table(summary, overall))
    _write(output, results)
    if parts is not None and parts.is_dir():
        shutil.rmtree(parts)
    return results

"""``scratchllm evaluate perplexity|choice|judge``: the options are those of the library functions they call."""

from __future__ import annotations

from typing import Any


def perplexity(**options: Any) -> None:
    """Token loss, perplexity and bits per byte of text files, scored with a sliding window.

    Args:
        **options: the keyword options of scratchllm.evaluate.run.run_perplexity.
    """
    from scratchllm.evaluate.run import run_perplexity

    run_perplexity(**options)


def choice(**options: Any) -> None:
    """Multiple-choice accuracy (CMMLU, C-Eval, HellaSwag or your JSONL) scored by log-likelihood, as lm-eval does.

    Args:
        **options: the keyword options of scratchllm.evaluate.run.run_choice.
    """
    from scratchllm.evaluate.run import run_choice

    run_choice(**options)


def judge(**options: Any) -> None:
    """Score instruction responses 0-100 against references with an LLM judge (any OpenAI-compatible server).

    Args:
        **options: the keyword options of scratchllm.evaluate.judge.judge.
    """
    from scratchllm.evaluate.judge import judge as run_judge

    run_judge(**options)

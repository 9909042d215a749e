"""Evaluation: perplexity and bits per byte, multiple-choice benchmarks scored as lm-eval scores them, and an
LLM judge over any OpenAI-compatible endpoint."""

"""Recipes: thin, readable scripts built on :mod:`scratchllm.train` (pretraining, finetuning)."""

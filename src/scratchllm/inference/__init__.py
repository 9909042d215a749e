"""Serving-side inference: :mod:`scratchllm.inference.engine` decodes many requests together (continuous
batching), each with its own sampling settings, stop strings and KV-cache slot."""

from scratchllm.inference.engine import Engine, Output, QueueFull, Request, SamplingParams, TokenLogprob

__all__ = ["Engine", "Output", "QueueFull", "Request", "SamplingParams", "TokenLogprob"]

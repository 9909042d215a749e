"""``scratchllm serve`` (the OpenAI-compatible server) and ``scratchllm chat`` (a chat in the terminal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from scratchllm.config import WeightFormat
from scratchllm.errors import ScratchLLMError

API_KEY_ENV = "SCRATCHLLM_API_KEY"


def _engine(
    model: Path,
    tokenizer: Path | None,
    device: str,
    dtype: str | None,
    slots: int,
    max_len: int,
    max_waiting: int,
    weight_format: WeightFormat | None = None,
) -> tuple[Any, Any]:
    """Load ``model`` (any format :func:`scratchllm.weights.load` reads) and build an engine around it."""
    if dtype and weight_format:
        raise ScratchLLMError(f"give --dtype or --weights, not both (--dtype {dtype}, --weights {weight_format})")
    import torch

    from scratchllm import weights
    from scratchllm.inference import Engine
    from scratchllm.model.matvec import MAX_ROWS
    from scratchllm.model.quantize import prepare_for_decoding
    from scratchllm.train.device import resolve_device

    where = resolve_device(device, option="--device")
    loaded = weights.load(model, device=where, dtype=getattr(torch, dtype) if dtype else None, tokenizer=tokenizer)
    # Up to MAX_ROWS sequences per step the matrix-vector kernel is fastest; more rows: oneDNN-packed fp32.
    net = prepare_for_decoding(loaded.model, weight_format, pack=slots > MAX_ROWS)
    engine = Engine(net, loaded.tokenizer, slots=slots, max_len=max_len, max_waiting=max_waiting)
    return engine, loaded


def serve(
    model: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    cors_origin: list[str] | None = None,
    slots: int = 8,
    max_len: int = 2048,
    max_waiting: int = 64,
    max_tokens: int | None = None,
    max_body_bytes: int = 1_000_000,
    tokenizer: Path | None = None,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    weights: WeightFormat | None = None,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (and a chat page at /), batching concurrent requests.

    Args:
        model: our checkpoint folder, a Hugging Face folder or a .gguf file.
        host: address to listen on; 127.0.0.1 (this machine only) unless you mean to expose it.
        port: TCP port.
        api_key: require "Authorization: Bearer KEY" on every /v1 route (default: the SCRATCHLLM_API_KEY environment variable; none when unset).
        model_name: the model id clients must send (default: the model's file or folder name).
        cors_origin: browser origins allowed to call the API from other sites (default: none, CORS off).
        slots: how many requests are decoded together (each holds one KV-cache slot).
        max_len: tokens per slot, prompt and reply together (capped by the model's context length).
        max_waiting: requests that may wait for a slot; more get HTTP 429.
        max_tokens: the largest max_tokens a request may ask for (default: max_len).
        max_body_bytes: the largest request body accepted (HTTP 413 above).
        tokenizer: use this tokenizer instead of the model's own.
        device: cpu, cuda, cuda:N, mps, or auto.
        dtype: convert the weights to this dtype (default: as stored; GGUF files dequantize to float32).
        weights: decode with the weights in fp32, bf16, or int8 (8-bit weights, one scale per row, bf16
            activations: a quarter of fp32's bytes per token); instead of --dtype.
    """
    for name, value in (("--port", port), ("--slots", slots), ("--max_len", max_len), ("--max_body_bytes", max_body_bytes)):
        if value < 1:
            raise ScratchLLMError(f"{name} must be >= 1, got {value}")
    import uvicorn

    from scratchllm.serve.app import ServerSettings, create_app

    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    engine, loaded = _engine(model, tokenizer, device, dtype, slots, max_len, max_waiting, weights)
    name = model_name or Path(model).name
    settings = ServerSettings(
        model_name=name,
        api_key=api_key,
        cors_origins=tuple(cors_origin or ()),
        max_tokens_limit=max_tokens,
        max_body_bytes=max_body_bytes,
    )
    app = create_app(engine, loaded.tokenizer, loaded.chat_template, settings)
    if host not in ("127.0.0.1", "localhost", "::1"):
        where = "with an API key" if api_key else "WITHOUT an API key (pass --api_key or set SCRATCHLLM_API_KEY)"
        print(f"scratchllm: warning: listening on {host}, reachable from other machines, {where}", file=sys.stderr)
    print(
        f"scratchllm: serving {name!r} ({engine.slots} slots of {engine.max_len} tokens) at http://{host}:{port}/ "
        f"(OpenAI API at http://{host}:{port}/v1)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def chat(
    model: Path,
    system: str | None = None,
    temperature: float = 0.7,
    top_p: float | None = None,
    max_tokens: int = 256,
    seed: int | None = None,
    max_len: int = 2048,
    tokenizer: Path | None = None,
    device: str = "auto",
    weights: WeightFormat | None = None,
) -> None:
    """Chat with a model in the terminal (multi-turn, streamed; /reset, /system TEXT, /temperature X, /quit).

    Args:
        model: our checkpoint folder, a Hugging Face folder or a .gguf file.
        system: system prompt.
        temperature: 0 picks the most likely token (greedy); higher values sample more freely.
        top_p: sample only among the most likely tokens whose probabilities add up to p (0 < p <= 1).
        max_tokens: the longest reply, in tokens.
        seed: random seed, for reproducible sampling.
        max_len: tokens of conversation kept (capped by the model's context length); older turns are dropped.
        tokenizer: use this tokenizer instead of the model's own.
        device: cpu, cuda, cuda:N, mps, or auto.
        weights: decode with the weights in fp32, bf16, or int8 (default: as loaded; see serve).
    """
    from scratchllm.inference import SamplingParams
    from scratchllm.serve.chat import ChatSession, run_chat

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    params.check()
    engine, loaded = _engine(model, tokenizer, device, None, 1, max_len, 1, weights)
    if max_tokens >= engine.max_len:
        raise ScratchLLMError(f"--max_tokens {max_tokens} leaves no room for the conversation in {engine.max_len} tokens")
    session = ChatSession(engine.start(), loaded.tokenizer, loaded.chat_template, params, system)
    try:
        run_chat(session)
    finally:
        engine.close()

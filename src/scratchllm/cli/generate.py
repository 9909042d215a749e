"""``scratchllm generate``: text from a checkpoint, on the device the user names (or the best one present)."""

from __future__ import annotations

import sys
from pathlib import Path

from scratchllm.errors import ScratchLLMError


def _tokenizer_dir(model: Path, tokenizer: Path | None) -> Path:
    if tokenizer is not None:
        return tokenizer
    # MODEL/tokenizer, or the run folder's copy for a pretraining checkpoint (RUN/checkpoints/step-N)
    for candidate in (model / "tokenizer", model.parent.parent / "tokenizer"):
        if candidate.is_dir():
            return candidate
    return model  # a Hugging Face folder keeps vocab.json + merges.txt beside the weights


def generate(
    model: Path,
    prompt: str,
    tokenizer: Path | None = None,
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stream: bool = False,
    cache: bool = True,
    strict_context: bool = False,
    echo: bool = True,
    device: str = "auto",
) -> None:
    """Generate text from a checkpoint and print it to stdout.

    Args:
        model: our checkpoint folder or a Hugging Face GPT-2 folder.
        prompt: text to continue.
        tokenizer: tokenizer folder; defaults to MODEL/tokenizer, then the run's tokenizer for a RUN/checkpoints/step-N folder, else MODEL itself.
        max_new_tokens: how many tokens to generate at most (stops earlier at <|endoftext|>).
        temperature: 0 picks the most likely token (greedy); higher values sample more freely.
        top_k: sample only among the k most likely tokens.
        top_p: sample only among the most likely tokens whose probabilities add up to p (0 < p <= 1).
        seed: random seed, for reproducible sampling.
        stream: print text as it is generated.
        cache: use the KV cache (--no-cache recomputes the whole sequence every step; same output, slower).
        strict_context: fail, instead of keeping only the last context_length tokens, when the prompt is too long.
        echo: print the prompt before the continuation.
        device: cpu, cuda, cuda:N, mps, or auto (cuda when available, then mps, then cpu).
    """
    from scratchllm.generation import check_sampling

    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 1:
        raise ScratchLLMError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")

    from scratchllm import generation
    from scratchllm import tokenizer as tokenizers
    from scratchllm.model import optimize_for_decoding
    from scratchllm.train.device import resolve_device
    from scratchllm.weights import load_model

    where = resolve_device(device, option="--device")
    net = optimize_for_decoding(load_model(model, device=where))
    tok = tokenizers.load(_tokenizer_dir(model, tokenizer))
    n_prompt = len(tok.encode(prompt, allowed_special="all"))
    ctx = net.config.context_length
    if n_prompt > ctx:
        if strict_context:
            raise ScratchLLMError(
                f"--prompt has {n_prompt} tokens, more than the model's context_length {ctx}"
            )
        print(
            f"scratchllm: warning: the prompt has {n_prompt} tokens; only the last {ctx} (context_length) are used",
            file=sys.stderr,
        )
    options = dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        use_cache=cache,
        seed=seed,
    )
    if echo:
        print(prompt, end="", flush=stream)
    if stream:
        for piece in generation.stream(net, tok, prompt, **options):
            print(piece, end="", flush=True)
        print()
    else:
        print(generation.generate_text(net, tok, prompt, **options))

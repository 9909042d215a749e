"""``scratchllm generate``: text from any model :func:`scratchllm.weights.load` reads, on the device the user names."""

from __future__ import annotations

import sys
from pathlib import Path

from scratchllm.config import WeightFormat
from scratchllm.errors import ScratchLLMError


def generate(
    model: Path,
    prompt: str,
    tokenizer: Path | None = None,
    chat: bool = False,
    system: str | None = None,
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stream: bool = False,
    cache: bool = True,
    weights: WeightFormat | None = None,
    compile: bool = False,
    strict_context: bool = False,
    echo: bool | None = None,
    device: str = "auto",
) -> None:
    """Generate text from a model and print it to stdout.

    Args:
        model: our checkpoint folder, a Hugging Face folder (Llama, Qwen2, Qwen3, GPT-2) or a .gguf file.
        prompt: text to continue or, with --chat, the user's message.
        tokenizer: use this tokenizer (folder or .gguf file) instead of the model's own.
        chat: wrap --prompt in the model's chat template (our GPTs: a plain "User: ... Assistant:" one) and print the reply.
        system: with --chat, a system message before the prompt.
        max_new_tokens: how many tokens to generate at most (stops earlier at the tokenizer's end-of-sequence token).
        temperature: 0 picks the most likely token (greedy); higher values sample more freely.
        top_k: sample only among the k most likely tokens.
        top_p: sample only among the most likely tokens whose probabilities add up to p (0 < p <= 1).
        seed: random seed, for reproducible sampling.
        stream: print text as it is generated.
        cache: use the KV cache (--no-cache recomputes the whole sequence every step; same output, slower).
        weights: decode with the weights in fp32, bf16, or int8 (8-bit weights, one scale per row, bf16
            activations: a quarter of fp32's bytes per token, and decoding is bound by bytes read); default: as loaded.
        compile: compile each decoding step with torch.compile (fuses a step's many small operations and, on
            CPU, times matrix kernels to keep the fastest; the first run compiles for a minute or two, later ones
            reuse it). Needs the cache and, on CPU, a C++ compiler.
        strict_context: fail, instead of keeping only the last context_length tokens, when the prompt is too long.
        echo: print the prompt (with --chat: the whole templated prompt) before the continuation; default: yes without --chat, no with it.
        device: cpu, cuda, cuda:N, mps, or auto (cuda when available, then mps, then cpu).
    """
    from scratchllm.generation import check_sampling

    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 1:
        raise ScratchLLMError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if compile and not cache:
        raise ScratchLLMError("--compile needs the KV cache; drop --no-cache")
    if system is not None and not chat:
        raise ScratchLLMError("--system needs --chat (a system message only exists in a chat template)")

    from scratchllm import generation
    from scratchllm.model.quantize import prepare_for_decoding
    from scratchllm.tokenizer.chat import tokenizer_chat
    from scratchllm.train.device import resolve_device
    from scratchllm.weights import load

    where = resolve_device(device, option="--device")
    loaded = load(model, device=where, tokenizer=tokenizer)
    net = prepare_for_decoding(loaded.model, weights)  # one sequence: the matrix-vector kernel
    tok = loaded.tokenizer
    if chat:
        messages = [{"role": "system", "content": system}] if system is not None else []
        text = tokenizer_chat(tok, [*messages, {"role": "user", "content": prompt}], template=loaded.chat_template)
    else:
        bos = getattr(tok, "bos_token", None)
        needs_bos = getattr(tok, "add_bos_token", False) and bos and not prompt.startswith(bos)
        text = bos + prompt if needs_bos else prompt  # as the model saw text in training (Llama 3: <|begin_of_text|>)
    n_prompt = len(tok.encode(text, allowed_special="all"))
    ctx = net.config.context_length
    if n_prompt > ctx:
        if strict_context:
            raise ScratchLLMError(f"--prompt has {n_prompt} tokens, more than the model's context_length {ctx}")
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
        compile=compile,
    )
    if echo if echo is not None else not chat:
        print(text if chat else prompt, end="", flush=stream)
    if stream:
        for piece in generation.stream(net, tok, text, **options):
            print(piece, end="", flush=True)
        print()
    else:
        print(generation.generate_text(net, tok, text, **options))

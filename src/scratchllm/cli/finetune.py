"""``scratchllm classify`` (predict with a finetuned classifier) and ``scratchllm merge-lora``.

The training commands (``scratchllm finetune classify|instruct``) are the recipe functions themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scratchllm.errors import ScratchLLMError


def classify(texts: list[str] | None = None, model: Path = Path("runs/classify"), device: str = "cpu") -> None:
    """Classify texts with a finetuned classifier; prints label<TAB>probability per text.

    Texts come as bare words (scratchllm classify --model RUN "some text") or, with none given, from
    standard input, one text per line (blank lines skipped).

    Args:
        texts: the texts to classify (default: one per line of standard input).
        model: the run folder of `scratchllm finetune classify` (or its classifier/ folder).
        device: cpu, cuda or cuda:N.
    """
    from scratchllm.recipes.classify import classify_texts, load_classifier

    clf, tokenizer, info = load_classifier(model, device)
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ScratchLLMError("classify: no text given (as arguments or on standard input)")
    for label, probability in classify_texts(clf, tokenizer, info, texts):
        print(f"{label}\t{probability:.4f}", flush=True)


def merge_lora(model: Path, adapter: Path, out: Path) -> None:
    """Fold a LoRA adapter into its base model and write a plain checkpoint (loads like any other).

    Args:
        model: the base model the adapter was trained on (our checkpoint, Hugging Face folder or .gguf).
        adapter: the adapter folder (adapter.safetensors + adapter_config.json).
        out: the checkpoint folder to write (model.safetensors, config.json, tokenizer/); written atomically.
    """
    import torch

    from scratchllm.model.lora import merge_lora as merge
    from scratchllm.weights import load, save_model
    from scratchllm.weights.adapters import apply_adapter

    loaded = load(model, dtype=torch.float32)
    _, extra = apply_adapter(loaded.model, adapter, full_precision_base=True)
    if extra:
        raise ScratchLLMError(
            f"{adapter}: holds more than adapters ({', '.join(sorted(extra))}); a classifier's head cannot merge "
            "into a language model"
        )
    merged = merge(loaded.model)
    # The tokenizer first (atomically), then the weights: write_folder keeps it while it swaps the folder in,
    # and until then the folder has no config.json, so nothing can take it for a model.
    loaded.tokenizer.save(Path(out) / "tokenizer")
    save_model(merged, out)
    print(f"wrote {out}")

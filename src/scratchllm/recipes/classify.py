"""Classification finetuning: a pretrained decoder with a class head, trained on labelled text.

:func:`finetune_classify` is the run in steps: read and check the data (:mod:`scratchllm.data.classify`: labels,
optional balancing, the seeded 70/10/20 split or given split files), load the model
(:func:`~scratchllm.recipes.finetune.load_base`), swap the LM head for a class head
(:class:`~scratchllm.model.heads.SequenceClassifier`), choose what trains (all, the last blocks + final norm +
head, or LoRA + head), train on the one core (:func:`~scratchllm.recipes.finetune.train_epochs`, cross-entropy
over classes), then measure accuracy, per-class precision/recall/F1 and the confusion matrix on every split
(``metrics.json``, and a table on stderr) and save the classifier (``RUN/classifier``) that
:func:`classify_texts` and ``scratchllm classify`` use.

The saved classifier is small for LoRA (adapters + head, beside the path of the base model) and a full state
dict otherwise; ``classifier.json`` holds the labels, pooling, context and model config.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scratchllm.config import LoRAConfig, ModelConfig, TrainConfig, check_dropout
from scratchllm.data.classify import (
    LabelledText,
    TableFormat,
    check_template,
    encode,
    label_names,
    read_labelled,
)
from scratchllm.data.classify import balance as undersample
from scratchllm.data.classify import collate as collate_examples
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes import finetune

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scratchllm.data.batches import ExampleBatches
    from scratchllm.model.heads import SequenceClassifier

CLASSIFIER_DIR = "classifier"
CLASSIFIER_CONFIG = "classifier.json"
CLASSIFIER_FORMAT = "scratchllm-classifier"
Trains = Literal["all", "last", "lora"]
Pooling = Literal["last", "mean"]  # scratchllm.model.heads.POOLINGS


def classification_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Cross-entropy between the class logits of each text and its label."""
    import torch.nn.functional as F

    ids, lengths, labels = batch
    return F.cross_entropy(model(ids, lengths).float(), labels)


# ---------------------------------------------------------------------------------------------- metrics
def classification_metrics(predicted: Sequence[int], actual: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1 / support, macro F1 and the confusion matrix.

    ``confusion[i][j]`` counts examples of class ``i`` predicted as class ``j`` (rows: truth). A precision or
    recall with nothing to divide by is 0, as scikit-learn reports it.
    """
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for p, a in zip(predicted, actual):
        confusion[a][p] += 1
    n = len(actual)
    per_class = {}
    for i, name in enumerate(labels):
        tp = confusion[i][i]
        predicted_i = sum(confusion[r][i] for r in range(k))
        actual_i = sum(confusion[i])
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_i}
    return {
        "examples": n,
        "accuracy": sum(confusion[i][i] for i in range(k)) / n if n else 0.0,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / k,
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion,
    }


def metrics_table(name: str, metrics: dict[str, Any]) -> str:
    """A printable table of :func:`classification_metrics`."""
    labels = metrics["labels"]
    width = max(9, *(len(label) for label in labels))
    accuracy, n, macro = 100 * metrics["accuracy"], metrics["examples"], metrics["macro_f1"]
    lines = [f"{name}: accuracy {accuracy:.2f} % of {n} (macro F1 {macro:.4f})"]
    lines.append(f"  {'class':<{width}} precision    recall        f1   support")
    for label, c in metrics["per_class"].items():
        scores = " ".join(f"{c[k]:>9.4f}" for k in ("precision", "recall", "f1"))
        lines.append(f"  {label:<{width}} {scores} {c['support']:>9}")
    lines.append(f"  confusion (rows: true, columns: predicted {', '.join(labels)}):")
    for label, row in zip(labels, metrics["confusion"]):
        lines.append(f"  {label:<{width}} " + " ".join(f"{v:>6}" for v in row))
    if metrics.get("mistakes"):
        lines.append(f"  {len(metrics['mistakes'])} misclassified texts: metrics.json, splits.{name}.mistakes")
    return "\n".join(lines)


def predict(
    classifier: nn.Module, batches: Sequence[Any], device: torch.device, precision: str = "fp32"
) -> torch.Tensor:
    """Class probabilities ``[N, C]`` for the batches in order (eval mode, restored afterwards)."""
    import torch

    from scratchllm.train.loop import autocast_context

    was_training = classifier.training
    classifier.eval()
    out = []
    try:
        for ids, lengths, *_ in batches:
            with torch.no_grad(), autocast_context(device, precision):
                logits = classifier(ids.to(device), lengths.to(device))
            out.append(logits.float().softmax(-1).cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(out)


def evaluate_split(
    classifier: nn.Module,
    reader: ExampleBatches,
    labels: Sequence[str],
    device,
    precision,
    records: Sequence[LabelledText] | None = None,
) -> dict:
    """:func:`classification_metrics` of one split; with its ``records`` (in the reader's order), also the
    ``mistakes``: every misclassified text with its label, the prediction and the predicted probability, so
    that a user can read what the model gets wrong (often a label one would argue with)."""
    probs = predict(classifier, reader.batches(), device, precision)
    predicted = probs.argmax(-1).tolist()
    actual = [e.label for e in reader.examples]
    metrics = classification_metrics(predicted, actual, labels)
    if records is not None:
        metrics["mistakes"] = [
            {"where": r.where, "text": r.text, "label": labels[a], "predicted": labels[p],
             "probability": round(float(probs[i, p]), 4)}
            for i, (r, a, p) in enumerate(zip(records, actual, predicted, strict=True)) if a != p
        ]  # fmt: skip
    return metrics


# ---------------------------------------------------------------------------------------------- data
def pad_token_id(tokenizer: Any) -> int:
    """The id padding is filled with: the tokenizer's pad, else end-of-text, else 0 (it is never read)."""
    for candidate in (getattr(tokenizer, "pad_id", None), getattr(tokenizer, "eos_id", None), tokenizer.eot_id):
        if candidate is not None:
            return int(candidate)
    return 0


def load_splits(
    data: Path,
    val_data: Path | None,
    test_data: Path | None,
    read_options: dict[str, Any],
    *,
    labels: list[str] | None,
    balance: bool,
    split: Sequence[float],
    seed: int,
    say: finetune.Log,
) -> tuple[list[str], dict[str, list[LabelledText]]]:
    """The label names and the train/val/test records (split files given, or a seeded split of ``data``)."""
    names: list[str] = []

    def prepare(records: list[LabelledText], given: dict[str, list[LabelledText]]) -> list[LabelledText]:
        names.extend(label_names(records + [r for part in given.values() for r in part], labels))
        if not balance:
            return records
        kept = undersample(records, seed)
        say(f"balanced by undersampling: {len(records)} -> {len(kept)} records ({len(kept) // len(names)} per class)")
        return kept

    parts = finetune.split_data(
        data, val_data, test_data, lambda path: read_labelled(path, **read_options), split=split, seed=seed,
        say=say, prepare=prepare,
    )  # fmt: skip
    say(f"labels: {names}")
    return names, parts


# ---------------------------------------------------------------------------------------------- the recipe
def finetune_classify(
    model: Path,
    data: Path,
    out_dir: Path = Path("runs/classify"),
    tokenizer: Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    format: TableFormat = "auto",
    header: bool = True,
    labels: list[str] | None = None,
    balance: bool = False,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int | None = None,
    val_data: Path | None = None,
    test_data: Path | None = None,
    max_length: int | None = None,
    template: str | None = None,
    label_words: list[str] | None = None,
    pooling: Pooling = "last",
    trains: Trains = "lora",
    last_blocks: int = 1,
    lora: LoRAConfig = LoRAConfig(),
    epochs: int = 3,
    from_scratch: bool = False,
    dropout: float | None = None,
    train: TrainConfig = finetune.FINETUNE_TRAIN,
    resume: bool = False,
) -> dict[str, Any]:
    """Finetune a model to classify text: a class head replaces the LM head; writes RUN/classifier.

    Example: scratchllm finetune classify --model ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
    --data sms.tsv --format tsv --header false --text-column 1 --label-column 0 --balance --out-dir runs/spam

    Args:
        model: the model to start from: our checkpoint, a Hugging Face folder or a .gguf file.
        data: labelled text (.tsv, .csv, .jsonl, .parquet).
        out_dir: run folder (metrics.csv, loss.png, metrics.json, checkpoints/, classifier/).
        tokenizer: use this tokenizer instead of the model's own.
        text_column: column (or JSON key) of the text; a number for files without a header.
        label_column: column (or JSON key) of the label.
        format: file format (auto: from the file name).
        header: delimited files start with a row of column names.
        labels: the label names, in class order (default: the labels in the data, sorted); others are errors.
        balance: undersample every class to the size of the smallest.
        split: train/val/test fractions of a seeded shuffle of the data.
        split_seed: seed of that shuffle and of the balancing (default: train.seed); fix it to compare
            training seeds on one split.
        val_data: validation file (with test_data: use these instead of splitting data).
        test_data: test file.
        max_length: tokens kept per text (default: the model's context length); longer texts are cut.
        template: put every text into this string at {text} (training, evaluation and scratchllm classify),
            e.g. "Message: {text}\nIs this message spam?" to ask an instruction-tuned model the question.
        label_words: one word per label, in label order (e.g. " no" " yes" for ham, spam; each one token of
            the model's tokenizer): the class head starts as the LM head's rows of these words, so with a
            template that asks the question the classifier starts from the model's own answer.
        pooling: predict from the last real token or the mean over the tokens.
        trains: what trains: all weights, the last blocks + final norm + head, or LoRA adapters + head.
        last_blocks: with trains=last, how many of the last blocks train.
        lora: LoRA settings (with trains=lora).
        epochs: passes over the training split; the weights of the best epoch on validation are kept.
        from_scratch: random weights in the model's shape (a baseline that shows what pretraining gives).
        dropout: dropout rate while finetuning (default: the model's own; published models have 0). It
            regularises full finetuning of a small data set; LoRA has its own ``lora.dropout``.
        train: optimizer, batch, precision and checkpoint settings (max_steps follows from epochs).
        resume: continue the newest complete checkpoint in out_dir.
    """
    import torch

    from scratchllm.data.batches import ExampleBatches
    from scratchllm.model.heads import SequenceClassifier

    check_template(template)
    if dropout is not None:
        check_dropout("dropout", dropout)  # before the data and the model are read
    if label_words is not None and from_scratch:
        raise ScratchLLMError(
            "label_words: the LM head's rows only carry the words' meaning in a pretrained model; "
            "from_scratch starts from random weights (drop one of them)"
        )
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with finetune.session(train) as (env, say, precision):
        read_options = dict(text_column=text_column, label_column=label_column, format=format, header=header)
        names, parts = load_splits(
            Path(data), val_data, test_data, read_options, labels=labels, balance=balance, split=split,
            seed=train.seed if split_seed is None else split_seed, say=say,
        )  # fmt: skip
        loaded = finetune.load_base(
            model, env, seed=train.seed, from_scratch=from_scratch, tokenizer=tokenizer, dropout=dropout, say=say
        )
        backbone = loaded.model
        context = backbone.config.context_length
        max_length = min(max_length or context, context)
        pad_id = pad_token_id(loaded.tokenizer)
        encoded = {}
        for name, part in parts.items():
            encoded[name], cut = encode(part, loaded.tokenizer, names, max_length, template)
            if cut:
                say(f"{name}: {cut} of {len(part)} texts longer than {max_length} tokens were cut")

        head_tokens = None if label_words is None else label_word_tokens(label_words, names, loaded.tokenizer)
        torch.manual_seed(train.seed)
        clf = SequenceClassifier(backbone, len(names), pooling, head_tokens).to(env.device)
        def freeze() -> None:  # LoRA: the adapters come on top of a trainable head
            clf.trainable_parts("head" if trains == "lora" else trains, last_blocks)

        lora_config = finetune.choose_trainable(clf, backbone, trains, lora, say, freeze_rest=freeze, seed=train.seed)

        def collate(examples):
            return collate_examples(examples, pad_id)

        bs = train.micro_batch_size
        batches = ExampleBatches(
            encoded["train"], bs, collate, seed=train.seed, drop_last=True, rank=env.rank, world_size=env.world_size
        )
        readers = {name: ExampleBatches(ex, bs, collate, shuffle=False) for name, ex in encoded.items()}
        eval_sets = {"train": ExampleBatches(encoded["train"], bs, collate, seed=train.seed + 1), "val": readers["val"]}
        info = {
            "format": CLASSIFIER_FORMAT, "labels": names, "pooling": pooling, "max_length": max_length,
            "template": template, "label_words": label_words, "pad_id": pad_id, "trains": trains,
            "base_model": str(Path(model).resolve()), "from_scratch": from_scratch,
            "model": backbone.config.to_dict(), "lora": lora_config.to_dict() if lora_config else None,
        }  # fmt: skip
        run_info = {
            **info, "data": str(data), "val_data": str(val_data) if val_data else None,
            "test_data": str(test_data) if test_data else None, "split": list(split),
            "split_seed": split_seed, "balance": balance, "epochs": epochs, "train": train.to_dict(),
            "precision": precision, "tokenizer": "tokenizer",
        }  # fmt: skip
        if env.is_main:
            finetune.prepare_run_folder(out_dir, loaded.tokenizer, run_info, resume)

        def score() -> dict[str, float]:
            accuracy = evaluate_split(clf, readers["val"], names, env.device, precision)["accuracy"]
            return {"val_accuracy": accuracy, "val_score": accuracy}

        result = finetune.train_epochs(
            clf, finetune.TrainingData(batches, eval_sets, backbone.config.vocab_size, out_dir / "tokenizer"),
            classification_loss, epochs=epochs, train=train, env=env, precision=precision, out_dir=out_dir,
            run_info=run_info, resume=resume, model_config={"format": CLASSIFIER_FORMAT, **info}, score=score,
            say=say,
        )  # fmt: skip
        clf = result.model  # the best epoch's weights (whole again after FSDP2)

        metrics = {
            name: evaluate_split(clf, reader, names, env.device, precision, parts[name] if name != "train" else None)
            for name, reader in readers.items()
        }
        if env.is_main:
            from scratchllm.atomic import write_json_atomic

            for name in ("train", "val", "test"):
                say(metrics_table(name, metrics[name]))
            report = {"splits": metrics, "history": result.history, "best_epoch": result.best}
            write_json_atomic(out_dir / "metrics.json", report)
            save_classifier(out_dir / CLASSIFIER_DIR, clf, info, lora_config)
        return {
            **result.summary,
            "out_dir": str(out_dir),
            "classifier": str(out_dir / CLASSIFIER_DIR),
            **{f"{name}_accuracy": m["accuracy"] for name, m in metrics.items()},
            "best_epoch": result.best.get("epoch") if result.best else None,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "resumed_from": result.resumed_from,
        }


def label_word_tokens(words: Sequence[str], labels: Sequence[str], tokenizer: Any) -> list[int]:
    """The one token id of each label word (``label_words``, in the order of ``labels``)."""
    if len(words) != len(labels):
        raise ScratchLLMError(
            f"label_words: one word per label ({', '.join(labels)}), got {len(words)}: {list(words)}"
        )
    ids = []
    for label, word in zip(labels, words):
        encoded = tokenizer.encode(word, disallowed_special=())
        if len(encoded) != 1:
            raise ScratchLLMError(
                f"label_words: {word!r} (for label {label!r}) is {len(encoded)} tokens of the model's tokenizer; "
                "expected exactly one (a leading space often makes a word one token: ' yes')"
            )
        ids.append(encoded[0])
    return ids


# ---------------------------------------------------------------------------------------------- saving
def save_classifier(folder: Path, clf: SequenceClassifier, info: dict[str, Any], lora: LoRAConfig | None) -> Path:
    """``classifier.json`` + the weights: adapters and head (LoRA) or the whole state dict (atomically).

    Adapters alone only make sense on top of the base model's file; a from-scratch run's base exists nowhere
    else, so its adapters are merged and the whole state dict is saved.
    """
    from scratchllm.model.lora import merge_lora
    from scratchllm.weights.adapters import adapter_files
    from scratchllm.weights.checkpoint import WEIGHTS_FILE, json_writer, save_safetensors, write_folder

    if lora is not None and info.get("from_scratch"):
        merge_lora(clf.model)
        lora, info = None, {**info, "lora": None}
    files = {CLASSIFIER_CONFIG: json_writer(info)}
    if lora is not None:
        head = {f"lm_head.{k}": v.detach().cpu() for k, v in clf.head.state_dict().items()}
        files.update(adapter_files(clf.model, lora, base_model=info["base_model"], extra=head))
    else:
        state = {k: v.detach().cpu() for k, v in clf.model.state_dict().items()}
        files[WEIGHTS_FILE] = lambda p: save_safetensors(state, p, {"format": "pt"})
    return write_folder(folder, files)


def _classifier_folder(path: Path) -> Path:
    for candidate in (path, path / CLASSIFIER_DIR):
        if (candidate / CLASSIFIER_CONFIG).is_file():
            return candidate
    raise ScratchLLMError(f"{path}: no {CLASSIFIER_CONFIG} here or in {path / CLASSIFIER_DIR} (a classify run?)")


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[SequenceClassifier, Any, dict]:
    """A saved classifier (a run folder or its ``classifier/``), its tokenizer and ``classifier.json``."""
    import torch

    from scratchllm.model import GPTModel
    from scratchllm.model.heads import SequenceClassifier
    from scratchllm.tokenizer import load as load_tokenizer
    from scratchllm.weights.adapters import apply_adapter
    from scratchllm.weights.checkpoint import WEIGHTS_FILE, load_safetensors, read_json

    folder = _classifier_folder(Path(path))
    info = read_json(folder / CLASSIFIER_CONFIG)
    if info.get("format") != CLASSIFIER_FORMAT or not isinstance(info.get("labels"), list):
        raise ScratchLLMError(f'{folder / CLASSIFIER_CONFIG}: not a scratchllm classifier ("format", "labels")')
    config = ModelConfig.from_dict(info["model"], source=f"{folder / CLASSIFIER_CONFIG}: model")
    tokenizer_dir = folder.parent / "tokenizer"
    if not tokenizer_dir.is_dir():
        raise ScratchLLMError(f"{folder}: no tokenizer beside the classifier ({tokenizer_dir})")
    tokenizer = load_tokenizer(tokenizer_dir)
    if info.get("lora"):
        from scratchllm.weights import load

        backbone = load(info["base_model"], device=device, dtype=torch.float32).model
        if backbone.config != config:
            raise ScratchLLMError(f"{info['base_model']}: is not the model {folder} was trained from (config differs)")
        clf = SequenceClassifier(backbone, len(info["labels"]), info["pooling"])
        _, extra = apply_adapter(backbone, folder)
        with torch.no_grad():
            clf.head.weight.copy_(extra["lm_head.weight"])
            clf.head.bias.copy_(extra["lm_head.bias"])
    else:
        clf = SequenceClassifier(GPTModel(config), len(info["labels"]), info["pooling"])
        state = load_safetensors(folder / WEIGHTS_FILE)
        if set(state) != set(clf.model.state_dict()):
            raise ScratchLLMError(f"{folder / WEIGHTS_FILE}: tensors do not match the classifier's config")
        clf.model.load_state_dict(state)
        clf = clf.to(device)
    return clf.eval(), tokenizer, info


def classify_texts(
    clf: SequenceClassifier, tokenizer: Any, info: dict[str, Any], texts: Sequence[str], batch_size: int = 16
) -> list[tuple[str, float]]:
    """(label, probability) of the most likely class for each text."""
    from scratchllm.data.batches import ExampleBatches

    labels = info["labels"]
    records = [LabelledText(t, labels[0], f"text {i + 1}") for i, t in enumerate(texts)]
    examples, _ = encode(records, tokenizer, labels, info["max_length"], info.get("template"))
    reader = ExampleBatches(examples, batch_size, lambda ex: collate_examples(ex, info["pad_id"]), shuffle=False)
    device = next(clf.parameters()).device
    probs = predict(clf, reader.batches(), device)
    best = probs.argmax(-1)
    return [(labels[int(i)], float(probs[row, i])) for row, i in enumerate(best)]


__all__ = [
    "classification_metrics",
    "classify_texts",
    "finetune_classify",
    "load_classifier",
    "metrics_table",
    "predict",
    "save_classifier",
]

"""The classification recipe end to end on a tiny model: trains, reports, saves, predicts, resumes exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from finetune_models import tiny_checkpoint

from scratchllm.cli.parser import main
from scratchllm.recipes.classify import classification_metrics, classify_texts, load_classifier

WORDS = {"pos": ["good", "happy", "great", "fine", "day"], "neg": ["bad", "awful", "sad", "poor", "night"]}


def _write_data(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["text\tlabel"]
    for i in range(n):
        label = "pos" if i % 3 else "neg"  # 2:1 imbalance, for --balance
        lines.append(" ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(2, 9))) + f"\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


def _args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "classify", "--model", str(ckpt), "--data", str(data), "--out-dir", str(out),
        "--train.precision", "fp32", "--train.device", "cpu", "--train.micro-batch-size", "4",
        "--train.lr", "3e-3", "--train.min-lr", "3e-3", "--train.peak-flops", "1e11", "--train.log-every", "100", *extra,
    ]  # fmt: skip


def test_metrics_by_hand() -> None:
    m = classification_metrics([0, 1, 1, 1], [0, 0, 1, 1], ["a", "b"])
    assert m["accuracy"] == 0.75 and m["confusion"] == [[1, 1], [0, 2]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert m["per_class"]["b"]["precision"] == 2 / 3


def test_evaluate_split_lists_each_mistake_with_its_text() -> None:
    from scratchllm.data.batches import ExampleBatches
    from scratchllm.data.classify import ClassExample, LabelledText, collate
    from scratchllm.recipes.classify import evaluate_split

    class FirstTokenSays(torch.nn.Module):  # predicts class 1 exactly when the first token id is odd, p = 0.88
        def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            odd = (ids[:, 0] % 2).float()
            return torch.stack([1 - odd, odd], dim=-1) * 2.0

    texts = ["one", "two", "three", "four", "five"]
    ids = [[1, 5], [2], [3, 3, 3], [4, 9], [7]]
    labels = [1, 1, 0, 0, 1]  # "two" (even: predicted 0) and "three" (odd: predicted 1) are wrong
    records = [LabelledText(t, "ab"[y], f"d.tsv:{i + 2}") for i, (t, y) in enumerate(zip(texts, labels))]
    reader = ExampleBatches([ClassExample(i, y) for i, y in zip(ids, labels)], 2, collate, shuffle=False)
    metrics = evaluate_split(FirstTokenSays(), reader, ["a", "b"], torch.device("cpu"), "fp32", records)
    assert metrics["accuracy"] == 0.6 and metrics["confusion"] == [[1, 1], [1, 2]]
    p = round(torch.tensor([2.0, 0.0]).softmax(-1)[0].item(), 4)
    assert metrics["mistakes"] == [
        {"where": "d.tsv:3", "text": "two", "label": "b", "predicted": "a", "probability": p},
        {"where": "d.tsv:4", "text": "three", "label": "a", "predicted": "b", "probability": p},
    ]
    assert "mistakes" not in evaluate_split(FirstTokenSays(), reader, ["a", "b"], torch.device("cpu"), "fp32")


@pytest.mark.parametrize("trains", ["lora", "last"])
def test_finetune_classify_trains_reports_saves_and_predicts(ckpt, tmp_path, capsys, trains) -> None:
    data = _write_data(tmp_path / "d.tsv")
    out = tmp_path / "run"
    assert main(_args(ckpt, data, out, "--balance", "--epochs", "3", "--trains", trains, "--lora.rank", "4")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "trainable parameters:" in captured.err and "confusion" in captured.err
    assert summary["test_accuracy"] >= 0.9, captured.err
    report = json.loads((out / "metrics.json").read_text())
    assert report["splits"]["test"]["examples"] == 8 and len(report["history"]) == 3  # 40 balanced -> 28/4/8
    for split in ("val", "test"):  # every misclassified text is listed, with what it was taken for
        metrics = report["splits"][split]
        wrong = metrics["confusion"][0][1] + metrics["confusion"][1][0]
        assert len(metrics["mistakes"]) == wrong
        assert all(m["label"] != m["predicted"] and m["text"] and 0.5 <= m["probability"] <= 1 for m in metrics["mistakes"])
    assert "mistakes" not in report["splits"]["train"]
    assert (out / "metrics.csv").is_file() and (out / "loss.png").is_file()
    files = sorted(p.name for p in (out / "classifier").iterdir())
    if trains == "lora":
        assert files == ["adapter.safetensors", "adapter_config.json", "classifier.json"]
    else:
        assert files == ["classifier.json", "model.safetensors"]
    clf, tok, info = load_classifier(out)
    assert [label for label, _ in classify_texts(clf, tok, info, ["good happy day", "awful sad night"])] == ["pos", "neg"]
    assert main(["classify", "--model", str(out), "great fine", "poor bad"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in printed] == ["pos", "neg"]
    assert all(0.5 < float(line.split("\t")[1]) <= 1.0 for line in printed)


def test_classify_reads_stdin(ckpt, tmp_path, capsys, monkeypatch) -> None:
    import io

    data = _write_data(tmp_path / "d.tsv", n=24)
    out = tmp_path / "run"
    assert main(_args(ckpt, data, out, "--epochs", "1", "--trains", "all")) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("good day\n\nbad night\n"))
    assert main(["classify", "--model", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # blank lines skipped


def test_resume_is_exact(ckpt, tmp_path, capsys) -> None:
    data = _write_data(tmp_path / "d.tsv", n=30)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ("--epochs", "2", "--trains", "lora", "--lora.rank", "2", "--lora.dropout", "0.1")
    assert main(_args(ckpt, data, whole, *common)) == 0
    assert main(_args(ckpt, data, parts, *common, "--train.stop-at-step", "7")) == 0
    assert main(_args(ckpt, data, parts, *common, "--resume")) == 0
    capsys.readouterr()
    a = json.loads((whole / "metrics.json").read_text())["history"][-1]
    b = json.loads((parts / "metrics.json").read_text())["history"][-1]
    assert a["step"] == b["step"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)


def test_from_scratch_lora_saves_a_self_contained_classifier(ckpt, tmp_path, capsys) -> None:
    data = _write_data(tmp_path / "d.tsv", n=24)
    out = tmp_path / "run"
    assert main(_args(ckpt, data, out, "--epochs", "1", "--trains", "lora", "--from-scratch", "true")) == 0
    assert "random weights" in capsys.readouterr().err
    assert (out / "classifier" / "model.safetensors").is_file()  # the random base exists nowhere else
    clf, tok, info = load_classifier(out)
    assert info["lora"] is None and len(classify_texts(clf, tok, info, ["good day"])) == 1


def test_a_template_wraps_every_text_in_training_and_prediction(ckpt, tmp_path, capsys) -> None:
    data = _write_data(tmp_path / "d.tsv", n=24)
    out = tmp_path / "run"
    template = "Review: {text}\nIs it good?"
    assert main(_args(ckpt, data, out, "--epochs", "1", "--trains", "all", "--template", template)) == 0
    capsys.readouterr()
    clf, tok, info = load_classifier(out)
    assert info["template"] == template
    wrapped = classify_texts(clf, tok, {**info, "template": None}, ["Review: good day\nIs it good?"])
    assert classify_texts(clf, tok, info, ["good day"]) == wrapped  # prediction applies the saved template
    assert classify_texts(clf, tok, {**info, "template": None}, ["good day"]) != wrapped


def test_dropout_is_announced_and_saved_with_the_classifier(ckpt, tmp_path, capsys) -> None:
    data = _write_data(tmp_path / "d.tsv", n=24)
    out = tmp_path / "run"
    assert main(_args(ckpt, data, out, "--epochs", "1", "--trains", "all", "--dropout", "0.2")) == 0
    assert "dropout 0.2 while training (the model's config has 0.0)" in capsys.readouterr().err
    clf, tok, info = load_classifier(out)
    assert info["model"]["drop_rate"] == 0.2 and not clf.training
    assert classify_texts(clf, tok, info, ["good day"]) == classify_texts(clf, tok, info, ["good day"])


def test_load_base_refuses_a_bad_rate_without_announcing_it(ckpt, capsys) -> None:
    from types import SimpleNamespace

    from scratchllm.errors import ScratchLLMError
    from scratchllm.recipes.finetune import load_base

    with pytest.raises(ScratchLLMError, match=r"dropout must be in \[0, 1\), got 1.5"):
        load_base(ckpt, SimpleNamespace(device="cpu"), seed=0, dropout=1.5, say=print)
    assert "while training" not in capsys.readouterr().out  # refused, not announced


@pytest.mark.parametrize("template", ["no field", "{text} and {text}"])
def test_a_template_without_exactly_one_text_field_is_refused(ckpt, tmp_path, capsys, template: str) -> None:
    out = tmp_path / "run"
    assert main(_args(ckpt, _write_data(tmp_path / "d.tsv"), out, "--template", template)) == 2
    assert "expected {text} exactly once" in capsys.readouterr().err
    assert not out.exists()


def test_label_words_start_the_head_from_the_lm_head(ckpt, tmp_path, capsys) -> None:
    """With --label-words the class head starts as the base model's LM-head rows of those words: trained at a
    learning rate too small to move it, the saved head still is those rows."""
    from scratchllm.weights import load

    data = _write_data(tmp_path / "d.tsv", n=24)
    out = tmp_path / "run"
    tiny_lr = ["--train.lr", "1e-12", "--train.min-lr", "1e-12"]
    args = _args(ckpt, data, out, "--epochs", "1", "--trains", "last", "--label-words", '["b", "g"]', *tiny_lr)
    assert main(args) == 0
    capsys.readouterr()
    clf, _, info = load_classifier(out)
    assert info["label_words"] == ["b", "g"] and info["labels"] == ["neg", "pos"]
    base = load(ckpt)
    rows = [base.tokenizer.encode(w)[0] for w in ("b", "g")]
    expected = base.model.lm_head.weight[rows]
    torch.testing.assert_close(clf.head.weight, expected, rtol=0, atol=1e-6)
    assert clf.head.bias.abs().max() < 1e-6


@pytest.mark.parametrize(
    "words, extra, message",
    [
        ('["g"]', [], "one word per label"),
        ('["b", " good day"]', [], "expected exactly one"),
        ('["b", "g"]', ["--from-scratch", "true"], "only carry the words' meaning in a pretrained model"),
    ],
)
def test_label_words_that_do_not_fit_are_refused(ckpt, tmp_path, capsys, words: str, extra, message: str) -> None:
    out = tmp_path / "run"
    assert main(_args(ckpt, _write_data(tmp_path / "d.tsv"), out, "--label-words", words, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

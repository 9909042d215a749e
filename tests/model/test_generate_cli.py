"""``scratchllm generate`` end to end on a tiny saved model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import scratchllm.tokenizer
import scratchllm.weights.loading
from scratchllm.cli import main
from scratchllm.config import ModelConfig
from scratchllm.generation import generate
from scratchllm.model import GPTModel
from scratchllm.weights import save_model, to_hf
from text_doubles import ByteTokenizer


class CountedBytes(ByteTokenizer):
    vocab_size = 257


@pytest.fixture
def byte_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, GPTModel]:
    """A checkpoint whose tokenizer is one token per byte; ``loaded_tokenizers`` records the paths asked for."""
    loaded: list[Path] = []

    def load_tokenizer(path: Path, backend: str = "auto") -> ByteTokenizer:
        loaded.append(Path(path))
        return CountedBytes()

    monkeypatch.setattr(scratchllm.weights.loading, "load_tokenizer", load_tokenizer)
    torch.manual_seed(0)
    model = GPTModel(ModelConfig(vocab_size=257, context_length=24, emb_dim=32, n_heads=4, n_layers=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    save_model(model, tmp_path / "ckpt")
    model.loaded_tokenizers = loaded  # type: ignore[attr-defined]
    return tmp_path / "ckpt", model


def _expected(model: GPTModel, prompt: str, n: int, **kwargs) -> str:
    tok = ByteTokenizer()
    ids = generate(model, [tok.encode(prompt)], n, eos_id=tok.eot_id, **kwargs)[0]
    return tok.decode(ids)


def test_generate_prints_prompt_and_continuation(byte_model, capsys) -> None:
    folder, model = byte_model
    assert main(["generate", "--model", str(folder), "--prompt", "abc", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out == "abc" + _expected(model, "abc", 12) + "\n"
    assert model.loaded_tokenizers == [folder]  # the model's own tokenizer (MODEL/tokenizer, found by weights.load)
    # Streaming, no cache and no echo print the same continuation.
    args = ["generate", "--model", str(folder), "--prompt", "abc", "--max-new-tokens", "12"]
    assert main([*args, "--stream", "--no-cache", "--no-echo"]) == 0
    assert capsys.readouterr().out == _expected(model, "abc", 12) + "\n"


def test_generate_sampling_is_reproducible_and_tokenizer_override(byte_model, capsys, tmp_path: Path) -> None:
    folder, model = byte_model
    args = ["generate", "--model", str(folder), "--prompt", "hi", "--max-new-tokens", "10", "--no-echo"]
    sample = ["--temperature", "1.0", "--top-k", "40", "--top-p", "0.95", "--seed", "5"]
    assert main([*args, *sample]) == 0
    first = capsys.readouterr().out
    assert main([*args, *sample]) == 0
    assert capsys.readouterr().out == first
    assert first == _expected(model, "hi", 10, temperature=1.0, top_k=40, top_p=0.95, seed=5) + "\n"
    assert model.loaded_tokenizers == [folder, folder]
    assert main([*args, "--tokenizer", str(tmp_path)]) == 0
    assert model.loaded_tokenizers == [folder, folder, tmp_path]  # the override alone is read


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "0"], "top_k must be >= 1"),
    ],
)
def test_invalid_sampling_values_are_one_line_errors(byte_model, capsys, flags, message) -> None:
    folder, _ = byte_model
    assert main(["generate", "--model", str(folder), "--prompt", "a", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_long_prompt_warns_or_fails(byte_model, capsys) -> None:
    folder, model = byte_model
    prompt = "x" * 30  # 30 tokens > context_length 24
    args = ["generate", "--model", str(folder), "--prompt", prompt, "--max-new-tokens", "5", "--no-echo"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "only the last 24" in captured.err
    assert captured.out == _expected(model, prompt[-24:], 5) + "\n"
    assert main([*args, "--strict-context"]) == 2
    assert "30 tokens, more than the model's context_length 24" in capsys.readouterr().err


def test_missing_model_folder(byte_model, capsys, tmp_path: Path) -> None:
    assert (
        main(["generate", "--model", str(tmp_path / "none"), "--prompt", "a", "--tokenizer", str(tmp_path)])
        == 2
    )
    assert "model folder not found" in capsys.readouterr().err


def test_generate_hf_folder_with_real_gpt2_tokenizer(
    tmp_path: Path, gpt2_tokenizer_dir: Path, capsys
) -> None:
    tok = scratchllm.tokenizer.load(gpt2_tokenizer_dir)
    torch.manual_seed(0)
    model = GPTModel(
        ModelConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1)
    ).eval()
    to_hf(model, tmp_path / "hf")
    args = ["generate", "--model", str(tmp_path / "hf"), "--tokenizer", str(gpt2_tokenizer_dir)]
    assert main([*args, "--prompt", "Hello, world", "--max-new-tokens", "8", "--no-echo"]) == 0
    ids = generate(model, [tok.encode("Hello, world")], 8, eos_id=tok.eot_id)[0]
    expected = tok.decode(ids) + "\n"
    assert capsys.readouterr().out == expected
    # Tokenizer files inside the model folder are found without --tokenizer.
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(gpt2_tokenizer_dir / name, tmp_path / "hf" / name)
    assert (
        main(
            ["generate", "--model", str(tmp_path / "hf"), "--prompt", "Hello, world", "--max-new-tokens", "8"]
        )
        == 0
    )
    assert capsys.readouterr().out == "Hello, world" + expected


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", "--device: unknown device 'bogus'; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda", "--device: 'cuda' asked for, but no CUDA GPU is available here"),
        ("mps", "--device: 'mps' asked for, but Apple's MPS backend is not available here"),
    ],
)
def test_unknown_or_absent_device_is_one_line(byte_model, capsys, device, message) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    folder, _ = byte_model
    assert main(["generate", "--model", str(folder), "--prompt", "a", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err == f"scratchllm: error: {message}\n"


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch) -> None:
    from scratchllm.train import device as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_chat_wraps_the_prompt_in_the_default_template(byte_model, capsys) -> None:
    """Our GPTs have no template of their own: --chat uses the default one and prints the reply alone."""
    folder, model = byte_model
    args = ["generate", "--model", str(folder), "--prompt", "hi", "--max-new-tokens", "6", "--chat"]
    assert main(args) == 0
    assert capsys.readouterr().out == _expected(model, "User: hi\n\nAssistant:", 6) + "\n"
    assert main([*args, "--system", "Be brief.", "--echo"]) == 0
    templated = "System: Be brief.\n\nUser: hi\n\nAssistant:"
    assert capsys.readouterr().out == templated + _expected(model, templated, 6) + "\n"


def test_system_without_chat_is_refused(byte_model, capsys) -> None:
    folder, _ = byte_model
    assert main(["generate", "--model", str(folder), "--prompt", "a", "--system", "x"]) == 2
    assert capsys.readouterr().err == "scratchllm: error: --system needs --chat (a system message only exists in a chat template)\n"


def test_generate_from_a_gguf_file(tmp_path: Path, capsys) -> None:
    """A .gguf file goes through weights.load like a folder: its own tokenizer, its own chat template."""
    from scratchllm.weights.gguf import write_gguf
    from scratchllm.weights.hf import hf_config_from, state_dict_to_hf
    from tiny_models import tiny_config, tiny_tokenizer, trained

    model = trained(tiny_config("llama"))
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %} ->"
    path = write_gguf(hf_config_from(model.config), state_dict_to_hf(model, model.config), tiny_tokenizer(),
                      template, tmp_path / "m.gguf", "f32")
    tok = tiny_tokenizer()
    for flags, prompt in (([], "Once upon a time"), (["--chat"], "Once upon a time ->")):
        assert main(["generate", "--model", str(path), "--prompt", "Once upon a time", "--no-echo",
                     "--max-new-tokens", "12", *flags]) == 0
        expected = tok.decode(generate(model, [tok.encode(prompt)], 12, eos_id=tok.eot_id)[0])
        assert capsys.readouterr().out == expected + "\n"

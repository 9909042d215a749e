"""``scratchllm.weights.load``: one entry point for our checkpoints, Hugging Face folders and GGUF files.

Each source must give back the same model (same logits), the tokenizer that belongs to it (same ids) and its chat
template; what cannot be loaded is one line naming the path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from scratchllm.cli import main
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.tokenizer import BPETokenizer
from scratchllm.tokenizer.hf import HFTokenizer, to_hf_tokenizer
from scratchllm.weights import load, save_model
from scratchllm.weights.gguf import write_gguf
from scratchllm.weights.hf import hf_config_from, state_dict_to_hf
from scratchllm.weights.loading import load_tokenizer
from tiny_models import TEXT, save_checkpoint, tiny_config, tiny_tokenizer, trained

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


def same_logits(a: GPTModel, b: GPTModel, atol: float = 0.0) -> None:
    ids = torch.tensor([tiny_tokenizer().encode(TEXT)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def llama() -> GPTModel:
    return trained(tiny_config("llama"))


def hf_tokenizer_files(folder: Path, template: str | None = TEMPLATE) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` (with a chat template) written into a model folder."""
    tok = to_hf_tokenizer(tiny_tokenizer())
    tok.chat_template = template
    tok.save(folder.parent / "tok-files")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder.parent / "tok-files" / name, folder / name)


# ---------------------------------------------------------------------------------------------- the three sources
def test_our_checkpoint_with_its_tokenizer(llama: GPTModel, tmp_path: Path) -> None:
    loaded = load(save_checkpoint(llama, tmp_path / "ckpt"))
    assert loaded.source == "scratchllm" and loaded.path == tmp_path / "ckpt"
    same_logits(loaded.model, llama)
    assert isinstance(loaded.tokenizer, BPETokenizer)
    assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    assert loaded.chat_template is None  # our pretrained GPTs: the default template applies


def test_a_pretraining_checkpoint_uses_the_runs_tokenizer(llama: GPTModel, tmp_path: Path) -> None:
    """``RUN/checkpoints/step-N`` has no tokenizer of its own: the run's ``RUN/tokenizer`` is the one."""
    step = save_model(llama, tmp_path / "run" / "checkpoints" / "step-8")
    tiny_tokenizer().save(tmp_path / "run" / "tokenizer")
    loaded = load(step)
    assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    same_logits(loaded.model, llama)


def test_hugging_face_folder_saved_by_transformers(transformers, tmp_path: Path) -> None:
    """A tiny Llama saved by transformers itself, with a tokenizer.json and a chat template beside it."""
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path / "hf")
    hf_tokenizer_files(tmp_path / "hf")
    loaded = load(tmp_path / "hf")
    assert loaded.source == "hf"
    ids = torch.tensor([tiny_tokenizer().encode(TEXT)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), reference(ids).logits, rtol=0, atol=1e-5)
    assert isinstance(loaded.tokenizer, HFTokenizer)
    assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    assert loaded.chat_template == TEMPLATE


def test_gguf_file(llama: GPTModel, tmp_path: Path) -> None:
    path = write_gguf(hf_config_from(llama.config), state_dict_to_hf(llama, llama.config), tiny_tokenizer(),
                      TEMPLATE, tmp_path / "m.gguf", "f32")
    loaded = load(path)
    assert loaded.source == "gguf"
    same_logits(loaded.model, llama)
    assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    assert loaded.chat_template == TEMPLATE
    assert load(path, dtype=torch.bfloat16).model.tok_emb.weight.dtype == torch.bfloat16


def _adapter_run(llama: GPTModel, root: Path) -> tuple[Path, GPTModel]:
    """A base checkpoint and a LoRA run on it (``root/run/adapter``, as ``finetune instruct`` saves one)."""
    from scratchllm.model.lora import inject_lora, lora_layers
    from scratchllm.weights.adapters import save_adapter

    base = save_checkpoint(llama, root / "base")
    adapted = load(base).model
    lora = inject_lora(adapted, rank=4, targets=["all"])
    torch.manual_seed(3)
    for layer in lora_layers(adapted).values():  # B starts at zero; give the adapter something to change
        torch.nn.init.normal_(layer.lora_B, std=0.05)
    save_adapter(adapted, lora, root / "run" / "adapter", base_model=str(base))
    return root / "run", adapted.eval()


def test_a_lora_adapter_loads_as_its_base_with_the_adapter_merged(llama: GPTModel, tmp_path: Path, capsys) -> None:
    from scratchllm.model.lora import lora_layers

    run, adapted = _adapter_run(llama, tmp_path)
    for path in (run / "adapter", run):  # the adapter folder, or the run folder that holds it
        loaded = load(path)
        assert loaded.source == "adapter" and loaded.path == run / "adapter"
        assert not lora_layers(loaded.model)  # merged: a plain model, as fast as the base
        same_logits(loaded.model, adapted, atol=1e-5)
        assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    with pytest.raises(AssertionError):
        same_logits(load(tmp_path / "base").model, adapted, atol=1e-3)  # the adapter changes the outputs
    assert load_tokenizer(run).encode(TEXT) == tiny_tokenizer().encode(TEXT)
    assert main(["generate", "--model", str(run), "--prompt", "Once upon", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("Once upon")


def test_an_adapter_without_its_base_is_one_line(llama: GPTModel, tmp_path: Path) -> None:
    import json

    run, _ = _adapter_run(llama, tmp_path)
    config_path = run / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(ScratchLLMError, match=r"adapter_config.json: its base model .*base is not there"):
        load(run)
    config_path.write_text(json.dumps({**config, "base_model": ""}))
    with pytest.raises(ScratchLLMError, match="no base_model recorded; merge it yourself"):
        load(run)
    config_path.write_text(json.dumps({**config, "extra": ["lm_head.weight"]}))
    with pytest.raises(ScratchLLMError, match="the adapter of a classifier"):
        load(run)


def test_tokenizer_override_is_the_only_tokenizer_read(llama: GPTModel, tmp_path: Path) -> None:
    """A model folder without any tokenizer loads when one is named; the override's template wins."""
    save_model(llama, tmp_path / "bare")
    hf_tokenizer_files(tmp_path, template=TEMPLATE)  # tmp_path/tokenizer.json: a tokenizer folder of its own
    loaded = load(tmp_path / "bare", tokenizer=tmp_path)
    assert isinstance(loaded.tokenizer, HFTokenizer) and loaded.chat_template == TEMPLATE
    assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)


# ---------------------------------------------------------------------------------------------- refusals
def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path: Path, capsys) -> None:
    small = trained(tiny_config("llama", vocab_size=280), steps=0)
    save_checkpoint(small, tmp_path / "ckpt")  # a 300-id tokenizer beside a 280-row embedding
    with pytest.raises(ScratchLLMError) as error:
        load(tmp_path / "ckpt")
    message = str(error.value)
    assert message == (f"{tmp_path / 'ckpt'}: the tokenizer has 300 ids but the model's vocabulary has only 280 rows; "
                       "the model and the tokenizer do not belong together")
    assert main(["generate", "--model", str(tmp_path / "ckpt"), "--prompt", "a"]) == 2
    assert capsys.readouterr().err == f"scratchllm: error: {message}\n"


def test_more_rows_than_tokens_is_fine(tmp_path: Path) -> None:
    """Vocabularies padded to a multiple of 64 (as many open models are) load."""
    padded = trained(tiny_config("gpt2", vocab_size=320), steps=0)
    assert load(save_checkpoint(padded, tmp_path / "ckpt")).tokenizer.vocab_size == 300


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent", "absent: model folder not found"),
        (lambda p: p / "absent.gguf", "absent.gguf: GGUF file not found"),
        (lambda p: _file(p / "weights.safetensors"), "weights.safetensors: is a file; expected a model folder"),
        (lambda p: _folder(p / "empty"), "empty: missing config.json"),
        (lambda p: save_model(trained(tiny_config("gpt2"), steps=0), p / "run" / "ck"),
         "ck: no tokenizer beside this checkpoint"),
    ],
    ids=["folder", "gguf", "plain-file", "no-config", "no-tokenizer"],
)
def test_missing_paths_are_one_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ScratchLLMError, match=message) as error:
        load(make(tmp_path))
    assert "\n" not in str(error.value)


def _file(path: Path) -> Path:
    path.write_bytes(b"not weights")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# ---------------------------------------------------------------------------------------------- tokenizers
def test_every_model_path_is_a_tokenizer_path(llama: GPTModel, transformers, tmp_path: Path, capsys, monkeypatch) -> None:
    """``load_tokenizer`` and ``scratchllm tokenizer encode --tokenizer`` take the paths ``load`` takes."""
    import io
    import sys

    ckpt = save_checkpoint(llama, tmp_path / "ckpt")
    gguf_file = write_gguf(hf_config_from(llama.config), state_dict_to_hf(llama, llama.config), tiny_tokenizer(),
                           None, tmp_path / "m.gguf", "f16")
    hf = tmp_path / "hf"
    hf.mkdir()
    hf_tokenizer_files(hf)
    expected = tiny_tokenizer().encode(TEXT)
    for path in (ckpt, ckpt / "tokenizer", gguf_file, hf):
        assert load_tokenizer(path).encode(TEXT) == expected, path
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode()), encoding="utf-8"))
        assert main(["tokenizer", "encode", "--tokenizer", str(path)]) == 0
        assert capsys.readouterr().out == " ".join(map(str, expected)) + "\n"


def test_generate_compile_prints_what_eager_decoding_prints(llama: GPTModel, tmp_path: Path, capsys) -> None:
    run = save_checkpoint(llama, tmp_path / "ckpt")
    argv = ["generate", "--model", str(run), "--prompt", "Once upon a time", "--max-new-tokens", "12"]
    assert main(argv) == 0
    eager = capsys.readouterr().out
    assert main([*argv, "--compile"]) == 0
    assert capsys.readouterr().out == eager and eager.startswith("Once upon a time there")
    assert main([*argv, "--compile", "--no-cache"]) == 2
    assert "--compile needs the KV cache" in capsys.readouterr().err


def test_generate_in_each_weight_format(llama: GPTModel, tmp_path: Path, capsys, monkeypatch) -> None:
    from scratchllm.model import quantize

    run = save_checkpoint(llama, tmp_path / "ckpt")
    argv = ["generate", "--model", str(run), "--prompt", "Once upon a time", "--max-new-tokens", "8"]
    formats = []
    real = quantize.quantize_for_decoding
    monkeypatch.setattr(quantize, "quantize_for_decoding", lambda m, f: formats.append(f) or real(m, f))
    texts = {}
    for weights in ("fp32", "bf16", "int8"):
        assert main([*argv, "--weights", weights]) == 0
        texts[weights] = capsys.readouterr().out
    assert formats == ["bf16", "int8"]  # fp32 keeps the packed fp32 path
    # The few greedy tokens of this sharply trained model survive 8-bit weights and bf16 activations.
    assert texts["int8"] == texts["bf16"] == texts["fp32"] and texts["fp32"].startswith("Once upon a time there")
    assert main([*argv, "--weights", "int4"]) == 2

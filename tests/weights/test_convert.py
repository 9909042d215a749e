"""``scratchllm convert`` and GGUF export of models trained here.

A conversion must keep the weights (exactly, in F32), the tokenizer (same ids) and the chat template, in every
direction; what cannot be converted is one line naming the tensor or key, with exit code 2 and nothing written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from scratchllm.cli import main
from scratchllm.generation import generate
from scratchllm.model import GPTModel
from scratchllm.weights import load, to_hf
from scratchllm.weights.gguf import write_gguf
from scratchllm.weights.hf import hf_config_from, state_dict_to_hf
from tiny_models import TEXT, save_checkpoint, tiny_config, tiny_tokenizer, trained

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
PROMPT = tiny_tokenizer().encode("Once upon a time")


def convert(*args: str | Path) -> None:
    assert main(["convert", *map(str, args)]) == 0


def assert_same_weights(a: GPTModel, b: GPTModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def greedy(model: GPTModel, n: int = 24) -> list[int]:
    return generate(model, [PROMPT], n)[0]


@pytest.fixture(scope="module")
def models() -> dict[str, GPTModel]:
    return {family: trained(tiny_config(family)) for family in ("gpt2", "llama")}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_our_model_exports_to_gguf_f32_and_back_exactly(models, tmp_path: Path, family: str) -> None:
    """A model trained here -> GGUF (F32) -> weights.load: identical weights, tokenizer and greedy tokens."""
    model = models[family]
    convert("--input", save_checkpoint(model, tmp_path / "ckpt"), "--to", "gguf", "--out", tmp_path / "m.gguf",
            "--gguf-type", "f32")
    back = load(tmp_path / "m.gguf")
    assert back.source == "gguf"
    assert_same_weights(back.model, model)
    assert back.model.config == model.config
    assert back.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT)
    tokens = greedy(model)
    assert len(set(tokens)) > 3, "a model worth comparing says more than one thing"
    assert greedy(back.model) == tokens


def test_every_direction_keeps_weights_tokenizer_and_template(models, tmp_path: Path) -> None:
    """gguf -> hf -> scratchllm -> gguf: the same model, ids and chat template at every stop."""
    model = models["llama"]
    write_gguf(hf_config_from(model.config), state_dict_to_hf(model, model.config), tiny_tokenizer(), TEMPLATE,
               tmp_path / "start.gguf", "f32")
    convert("--input", tmp_path / "start.gguf", "--to", "hf", "--out", tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
    convert("--input", tmp_path / "hf", "--to", "scratchllm", "--out", tmp_path / "ours")
    assert (tmp_path / "ours" / "tokenizer").is_dir()
    convert("--input", tmp_path / "ours", "--to", "gguf", "--out", tmp_path / "end.gguf", "--gguf-type", "f32")
    for stop in ("hf", "ours", "end.gguf"):
        loaded = load(tmp_path / stop)
        assert_same_weights(loaded.model, model)
        assert loaded.tokenizer.encode(TEXT) == tiny_tokenizer().encode(TEXT), stop
        assert loaded.chat_template == TEMPLATE, stop
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary leftovers"


def test_transformers_loads_the_converted_folder(models, transformers, tmp_path: Path) -> None:
    """Our checkpoint -> hf: transformers' AutoModel and AutoTokenizer read it to the same logits and ids."""
    model = models["llama"]
    convert("--input", save_checkpoint(model, tmp_path / "ckpt"), "--to", "hf", "--out", tmp_path / "hf")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.encode(TEXT, add_special_tokens=False) == tiny_tokenizer().encode(TEXT)
    ids = torch.tensor([tiny_tokenizer().encode(TEXT)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, model(ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kind", "bound"), [("f16", 2e-3), ("q8_0", 2e-2)])
def test_f16_and_q8_0_exports_stay_close(models, tmp_path: Path, kind: str, bound: float) -> None:
    model = models["llama"]
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    convert("--input", ckpt, "--to", "gguf", "--out", tmp_path / "f32.gguf", "--gguf-type", "f32")
    convert("--input", ckpt, "--to", "gguf", "--out", tmp_path / f"{kind}.gguf", "--gguf-type", kind)
    assert (tmp_path / f"{kind}.gguf").stat().st_size < (tmp_path / "f32.gguf").stat().st_size
    back = load(tmp_path / f"{kind}.gguf").model
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        reference, got = model(ids), back(ids)
    assert 0 < (got - reference).abs().max() <= bound * reference.abs().max()


# ---------------------------------------------------------------------------------------------- bad input
def _hf_folder(model: GPTModel, folder: Path) -> Path:
    to_hf(model, folder)
    tiny_tokenizer().save(folder / "tokenizer-unused")  # not read: the HF folder's own files are
    return folder


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))
    return folder


def _drop_tensor(folder: Path, name: str) -> Path:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors[name]
    save_file(tensors, folder / "model.safetensors")
    return folder


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _gguf(model: GPTModel, path: Path) -> Path:
    return write_gguf(hf_config_from(model.config), state_dict_to_hf(model, model.config), tiny_tokenizer(), None,
                      path, "f32")


def _as_q8_1(model: GPTModel, path: Path) -> Path:
    """A GGUF file with one tensor stored as Q8_1, a type the gguf package cannot dequantize."""
    import gguf
    import numpy as np
    from test_gguf import _rewrite

    def change(key, value):
        return np.zeros((value.shape[0], value.shape[1] // 32 * 40), np.uint8) if key == "blk.0.attn_v.weight" else value

    good = _gguf(model, path.parent / "good.gguf")
    return _rewrite(good, path, change, {"blk.0.attn_v.weight": gguf.GGMLQuantizationType.Q8_1})


BAD_INPUTS = {
    "architecture": (lambda m, p: _edit_config(_hf_folder(m, p / "in"), model_type="bert", architectures=["BertModel"]),
                     r"config.json: architecture \['BertModel'\] \(model_type 'bert'\) is not supported"),
    "missing-tensor": (lambda m, p: _drop_tensor(_hf_folder(m, p / "in"), "model.layers.1.mlp.up_proj.weight"),
                       r"missing tensor\(s\) model.layers.1.mlp.up_proj.weight"),
    "shape": (lambda m, p: _edit_config(_hf_folder(m, p / "in"), intermediate_size=48),
              r"tensor model.layers.0.mlp.gate_proj.weight has shape \[64, 32\], expected \[48, 32\]"),
    "truncated-safetensors": (lambda m, p: _truncate(_hf_folder(m, p / "in") / "model.safetensors").parent,
                              "model.safetensors: cannot read safetensors file"),
    "truncated-gguf": (lambda m, p: _truncate(_gguf(m, p / "in.gguf")), "in.gguf: not a readable GGUF file"),
    "tensor-type": (lambda m, p: _as_q8_1(m, p / "in.gguf"), "in.gguf: tensor 'blk.0.attn_v.weight' is stored as Q8_1"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_tensor_or_key(models, tmp_path: Path, capsys, case: str) -> None:
    make, message = BAD_INPUTS[case]
    source = make(models["llama"], tmp_path)
    for to, out in (("gguf", tmp_path / "out.gguf"), ("scratchllm", tmp_path / "out")):
        assert main(["convert", "--input", str(source), "--to", to, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scratchllm: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
        assert re.search(message, err), err
        assert not out.exists()
    assert main(["generate", "--model", str(source), "--prompt", "a"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "hf", "--gguf-type", "q8_0"], "--gguf-type applies to --to gguf only, not --to hf"),
        (["--to", "gguf", "--out", "{tmp}/model.bin"], "model.bin: a GGUF file's name must end in .gguf"),
        (["--to", "scratchllm", "--out", "{ckpt}"], "is the input itself"),
        (["--to", "onnx"], """Parser key "to": Expected one of 'hf', 'gguf', 'scratchllm'. Got value: onnx"""),
    ],
)
def test_options_that_cannot_apply_are_refused(models, tmp_path: Path, capsys, args, message: str) -> None:
    ckpt = save_checkpoint(models["gpt2"], tmp_path / "ckpt")
    argv = ["convert", "--input", str(ckpt), *(a.format(tmp=tmp_path, ckpt=ckpt) for a in args)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_model_with_no_open_architecture_is_refused(tmp_path: Path, capsys) -> None:
    """GPT-2 blocks with RMSNorm exist in no Hugging Face or llama.cpp architecture: refused, not approximated."""
    import dataclasses

    odd = trained(dataclasses.replace(tiny_config("gpt2"), norm="rmsnorm"), steps=0)
    ckpt = save_checkpoint(odd, tmp_path / "ckpt")
    for to in ("hf", "gguf"):
        out = tmp_path / ("out.gguf" if to == "gguf" else "out")
        assert main(["convert", "--input", str(ckpt), "--to", to, "--out", str(out)]) == 2
        assert "no Hugging Face architecture matches this model (pos=learned, norm=rmsnorm" in capsys.readouterr().err
        assert not out.exists()

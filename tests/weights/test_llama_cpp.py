"""llama.cpp runs what we export, and decodes the same greedy tokens as we do.

llama.cpp is the program people run GGUF files with (and Ollama and LM Studio are built on it), so it is the
judge of our export. It comes from ``llama-cpp-python``, the ``bench`` extra, which compiles llama.cpp on install
and is therefore not a dev dependency: without it this module is skipped, saying so.

What is fair to ask of each comparison:

* our own models and the SmolLM2 weights exported in **F32**: llama.cpp computes with the same fp32 weights (its
  KV cache is F16, so logits differ by a few hundredths), and the greedy tokens must be identical;
* the **Q4_1** file itself: llama.cpp multiplies Q4_1 weights by activations it first quantizes to 8 bits, while
  we dequantize the weights and compute in fp32. Logits then differ by about 0.2 on average (3% of their spread),
  enough to flip a near-tie: for "What is the capital of France?" our two best first tokens are 0.08 apart.
  So: every token we choose is one of llama.cpp's two most likely, the logits agree to 5% of their spread, and
  llama.cpp's own greedy answer follows ours until a near-tie (for France, from the first token: it answers in
  French). On this machine the code question agrees for all 32 tokens, the Chinese one for 6.

The SmolLM2 tests are ``slow`` (a 540 MB export and two engines decoding: about two minutes on two busy cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scratchllm.cli import main
from scratchllm.generation import generate
from scratchllm.tokenizer.chat import tokenizer_chat
from scratchllm.weights.saving import save
from tiny_models import TEXT, save_checkpoint, tiny_config, tiny_tokenizer, trained

llama_cpp = pytest.importorskip(
    "llama_cpp", reason='llama-cpp-python (llama.cpp) is not installed; pip install -e ".[bench]" to run these'
)
pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUESTIONS = {
    "france": "What is the capital of France?",
    "code": "Write a Python function that adds two numbers.",
    "chinese": "用中文介绍一下你自己。",
}


def open_llama(path: Path, logits: bool = False):
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, logits_all=logits)


def llama_cpp_greedy(llm, ids: list[int], n: int) -> list[int]:
    """llama.cpp's greedy continuation of ``ids`` (its own sampler at temperature 0), up to its eos or ``n``."""
    out: list[int] = []
    for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
        if token == llm.token_eos() or len(out) == n:
            break
        out.append(token)
    return out


def llama_cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def chat_prompt(loaded, question: str) -> str:
    return tokenizer_chat(loaded.tokenizer, [{"role": "user", "content": question}], template=loaded.chat_template)


def chat_ids(loaded, question: str) -> list[int]:
    return loaded.tokenizer.encode(chat_prompt(loaded, question), allowed_special="all")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_llama_cpp_decodes_our_exported_models_as_we_do(tmp_path: Path, family: str) -> None:
    model = trained(tiny_config(family))
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "m.gguf"
    assert main(["convert", "--input", str(ckpt), "--to", "gguf", "--out", str(out), "--gguf-type", "f32"]) == 0
    llm = open_llama(out)
    assert llm.tokenize(TEXT.encode(), add_bos=False) == tiny_tokenizer().encode(TEXT)
    prompt = tiny_tokenizer().encode("Once upon a time")
    ours = generate(model, [prompt], 24, eos_id=tiny_tokenizer().eot_id)[0]
    assert len(set(ours)) > 3
    assert llama_cpp_greedy(llm, prompt, 24) == ours
    llm.close()


@pytest.fixture(scope="module")
def smollm2_f32(smollm2, tmp_path_factory) -> Path:
    """The SmolLM2 weights as we read them (dequantized to fp32), exported as an F32 GGUF file (540 MB)."""
    return save(smollm2, tmp_path_factory.mktemp("smollm2") / "smollm2-f32.gguf", "gguf", "f32")


@pytest.mark.slow
@pytest.mark.parametrize("question", QUESTIONS)
def test_llama_cpp_on_our_f32_export_of_smollm2(smollm2, smollm2_f32: Path, question: str) -> None:
    llm = open_llama(smollm2_f32, logits=True)
    ids = chat_ids(smollm2, QUESTIONS[question])
    text = chat_prompt(smollm2, QUESTIONS[question]).encode()
    assert llm.tokenize(text, add_bos=False, special=True) == ids  # the exported tokenizer agrees
    ours = generate(smollm2.model, [ids], 32, eos_id=smollm2.tokenizer.eos_id)[0]
    assert llama_cpp_greedy(llm, ids, 32) == ours
    with torch.inference_mode():
        expected = smollm2.model(torch.tensor([ids]))[0].numpy()
    assert np.abs(llama_cpp_logits(llm, ids) - expected).max() < 0.1  # fp32 weights, llama.cpp's F16 KV cache
    llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("question", QUESTIONS)
def test_llama_cpp_on_the_q4_1_file(smollm2, smollm2_gguf: Path, question: str) -> None:
    llm = open_llama(smollm2_gguf, logits=True)
    ids = chat_ids(smollm2, QUESTIONS[question])
    ours = generate(smollm2.model, [ids], 32, eos_id=smollm2.tokenizer.eos_id)[0]
    if question == "france":
        assert smollm2.tokenizer.decode(ours) == "The capital of France is Paris."
    sequence = ids + ours
    theirs = llama_cpp_logits(llm, sequence)[len(ids) - 1 : -1]  # the logits that chose each of our tokens
    with torch.inference_mode():
        mine = smollm2.model(torch.tensor([sequence]))[0, len(ids) - 1 : -1].numpy()
    assert np.abs(theirs - mine).mean() < 0.05 * mine.std()  # 8-bit activations: close, not equal
    top2 = np.argsort(theirs, axis=1)[:, -2:]
    assert all(token in top2[i] for i, token in enumerate(ours)), "each of our tokens is one of llama.cpp's top two"
    # llama.cpp's own greedy answer follows ours until a near-tie (our two best tokens under 0.5 apart)
    greedy = llama_cpp_greedy(llm, ids, 32)
    split = next((i for i, (a, b) in enumerate(zip(greedy, ours)) if a != b), None)
    if split is not None:
        best = np.sort(mine[split])
        assert best[-1] - best[-2] < 0.5, f"llama.cpp left our answer at token {split}, where we are not torn"
    llm.close()

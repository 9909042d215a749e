"""Same numbers as lm-evaluation-harness: its ``HFLM`` and our evaluator on one tiny GPT-2 and the same files.

The model is a random ``transformers.GPT2LMHeadModel`` with the real GPT-2 tokenizer, saved as a Hugging Face
folder; lm-eval loads it with ``HFLM`` and we load it with ``scratchllm.weights.from_hf``. lm-eval reads the
local files through its own installed task configs (``include``-d, with the dataset pointed at local CSV/JSONL
files), so the prompts compared are lm-eval's, not a copy of them. Per-choice log-likelihoods must agree within
1e-4 and acc / acc_norm exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from dev_deps import require
from scratchllm.evaluate.choice import evaluate_subject
from scratchllm.evaluate.tasks import read_task
from scratchllm.tokenizer import load as load_tokenizer
from scratchllm.weights import from_hf

SUBJECTS = ("agronomy", "ancient_chinese")
LIMIT = 6
SHOTS = 2
FEWSHOT_SEED = 7

HELLASWAG = [
    {
        "activity_label": "Removing ice from car",
        "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
        "ctx_b": "then",
        "endings": [
            ", the man adds wax to the windshield and cuts it.",
            ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.",
            ", the man puts on a christmas coat, knitted with netting.",
            ", the man continues removing the snow on his car.",
        ],
        "label": "3",
    },
    {
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to grow tomatoes [title] Pick a sunny spot.",
        "ctx_b": "[step] Tomatoes need at least six hours of sun",
        "endings": [
            " a day. [substeps] Water them well.",
            " every week, or they die.",
            " [title] then plant them in the shade.",
            " and soil that drains.",
        ],
        "label": 0,
    },
    {
        "activity_label": "Baking cookies",
        "ctx_a": "A woman is standing in a kitchen.",
        "ctx_b": "she",
        "endings": ["mixes flour and sugar.", "Runs away.", "sings  a song  loudly.", "opens the oven"],
        "label": 0,
    },
]


# A few-shot pool for HellaSwag: the records above under other activity labels, so every draw is distinguishable.
HELLASWAG_TRAIN = [
    {**record, "activity_label": f"{record['activity_label']} {n}"} for n in range(3) for record in HELLASWAG
]


def _hf_model_folder(transformers, gpt2_tokenizer_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(gpt2_tokenizer_dir / "encoder.json", folder / "vocab.json")
    shutil.copy(gpt2_tokenizer_dir / "vocab.bpe", folder / "merges.txt")
    transformers.GPT2TokenizerFast.from_pretrained(str(folder)).save_pretrained(folder)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=2048, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # a random model with spread-out predictions, so choices differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder)
    return folder


def _task_configs(lm_eval_dir: Path, cmmlu: Path, hellaswag: Path, train: Path, folder: Path) -> list[str]:
    """Task YAMLs that include lm-eval's own configs and only point the dataset at local files."""
    folder.mkdir()
    names = []
    for subject in SUBJECTS:
        name = f"local_cmmlu_{subject}"
        data = {"test": str(cmmlu / "test" / f"{subject}.csv"), "dev": str(cmmlu / "dev" / f"{subject}.csv")}
        (folder / f"{name}.yaml").write_text(
            f"include: {lm_eval_dir / 'tasks' / 'cmmlu' / f'cmmlu_{subject}.yaml'}\n"
            f"task: {name}\nnum_fewshot: {SHOTS}\ndataset_path: csv\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files: {json.dumps(data)}\n",
            encoding="utf-8",
        )
        names.append(name)
    (folder / "local_hellaswag.yaml").write_text(
        f"include: {lm_eval_dir / 'tasks' / 'hellaswag' / 'hellaswag.yaml'}\n"
        "task: local_hellaswag\nnum_fewshot: 0\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files: {json.dumps({'validation': str(hellaswag)})}\n"
        "training_split: null\nvalidation_split: validation\n",
        encoding="utf-8",
    )
    # k-shot HellaSwag: lm-eval's default sampler draws new examples from the train split for every question.
    files = {"validation": str(hellaswag), "train": str(train)}
    (folder / "local_hellaswag_shots.yaml").write_text(
        f"include: {lm_eval_dir / 'tasks' / 'hellaswag' / 'hellaswag.yaml'}\n"
        f"task: local_hellaswag_shots\nnum_fewshot: {SHOTS}\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files: {json.dumps(files)}\n"
        "training_split: train\nvalidation_split: validation\n",
        encoding="utf-8",
    )
    return [*names, "local_hellaswag", "local_hellaswag_shots"]


def _lm_eval_run(lm_eval, model_dir: Path, tasks_dir: Path, tasks: list[str]) -> dict:
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), batch_size=4, device="cpu", dtype="float32")
    return lm_eval.simple_evaluate(
        model=lm, tasks=tasks, limit=LIMIT, log_samples=True,
        task_manager=TaskManager(include_path=str(tasks_dir)), random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=FEWSHOT_SEED,
    )


def _assert_same(theirs: dict, task: str, ours: dict) -> None:
    samples = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
    assert len(samples) == len(ours["loglikelihoods"]) == LIMIT
    for sample, lls in zip(samples, ours["loglikelihoods"]):
        reference = [resp[0] for resp in sample["filtered_resps"]]
        assert lls == pytest.approx(reference, abs=1e-4), f"{task} doc {sample['doc_id']}"
    metrics = theirs["results"][task]
    assert math.isclose(ours["acc"], metrics["acc,none"], abs_tol=1e-12), task
    assert math.isclose(ours["acc_norm"], metrics["acc_norm,none"], abs_tol=1e-12), task


def test_choice_scores_equal_lm_eval(transformers, gpt2_tokenizer_dir, shared_data, tmp_path, monkeypatch) -> None:
    lm_eval = require("lm_eval")
    for name, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_CACHE", str(tmp_path / "hf"))):
        monkeypatch.setenv(name, value)
    model_dir = _hf_model_folder(transformers, gpt2_tokenizer_dir, tmp_path / "model")
    hellaswag = tmp_path / "hellaswag.jsonl"
    hellaswag.write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG * 2), encoding="utf-8")
    train = tmp_path / "hellaswag_train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_TRAIN), encoding="utf-8")
    cmmlu = shared_data / "cmmlu"
    tasks = _task_configs(Path(lm_eval.__file__).parent, cmmlu, hellaswag, train, tmp_path / "tasks")
    theirs = _lm_eval_run(lm_eval, model_dir, tmp_path / "tasks", tasks)  # CMMLU k-shot, HellaSwag 0- and k-shot

    model = from_hf(model_dir)
    tokenizer = load_tokenizer(model_dir)
    for subject in read_task("cmmlu", cmmlu):
        if subject.name in SUBJECTS:
            ours = evaluate_subject(model, tokenizer, subject, shots=SHOTS, limit=LIMIT, batch_size=4)
            _assert_same(theirs, f"local_cmmlu_{subject.name}", ours)
    (subject,) = read_task("hellaswag", hellaswag)
    ours = evaluate_subject(model, tokenizer, subject, shots=0, limit=LIMIT, batch_size=4)
    _assert_same(theirs, "local_hellaswag", ours)
    (subject,) = read_task("hellaswag", hellaswag, dev=train)
    ours = evaluate_subject(
        model, tokenizer, subject, shots=SHOTS, limit=LIMIT, batch_size=4, sampler="random", seed=FEWSHOT_SEED
    )
    _assert_same(theirs, "local_hellaswag_shots", ours)
    prompts = {s["doc_id"]: s["arguments"][0][0] for s in theirs["samples"]["local_hellaswag_shots"]}
    assert len(set(prompts.values())) > 2, "the draws differ from question to question"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"

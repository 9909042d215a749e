"""Task readers and prompts: lm-eval's CMMLU / C-Eval / HellaSwag formats from local files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.tasks import (
    CEVAL_SUBJECTS,
    CMMLU_SUBJECTS,
    build_context,
    continuations,
    hellaswag_preprocess,
    read_task,
)


def test_cmmlu_prompt_is_lm_evals(shared_data: Path) -> None:
    subjects = read_task("cmmlu", shared_data / "cmmlu")
    assert len(subjects) == 67 == len(CMMLU_SUBJECTS)
    assert {s.name for s in subjects} == set(CMMLU_SUBJECTS)
    agronomy = next(s for s in subjects if s.name == "agronomy")
    assert len(agronomy.dev) == 5 and len(agronomy.questions) > 100
    prompt = build_context(agronomy, agronomy.questions[0], agronomy.dev[:1])
    assert prompt == (
        "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
        "肉牛屠宰后，胴体的哪个部位肉质较好\nA. 胸\nB. 腹\nC. 大腿\nD. 小腿\n答案： C\n\n"
        "在农业生产中被当作极其重要的劳动对象发挥作用，最主要的不可替代的基本生产资料是\n"
        "A. 农业生产工具\nB. 土地\nC. 劳动力\nD. 资金\n答案："
    )
    assert continuations(agronomy.questions[0]) == [" A", " B", " C", " D"]
    assert agronomy.questions[0].answer == 1


def test_ceval_layout_and_prompt(tmp_path: Path) -> None:
    for split, rows in (("val", "1,问题一,a,b,c,d,B"), ("dev", "0,例题,e,f,g,h,A,因为")):
        (tmp_path / split).mkdir()
        header = "id,question,A,B,C,D,answer" + (",explanation" if split == "dev" else "")
        (tmp_path / split / f"accountant_{split}.csv").write_text(f"{header}\n{rows}\n", encoding="utf-8")
    (subject,) = read_task("ceval", tmp_path)
    assert subject.name == "accountant" and CEVAL_SUBJECTS["accountant"] == "注册会计师"
    assert build_context(subject, subject.questions[0], subject.dev) == (
        "以下是中国关于注册会计师的单项选择题，请选出其中的正确答案。\n\n"
        "例题\nA. e\nB. f\nC. g\nD. h\n答案： A\n\n问题一\nA. a\nB. b\nC. c\nD. d\n答案："
    )


def test_quoted_newlines_in_csv(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text('Question,A,B,C,D,Answer\n"line one\nline two",1,2,3,4,D\n', encoding="utf-8")
    (subject,) = read_task("cmmlu", tmp_path / "s.csv")
    assert subject.questions[0].context.startswith("line one\nline two\nA. 1") and subject.questions[0].answer == 3


def test_hellaswag_preprocessing() -> None:
    # strip first, then the brackets go: a leading space stays, exactly as in lm-eval
    assert hellaswag_preprocess(" [header] How to cook [title] Boil water.  Then  ") == " How to cook. Boil water. Then"


def test_hellaswag_and_generic_jsonl(tmp_path: Path) -> None:
    record = {"activity_label": "Cooking", "ctx_a": "A man stands.", "ctx_b": "he THEN", "endings": ["a [x]", "b"], "label": "1"}
    (tmp_path / "h.jsonl").write_text(json.dumps(record) + "\n\n", encoding="utf-8")
    (subject,) = read_task("hellaswag", tmp_path / "h.jsonl")
    question = subject.questions[0]
    assert question.context == "Cooking: A man stands. He then"  # str.capitalize, as lm-eval
    assert question.choices == ("a ", "b") and question.answer == 1  # "a [x]" keeps its space, as in lm-eval
    (tmp_path / "g.jsonl").write_text(
        json.dumps({"context": "2+2=", "choices": ["3", "4"], "answer": "4"}) + "\n", encoding="utf-8"
    )
    (tmp_path / "dev.jsonl").write_text(
        json.dumps({"context": "1+1=", "choices": ["2", "5"], "answer": 0}) + "\n", encoding="utf-8"
    )
    (subject,) = read_task("jsonl", tmp_path / "g.jsonl", dev=tmp_path / "dev.jsonl")
    assert build_context(subject, subject.questions[0], subject.dev) == "1+1= 2\n\n2+2="
    assert subject.questions[0].answer == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Question,A,B,C\nq,1,2,3\n", "s.csv:1: missing column(s) d, answer"),
        ("Question,A,B,C,D,Answer\nq,1,2,3\n", "s.csv: row 2: 4 fields, expected 6"),
        ("", "s.csv: empty CSV file"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=re.escape(message)):
        read_task("cmmlu", tmp_path / "s.csv")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"choices": ["a", "b"], "answer": 0}, "g.jsonl:1: missing field 'context'"),
        ({"context": "c", "choices": ["a"], "answer": 0}, "field 'choices' must be a list of at least two strings"),
        ({"context": "c", "choices": ["a", "b"], "answer": 2}, "answer 2 is neither an index below 2"),
    ],
)
def test_bad_jsonl(tmp_path: Path, record: dict, message: str) -> None:
    (tmp_path / "g.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=re.escape(message)):
        read_task("jsonl", tmp_path / "g.jsonl")

"""Multiple-choice tasks read from local files, prompted exactly as lm-evaluation-harness prompts them.

A task is a list of :class:`Subject`\\ s; a subject has the questions to score and a pool of dev questions for
few-shot examples. A question's prompt (:func:`build_context`) is lm-eval's: the subject's description, then ``k``
dev questions each followed by the target delimiter (a space), its answer and a blank line, then the question.
Each choice is scored as the continuation ``" " + choice``.

Formats:

* ``cmmlu`` / ``ceval``: CSV with columns ``Question,A,B,C,D,Answer`` (case-insensitive; CMMLU has a leading
  index column, C-Eval ``id`` and ``explanation``); one file per subject; a folder with ``test/`` (or ``val/``)
  and ``dev/`` folders, a folder of subject files, or one file. Prompt: the subject line
  ``以下是关于{中文名}的单项选择题，请直接给出正确答案的选项。`` (C-Eval: ``以下是中国关于{中文名}的单项选择题，
  请选出其中的正确答案。``) and a blank line, then ``{question}\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n答案：``,
  choices ``A``..``D``.
* ``hellaswag``: JSONL with ``ctx_a``, ``ctx_b`` (or ``ctx``), ``activity_label``, ``endings``, ``label``, with
  lm-eval's preprocessing (WikiHow's bracketed artefacts removed, ``ctx_b`` capitalised).
* ``jsonl``: a generic JSONL of ``context``, ``choices`` and ``answer`` (an index or the answer's text).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_jsonl_objects, read_utf8

TaskFormat = Literal["cmmlu", "ceval", "hellaswag", "jsonl"]
LETTERS = ("A", "B", "C", "D")
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Question:
    """One item: the text before the answer, the answer options, and the index of the right one."""

    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass
class Subject:
    """Questions scored together (one CSV file, one JSONL file), their few-shot pool and description."""

    name: str
    questions: list[Question]
    dev: list[Question] = field(default_factory=list)
    description: str = ""


def build_context(subject: Subject, question: Question, shots: list[Question]) -> str:
    """lm-eval's prompt: description, the examples with their answers, then the question."""
    examples = "".join(
        f"{q.context}{TARGET_DELIMITER}{q.choices[q.answer]}{FEWSHOT_DELIMITER}" for q in shots
    )
    return subject.description + examples + question.context


def continuations(question: Question) -> list[str]:
    """The strings scored after the context: each choice behind the target delimiter."""
    return [TARGET_DELIMITER + choice for choice in question.choices]


# ------------------------------------------------------------------------------------------ CMMLU / C-Eval
#: CMMLU subject (file name) -> the Chinese name in lm-eval's cmmlu prompts.
CMMLU_SUBJECTS: dict[str, str] = {
    "agronomy": "农学",
    "anatomy": "解剖学",
    "ancient_chinese": "古汉语",
    "arts": "艺术学",
    "astronomy": "天文学",
    "business_ethics": "商业伦理",
    "chinese_civil_service_exam": "中国公务员考试",
    "chinese_driving_rule": "中国驾驶规则",
    "chinese_food_culture": "中国饮食文化",
    "chinese_foreign_policy": "中国外交政策",
    "chinese_history": "中国历史",
    "chinese_literature": "中国文学",
    "chinese_teacher_qualification": "中国教师资格",
    "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学",
    "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学",
    "college_law": "大学法律",
    "college_mathematics": "大学数学",
    "college_medical_statistics": "大学医学统计",
    "college_medicine": "大学医学",
    "computer_science": "计算机科学",
    "computer_security": "计算机安全",
    "conceptual_physics": "概念物理学",
    "construction_project_management": "建设工程管理",
    "economics": "经济学",
    "education": "教育学",
    "electrical_engineering": "电气工程",
    "elementary_chinese": "小学语文",
    "elementary_commonsense": "小学常识",
    "elementary_information_and_technology": "小学信息技术",
    "elementary_mathematics": "初等数学",
    "ethnology": "民族学",
    "food_science": "食品科学",
    "genetics": "遗传学",
    "global_facts": "全球事实",
    "high_school_biology": "高中生物",
    "high_school_chemistry": "高中化学",
    "high_school_geography": "高中地理",
    "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理学",
    "high_school_politics": "高中政治",
    "human_sexuality": "人类性行为",
    "international_law": "国际法学",
    "journalism": "新闻学",
    "jurisprudence": "法理学",
    "legal_and_moral_basis": "法律与道德基础",
    "logical": "逻辑学",
    "machine_learning": "机器学习",
    "management": "管理学",
    "marketing": "市场营销",
    "marxist_theory": "马克思主义理论",
    "modern_chinese": "现代汉语",
    "nutrition": "营养学",
    "philosophy": "哲学",
    "professional_accounting": "专业会计",
    "professional_law": "专业法学",
    "professional_medicine": "专业医学",
    "professional_psychology": "专业心理学",
    "public_relations": "公共关系",
    "security_study": "安全研究",
    "sociology": "社会学",
    "sports_science": "体育学",
    "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学",
    "world_history": "世界历史",
    "world_religions": "世界宗教",
}

#: C-Eval subject -> the Chinese name in lm-eval's ceval-valid prompts.
CEVAL_SUBJECTS: dict[str, str] = {
    "accountant": "注册会计师",
    "advanced_mathematics": "高等数学",
    "art_studies": "艺术学",
    "basic_medicine": "基础医学",
    "business_administration": "工商管理",
    "chinese_language_and_literature": "中国语言文学",
    "civil_servant": "公务员",
    "clinical_medicine": "临床医学",
    "college_chemistry": "大学化学",
    "college_economics": "大学经济学",
    "college_physics": "大学物理",
    "college_programming": "大学编程",
    "computer_architecture": "计算机组成",
    "computer_network": "计算机网络",
    "discrete_mathematics": "离散数学",
    "education_science": "教育学",
    "electrical_engineer": "注册电气工程师",
    "environmental_impact_assessment_engineer": "环境影响评价工程师",
    "fire_engineer": "注册消防工程师",
    "high_school_biology": "高中生物",
    "high_school_chemistry": "高中化学",
    "high_school_chinese": "高中语文",
    "high_school_geography": "高中地理",
    "high_school_history": "高中历史",
    "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理",
    "high_school_politics": "高中政治",
    "ideological_and_moral_cultivation": "思想道德修养与法律基础",
    "law": "法学",
    "legal_professional": "法律职业资格",
    "logic": "逻辑学",
    "mao_zedong_thought": "毛泽东思想和中国特色社会主义理论体系概论",
    "marxism": "马克思主义基本原理",
    "metrology_engineer": "注册计量师",
    "middle_school_biology": "初中生物",
    "middle_school_chemistry": "初中化学",
    "middle_school_geography": "初中地理",
    "middle_school_history": "初中历史",
    "middle_school_mathematics": "初中数学",
    "middle_school_physics": "初中物理",
    "middle_school_politics": "初中政治",
    "modern_chinese_history": "近代史纲要",
    "operating_system": "操作系统",
    "physician": "医师资格",
    "plant_protection": "植物保护",
    "probability_and_statistics": "概率统计",
    "professional_tour_guide": "导游资格",
    "sports_science": "体育学",
    "tax_accountant": "税务师",
    "teacher_qualification": "教师资格",
    "urban_and_rural_planner": "注册城乡规划师",
    "veterinary_medicine": "兽医学",
}

_DESCRIPTIONS = {
    "cmmlu": ("以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n", CMMLU_SUBJECTS),
    "ceval": ("以下是中国关于{}的单项选择题，请选出其中的正确答案。\n\n", CEVAL_SUBJECTS),
}
_SPLIT_SUFFIX = re.compile(r"_(test|val|dev)$")  # C-Eval names its files accountant_val.csv, ...


def subject_name(path: Path) -> str:
    """``agronomy.csv`` -> ``agronomy``; ``accountant_val.csv`` -> ``accountant``."""
    return _SPLIT_SUFFIX.sub("", path.stem)


def description(task: str, subject: str) -> str:
    """The subject line of a CMMLU or C-Eval prompt; a subject lm-eval does not know keeps its file name."""
    template, names = _DESCRIPTIONS[task]
    return template.format(names.get(subject, subject.replace("_", " ")))


def read_csv_questions(path: Path) -> list[Question]:
    """Questions of a CMMLU / C-Eval CSV file (``Question,A,B,C,D,Answer``, header names case-insensitive)."""
    try:
        rows = list(csv.reader(io.StringIO(read_utf8(path), newline="")))
    except csv.Error as exc:
        raise ScratchLLMError(f"{path}: invalid CSV ({exc})") from None
    if not rows:
        raise ScratchLLMError(f"{path}: empty CSV file; expected a header Question,A,B,C,D,Answer")
    header = [name.strip().lower() for name in rows[0]]
    wanted = ("question", "a", "b", "c", "d", "answer")
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ScratchLLMError(
            f"{path}:1: missing column(s) {', '.join(missing)}; expected a header Question,A,B,C,D,Answer"
        )
    at = {name: header.index(name) for name in wanted}
    questions = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise ScratchLLMError(f"{path}: row {line}: {len(row)} fields, expected {len(header)}")
        answer = row[at["answer"]].strip()
        if answer not in LETTERS:
            raise ScratchLLMError(f"{path}: row {line}: Answer {answer!r} is not one of A, B, C, D")
        options = [row[at[name]] for name in ("a", "b", "c", "d")]
        text = row[at["question"]].strip() + "".join(f"\n{L}. {o}" for L, o in zip(LETTERS, options)) + "\n答案："
        questions.append(Question(text, LETTERS, LETTERS.index(answer)))
    return questions


def _csv_files(task: str, path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ScratchLLMError(f"{path}: task data not found (expected a CSV file or a folder of them)")
    # CMMLU's layout: test/ beside dev/; C-Eval's: val/, dev/ and test/, whose answers are withheld.
    for split in ("val", "test") if task == "ceval" else ("test", "val"):
        if (path / split).is_dir():
            path = path / split
            break
    files = sorted(path.glob("*.csv"))
    if not files:
        raise ScratchLLMError(f"{path}: no .csv subject files")
    return files


def _dev_file(data: Path, dev: Path | None, subject: str) -> Path | None:
    """The dev file of ``subject``: ``--dev`` (a file, or a folder holding the subject) or ``data``'s dev/."""
    folder = dev if dev is not None else (data / "dev" if data.is_dir() else data.parent.parent / "dev")
    if folder.is_file():
        return folder
    for name in (f"{subject}.csv", f"{subject}_dev.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_csv_task(task: str, data: Path, dev: Path | None = None) -> list[Subject]:
    """A CMMLU / C-Eval style task: one subject per CSV file, dev questions from the matching dev file."""
    subjects = []
    for file in _csv_files(task, data):
        name = subject_name(file)
        dev_file = _dev_file(data, dev, name)
        pool = read_csv_questions(dev_file) if dev_file is not None else []
        subjects.append(Subject(name, read_csv_questions(file), pool, description(task, name)))
    return subjects


# ------------------------------------------------------------------------------------------ JSONL tasks
def _jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise ScratchLLMError(f"{path}: task file not found (expected a .jsonl file)")
    return read_jsonl_objects(path)


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise ScratchLLMError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ScratchLLMError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _choices(record: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    choices = _field(record, key, list, where)
    if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ScratchLLMError(f"{where}: field {key!r} must be a list of at least two strings")
    return tuple(choices)


def _answer(value: Any, choices: tuple[str, ...], where: str, text_is_index: bool = False) -> int:
    """An integer answer is an index; a string one is the answer's text (HellaSwag: an index as text)."""
    if text_is_index and isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return value
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    raise ScratchLLMError(f"{where}: answer {value!r} is neither an index below {len(choices)} nor one of the choices")


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: strip, ``" [title]"`` -> ``". "``, drop ``[...]``, collapse double spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_question(record: dict[str, Any], where: str) -> Question:
    """A HellaSwag record as lm-eval poses it: ``activity_label: ctx_a Ctx_b``, the cleaned endings."""
    if "ctx_a" in record:
        ctx = _field(record, "ctx_a", str, where) + " " + _field(record, "ctx_b", str, where).capitalize()
    else:
        ctx = _field(record, "ctx", str, where)
    label = record.get("activity_label")
    query = hellaswag_preprocess(f"{label}: {ctx}" if isinstance(label, str) else ctx)
    endings = tuple(hellaswag_preprocess(e) for e in _choices(record, "endings", where))
    return Question(query, endings, _answer(record.get("label"), endings, where, text_is_index=True))


def generic_question(record: dict[str, Any], where: str) -> Question:
    choices = _choices(record, "choices", where)
    return Question(_field(record, "context", str, where), choices, _answer(record.get("answer"), choices, where))


def read_jsonl_questions(task: str, path: Path) -> list[Question]:
    make = hellaswag_question if task == "hellaswag" else generic_question
    return [make(record, f"{path}:{line_no}") for line_no, record in _jsonl_records(path)]


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ScratchLLMError(f"{path}: no .jsonl files")
        return files
    return [path]


def read_jsonl_task(task: str, data: Path, dev: Path | None = None) -> list[Subject]:
    """One subject per JSONL file; the few-shot pool from ``dev`` (a file, or a folder with a same-named file)."""
    subjects = []
    for file in _jsonl_files(data):
        dev_file = dev / file.name if dev is not None and dev.is_dir() else dev
        pool = read_jsonl_questions(task, dev_file) if dev_file is not None else []
        subjects.append(Subject(file.stem, read_jsonl_questions(task, file), pool))
    return subjects


def read_task(task: TaskFormat, data: str | Path, dev: str | Path | None = None) -> list[Subject]:
    """Read a task's subjects from local files (see the module docstring for the formats)."""
    data, dev = Path(data), Path(dev) if dev is not None else None
    if dev is not None and not dev.exists():
        raise ScratchLLMError(f"{dev}: dev data not found")
    if task in _DESCRIPTIONS:
        return read_csv_task(task, data, dev)
    if task in ("hellaswag", "jsonl"):
        return read_jsonl_task(task, data, dev)
    raise ScratchLLMError(f"unknown task format {task!r}; expected one of cmmlu, ceval, hellaswag, jsonl")

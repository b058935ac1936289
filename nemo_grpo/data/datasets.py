"""The math datasets: a registry of names, loaded from the Hugging Face Hub or a local file.

Every dataset becomes a list of `MathProblem(problem, answer, meta)`. Local files may be JSONL,
JSON (a list of rows, or `{"data": [...]}`) or parquet, with the columns `problem` and `answer`
(or the hub's own column names, listed per dataset below). Rows without a usable problem or
answer are skipped and counted in one warning; a file that is missing, unreadable or has no
usable row is an error that names the file and the reason.

Where a dataset is looked for, first match wins:
1. `path:` in the config (a file);
2. `data_dir:` in the config, or the environment variable NEMO_GRPO_DATA_DIR: the dataset's
   usual local file name there (for example `math500.jsonl`);
3. the Hugging Face Hub (`datasets.load_dataset`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from nemo_grpo.rewards.extract import find_boxes
from nemo_grpo.utils.errors import UserError

log = logging.getLogger(__name__)

PROBLEM_KEYS = ("problem", "question", "Problem", "Question")
ANSWER_KEYS = ("answer", "Answer", "final_answer")


class DatasetError(UserError, ValueError):
    """A dataset that cannot be loaded; the message names the file or dataset and the reason."""


@dataclass(frozen=True)
class MathProblem:
    problem: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class HubSource:
    repo: str
    split: str
    config: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: where it lives on the hub and locally, per split."""

    name: str
    hub: dict[str, HubSource]
    local_files: dict[str, str]
    default_split: str
    answer_from: Callable[[dict[str, Any]], Any] | None = None
    generate: Callable[[str], list[dict[str, Any]]] | None = None  # synthetic sets: rows from the split name


# Known typos in MATH: the source solution ends in an empty `\\boxed{}`. Both answers are 0
# (choice A in each problem: no prime lies in the range / no term of the sequence is prime).
# Keyed on the start of the problem text so the fix applies to the hub copy and local files alike.
MATH_ERRATA = {
    "For any integer $n>1$, the number of prime numbers greater than $n!+1$": "0",  # train/number_theory/7115
    "You are given a sequence of $58$ terms; each term has the form $P+n$": "0",  # train/number_theory/7117
}


def _math_answer(row: dict[str, Any]) -> Any:
    """MATH rows on the hub carry a solution only; the answer is its last \\boxed{...}."""
    answer = row.get("answer")
    if answer in (None, ""):
        boxes = find_boxes(row.get("solution") or "")
        answer = boxes[-1][2].strip() if boxes else None
    if not answer:
        problem = str(row.get("problem") or "")
        answer = next((fix for start, fix in MATH_ERRATA.items() if problem.startswith(start)), answer)
    return answer


def _gsm8k_answer(row: dict[str, Any]) -> Any:
    """GSM8K's answer field is the worked solution ending in `#### N`; the answer is N."""
    text = str(row.get("answer") or "")
    return text.rsplit("####", 1)[1].strip() if "####" in text else text


ARITHMETIC_LEVELS = {
    # level: (operand range, operators). "easy" is what a 135M instruct model can learn on a CPU.
    "easy": ((1, 9), "+"),
    "medium": ((1, 50), "+-"),
    "hard": ((10, 99), "+-*"),
}


def arithmetic_rows(split: str) -> list[dict[str, Any]]:
    """Synthetic arithmetic problems: split `<level>-<train|test>`, 2000 / 200 rows, fixed seeds."""
    level, _, part = split.partition("-")
    if level not in ARITHMETIC_LEVELS or part not in ("train", "test"):
        raise DatasetError(f"arithmetic split '{split}': use <level>-<train|test> with level in {', '.join(ARITHMETIC_LEVELS)}")
    (lo, hi), ops = ARITHMETIC_LEVELS[level]
    rng = random.Random(f"arithmetic-{split}")
    rows = []
    for _ in range(2000 if part == "train" else 200):
        a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"problem": f"What is {a} {op} {b}?", "answer": str(value)})
    return rows


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "deepscaler",
            {"train": HubSource("agentica-org/DeepScaleR-Preview-Dataset", "train")},
            {"train": "deepscaler.json"},
            "train",
        ),
        DatasetSpec(
            "math",
            {
                "train": HubSource("DigitalLearningGmbH/MATH-lighteval", "train"),
                "test": HubSource("DigitalLearningGmbH/MATH-lighteval", "test"),
                "12k": HubSource("hiyouga/math12k", "train"),
            },
            {"train": "math_train.jsonl", "test": "math_test.jsonl", "12k": "math_12k.jsonl"},
            "train",
            answer_from=_math_answer,
        ),
        DatasetSpec("math500", {"test": HubSource("HuggingFaceH4/MATH-500", "test")}, {"test": "math500.jsonl"}, "test"),
        DatasetSpec("aime24", {"test": HubSource("HuggingFaceH4/aime_2024", "train")}, {"test": "aime24.jsonl"}, "test"),
        DatasetSpec("aime25", {"test": HubSource("math-ai/aime25", "test")}, {"test": "aime25.jsonl"}, "test"),
        DatasetSpec("amc23", {"test": HubSource("math-ai/amc23", "test")}, {"test": "amc23.jsonl"}, "test"),
        DatasetSpec(
            "gsm8k",
            {"train": HubSource("openai/gsm8k", "train", "main"), "test": HubSource("openai/gsm8k", "test", "main")},
            {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"},
            "test",
            answer_from=_gsm8k_answer,
        ),
        DatasetSpec(
            "arithmetic", {}, {f"{lv}-{p}": "" for lv in ARITHMETIC_LEVELS for p in ("train", "test")},
            "easy-train", generate=arithmetic_rows,
        ),
    ]
}


def load_problems(
    name: str,
    *,
    split: str | None = None,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    repeat: int = 1,
    max_samples: int | None = None,
) -> list[MathProblem]:
    """Load a registered dataset (or any file, with `name` used for messages only when unknown).

    `repeat` concatenates the set that many times (validation on AIME with 16 samples per
    problem is `repeat: 16`); `max_samples` keeps the first rows, before repeating.
    """
    spec = REGISTRY.get(name)
    if spec is None and path is None:
        known = ", ".join(sorted(REGISTRY))
        raise DatasetError(f"unknown dataset '{name}': use one of {known}, or give `path:` to a local file")
    split = split or (spec.default_split if spec else None)
    if spec is not None and split not in spec.hub and split not in spec.local_files:
        raise DatasetError(f"dataset '{name}' has no split '{split}': use one of {', '.join(spec.local_files)}")
    answer_from = spec.answer_from if spec else None

    local = None if (spec and spec.generate and path is None) else _local_file(spec, split, path, data_dir)
    if spec is not None and spec.generate is not None and path is None:
        rows = spec.generate(split)
        where = f"{name}:{split}"
    elif local is not None:
        rows: Iterable[dict[str, Any]] = read_rows(local)
        where = str(local)
    else:
        assert spec is not None and split is not None
        rows = _hub_rows(spec.hub[split], name)
        where = f"hub:{spec.hub[split].repo}"
    problems = normalise_rows(rows, where, answer_from)
    if max_samples is not None:
        problems = problems[:max_samples]
    return problems * repeat


def _local_file(spec: DatasetSpec | None, split: str | None, path: Any, data_dir: Any) -> Path | None:
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise DatasetError(f"dataset file not found: {p}")
        return p
    data_dir = data_dir or os.environ.get("NEMO_GRPO_DATA_DIR")
    if data_dir and spec is not None and split in spec.local_files:
        candidate = Path(data_dir).expanduser() / spec.local_files[split]
        if candidate.exists():
            return candidate
        log.info("no %s in %s; trying the hub", candidate.name, data_dir)
    return None


def _hub_rows(source: HubSource, name: str) -> Iterable[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(source.repo, source.config, split=source.split)
    except Exception as exc:  # the hub raises many types; the user needs the reason and a fix
        reason = str(exc).splitlines()[0][:300]
        raise DatasetError(
            f"dataset '{name}' could not be loaded from the hub ({source.repo}, split {source.split}): {reason}. "
            f"Without the hub, set data.data_dir (or NEMO_GRPO_DATA_DIR) to a folder holding the local files, "
            f"or data.train.path to a file"
        ) from None
    return iter(ds)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read rows from JSONL / JSON / parquet. Undecodable JSONL lines count as skipped rows."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset file {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DatasetError(f"dataset file {path}: expected a list of rows or {{'data': [...]}}")
        return data
    rows: list[Any] = []
    # Split on "\n" only: str.splitlines() would also break on U+2028 inside JSON strings.
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(None)  # counted as a skipped row
    return rows


def normalise_rows(
    rows: Iterable[Any], where: str, answer_from: Callable[[dict[str, Any]], Any] | None = None
) -> list[MathProblem]:
    problems: list[MathProblem] = []
    skipped = 0
    for row in rows:
        problem = _first(row, PROBLEM_KEYS) if isinstance(row, dict) else None
        answer = None
        if isinstance(row, dict):
            answer = answer_from(row) if answer_from else _first(row, ANSWER_KEYS)
        answer = _answer_text(answer)
        if not isinstance(problem, str) or not problem.strip() or answer is None:
            skipped += 1
            continue
        meta = {k: v for k, v in row.items() if k not in ("problem", "answer")}
        problems.append(MathProblem(problem=problem, answer=answer, meta=meta))
    if not problems:
        raise DatasetError(f"dataset {where} has no usable rows (each row needs a problem and an answer)")
    if skipped:
        log.warning("dataset %s: skipped %d of %d rows without a usable problem or answer", where, skipped, skipped + len(problems))
    return problems


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    return None


def _answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list) and len(value) == 1:
        return _answer_text(value[0])
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def shuffled(problems: list[MathProblem], seed: int) -> list[MathProblem]:
    """A deterministic shuffle from the seed (the same seed gives the same order everywhere)."""
    out = list(problems)
    random.Random(seed).shuffle(out)
    return out

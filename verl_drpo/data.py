"""GSM8K and MATH in verl's RL parquet format, shared by ``scripts/prepare_gsm8k.py`` and ``scripts/prepare_math.py``.

One row per problem::

    data_source   str   selects the scorer in verl.utils.reward_score.default_compute_score
                        ("openai/gsm8k" -> gsm8k, "DigitalLearningGmbH/MATH-lighteval" and
                        "HuggingFaceH4/MATH-500" -> math_reward)
    prompt        list  chat messages, [{"role": "user", "content": problem + instruction}]
    ability       str   "math"
    reward_model  dict  {"style": "rule", "ground_truth": final answer}
    extra_info    dict  {"split", "index", "question", "solution", ...}

Sources load from the Hugging Face hub by default, or offline from ``local_dataset_path``: a directory written by
``datasets``' ``save_to_disk``, or a directory holding ``<split>.parquet`` / ``<split>.jsonl`` / ``<split>.json``
files (the hub's own layout, e.g. ``main/train-00000-of-00001.parquet``, is found too). Output files are written
to a temporary name and renamed into place only once every split has been converted, so a failure never leaves a
half-written parquet behind.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

GSM8K_SOURCE = "openai/gsm8k"
MATH_TRAIN_SOURCE = "DigitalLearningGmbH/MATH-lighteval"
MATH_TEST_SOURCE = "HuggingFaceH4/MATH-500"

# The instruction tells the model the answer format its scorer parses: verl's gsm8k scorer reads the number after
# "#### " (strict), math_reward reads the last \boxed{...}.
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

_GSM8K_ANSWER = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


class DataError(ValueError):
    """Input data that cannot be converted: missing field, empty split, unreadable file, no final answer."""


# --------------------------------------------------------------------------------------------------- answers
def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the number after the last "####", without thousands separators."""
    match = _GSM8K_ANSWER.search(solution.strip())
    if match is None:
        raise DataError(f"GSM8K solution has no final '#### <number>' line: ...{solution[-80:]!r}")
    return match.group(1).replace(",", "")


def math_boxed_answer(solution: str) -> str:
    """The content of the last \\boxed{...} (or \\fbox{...}) of a MATH solution, as verl's math_reward extracts it."""
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    boxed = last_boxed_only_string(solution)
    if boxed is None:
        raise DataError(f"MATH solution has no \\boxed{{}} answer: ...{solution[-80:]!r}")
    try:
        return remove_boxed(boxed)
    except AssertionError as exc:  # verl's remove_boxed asserts on malformed boxes
        raise DataError(f"MATH solution has a malformed \\boxed answer: {boxed!r}") from exc


# --------------------------------------------------------------------------------------------------- records
def _field(example: dict, name: str, where: str) -> Any:
    if name not in example:
        raise DataError(f"{where}: missing field {name!r} (fields present: {sorted(example)})")
    value = example[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _record(data_source: str, question: str, instruction: str, answer: str, extra: dict) -> dict:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": f"{question} {instruction}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {**extra, "question": question},
    }


def gsm8k_record(example: dict, split: str, index: int) -> dict:
    """One GSM8K example (fields ``question``, ``answer``) as a verl row."""
    where = f"gsm8k {split}[{index}]"
    question = _field(example, "question", where)
    solution = _field(example, "answer", where)
    try:
        answer = gsm8k_answer(solution)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    return _record(GSM8K_SOURCE, question, GSM8K_INSTRUCTION, answer,
                   {"split": split, "index": index, "solution": solution})


def math_record(example: dict, split: str, index: int, data_source: str) -> dict:
    """One MATH example as a verl row: ``problem`` and ``solution`` (MATH-lighteval), plus ``answer`` (MATH-500)."""
    where = f"{data_source} {split}[{index}]"
    question = _field(example, "problem", where)
    solution = _field(example, "solution", where)
    if example.get("answer") not in (None, ""):
        answer = str(example["answer"])
    else:
        try:
            answer = math_boxed_answer(solution)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
    extra = {"split": split, "index": index, "solution": solution}
    for key in ("level", "type", "subject", "unique_id"):
        if example.get(key) is not None:
            extra[key] = str(example[key])
    return _record(data_source, question, MATH_INSTRUCTION, answer, extra)


def convert(examples: Iterable[dict], to_record: Callable[[dict, int], dict], name: str) -> list[dict]:
    """Apply ``to_record(example, index)`` to every example; raise DataError on an empty split."""
    rows = [to_record(dict(example), i) for i, example in enumerate(examples)]
    if not rows:
        raise DataError(f"{name}: the split is empty")
    return rows


# --------------------------------------------------------------------------------------------------- loading
def _read_file(path: str) -> list[dict]:
    import pandas as pd

    try:
        if path.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif path.endswith(".jsonl"):
            frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_json(path)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return frame.to_dict(orient="records")


def load_split(hub_id: str, split: str, config: str | None = None, local_dataset_path: str | None = None,
               max_samples: int | None = None) -> list[dict]:
    """Load one split, from the hub (``datasets.load_dataset``) or from ``local_dataset_path`` (offline)."""
    if local_dataset_path is None:
        import datasets

        try:
            ds = datasets.load_dataset(hub_id, config, split=split)
        except Exception as exc:
            raise DataError(f"cannot load {hub_id} ({config or 'default'}) split {split!r} from the hub: "
                            f"{type(exc).__name__}: {exc}. Offline, pass --local_dataset_path.") from exc
        rows = [dict(r) for r in (ds if max_samples is None else ds.select(range(min(max_samples, len(ds)))))]
    else:
        rows = _load_local(os.path.expanduser(local_dataset_path), split)
    if max_samples is not None:
        rows = rows[:max_samples]
    if not rows:
        raise DataError(f"{local_dataset_path or hub_id}: split {split!r} is empty")
    return rows


def _load_local(path: str, split: str) -> list[dict]:
    if not os.path.exists(path):
        raise DataError(f"local dataset path {path} does not exist")
    if os.path.isfile(path):
        return _read_file(path)
    if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(
        os.path.join(path, "dataset_info.json")
    ):
        import datasets

        try:
            ds = datasets.load_from_disk(path)
        except Exception as exc:
            raise DataError(f"cannot read the saved dataset at {path}: {type(exc).__name__}: {exc}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (splits: {sorted(ds)})")
            ds = ds[split]
        return [dict(r) for r in ds]
    files = sorted(
        f for ext in ("parquet", "jsonl", "json")
        for pattern in (f"{split}.{ext}", f"{split}-*.{ext}", f"*/{split}.{ext}", f"*/{split}-*.{ext}")
        for f in glob.glob(os.path.join(path, pattern))
    )
    if not files:
        raise DataError(f"{path}: no file for split {split!r} (looked for {split}.parquet|jsonl|json, "
                        f"{split}-*.parquet, and the same one directory down)")
    rows: list[dict] = []
    for f in files:
        rows.extend(_read_file(f))
    return rows


# --------------------------------------------------------------------------------------------------- writing
REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def write_parquets(tables: dict[str, list[dict]]) -> dict[str, int]:
    """Write ``{path: rows}`` as parquet files, all or none: every file goes to a temporary name first."""
    import pandas as pd

    staged: list[tuple[str, str]] = []
    try:
        for path, rows in tables.items():
            if not rows:
                raise DataError(f"refusing to write {path}: no rows")
            missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
            if missing:
                raise DataError(f"refusing to write {path}: rows lack {missing}")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            staged.append((tmp, path))
            pd.DataFrame(rows).to_parquet(tmp, index=False)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return {path: len(rows) for path, rows in tables.items()}

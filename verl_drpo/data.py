"""GSM8K, MATH and DAPO-Math/AIME in verl's RL parquet format, shared by ``scripts/prepare_gsm8k.py``,
``scripts/prepare_math.py`` and ``scripts/prepare_dapo.py``.

One row per problem::

    data_source   str   selects the scorer in verl.utils.reward_score.default_compute_score
                        ("openai/gsm8k" -> gsm8k, "DigitalLearningGmbH/MATH-lighteval" and
                        "HuggingFaceH4/MATH-500" -> math_reward; "math_dapo", "aime24", "aime25" -> math_dapo)
    prompt        list  chat messages, [{"role": "user", "content": problem + instruction}]
    ability       str   "math"
    reward_model  dict  {"style": "rule", "ground_truth": final answer}
    extra_info    dict  {"split", "index", "question", "solution", ...}

Sources load from the Hugging Face hub by default, or offline from ``local_dataset_path``: a directory written by
``datasets``' ``save_to_disk``, or a directory holding ``<split>.parquet`` / ``<split>.jsonl`` / ``<split>.json``
files (the hub's own layout, e.g. ``main/train-00000-of-00001.parquet``, is found too); a single file serves one
split only. Outputs are all-or-nothing (``write_parquets``): every destination is checked before any data is read,
existing files are replaced only with ``--overwrite``, and a failure at any step leaves the old files in place and
no temporary file behind.
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
DAPO_TRAIN_HUB_ID = "BytedTsinghua-SIA/DAPO-Math-17k"
AIME24_HUB_ID, AIME24_SPLIT = "HuggingFaceH4/aime_2024", "train"  # 30 problems, fields problem/answer
AIME25_HUB_ID, AIME25_SPLIT = "math-ai/aime25", "test"  # 30 problems, fields problem/answer
# data_source values, chosen for verl 0.9.1's default_compute_score: "math_dapo" and every name starting with "aime"
# go to verl.utils.reward_score.math_dapo (DAPO's scorer: the line "Answer: ..." compared after normalisation, score
# +1/-1 plus an "acc" field). Separate AIME names give separate val-core/aime24/... and val-core/aime25/... metrics.
DAPO_TRAIN_SOURCE, AIME24_SOURCE, AIME25_SOURCE = "math_dapo", "aime24", "aime25"

# The instruction tells the model the answer format its scorer parses: verl's gsm8k scorer reads the number after
# "#### " (strict), math_reward reads the last \boxed{...}.
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

# DAPO-Math-17k's own prompt template (its rows carry it already); AIME rows get the same one, so that evaluation asks
# for the format math_dapo reads.
DAPO_PROMPT_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
                      "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_PROMPT_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

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


def _first_field(example: dict, names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if example.get(name) is not None and str(example[name]).strip():
            return example[name]
    raise DataError(f"{where}: none of the fields {list(names)} is present and non-empty "
                    f"(fields present: {sorted(example)})")


def dapo_record(example: dict, split: str, index: int, data_source: str = DAPO_TRAIN_SOURCE) -> dict:
    """One DAPO-Math-17k row, or one AIME problem, as a verl row scored by verl's math_dapo.

    Accepted forms: DAPO-Math-17k's hub rows, already in verl's schema (``prompt`` a list of chat messages whose user
    message holds the template, ``reward_model.ground_truth``); or a flat problem (``prompt``/``problem``/``question``
    text and ``answer``/``ground_truth``/``solution``), which gets DAPO's prompt template."""
    where = f"{data_source} {split}[{index}]"
    prompt = example.get("prompt")
    if isinstance(prompt, list | tuple) or hasattr(prompt, "tolist"):  # parquet gives numpy arrays of dicts
        messages = [dict(m) for m in (prompt.tolist() if hasattr(prompt, "tolist") else prompt)]
        users = [m for m in messages if m.get("role") == "user" and str(m.get("content", "")).strip()]
        if not users:
            raise DataError(f"{where}: field 'prompt' has no non-empty user message")
        content = str(users[-1]["content"])
        question = content
        if content.startswith(DAPO_PROMPT_PREFIX) and content.endswith(DAPO_PROMPT_SUFFIX):
            question = content[len(DAPO_PROMPT_PREFIX):-len(DAPO_PROMPT_SUFFIX)]
    else:
        question = str(_first_field(example, ("prompt", "problem", "question", "Problem", "Question"), where))
        content = f"{DAPO_PROMPT_PREFIX}{question}{DAPO_PROMPT_SUFFIX}"
    reward_model = example.get("reward_model")
    if isinstance(reward_model, dict) and str(reward_model.get("ground_truth") or "").strip():
        answer = str(reward_model["ground_truth"])
    elif any(str(example.get(k) or "").strip() for k in ("answer", "ground_truth", "Answer")):
        answer = str(_first_field(example, ("answer", "ground_truth", "Answer"), where))
    elif example.get("solution") is not None:
        try:
            answer = math_boxed_answer(str(example["solution"]))
        except DataError as exc:
            raise DataError(f"{where}: no 'answer' field, and {exc}") from None
    else:
        raise DataError(f"{where}: no answer: expected reward_model.ground_truth, 'answer' or a \\boxed 'solution' "
                        f"(fields present: {sorted(example)})")
    answer = answer.strip()
    if re.fullmatch(r"-?\d+\.0+", answer):  # integer answers read back from float columns ("204.0")
        answer = answer.split(".")[0]
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": content}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "question": question},
    }


def drop_duplicate_problems(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep the first row of each (prompt, ground truth) pair; return the rows and how many were dropped."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (row["prompt"][0]["content"], row["reward_model"]["ground_truth"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


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
    check_max_samples(max_samples)
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


def check_max_samples(value: int | None) -> None:
    """``--max_samples`` keeps the first N examples of every split: N must be a positive integer (or unset)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"--max_samples must be a positive integer (the number of examples kept per split), "
                        f"got {value!r}")


def positive_int(text: str) -> int:
    """argparse type of ``--max_samples``: a clear one-line error instead of a silent cut or an empty split."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"must be a positive integer (examples kept per split), got {text!r}")
    return value


def check_split_sources(sources: dict[str, str | None], hint: str) -> None:
    """Refuse to read two splits from one file: ``{split: local path or None}``.

    A single file holds no split information, so reading it for train and for test would evaluate on the training
    data without a word. A directory is fine (each split is looked up by its own file name)."""
    seen: dict[str, str] = {}
    for split, path in sources.items():
        if path is None:
            continue
        real = os.path.realpath(os.path.expanduser(path))
        if not os.path.isfile(real):
            continue
        if real in seen:
            raise DataError(f"the {seen[real]} and {split} splits would both be read from the one file {path}, "
                            f"so evaluation would run on training data: {hint}")
        seen[real] = split


def folder_problem(folder: str) -> str | None:
    """Why files cannot be written into ``folder`` (which need not exist yet), or None: the nearest existing
    ancestor decides whether the folder can be made."""
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def check_outputs(paths: Iterable[str], overwrite: bool = False, flag: str = "--local_save_dir") -> None:
    """Check every destination before any work: its folder is (or can be made) a writable directory, the file is not
    a directory, and an existing file is replaced only with ``overwrite``. Raises DataError naming ``flag``."""
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        problem = folder_problem(folder)
        if problem:
            raise DataError(f"{flag} {folder}: {problem}")
        if os.path.isdir(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise DataError(f"{flag} {folder}: the output {path} exists and is not a regular file; move it away")
        if os.path.exists(path) and not overwrite:
            raise DataError(f"{flag} {folder}: {os.path.basename(path)} already exists; pass --overwrite to "
                            "replace it, or choose another directory")


def write_parquets(tables: dict[str, list[dict]], overwrite: bool = False) -> dict[str, int]:
    """Write ``{path: rows}`` as parquet files, all or none.

    Every destination is checked first (``check_outputs``). The files are written into a staging directory inside
    the destination folder (same file system, so renames are atomic), then renamed into place; an old file is first
    moved into the staging directory, so that a failure at any step puts every old file back. The staging directory
    is removed in every case."""
    import shutil
    import tempfile

    import pandas as pd

    for path, rows in tables.items():
        if not rows:
            raise DataError(f"refusing to write {path}: no rows")
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise DataError(f"refusing to write {path}: rows lack {missing}")
    check_outputs(tables, overwrite=overwrite)
    folders = {os.path.dirname(os.path.abspath(p)) for p in tables}
    created = [f for f in sorted(folders) if not os.path.isdir(f)]
    staging: dict[str, str] = {}
    try:
        for folder in created:
            os.makedirs(folder, exist_ok=True)
        for folder in folders:
            staging[folder] = tempfile.mkdtemp(prefix=".staging-", dir=folder)
    except OSError as exc:
        for folder in staging.values():
            os.rmdir(folder)
        raise DataError(f"cannot write into {exc.filename or sorted(folders)[0]}: {exc.strerror or exc}") from None
    placed: list[str] = []  # destinations that hold a new file
    moved: list[tuple[str, str]] = []  # (destination, where its old file waits in the staging directory)
    try:
        staged = []
        for i, (path, rows) in enumerate(tables.items()):
            tmp = os.path.join(staging[os.path.dirname(os.path.abspath(path))], f"new-{i}.parquet")
            pd.DataFrame(rows).to_parquet(tmp, index=False)
            staged.append((tmp, path))
        for i, (tmp, path) in enumerate(staged):
            if os.path.exists(path):
                backup = os.path.join(os.path.dirname(tmp), f"old-{i}.parquet")
                os.replace(path, backup)
                moved.append((path, backup))
            os.replace(tmp, path)
            placed.append(path)
    except BaseException as exc:
        for path in placed:  # undo: new files out, then old files back
            os.remove(path)
        for path, backup in moved:
            os.replace(backup, path)
        if isinstance(exc, OSError):
            raise DataError(f"writing {exc.filename or 'the outputs'} failed ({exc.strerror or exc}); "
                            "every old file is back in place") from None
        raise
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        for folder in created:  # a folder this call made, left empty by a failure
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
    return {path: len(rows) for path, rows in tables.items()}


def prepare(tool: str, outputs: dict[str, str], sources: dict[str, str | None], hint: str,
            rows_of: Callable[[str], list[dict]], overwrite: bool = False) -> int:
    """The body of every ``scripts/prepare_*.py``: check every output (``check_outputs``) and that no one file feeds
    two splits (``check_split_sources``, ``hint`` says what to pass instead), build each split's rows with
    ``rows_of(split)`` in the order of ``outputs``, write them all or none (``write_parquets``) and print the counts.
    ``outputs`` and ``sources`` map a split to its parquet path and its local path (None: the hub). A DataError is one
    line on stderr, exit status 1."""
    import sys

    try:
        check_outputs(outputs.values(), overwrite=overwrite)
        check_split_sources(sources, hint=hint)
        tables = {outputs[split]: rows_of(split) for split in outputs}
        counts = write_parquets(tables, overwrite=overwrite)
    except DataError as err:
        print(f"{tool}: {err}", file=sys.stderr)
        return 1
    for path, n in counts.items():
        print(f"wrote {n} rows to {path}")
    return 0

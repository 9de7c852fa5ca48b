"""GSM8K, MATH and DAPO-Math/AIME problems as rows of verl's RL parquet format.

One row per problem::

    data_source   str   selects the scorer in verl.utils.reward_score.default_compute_score
                        ("openai/gsm8k" -> gsm8k, "DigitalLearningGmbH/MATH-lighteval" and
                        "HuggingFaceH4/MATH-500" -> math_reward; "math_dapo", "aime24", "aime25" -> math_dapo)
    prompt        list  chat messages, [{"role": "user", "content": problem + instruction}]
    ability       str   "math"
    reward_model  dict  {"style": "rule", "ground_truth": final answer}
    extra_info    dict  {"split", "index", "question", "solution", ...}
"""

from __future__ import annotations

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

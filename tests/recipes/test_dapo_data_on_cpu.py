"""scripts/prepare_dapo.py on tiny invented copies of DAPO-Math-17k and AIME 2024/2025 (the hub's field layouts),
and verl's own default_compute_score on the rows it writes."""

import importlib.util
import os

import pandas as pd
import pytest

from verl_drpo.data import records, sources, writer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("prepare_dapo", os.path.join(ROOT, "scripts", "prepare_dapo.py"))
prepare_dapo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_dapo)


def _dapo_hub_row(problem, answer, uid):
    # DAPO-Math-17k's hub rows are already in verl's schema, with DAPO's prompt template
    return {"data_source": "math_dapo", "ability": "MATH",
            "prompt": [{"role": "user", "content": f"{records.DAPO_PROMPT_PREFIX}{problem}{records.DAPO_PROMPT_SUFFIX}"}],
            "reward_model": {"style": "rule-lighteval/MATH_v2", "ground_truth": answer},
            "extra_info": {"index": uid}}


DAPO_ROWS = [
    _dapo_hub_row("A bag has 5 red and 29 blue marbles. How many marbles?", "34", "a1"),
    _dapo_hub_row("What is 6 times 7?", "42", "b2"),
    _dapo_hub_row("A bag has 5 red and 29 blue marbles. How many marbles?", "34", "a1-copy"),  # the hub repeats rows
]
AIME24_ROWS = [{"id": 60, "problem": "Find the remainder when 2024 is divided by 1000.", "answer": 24,
                "solution": "It is $\\boxed{24}$.", "url": "x", "year": "2024"}]
AIME25_ROWS = [{"problem": "Compute 3 + 4.", "answer": "7", "id": "0"},
               {"problem": "Compute 10 * 11.", "answer": "110", "id": "1"}]


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_parquet(path) if path.endswith(".parquet") else frame.to_json(path, orient="records", lines=True)


@pytest.fixture
def copies(tmp_path):
    _write(str(tmp_path / "dapo" / "data" / "train-00000-of-00001.parquet"), DAPO_ROWS)  # the hub's layout
    _write(str(tmp_path / "aime24" / "data" / "train-00000-of-00001.parquet"), AIME24_ROWS)
    _write(str(tmp_path / "aime25" / "test.jsonl"), AIME25_ROWS)
    return ["--local_dataset_path", str(tmp_path / "dapo"), "--local_aime24_path", str(tmp_path / "aime24"),
            "--local_aime25_path", str(tmp_path / "aime25")]


def _read(path):
    return pd.read_parquet(path).to_dict(orient="records")


def _score(row, response):
    from verl.utils.reward_score import default_compute_score

    return default_compute_score(row["data_source"], response, row["reward_model"]["ground_truth"])


def test_writes_three_files_in_verls_schema_scored_by_math_dapo(copies, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare_dapo.main([*copies, "--local_save_dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["aime24.parquet", "aime25.parquet", "train.parquet"]
    assert "dropped 1 exact duplicate" in capsys.readouterr().out
    train, aime24, aime25 = _read(out / "train.parquet"), _read(out / "aime24.parquet"), _read(out / "aime25.parquet")
    assert [r["reward_model"]["ground_truth"] for r in train] == ["34", "42"]
    assert [r["reward_model"]["ground_truth"] for r in aime24] == ["24"]
    assert [r["reward_model"]["ground_truth"] for r in aime25] == ["7", "110"]
    assert {r["data_source"] for r in train} == {"math_dapo"}
    assert aime24[0]["data_source"] == "aime24" and aime25[0]["data_source"] == "aime25"
    for row in (train[0], aime24[0], aime25[1]):
        assert set(writer.REQUIRED_COLUMNS) <= set(row) and row["ability"] == "math"
        (message,) = row["prompt"]
        assert message["role"] == "user"
        assert message["content"].startswith(records.DAPO_PROMPT_PREFIX)  # the hub's template, kept, or added
        assert message["content"].endswith(records.DAPO_PROMPT_SUFFIX)
        assert message["content"].count("Answer:") == 2  # template not applied twice
    assert train[0]["extra_info"]["question"] == "A bag has 5 red and 29 blue marbles. How many marbles?"
    # verl's own dispatch: every data_source goes to math_dapo (+1 right, -1 wrong, on the "Answer:" line)
    from verl.utils.reward_score import math_dapo

    for row, right, wrong in ((train[0], "34", "35"), (aime24[0], "24", "1024"), (aime25[1], "110", "11")):
        good = _score(row, f"Adding them up.\nAnswer: {right}")
        assert good["score"] == 1.0 and good["acc"] is True
        assert _score(row, f"Adding them up.\nAnswer: {wrong}")["score"] == -1.0
        assert good == math_dapo.compute_score(f"Adding them up.\nAnswer: {right}", row["reward_model"]["ground_truth"])


def test_flat_rows_and_boxed_solutions(tmp_path):
    row = records.dapo_record({"question": "What is 2+2?", "solution": "It is $\\boxed{4}$."}, "aime24", 0, "aime24")
    assert row["reward_model"]["ground_truth"] == "4"
    assert row["prompt"][0]["content"] == f"{records.DAPO_PROMPT_PREFIX}What is 2+2?{records.DAPO_PROMPT_SUFFIX}"
    assert records.dapo_record({"problem": "p", "answer": 204.0}, "aime25", 0, "aime25")["reward_model"][
        "ground_truth"] == "204"
    with pytest.raises(records.DataError, match="no answer"):
        records.dapo_record({"problem": "p"}, "train", 3)


def test_missing_answer_fails_and_writes_nothing(copies, tmp_path, capsys):
    _write(str(tmp_path / "aime25" / "test.jsonl"), [{"problem": "Compute 3 + 4.", "id": "0"}])
    out = tmp_path / "out"
    assert prepare_dapo.main([*copies, "--local_save_dir", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "aime25" in err and "no answer" in err
    assert not out.exists()


def test_one_file_for_two_datasets_and_existing_outputs_are_refused(copies, tmp_path, capsys):
    single = tmp_path / "aime25" / "test.jsonl"
    argv = ["--local_dataset_path", str(tmp_path / "dapo"), "--local_aime24_path", str(single),
            "--local_aime25_path", str(single), "--local_save_dir", str(tmp_path / "out")]
    assert prepare_dapo.main(argv) == 1
    assert "one file" in capsys.readouterr().err
    out = tmp_path / "out2"
    assert prepare_dapo.main([*copies, "--local_save_dir", str(out)]) == 0
    before = (out / "aime24.parquet").read_bytes()
    assert prepare_dapo.main([*copies, "--local_save_dir", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "aime24.parquet").read_bytes() == before
    assert prepare_dapo.main([*copies, "--local_save_dir", str(out), "--overwrite", "--max_samples", "1"]) == 0
    assert len(_read(out / "aime25.parquet")) == 1

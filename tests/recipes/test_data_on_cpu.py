"""scripts/prepare_gsm8k.py and scripts/prepare_math.py on small synthetic fixtures written here (same schema as the
hub datasets, invented problems), and verl's own reward function on the rows they produce."""

import importlib.util
import os

import pandas as pd
import pytest

from verl_drpo.data import records, sources, writer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_gsm8k = _load_script("prepare_gsm8k")
prepare_math = _load_script("prepare_math")

GSM8K_TRAIN = [
    {"question": "A crate holds 3 melons and a farmer adds 4 more. How many melons are in the crate?",
     "answer": "The crate has 3 + 4 = <<3+4=7>>7 melons.\n#### 7"},
    {"question": "A shop sells 40 lamps a day for 30 days. How many lamps does it sell?",
     "answer": "It sells 40 * 30 = <<40*30=1200>>1200 lamps.\n#### 1,200"},
    {"question": "A diver is at 5 metres and rises 9 metres. Where is she relative to the surface?",
     "answer": "5 - 9 = -4.\n#### -4"},
]
GSM8K_TEST = [{"question": "Two boxes hold 6 pens each. How many pens?", "answer": "2 * 6 = 12\n#### 12"}]
MATH_TRAIN = [
    {"problem": "What is $\\frac{2}{4}$ in lowest terms?", "solution": "Divide by 2: $\\boxed{\\frac{1}{2}}$.",
     "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Solve $x + 3 = 10$.", "solution": "First $x=7-0$, so $x = \\boxed{7}$.",
     "level": "Level 1", "type": "Algebra"},
]
MATH_500 = [
    {"problem": "Compute $3^2$.", "solution": "$3^2 = \\boxed{9}$.", "answer": "9", "subject": "Algebra",
     "level": 1, "unique_id": "test/algebra/0.json"},
]


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)


@pytest.fixture
def gsm8k_dir(tmp_path):
    root = tmp_path / "gsm8k"  # the hub's layout: <config>/<split>-00000-of-00001.parquet
    _write(str(root / "main" / "train-00000-of-00001.parquet"), GSM8K_TRAIN)
    _write(str(root / "main" / "test-00000-of-00001.parquet"), GSM8K_TEST)
    return root


@pytest.fixture
def math_dirs(tmp_path):
    _write(str(tmp_path / "lighteval" / "train.jsonl"), MATH_TRAIN)
    _write(str(tmp_path / "math500" / "test.jsonl"), MATH_500)
    return tmp_path / "lighteval", tmp_path / "math500"


def _score(row, response):
    from verl.utils.reward_score import default_compute_score

    return float(default_compute_score(row["data_source"], response, row["reward_model"]["ground_truth"]))


def test_gsm8k_rows_follow_verls_schema_and_score(gsm8k_dir, tmp_path):
    out = tmp_path / "out"
    assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out)]) == 0
    train = pd.read_parquet(out / "train.parquet").to_dict(orient="records")
    test = pd.read_parquet(out / "test.parquet").to_dict(orient="records")
    assert len(train) == 3 and len(test) == 1
    assert [r["reward_model"]["ground_truth"] for r in train] == ["7", "1200", "-4"]
    row = train[0]
    assert row["data_source"] == "openai/gsm8k" and row["ability"] == "math"
    assert row["reward_model"]["style"] == "rule"
    (message,) = row["prompt"]
    assert message["role"] == "user" and message["content"].startswith(GSM8K_TRAIN[0]["question"])
    assert "####" in message["content"]
    assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == 0
    # verl's scorer, dispatched on data_source: strict "#### <number>"
    assert _score(row, "3 plus 4 is 7.\n#### 7") == 1.0
    assert _score(row, "3 plus 4 is 8.\n#### 8") == 0.0
    assert _score(row, "The answer is 7.") == 0.0  # right number, wrong format: strict scorer gives 0
    assert _score(train[1], "#### 1200") == 1.0


def test_math_rows_follow_verls_schema_and_score(math_dirs, tmp_path):
    train_dir, test_dir = math_dirs
    out = tmp_path / "out"
    argv = ["--local_dataset_path", str(train_dir), "--local_test_dataset_path", str(test_dir),
            "--local_save_dir", str(out)]
    assert prepare_math.main(argv) == 0
    train = pd.read_parquet(out / "train.parquet").to_dict(orient="records")
    test = pd.read_parquet(out / "test.parquet").to_dict(orient="records")
    assert [r["reward_model"]["ground_truth"] for r in train] == ["\\frac{1}{2}", "7"]
    assert test[0]["reward_model"]["ground_truth"] == "9"
    assert {r["data_source"] for r in train} == {"DigitalLearningGmbH/MATH-lighteval"}
    assert test[0]["data_source"] == "HuggingFaceH4/MATH-500"
    assert "\\boxed{}" in train[0]["prompt"][0]["content"]
    assert train[0]["extra_info"]["level"] == "Level 1" and test[0]["extra_info"]["unique_id"] == "test/algebra/0.json"
    assert _score(train[0], "so the result is \\boxed{\\frac{1}{2}}") == 1.0
    assert _score(train[0], "so the result is \\boxed{\\frac{1}{3}}") == 0.0
    assert _score(test[0], "\\boxed{9}") == 1.0 and _score(test[0], "\\boxed{6}") == 0.0


def test_save_to_disk_copy_and_max_samples(tmp_path):
    import datasets

    local = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(GSM8K_TRAIN), "test": datasets.Dataset.from_list(GSM8K_TEST)
    }).save_to_disk(str(local))
    out = tmp_path / "out"
    argv = ["--local_dataset_path", str(local), "--local_save_dir", str(out), "--max_samples", "2"]
    assert prepare_gsm8k.main(argv) == 0
    assert len(pd.read_parquet(out / "train.parquet")) == 2


def test_missing_field_fails_and_writes_nothing(gsm8k_dir, tmp_path, capsys):
    # a valid train split and a test split without "answer": neither file may appear
    _write(str(gsm8k_dir / "main" / "test-00000-of-00001.parquet"), [{"question": "What is 1 + 1?"}])
    out = tmp_path / "out"
    assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out)]) == 1
    assert "missing field 'answer'" in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []


def test_empty_split_fails(gsm8k_dir, tmp_path, capsys):
    pd.DataFrame({"question": pd.Series([], dtype=str), "answer": pd.Series([], dtype=str)}).to_parquet(
        gsm8k_dir / "main" / "test-00000-of-00001.parquet")
    assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(tmp_path / "o")]) == 1
    assert "empty" in capsys.readouterr().err


def test_unreadable_file_fails(gsm8k_dir, tmp_path, capsys):
    (gsm8k_dir / "main" / "train-00000-of-00001.parquet").write_bytes(b"this is not parquet")
    assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(tmp_path / "o")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_missing_split_file_and_path(tmp_path, capsys):
    assert prepare_gsm8k.main(["--local_dataset_path", str(tmp_path / "nope"), "--local_save_dir",
                               str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert prepare_gsm8k.main(["--local_dataset_path", str(tmp_path / "emptydir"), "--local_save_dir",
                               str(tmp_path / "o")]) == 1
    assert "no file for split 'train'" in capsys.readouterr().err


@pytest.mark.parametrize("solution", ["The answer is 7.", "#### seven"])
def test_gsm8k_solution_without_final_number_is_an_error(solution):
    with pytest.raises(records.DataError, match="####"):
        records.gsm8k_record({"question": "q", "answer": solution}, "train", 0)


def test_math_solution_without_box_is_an_error():
    with pytest.raises(records.DataError, match="boxed"):
        records.math_record({"problem": "p", "solution": "x = 7"}, "train", 3, records.MATH_TRAIN_SOURCE)


def test_failed_write_leaves_no_partial_file(tmp_path):
    good = [records.gsm8k_record(GSM8K_TRAIN[0], "train", 0)]
    bad = [{"data_source": "x", "prompt": [], "ability": "math", "reward_model": {}, "extra_info": {},
            "unserialisable": object()}]
    with pytest.raises(Exception):
        writer.write_parquets({str(tmp_path / "a.parquet"): good, str(tmp_path / "b.parquet"): bad})
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ issue 12: splits, overwrites, atomic writes, flags
def _gsm8k_files(tmp_path):
    _write(str(tmp_path / "in" / "train.jsonl"), GSM8K_TRAIN)
    _write(str(tmp_path / "in" / "test.jsonl"), GSM8K_TEST)
    return tmp_path / "in" / "train.jsonl", tmp_path / "in" / "test.jsonl"


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_one_file_is_not_both_train_and_test(tmp_path, capsys):
    train_file, test_file = _gsm8k_files(tmp_path)
    out = tmp_path / "out"
    assert prepare_gsm8k.main(["--local_dataset_path", str(train_file), "--local_save_dir", str(out)]) == 1
    _one_line_error(capsys, "--local_test_dataset_path", "one file")
    assert not out.exists()
    argv = ["--local_dataset_path", str(train_file), "--local_test_dataset_path", str(test_file),
            "--local_save_dir", str(out)]
    assert prepare_gsm8k.main(argv) == 0
    assert len(pd.read_parquet(out / "train.parquet")) == 3 and len(pd.read_parquet(out / "test.parquet")) == 1


def test_math_refuses_the_same_file_for_both_splits(tmp_path, capsys):
    _write(str(tmp_path / "all.jsonl"), MATH_500)
    argv = ["--local_dataset_path", str(tmp_path / "all.jsonl"), "--local_test_dataset_path",
            str(tmp_path / "all.jsonl"), "--local_save_dir", str(tmp_path / "out")]
    assert prepare_math.main(argv) == 1
    _one_line_error(capsys, "one file")


def test_existing_outputs_are_replaced_only_with_overwrite(gsm8k_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out)]
    assert prepare_gsm8k.main(argv) == 0
    capsys.readouterr()
    (out / "train.parquet").write_bytes(b"the user's own file")
    assert prepare_gsm8k.main(argv) == 1
    _one_line_error(capsys, "already exists", "--overwrite")
    assert (out / "train.parquet").read_bytes() == b"the user's own file"
    assert prepare_gsm8k.main([*argv, "--overwrite"]) == 0
    assert len(pd.read_parquet(out / "train.parquet")) == 3
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet"]


def test_a_directory_at_a_destination_writes_nothing(gsm8k_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "test.parquet").mkdir(parents=True)
    (out / "train.parquet").write_bytes(b"old train")
    argv = ["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out), "--overwrite"]
    assert prepare_gsm8k.main(argv) == 1
    _one_line_error(capsys, "test.parquet", "not a regular file")
    assert (out / "train.parquet").read_bytes() == b"old train"
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet"]


def test_a_failed_rename_puts_every_old_file_back(gsm8k_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"old train")
    (out / "test.parquet").write_bytes(b"old test")
    real_replace = os.replace

    def replace_failing_on_the_second_output(src, dst):
        if str(dst) == str(out / "test.parquet") and not os.path.basename(str(src)).startswith("old-"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_the_second_output)
    argv = ["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out), "--overwrite"]
    assert prepare_gsm8k.main(argv) == 1
    _one_line_error(capsys, "old file")
    assert (out / "train.parquet").read_bytes() == b"old train"
    assert (out / "test.parquet").read_bytes() == b"old test"
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet"]  # no staging leftovers


def test_save_dir_that_is_a_file_is_one_clear_line(gsm8k_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "sub"):
        assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out)]) == 1
        _one_line_error(capsys, "--local_save_dir", "is a file")
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where nobody can make a directory")
def test_unwritable_save_dir_is_one_clear_line(gsm8k_dir, capsys):
    out = "/proc/verl-drpo-test-unwritable/gsm8k"
    assert prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", out]) == 1
    _one_line_error(capsys, "/proc/verl-drpo-test-unwritable")


@pytest.mark.parametrize("value", ["-2", "0", "two"])
def test_max_samples_must_be_positive(gsm8k_dir, tmp_path, capsys, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        prepare_gsm8k.main(["--local_dataset_path", str(gsm8k_dir), "--local_save_dir", str(out),
                            "--max_samples", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--max_samples" in err and "positive integer" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(records.DataError, match="--max_samples"):
        sources.load_split("openai/gsm8k", "train", "main", str(gsm8k_dir), max_samples=-2)

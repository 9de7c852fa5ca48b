"""Data tools say what is wrong: one file for two evaluation sets is not "training data"."""

import pytest

from verl_drpo.data.records import DataError
from verl_drpo.data.sources import check_split_sources


def test_one_file_for_both_aime_sets_is_named_as_such(tmp_path):
    """Before: prepare_dapo with one file for AIME24 and AIME25 said evaluation would run on training data."""
    single = tmp_path / "aime.jsonl"
    single.write_text("{}\n")
    with pytest.raises(DataError, match="one evaluation set would be reported twice") as err:
        check_split_sources({"train": None, "aime24": str(single), "aime25": str(single)}, hint="different files")
    assert "training data" not in str(err.value)


def test_one_file_for_train_and_test_is_still_training_data(tmp_path):
    single = tmp_path / "all.jsonl"
    single.write_text("{}\n")
    with pytest.raises(DataError, match="evaluation would run on training data"):
        check_split_sources({"train": str(single), "test": str(single)}, hint="different files")

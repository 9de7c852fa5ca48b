"""verl_drpo.data.rewards.math_verify_score loaded through verl's own custom-reward hook, on DAPO/AIME-style responses."""

import sys

import pytest
from omegaconf import OmegaConf


def _verl_loaded_reward_fn():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://verl_drpo.data.rewards", "name": "math_verify_score", "reward_kwargs": {}}}})
    return get_custom_reward_fn(config)


def test_math_verify_reward_through_verls_custom_reward_hook():
    pytest.importorskip("math_verify")
    score = _verl_loaded_reward_fn()
    right = score(data_source="aime24", solution_str="Adding them up.\nAnswer: 34", ground_truth="34", extra_info={})
    assert right == {"score": 1.0, "acc": True}
    assert score(data_source="aime24", solution_str="Answer: 35", ground_truth="34", extra_info={})["score"] == 0.0
    # equivalence, not string match: the reason to prefer Math-Verify
    assert score(data_source="math_dapo", solution_str="so it is \\boxed{\\frac{1}{2}}", ground_truth="0.5",
                 extra_info={})["score"] == 1.0
    from verl.utils.reward_score import default_compute_score

    assert default_compute_score("aime24", "so it is\nAnswer: \\frac{1}{2}", "0.5")["score"] == -1.0  # math_dapo


def test_missing_math_verify_is_an_error_not_a_zero_reward(monkeypatch):
    from verl_drpo import rewards

    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if the package were not installed
    with pytest.raises(ImportError, match="pip install math-verify"):
        rewards.math_verify_score("aime24", "Answer: 34", "34")

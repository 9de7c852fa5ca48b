"""Reward functions for verl's ``reward.custom_reward_function`` hook.

verl 0.9.1's ``default_compute_score`` sends no data_source to its Math-Verify scorer
(``verl.utils.reward_score.math_verify``): "math_dapo" and "aime*" go to ``math_dapo``. The DRPO paper's DAPO-Math/
AIME runs use a math-verify reward, so this module exposes verl's Math-Verify scorer under verl's reward signature::

    reward.custom_reward_function.path=pkg://verl_drpo.data.rewards
    reward.custom_reward_function.name=math_verify_score

It needs ``pip install math-verify`` where the reward workers run.
"""

from __future__ import annotations


def math_verify_score(data_source: str, solution_str: str, ground_truth: str, extra_info=None, **kwargs) -> dict:
    """1.0 if Math-Verify finds the response's answer equal to ``ground_truth`` (as ``\\boxed{ground_truth}``), else
    0.0, from ``verl.utils.reward_score.math_verify.compute_score``; ``acc`` is the same as a bool (as math_dapo
    reports it)."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        # verl's scorer would print a hint and then score every response 0: a silent dead reward
        raise ImportError("verl_drpo.data.rewards.math_verify_score needs the math-verify package in the reward "
                          "workers' environment: pip install math-verify") from None
    from verl.utils.reward_score import math_verify as verl_math_verify

    score = float(verl_math_verify.compute_score(solution_str, ground_truth))
    return {"score": score, "acc": score > 0}

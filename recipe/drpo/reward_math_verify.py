"""math-verify scoring for the DRPO recipes (``REWARD=math_verify``): the grader the DRPO paper uses (Appendix D, as
the authors' UniRL port of their run states), 1.0 when the parsed answer matches the ground truth, else 0.0.

verl 0.9.1 ships this scorer (``verl.utils.reward_score.math_verify``) but its ``default_compute_score`` routes no
data_source to it; the recipes select this file as ``reward.custom_reward_function``, which verl calls with keyword
arguments. verl's scorer turns every exception into a score of 0, so without the ``math-verify`` package every
answer would silently score 0: importing this file fails instead, saying what to install.
"""

import importlib.util

if importlib.util.find_spec("math_verify") is None:
    raise ImportError("REWARD=math_verify needs the math-verify package in every Ray worker: pip install math-verify")

from verl.utils.reward_score import math_verify as _verl_math_verify  # noqa: E402  (after the check, on purpose)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """1.0 if math-verify finds the ground truth among the response's final answers, else 0.0 (any data_source)."""
    return float(_verl_math_verify.compute_score(solution_str, ground_truth))

"""Forwarding module: the reward moved to ``verl_drpo.data.rewards``; ``pkg://verl_drpo.rewards`` in existing
configs keeps working."""

from verl_drpo.data.rewards import math_verify_score  # noqa: F401

"""The one rollout builder: prompts drawn from the task, each answered ``group_size`` times by the behaviour policy
under a condition (logit noise, rounded weights or logits), scored by the verifier, with group-centred advantages.

The RL loop (``train``) and the mechanism check (``mechanism_check``) both sample through here, so a seed's
rollouts come from the same random streams, in the same order, wherever they are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .design import Condition, LabConfig
from .policy import Rollout, generate, round_weights
from .task import Task


def rollout_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """(prompt stream, sampling stream) of a seed. They depend on the seed only, so every method and condition of a
    seed sees the same prompts and the same sampling noise: differences between methods are paired by seed."""
    return torch.Generator().manual_seed(10_000 + seed), torch.Generator().manual_seed(20_000 + seed)


def logit_rounding(condition: Condition) -> str | None:
    """The float format the behaviour's logits are rounded to ("bfloat16_logits" -> "bfloat16"), or None."""
    r = condition.rounding
    return r[: -len("_logits")] if r and r.endswith("_logits") else None


def load_behaviour(model, state: dict, condition: Condition) -> None:
    """Load the behaviour weights into ``model``, rounded to a low-precision format if the condition says so."""
    model.load_state_dict(state)
    if condition.rounding and not condition.rounding.endswith("_logits"):
        round_weights(model, condition.rounding)


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """reward - mean of its group (no std division). rewards (n_prompts * group_size,), groups consecutive."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.view(-1, group_size)
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1)


@dataclass
class ScoredRollout:
    """A sampled batch with its rewards: ``prompts_per_step`` groups of ``group_size`` consecutive sequences."""

    rollout: Rollout
    rewards: torch.Tensor  # (n,) 1 / 0 by exact match
    sequence_advantages: torch.Tensor  # (n,) reward - group mean

    @property
    def token_advantages(self) -> torch.Tensor:
        """(n, response_len): each sequence's advantage on its response tokens, 0 on padding."""
        return self.sequence_advantages[:, None] * self.rollout.response_mask


def sample_rollout(behaviour, task: Task, cfg: LabConfig, condition: Condition, gen_prompts: torch.Generator,
                   gen_sample: torch.Generator) -> ScoredRollout:
    """Draw ``cfg.prompts_per_step`` prompts, sample ``cfg.group_size`` responses each from ``behaviour`` (with the
    condition's logit noise and logit rounding; mu is what sampled each token), reward and centre them per group."""
    symbols = task.sample_symbols(cfg.prompts_per_step, gen_prompts)
    prompts = [p for p in task.encode_prompts(symbols) for _ in range(cfg.group_size)]
    ro = generate(behaviour, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen_sample,
                  logit_noise_std=condition.mismatch, logit_rounding=logit_rounding(condition))
    sym_rep = [s for s in symbols for _ in range(cfg.group_size)]
    rewards = torch.tensor(
        [task.reward(s, r[m.bool()].tolist()) for s, r, m in zip(sym_rep, ro.response_ids, ro.response_mask)]
    )
    return ScoredRollout(ro, rewards, group_advantages(rewards, cfg.group_size))

"""The actor config hook: DRPO's hyper-parameters as a subclass of verl's PolicyLossConfig.

Select it on a verl command line with

    actor_rollout_ref.actor.policy_loss._target_=verl_drpo.config.DRPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=drpo
    +actor_rollout_ref.actor.policy_loss.drpo_delta=12.5        # optional; the leading `+` adds a new key

Hydra imports this module wherever verl instantiates the actor config (on the driver in `validate_config`, and in
every worker's `init_model`); importing it registers the losses, and `__post_init__` validates the values, so a bad
delta or a misspelt loss mode fails on the driver before any Ray worker starts.

The losses also run with verl's plain PolicyLossConfig: the defaults below then apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from verl.workers.config import PolicyLossConfig


@dataclass
class DRPOPolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus the hyper-parameters of DRPO and the baselines registered by verl-drpo.

    Args:
        drpo_delta (float): DRPO's regularization threshold delta (paper Eq. 8). Default 12.5, the paper's §4 value
            for SPO and DRPO (an ablation at 2.5 changes little). Note the scale: pi and mu are probabilities, so
            |pi - mu| <= 1 and at delta = 12.5 the gradient weight stays within [0.92, 1.08]; the Binary-TV boundary
            and the corrective regime (negative weight) are reached only for delta < 1 (DPPO uses 0.15-0.2).
            Also used as the penalty scale of `mask_drpo`.
        spo_epsilon (float): SPO's ratio-space threshold eps. Default 12.5, the value the DRPO paper uses for SPO.
        mask_drpo_tv_delta (float): Binary-TV threshold of the `mask_drpo` ablation (the penalty applies only
            beyond it) and the boundary that the beyond-boundary metrics of `spo`, `pg_is` and `mask_drpo` refer
            to. Default 0.15, DPPO's delta_TV (arXiv 2602.04879).
    """

    drpo_delta: float = 12.5
    spo_epsilon: float = 12.5
    mask_drpo_tv_delta: float = 0.15

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        for name in HYPERPARAMETER_DEFAULTS:
            validate_positive(f"actor_rollout_ref.actor.policy_loss.{name}", getattr(self, name))

        from verl_drpo.plugin import require_registered  # registers the losses as a side effect

        require_registered(self.loss_mode)


HYPERPARAMETER_DEFAULTS: dict[str, float] = {
    f.name: f.default for f in fields(DRPOPolicyLossConfig) if f.name not in {g.name for g in fields(PolicyLossConfig)}
}


def validate_positive(name: str, value) -> float:
    """Return `value` as a float if it is a finite number > 0; raise a TypeError/ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value

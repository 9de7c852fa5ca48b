"""The actor config hook: the hyper-parameters of verl-drpo's loss modes as a subclass of verl's PolicyLossConfig.

Select it on a verl command line with

    actor_rollout_ref.actor.policy_loss._target_=verl_drpo.config.DRPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=drpo
    +actor_rollout_ref.actor.policy_loss.drpo_delta=12.5        # optional; the leading `+` adds a new key

Hydra imports this module wherever verl instantiates the actor config (on the driver in `validate_config`, and in
every worker's `init_model`); `__post_init__` validates the values and registers the losses, so a bad delta or a
misspelt loss mode fails on the driver before any Ray worker starts.

The fields, their defaults and their help texts are those of `verl_drpo.modes.POLICY_LOSS_FIELDS` (a test checks
they agree). The losses also run with verl's plain PolicyLossConfig: these defaults then apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl.workers.config import PolicyLossConfig

from verl_drpo.modes import POLICY_LOSS_FIELDS, validate_positive

_DEFAULT = {name: setting.default for name, setting in POLICY_LOSS_FIELDS.items()}


@dataclass
class DRPOPolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus the hyper-parameters of DRPO and the baselines registered by verl-drpo."""

    drpo_delta: float = _DEFAULT["drpo_delta"]
    spo_epsilon: float = _DEFAULT["spo_epsilon"]
    mask_drpo_tv_delta: float = _DEFAULT["mask_drpo_tv_delta"]

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        for name in POLICY_LOSS_FIELDS:
            validate_positive(f"actor_rollout_ref.actor.policy_loss.{name}", getattr(self, name))

        from verl_drpo.preflight import require_registered  # registers the losses as a side effect

        require_registered(self.loss_mode)


DRPOPolicyLossConfig.__doc__ += "\n\n    Args:\n" + "\n".join(
    f"        {name} (float): {setting.help} Default {setting.default}." for name, setting in POLICY_LOSS_FIELDS.items()
)

HYPERPARAMETER_DEFAULTS: dict[str, float] = dict(_DEFAULT)

"""The actor config hook: the hyper-parameters of verl-drpo's loss modes as a subclass of verl's PolicyLossConfig, and
``actor_config``, the one builder of a verl ActorConfig for a loss mode.

Select the hook on a verl command line with

    actor_rollout_ref.actor.policy_loss._target_=verl_drpo.config.DRPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=drpo
    +actor_rollout_ref.actor.policy_loss.drpo_delta=12.5        # optional; the leading `+` adds a new key

Hydra imports this module wherever verl instantiates the actor config (on the driver in `validate_config`, and in
every worker's `init_model`); `__post_init__` validates the values and registers the losses, so a bad delta or a
misspelt loss mode fails on the driver before any Ray worker starts.

`DRPOPolicyLossConfig` is generated from the table: one field per entry of `verl_drpo.modes.POLICY_LOSS_FIELDS`, with
its default and its help text in the docstring's `Args:`. Adding a hyper-parameter is one line there. The losses
also run with verl's plain PolicyLossConfig: the table's defaults then apply.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass

from verl.workers.config import ActorConfig, PolicyLossConfig

from verl_drpo import modes


def _validate(self) -> None:
    parent_post_init = getattr(PolicyLossConfig, "__post_init__", None)
    if parent_post_init is not None:
        parent_post_init(self)
    for name, setting in modes.POLICY_LOSS_FIELDS.items():
        setting.validate(getattr(self, name))
    problem = modes.nonfinite_problem(getattr(self, modes.NONFINITE_FIELD))
    if problem:
        raise ValueError(f"{modes.POLICY_LOSS_KEY}.{modes.NONFINITE_FIELD} {problem}")

    from verl_drpo.plugin import require_registered  # importing the plugin registers the losses

    require_registered(self.loss_mode)


def policy_loss_config_class(table: dict[str, modes.Setting]) -> type:
    """verl's PolicyLossConfig plus one validated float field per entry of ``table`` (name -> Setting), and the
    choice ``modes.NONFINITE_FIELD`` (what the loss does with non-finite inputs)."""
    args = "\n".join(f"        {name} (float): {s.help} Default {s.default}." for name, s in table.items())
    args += f"\n        {modes.NONFINITE_FIELD} (str): {modes.NONFINITE_HELP} Default {modes.NONFINITE_DEFAULT!r}."
    return make_dataclass(
        "DRPOPolicyLossConfig",
        [(name, float, field(default=s.default)) for name, s in table.items()]
        + [(modes.NONFINITE_FIELD, str, field(default=modes.NONFINITE_DEFAULT))],
        bases=(PolicyLossConfig,),
        namespace={
            "__module__": __name__,
            "__post_init__": _validate,
            "__doc__": "verl's PolicyLossConfig plus the hyper-parameters of DRPO and the baselines registered by "
                       f"verl-drpo (generated from verl_drpo.modes.POLICY_LOSS_FIELDS).\n\n    Args:\n{args}",
        },
    )


DRPOPolicyLossConfig = policy_loss_config_class(modes.POLICY_LOSS_FIELDS)


def actor_config(loss_mode: str, **fields) -> ActorConfig:
    """A verl ActorConfig that runs ``loss_mode`` with its settings from the table (``verl_drpo.modes``): the mode's
    hyper-parameters in a ``DRPOPolicyLossConfig`` and its baseline settings on the ActorConfig (clip ratios,
    DPPO's delta; verl's own policy-loss fields such as ``dro_beta``). ``fields`` override or add to them, each
    routed by name: a name of ``POLICY_LOSS_FIELDS``, ``modes.NONFINITE_FIELD`` or a policy-loss setting of the mode
    (``where="policy_loss"``) goes to the policy-loss config, any other to the ActorConfig. The fields verl requires
    default to one GPU, one sample per prompt, micro-batch 1, verl's ``fsdp`` strategy."""
    mode = modes.get(loss_mode)
    values = {s.field: s.default for s in mode.settings} | fields
    to_policy_loss = ({*modes.POLICY_LOSS_FIELDS, modes.NONFINITE_FIELD}
                      | {s.field for s in mode.settings if s.where == "policy_loss"})
    policy_loss = {k: v for k, v in values.items() if k in to_policy_loss}
    actor = {k: v for k, v in values.items() if k not in to_policy_loss}
    actor = {"strategy": "fsdp", "rollout_n": 1, "ppo_micro_batch_size_per_gpu": 1} | actor
    return ActorConfig(policy_loss=DRPOPolicyLossConfig(loss_mode=loss_mode, **policy_loss), **actor)

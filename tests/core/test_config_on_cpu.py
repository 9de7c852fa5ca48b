"""The actor config hook through verl's packaged Hydra config, its conversion and its validation."""

import pytest
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.workers.config import FSDPActorConfig

from verl_drpo import plugin
from verl_drpo.launch import preflight
from verl_drpo.config import DRPOPolicyLossConfig

from helpers import PL, composed


def test_defaults_are_the_papers_values():
    """Independent oracles: DRPO's delta and SPO's eps are 12.5 (arXiv 2606.09821, §4), DPPO's delta_TV 0.15."""
    config = DRPOPolicyLossConfig(loss_mode="drpo")
    assert config.drpo_delta == 12.5 and config.get("drpo_delta") == 12.5
    assert config.spo_epsilon == 12.5 and config.mask_drpo_tv_delta == 0.15


def test_hook_composes_validates_and_converts_like_verl_does():
    cfg = composed(f"+{PL}.drpo_delta=0.2", f"+{PL}.spo_epsilon=3")
    validate_config(cfg, use_reference_policy=False, use_critic=False)  # the driver-side check of main_ppo
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # as each worker's init_model does
    assert isinstance(actor, FSDPActorConfig)
    assert isinstance(actor.policy_loss, DRPOPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "drpo"
    assert actor.policy_loss.drpo_delta == 0.2 and actor.policy_loss.spo_epsilon == 3
    assert actor.policy_loss.mask_drpo_tv_delta == 0.15
    assert actor.policy_loss.nonfinite_tokens == "mask"
    strict = composed(f"+{PL}.nonfinite_tokens=raise")  # the strict opt-in, as docs/metrics.md writes it
    validate_config(strict, use_reference_policy=False, use_critic=False)
    assert omega_conf_to_dataclass(strict.actor_rollout_ref.actor).policy_loss.nonfinite_tokens == "raise"


@pytest.mark.parametrize(
    "override,error,match",
    [
        (f"+{PL}.drpo_delta=0", ValueError, "drpo_delta must be a finite number >= 1e-06"),
        (f"+{PL}.drpo_delta=-1.5", ValueError, "drpo_delta must be a finite number >= 1e-06"),
        (f"+{PL}.drpo_delta=nan", ValueError, "drpo_delta must be a finite number >= 1e-06"),
        (f"+{PL}.spo_epsilon=inf", ValueError, "spo_epsilon must be a finite number >= 1e-06"),
        (f"+{PL}.drpo_delta=1e-300", ValueError, "drpo_delta must be a finite number >= 1e-06"),
        (f"+{PL}.drpo_delta=twelve", TypeError, "drpo_delta must be a number, got 'twelve'"),
        (f"+{PL}.mask_drpo_tv_delta=true", TypeError, "mask_drpo_tv_delta must be a number, got True"),
        (f"{PL}.loss_mode=dpro", ValueError, "loss_mode='dpro' is not a registered policy loss"),
        (f"+{PL}.nonfinite_tokens=skip", ValueError, "nonfinite_tokens must be one of 'mask', 'raise', got 'skip'"),
    ],
)
def test_bad_values_fail_on_the_driver_with_a_clear_message(override, error, match):
    cfg = composed(override)
    with pytest.raises(Exception) as info:
        validate_config(cfg, use_reference_policy=False, use_critic=False)
    chain, cause = [], info.value
    while cause is not None:  # hydra wraps the dataclass' exception in an InstantiationException
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(e, error) and match in str(e) for e in chain), [str(e) for e in chain]


def test_misspelt_field_is_rejected():
    cfg = composed(f"+{PL}.drpo_delt=0.2")
    with pytest.raises(Exception, match="drpo_delt"):
        validate_config(cfg, use_reference_policy=False, use_critic=False)
    with pytest.raises(Exception, match="drpo_delta"):  # without '+', struct mode refuses the new key
        composed(f"{PL}.drpo_delta=0.2")


def test_config_is_frozen_like_verls():
    config = DRPOPolicyLossConfig(loss_mode="drpo")
    with pytest.raises(Exception, match="frozen"):
        config.drpo_delta = 1.0


def anchor_warnings(*overrides):
    return preflight.trainer_config_warnings(composed(*overrides))


def test_rollout_anchor_checks():
    anchored = ["algorithm.rollout_correction.bypass_mode=True", "actor_rollout_ref.rollout.calculate_log_probs=True"]
    assert anchor_warnings(*anchored) == []
    found = anchor_warnings("algorithm.rollout_correction.bypass_mode=False")
    assert len(found) == 1 and "without the rollout anchor" in found[0]
    found = anchor_warnings("algorithm.rollout_correction.bypass_mode=True", "actor_rollout_ref.rollout.calculate_log_probs=False")
    assert len(found) == 1 and "calculate_log_probs=False" in found[0]
    found = anchor_warnings(*anchored, "actor_rollout_ref.rollout.temperature=0.7")
    assert len(found) == 1 and "temperature=0.7" in found[0]
    assert anchor_warnings(*anchored, "trainer.use_v1=False") == []  # see the legacy-trainer test below
    plain = anchor_warnings(*anchored, f"{PL}._target_=verl.workers.config.PolicyLossConfig")
    assert len(plain) == 1 and "plain PolicyLossConfig" in plain[0]
    vanilla = preflight.trainer_config_warnings(OmegaConf.create({"actor_rollout_ref": {"actor": {"policy_loss": {}}}}))
    assert vanilla == []


def test_seq_mean_token_sum_norm_without_a_constant_horizon_is_warned():
    anchored = ["algorithm.rollout_correction.bypass_mode=True", "actor_rollout_ref.rollout.calculate_log_probs=True"]
    norm = "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"
    found = anchor_warnings(*anchored, norm, "data.max_response_length=1024")
    assert len(found) == 1 and "actor_rollout_ref.actor.loss_scale_factor=1024" in found[0]
    assert anchor_warnings(*anchored, norm, "actor_rollout_ref.actor.loss_scale_factor=1024") == []


def test_legacy_trainer_bypass_rewrite_does_not_reach_the_workers_loss():
    """trainer.use_v1=False (and fully_async) call verl's apply_bypass_mode in fit(), on the driver's config. The
    workers were built before, from their own (pickled) copy, and bound `partial(ppo_loss, config=actor_config)` in
    init_model (verl/workers/engine_workers.py); ppo_loss reads loss_mode from that copy at every call."""
    import pickle

    import torch
    from verl import DataProto
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.rollout_corr_helper import apply_bypass_mode

    anchored = ["algorithm.rollout_correction.bypass_mode=True", "actor_rollout_ref.rollout.calculate_log_probs=True"]
    driver = composed(*anchored, "trainer.use_v1=False")
    worker_copy = pickle.loads(pickle.dumps(driver.actor_rollout_ref))  # what Ray ships when it builds a worker
    worker_actor = omega_conf_to_dataclass(worker_copy.actor)  # the worker's init_model

    rollout_log_probs = torch.log(torch.rand(2, 3))
    batch = DataProto.from_dict(tensors={"rollout_log_probs": rollout_log_probs})
    apply_bypass_mode(batch=batch, rollout_corr_config=driver.algorithm.rollout_correction,
                      policy_loss_config=driver.actor_rollout_ref.actor.policy_loss)  # in fit(), on the driver

    assert driver.actor_rollout_ref.actor.policy_loss.loss_mode == "bypass_mode"  # the driver's copy only
    assert worker_actor.policy_loss.loss_mode == "drpo"
    assert get_policy_loss_fn(worker_actor.policy_loss.loss_mode) is plugin.REGISTERED["drpo"]
    assert torch.equal(batch.batch["old_log_probs"], rollout_log_probs)  # and the anchor is mu, as DRPO needs

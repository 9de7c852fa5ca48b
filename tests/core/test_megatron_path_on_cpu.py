"""verl 0.9.1's Megatron actor reaches the registered ``drpo`` through the same ``ppo_loss`` as FSDP.

verl 0.9.1 has no separate Megatron actor class (``verl/workers/actor`` is gone): every training engine is driven by
``verl/workers/engine_workers.py``, which binds ``partial(ppo_loss, config=actor_config)`` and hands it to the
engine; the Megatron engine (``verl/workers/engine/megatron/transformer_impl.py``, which imports megatron-core at
module level, so it cannot be imported here) calls it once per micro-batch as
``loss_function(model_output=..., data=..., dp_group=...)``. These tests pin those call sites in the installed
verl's source (they fail if verl changes them), compose verl's generated Megatron config with the config hook, and
run the loss through that exact call with the ``McoreActorConfig`` the workers would build.
"""

import inspect
from functools import partial
from pathlib import Path

import pytest
import torch
import verl
from hydra import compose, initialize_config_dir
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.workers.config import McoreActorConfig
from verl.workers.utils import losses as verl_losses

from verl_drpo import losses
from verl_drpo.config import DRPOPolicyLossConfig

from helpers import BASE, CONFIG_DIR, batch, ppo_loss_data

VERL = Path(verl.__file__).parent
# (file under verl/, a line the Megatron path depends on)
CALL_SITES = (
    ("workers/engine_workers.py", "from verl.workers.utils.losses import ppo_loss"),
    ("workers/engine_workers.py", "self.loss_fn = partial(ppo_loss, config=actor_config)"),
    ("workers/engine_workers.py", "output = self.engine.train_batch(data, loss_function=self.loss_fn)"),
    ("workers/engine/megatron/transformer_impl.py",
     "loss, metrics = loss_function(model_output=model_output, data=data, dp_group=self.get_data_parallel_group())"),
    ("workers/engine/megatron/transformer_impl.py", 'ret["log_probs"] = vocab_parallel_log_probs_from_logits('),
    ("workers/utils/losses.py", "policy_loss_fn = get_policy_loss_fn(loss_mode)"),
)


@pytest.mark.parametrize("verl_file,line", CALL_SITES, ids=[f"{f}:{line[:40]}" for f, line in CALL_SITES])
def test_the_megatron_call_sites_are_still_in_verl(verl_file, line):
    assert line in (VERL / verl_file).read_text(), f"verl/{verl_file} no longer contains {line!r}"


def test_there_is_no_second_megatron_actor_that_calls_losses_another_way():
    """verl 0.9.1 has no verl/workers/actor (the legacy megatron_actor.py with its own policy-loss call): if it
    returns, or another module starts calling policy losses, that call must be checked too."""
    assert not (VERL / "workers" / "actor").exists()
    callers = sorted(str(p.relative_to(VERL)) for p in VERL.rglob("*.py") if "get_policy_loss_fn(" in p.read_text()
                     and p.name != "core_algos.py")
    # the engines' ppo_loss, and distillation_ppo_loss (engine_workers binds it instead only when distillation is on)
    assert callers == ["trainer/distillation/losses.py", "workers/utils/losses.py"], callers


def test_ppo_loss_passes_the_arguments_the_plugin_reads():
    source = inspect.getsource(verl_losses.ppo_loss)
    for argument in ("old_log_prob=old_log_prob", "log_prob=log_prob", "advantages=advantages",
                     "response_mask=response_mask", "loss_agg_mode=loss_agg_mode", "config=config",
                     "rollout_is_weights=rollout_is_weights"):
        assert argument in source, argument


def megatron_config(*overrides, config_name="ppo_trainer"):
    extra = ["model_engine=megatron"] if config_name == "ppo_trainer" else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name=config_name, overrides=[*BASE, *extra, *overrides])
    validate_config(cfg, use_reference_policy=False, use_critic=False)  # the driver-side check of main_ppo
    return cfg


@pytest.mark.parametrize("config_name", ["ppo_trainer", "ppo_megatron_trainer"])
def test_verls_megatron_config_composes_with_the_config_hook(config_name):
    """model_engine=megatron (and verl's deprecated ppo_megatron_trainer, which is the same override) takes the
    hook's _target_ and fields; the worker's conversion gives a McoreActorConfig carrying DRPOPolicyLossConfig."""
    cfg = megatron_config("+actor_rollout_ref.actor.policy_loss.drpo_delta=0.2", config_name=config_name)
    assert cfg.actor_rollout_ref.actor.strategy == "megatron"
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # as each worker's init does
    assert isinstance(actor, McoreActorConfig) and isinstance(actor.policy_loss, DRPOPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "drpo" and actor.policy_loss.drpo_delta == 0.2


def test_the_megatron_engines_loss_call_reaches_drpo():
    """The loss function engine_workers binds, called with the Megatron engine's keywords, runs the registered
    drpo with the composed delta: its value is DRPO's formula and its metrics are the plugin's."""
    cfg = megatron_config("+actor_rollout_ref.actor.policy_loss.drpo_delta=0.2",
                          "actor_rollout_ref.actor.loss_agg_mode=token-mean")
    actor_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    loss_function = partial(verl_losses.ppo_loss, config=actor_config)  # engine_workers.py, as pinned above
    lp, old, adv, mask = batch(dtype=torch.float64)
    flat_lp, data = ppo_loss_data(lp, old, adv, mask)
    loss, metrics = loss_function(model_output={"log_probs": flat_lp}, data=data, dp_group=None)
    ref = agg_loss(loss_mat=losses.drpo_token_loss(lp, old, adv, 0.2), loss_mask=mask, loss_agg_mode="token-mean",
                   **actor_config.global_batch_info)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-9, atol=1e-12)
    assert "actor/drpo/weight_mean" in metrics
    loss.backward()
    assert torch.isfinite(flat_lp.grad).all()

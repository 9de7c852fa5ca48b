"""Inputs, configs and calls that several test modules of tests/core share (one copy each, here: a test module never
imports another test module; tests/core/test_architecture_on_cpu.py checks that).

pytest puts tests/core on ``sys.path`` for the test modules here (its default ``prepend`` import mode), so they
``from helpers import ...``; the worker processes of test_two_ranks_on_cpu.py inherit that path.
"""

import os

import torch
import verl  # noqa: F401  (registers the plugin through its entry point)
from hydra import compose, initialize_config_dir
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig

from verl_drpo import LOSS_MODES, modes
from verl_drpo.config import DRPOPolicyLossConfig

# ---- per-token inputs ---------------------------------------------------------------------------------------------


def random_inputs(shape=(6, 40), dtype=torch.float64, seed=0, spread=0.5):
    """(log pi, log mu, A), no mask: log pi is log mu moved by `spread` standard normals, A constant per row."""
    gen = torch.Generator().manual_seed(seed)
    rollout_log_prob = torch.log(torch.rand(shape, generator=gen, dtype=torch.float64).clamp_min(1e-4))
    log_prob = (rollout_log_prob + spread * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(max=0.0)
    advantages = torch.randn(shape[0], 1, generator=gen, dtype=torch.float64).expand(shape).clone()
    return log_prob.to(dtype), rollout_log_prob.to(dtype), advantages.to(dtype)


def autograd_grad(fn, log_prob, *args):
    """d sum(fn(log_prob, *args)) / d log_prob by autograd."""
    x = log_prob.detach().clone().requires_grad_(True)
    fn(x, *args).sum().backward()
    return x.grad


def batch(bs=8, length=24, seed=0, dtype=torch.float64):
    """(log pi, old log-prob, A, ragged response mask) as verl hands them to a policy loss; every row has a valid
    token."""
    gen = torch.Generator().manual_seed(seed)
    old = torch.log(torch.rand(bs, length, generator=gen, dtype=torch.float64).clamp_min(1e-3))
    log_prob = (old + 0.8 * torch.randn(bs, length, generator=gen, dtype=torch.float64)).clamp(max=0)
    adv = torch.randn(bs, 1, generator=gen, dtype=torch.float64).expand(bs, length).clone()
    lengths = torch.randint(1, length + 1, (bs, 1), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths
    return log_prob.to(dtype), old.to(dtype), adv.to(dtype), mask


def decoupled_weights(old, seed=1):
    """A valid rollout_is_weights tensor pi_prox / mu for a decoupled mode whose `old` is log pi_prox."""
    gen = torch.Generator().manual_seed(seed)
    return torch.exp(0.5 * torch.randn(old.shape, generator=gen, dtype=torch.float64)).to(old.dtype)


def ppo_loss_data(lp, old, adv, mask, prompt_len=3):
    """The TensorDict verl's engine hands to ppo_loss: flat (no-padding) model log-probs over prompt + response."""
    bs, resp_len = lp.shape
    lengths = mask.sum(-1)
    flat = []
    for i in range(bs):
        n = int(lengths[i])
        # the model's log-prob at position t scores token t+1: responses start at index prompt_len - 1
        flat.append(torch.cat([torch.zeros(prompt_len - 1, dtype=lp.dtype), lp[i, :n], torch.zeros(1, dtype=lp.dtype)]))
    flat_lp = torch.cat(flat).requires_grad_(True)
    attention = torch.cat([torch.ones(bs, prompt_len, dtype=torch.long), mask.long()], dim=1)
    data = TensorDict(
        {
            "prompts": torch.ones(bs, prompt_len, dtype=torch.long),
            "responses": torch.ones(bs, resp_len, dtype=torch.long),
            "attention_mask": attention,
            "response_mask": mask.long(),
            "old_log_probs": old,
            "advantages": adv,
        },
        batch_size=[bs],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=bs)
    return flat_lp, data


# ---- the registered losses, called as verl calls them ---------------------------------------------------------------

DECOUPLED = [m for m in LOSS_MODES if modes.uses_decoupled_inputs(m)]


def actor_config(loss_mode="drpo", loss_agg_mode="token-mean", policy_loss=None, use_torch_compile=False, **kw):
    """A small ActorConfig whose policy loss is `loss_mode` with drpo_delta 0.3 (the boundary within reach)."""
    policy_loss = policy_loss or DRPOPolicyLossConfig(loss_mode=loss_mode, drpo_delta=0.3)
    return ActorConfig(
        strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, loss_agg_mode=loss_agg_mode,
        policy_loss=policy_loss, use_torch_compile=use_torch_compile, **kw,
    )


def call(loss_mode, log_prob, old, adv, mask, config, rollout_is_weights=None):
    """verl's registered `loss_mode` with verl's keywords; a decoupled mode gets `decoupled_weights` by default."""
    if loss_mode in DECOUPLED and rollout_is_weights is None:  # what verl's decoupled mode passes
        rollout_is_weights = decoupled_weights(old)
    return get_policy_loss_fn(loss_mode)(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask,
        loss_agg_mode=config.loss_agg_mode, config=config, rollout_is_weights=rollout_is_weights,
    )


# ---- verl's packaged Hydra config with the config hook --------------------------------------------------------------

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
PL = "actor_rollout_ref.actor.policy_loss"
BASE = [
    f"{PL}._target_=verl_drpo.config.DRPOPolicyLossConfig",
    f"{PL}.loss_mode=drpo",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "actor_rollout_ref.rollout.n=4",
    "data.train_batch_size=16",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "algorithm.adv_estimator=grpo",
    "critic.enable=False",
]


def composed(*overrides):
    """verl's ppo_trainer config composed with `BASE` and `overrides`, as main_ppo composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[*BASE, *overrides])

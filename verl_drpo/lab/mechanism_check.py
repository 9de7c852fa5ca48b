"""The mechanism check: DRPO at the paper's delta = 12.5 against PG-IS, on one rollout from a seed's warm start.

DRPO's weight w = 1 - sign(A)(pi - mu)/delta lies within 1 +- max|pi - mu|/12.5, so its gradient should be close to
PG-IS's. Both gradients are computed through verl's ``ppo_loss`` on the same rollout (the shared rollout builder),
and the report states ||g_drpo - g_pg_is|| / ||g_pg_is|| with the batch's max |pi - mu|.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from .design import Condition, LabConfig
from .policy import new_model, response_log_probs, sequence_log_probs
from .rollout import load_behaviour, rollout_generators, sample_rollout
from .task import Task
from .verl_path import MiniBatch, make_actor_config, verl_policy_loss

MECHANISM_CHECK = ("drpo", "pg_is")  # DRPO at the paper's delta = 12.5 against the unregularized surrogate


def gradient_relative_difference(cfg: LabConfig, init_state: dict, seed: int, method_a: str, method_b: str,
                                 condition: Condition) -> dict:
    """||g_a - g_b|| / ||g_b|| for the two methods' full-batch gradients on one rollout of `condition` from the warm
    start (the mechanism check DRPO(delta=12.5) ~ PG-IS), with the batch's max |pi - mu|."""
    task = Task(cfg.task)
    model = new_model(cfg, task, seed)
    load_behaviour(model, init_state, condition)
    scored = sample_rollout(model, task, cfg, condition, *rollout_generators(seed))
    model.load_state_dict(init_state)  # the policy whose gradients are compared: the warm start, never rounded
    ro, adv = scored.rollout, scored.token_advantages
    mb = MiniBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, ro.rollout_log_probs, adv)
    grads = []
    for name in (method_a, method_b):
        actor_cfg = make_actor_config(name, ro.response_ids.shape[0], cfg.group_size, cfg.task.max_response_len)
        model.zero_grad(set_to_none=True)
        loss, _ = verl_policy_loss(actor_cfg, sequence_log_probs(model, ro.input_ids, ro.attention_mask), mb)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    with torch.no_grad():
        pi = response_log_probs(model, ro)
    m = ro.response_mask.bool() & (adv != 0)
    return {
        "methods": [method_a, method_b],
        "setting": condition.name,
        "seed": seed,
        # None when the batch has no non-zero advantage (both gradients are 0)
        "relative_difference": ((grads[0] - grads[1]).norm() / grads[1].norm()).item() if grads[1].norm() > 0
        else None,
        "max_abs_prob_diff": (pi[m].exp() - ro.rollout_log_probs[m].exp()).abs().max().item() if m.any() else 0.0,
        "nonzero_adv_tokens": int(m.sum()),
        "config": asdict(condition),
    }

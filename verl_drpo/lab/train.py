"""One RL run from a seed's warm start with one method under one condition, every loss through verl's ``ppo_loss``.

RL step (one rollout):
1. sample a rollout from the behaviour policy (``rollout.sample_rollout``): the weights of ``staleness`` optimizer
   steps ago, optionally rounded to a low-precision format, logits optionally perturbed by noise of std
   ``mismatch``; log mu of every sampled token is kept;
2. reward 1/0 by exact match; advantage = reward - group mean (no division by the group std, as the paper);
3. split the batch into ``mini_batches`` consecutive mini-batches (whole groups) and take one optimizer step on
   each, loss = verl's ``ppo_loss`` anchored on mu; the gradient norm is logged before clipping.

The policy is evaluated exactly (``evaluate``) every ``eval_every`` steps; ``run_summary`` reduces the run's record
to the numbers the report aggregates.
"""

from __future__ import annotations

import math
import time

import torch

from verl_drpo.modes import LOG_RATIO_CLAMP, uses_decoupled_inputs

from .design import METHODS, Condition, LabConfig, Method
from .evaluate import eval_set, exact_success, sampled_success
from .policy import SnapshotQueue, new_model, response_log_probs, sequence_log_probs
from .rollout import load_behaviour, rollout_generators, sample_rollout
from .run_summary import RunRecord, summarize
from .task import Task
from .verl_path import MiniBatch, decoupled_is_weights, make_actor_config, verl_policy_loss

def mean_abs_prob_diff(pi_log_probs: torch.Tensor, mu_log_probs: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |pi - mu| over the masked-in tokens (probabilities of the sampled tokens)."""
    m = mask.bool()
    return (pi_log_probs[m].exp() - mu_log_probs[m].exp()).abs().mean().item()


def effective_weights(grad_log_pi: torch.Tensor, log_pi: torch.Tensor, mb: MiniBatch, horizon: int,
                      mu_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token weight w with grad = -w A r grad log pi, recovered from the loss's own gradient, over the tokens of
    the mini-batch with non-zero advantage (1-D).

    With ``seq-mean-token-sum-norm`` the loss is sum_tokens l_t / (bs * horizon), so
    w_t = dL/dlog pi_t * bs * horizon / (-A_t r_t). PG-IS has w = 1; DRPO 1 - sign(A)(pi - mu)/delta; a token that
    verl masks or clips has w = 0.
    """
    adv = mb.advantages.to(log_pi.dtype)
    ratio = (log_pi - mu_log_probs.to(log_pi.dtype)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    sel = mb.response_mask.bool() & (adv != 0)
    bs = mb.response_mask.shape[0]
    return (grad_log_pi[sel] * bs * horizon / (-adv[sel] * ratio[sel])).detach()


def make_optimizer(method: Method, cfg: LabConfig, params):
    """The method's optimizer with a linear warm-up over ``cfg.lr_warmup`` optimizer steps (a fresh Adam's first
    steps have the full size lr whatever the gradient's noise; the warm-up keeps them from wrecking the start)."""
    lr = method.lr if method.lr is not None else cfg.lr
    if method.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(cfg.lr_warmup, 1)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))


def run_rl(method_name: str, condition: Condition, seed: int, cfg: LabConfig, init_state: dict,
           progress=None) -> dict:
    """RL from the warm start with one method; returns curves and summary numbers (all plain Python)."""
    method = METHODS[method_name]
    torch.manual_seed(seed)
    task = Task(cfg.task)
    model = new_model(cfg, task, seed)
    model.load_state_dict(init_state)
    behaviour = new_model(cfg, task, seed)
    behaviour.eval()
    n_seq = cfg.prompts_per_step * cfg.group_size
    mb_size = n_seq // cfg.mini_batches
    horizon = cfg.task.max_response_len
    actor_cfg = make_actor_config(method, mb_size, cfg.group_size, loss_scale_factor=horizon)
    decoupled = uses_decoupled_inputs(method.mode)  # old_log_probs = pi_prox (the policy before this rollout's updates)
    opt, schedule = make_optimizer(method, cfg, model.parameters())
    clip = cfg.clip_grad if method.clip_grad is None else method.clip_grad
    gen_prompts, gen_sample = rollout_generators(seed)
    evs = eval_set(task, cfg.eval_prompts)
    snapshots = SnapshotQueue(condition.staleness)
    opt_step = 0
    snapshots.push(opt_step, model)

    def evaluate_now(step):
        curve["eval_step"].append(step)
        curve["success"].append(exact_success(model, evs))
        if cfg.sampled_eval:
            curve["sampled_success"].append(sampled_success(model, task, evs))

    curve = {"eval_step": [], "success": [], "sampled_success": []}
    evaluate_now(0)
    per_step = {k: [] for k in ("reward", "nonzero_adv_frac", "abs_prob_diff", "behaviour_age", "ratio_max")}
    per_update = {k: [] for k in ("grad_norm", "w_mean", "w_min", "w_max", "beyond_own_boundary", "loss")}
    loss_metrics: dict[str, list[float]] = {}
    tokens_trained = skipped = 0
    stopped_at = None
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        b_step, b_state = snapshots.behaviour_state()
        load_behaviour(behaviour, b_state, condition)
        scored = sample_rollout(behaviour, task, cfg, condition, gen_prompts, gen_sample)
        ro, rewards, adv_seq = scored.rollout, scored.rewards, scored.sequence_advantages
        advantages = scored.token_advantages
        with torch.no_grad():
            pi_now = response_log_probs(model, ro)
        if decoupled:  # verl's decoupled mode: recomputed old log-probs and untruncated weights pi_prox / mu
            old_log_probs, is_weights = pi_now, decoupled_is_weights(pi_now, ro.rollout_log_probs, ro.response_mask)
        else:  # bypass mode: old_log_probs = mu
            old_log_probs, is_weights = ro.rollout_log_probs, None
        per_step["abs_prob_diff"].append(mean_abs_prob_diff(pi_now, ro.rollout_log_probs, ro.response_mask))
        per_step["reward"].append(rewards.mean().item())
        per_step["nonzero_adv_frac"].append((adv_seq != 0).float().mean().item())
        per_step["behaviour_age"].append(opt_step - b_step)

        model.train()
        ratio_max = 0.0
        for i in range(cfg.mini_batches):
            idx = torch.arange(i * mb_size, (i + 1) * mb_size)
            part = ro.select(idx)
            mb = MiniBatch(part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask,
                           old_log_probs[idx], advantages[idx], None if is_weights is None else is_weights[idx])
            seq_lp = sequence_log_probs(model, part.input_ids, part.attention_mask)
            seq_lp.retain_grad()
            loss, metrics = verl_policy_loss(actor_cfg, seq_lp, mb)
            for k, v in metrics.items():
                loss_metrics.setdefault(k, []).append(v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            p = part.prompt_ids.shape[1]
            log_pi = seq_lp.detach()[:, p - 1 : -1]
            with torch.no_grad():
                log_ratio = (log_pi - part.rollout_log_probs.to(log_pi.dtype))[part.response_mask.bool()]
                ratio_max = max(ratio_max, log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp().max().item())
            w = effective_weights(seq_lp.grad[:, p - 1 : -1], log_pi, mb, horizon, part.rollout_log_probs)
            if w.numel():
                per_update["w_mean"].append(w.mean().item())
                per_update["w_min"].append(w.min().item())
                per_update["w_max"].append(w.max().item())
                per_update["beyond_own_boundary"].append((w <= 0).float().mean().item())
            params = list(model.parameters())
            if clip > 0:
                gnorm = torch.nn.utils.clip_grad_norm_(params, clip).item()
            else:
                gnorm = torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None]).item()
            per_update["grad_norm"].append(gnorm)
            per_update["loss"].append(loss.item())
            tokens_trained += int(part.response_mask.sum())
            if not math.isfinite(gnorm) or not math.isfinite(loss.item()):
                skipped += 1  # as verl: a non-finite gradient skips the update
                continue
            opt.step()
            schedule.step()
            opt_step += 1
            snapshots.push(opt_step, model)
        per_step["ratio_max"].append(ratio_max)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            evaluate_now(step)
        if progress is not None:
            progress(1)
        if skipped >= cfg.mini_batches * 3:
            stopped_at = step
            break
    record = RunRecord(method_name, condition, seed, curve, per_step, per_update, loss_metrics, tokens_trained,
                       skipped, stopped_at, cfg.steps, time.perf_counter() - t0)
    return summarize(record)

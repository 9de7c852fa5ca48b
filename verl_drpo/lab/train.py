"""One lab run: a supervised warm start (shared by all methods and settings of a seed), then RL with verl's loss.

RL step (one rollout):
1. draw ``prompts_per_step`` prompts, sample ``group_size`` responses each from the behaviour policy (the weights
   of ``staleness`` optimizer steps ago, optionally rounded to a low-precision format, logits optionally perturbed
   by noise of std ``mismatch``), keep log mu of every sampled token;
2. reward 1/0 by exact match; advantage = reward - group mean (no division by the group std, as the paper);
3. split the batch into ``mini_batches`` consecutive mini-batches (whole groups) and take one optimizer step on
   each, loss = verl's ``ppo_loss`` anchored on mu; the gradient norm is logged before clipping.

Evaluation is exact: every prompt has one correct answer, so the expected success of pi (sampling at temperature 1)
is prod_t pi(a*_t | prompt, a*_<t), computed for the whole fixed held-out set in one teacher-forced pass.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from verl_drpo.modes import LOG_RATIO_CLAMP, uses_decoupled_inputs

from .design import METHODS, LabConfig, Method, Setting
from .policy import Rollout, SnapshotQueue, build_model, generate, left_pad, response_log_probs, round_weights
from .policy import next_token_logits, sequence_log_probs
from .task import Task
from .verl_path import MiniBatch, decoupled_is_weights, make_actor_config, verl_policy_loss

EVAL_SEED = 1_000_003  # the held-out prompt set is the same for every seed and method
# verl's own clip / mask fractions, shown as reported by ppo_loss (means over a run's updates)
VERL_FRACTION_KEYS = ("actor/pg_clipfrac", "actor/pg_clipfrac_lower")


def max_positions(cfg: LabConfig) -> int:
    return cfg.task.max_prompt_len + cfg.task.max_response_len


def new_model(cfg: LabConfig, task: Task, seed: int):
    return build_model(task.vocab_size, cfg.model, max_positions=max_positions(cfg), seed=seed, dtype=cfg.dtype)


def teacher_batch(task: Task, symbols) -> Rollout:
    """Prompts with their correct answers as responses (for the warm start and the exact evaluation)."""
    prompt_ids, prompt_mask = left_pad(task.encode_prompts(symbols), task.pad_id)
    answers = task.encode_answers(symbols)
    width = max(len(a) for a in answers)
    resp = torch.full((len(answers), width), task.pad_id, dtype=torch.long)
    mask = torch.zeros((len(answers), width), dtype=torch.long)
    for i, a in enumerate(answers):
        resp[i, : len(a)] = torch.tensor(a)
        mask[i, : len(a)] = 1
    return Rollout(prompt_ids, prompt_mask, resp, mask, torch.zeros(resp.shape))


@dataclass
class EvalSet:
    symbols: list
    prompts: list
    answers: Rollout


def eval_set(task: Task, n: int) -> EvalSet:
    gen = torch.Generator().manual_seed(EVAL_SEED)
    symbols = task.sample_symbols(n, gen)
    return EvalSet(symbols, task.encode_prompts(symbols), teacher_batch(task, symbols))


@torch.no_grad()
def exact_success_per_prompt(model, answers: Rollout) -> torch.Tensor:
    """(n,) probability that pi, sampling at temperature 1, writes exactly the correct answer (with its <eos>)."""
    model.eval()
    logp = response_log_probs(model, answers)
    return (logp * answers.response_mask).sum(-1).exp()


def exact_success(model, evs: EvalSet) -> float:
    return exact_success_per_prompt(model, evs.answers).mean().item()


@torch.no_grad()
def sampled_success(model, task: Task, evs: EvalSet) -> float:
    """One temperature-1 sample per held-out prompt with a fixed sampling seed (a noisy estimate of the above)."""
    model.eval()
    gen = torch.Generator().manual_seed(EVAL_SEED + 1)
    ro = generate(model, evs.prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen=gen)
    resp = [row[m.bool()].tolist() for row, m in zip(ro.response_ids, ro.response_mask)]
    return sum(task.reward(s, r) for s, r in zip(evs.symbols, resp)) / len(evs.symbols)


def smoothed_nll(model, batch: Rollout, smoothing: float) -> torch.Tensor:
    """Teacher-forcing loss with label smoothing: -(1 - eps) log pi(a*) - eps mean_v log pi(v), per answer token.

    The smoothing leaves the warm start under-confident (right ranking, low probability of the whole answer), as a
    pretrained model is before RL sharpens it, so that RL has room to climb."""
    p = batch.prompt_ids.shape[1]
    logits = next_token_logits(model, batch.input_ids, batch.attention_mask)[:, p - 1 : -1]
    logp_all = torch.log_softmax(logits, dim=-1)
    target = logp_all.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    per_token = -(1 - smoothing) * target - smoothing * logp_all.mean(-1)
    m = batch.response_mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum()


def warm_start(cfg: LabConfig, seed: int) -> dict:
    """Supervised warm start (teacher forcing on the answers). Returns {"state": state_dict, "success": float}."""
    task = Task(cfg.task)
    model = new_model(cfg, task, seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    for _ in range(cfg.sft_steps):
        model.train()
        batch = teacher_batch(task, task.sample_symbols(cfg.sft_batch, gen))
        loss = smoothed_nll(model, batch, cfg.sft_label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
    success = exact_success(model, eval_set(task, cfg.eval_prompts))
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "success": success}


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """reward - mean of its group (no std division). rewards (n_prompts * group_size,), groups consecutive."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.view(-1, group_size)
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1)


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


@dataclass
class RunRecord:
    """What one run measured, before summarising."""

    method: str
    setting: Setting
    seed: int
    curve: dict
    per_step: dict
    per_update: dict
    loss_metrics: dict
    tokens_trained: int
    skipped_updates: int
    stopped_at: int | None
    steps: int  # the planned horizon
    wall_s: float


def logit_rounding(setting: Setting) -> str | None:
    """The float format the behaviour's logits are rounded to ("bfloat16_logits" -> "bfloat16"), or None."""
    r = setting.rounding
    return r[: -len("_logits")] if r and r.endswith("_logits") else None


def run_rl(method_name: str, setting: Setting, seed: int, cfg: LabConfig, init_state: dict, progress=None) -> dict:
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
    # prompts and sampling noise depend on the seed only, so every method of a seed sees the same random streams
    gen_prompts = torch.Generator().manual_seed(10_000 + seed)
    gen_sample = torch.Generator().manual_seed(20_000 + seed)
    evs = eval_set(task, cfg.eval_prompts)
    snapshots = SnapshotQueue(setting.staleness)
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
        behaviour.load_state_dict(b_state)
        if setting.rounding and not setting.rounding.endswith("_logits"):
            round_weights(behaviour, setting.rounding)
        symbols = task.sample_symbols(cfg.prompts_per_step, gen_prompts)
        prompts = [p for p in task.encode_prompts(symbols) for _ in range(cfg.group_size)]
        ro = generate(behaviour, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen_sample,
                      logit_noise_std=setting.mismatch, logit_rounding=logit_rounding(setting))
        sym_rep = [s for s in symbols for _ in range(cfg.group_size)]
        rewards = torch.tensor(
            [task.reward(s, r[m.bool()].tolist()) for s, r, m in zip(sym_rep, ro.response_ids, ro.response_mask)]
        )
        adv_seq = group_advantages(rewards, cfg.group_size)
        advantages = adv_seq[:, None] * ro.response_mask
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
    record = RunRecord(method_name, setting, seed, curve, per_step, per_update, loss_metrics, tokens_trained,
                       skipped, stopped_at, cfg.steps, time.perf_counter() - t0)
    return summarize(record)


def auc(eval_steps: list[int], success: list[float]) -> float:
    """Mean success over the run: trapezoid over the evaluation points, normalised by the horizon."""
    xs, s = eval_steps, success
    return sum((xs[i + 1] - xs[i]) * (s[i] + s[i + 1]) / 2 for i in range(len(xs) - 1)) / max(xs[-1] - xs[0], 1)


def summarize(rec: RunRecord) -> dict:
    xs, s = rec.curve["eval_step"], rec.curve["success"]
    if rec.stopped_at is not None:  # a run stopped on non-finite gradients counts as failing from there on
        xs, s = xs + [rec.steps], s + [0.0]
    mean = lambda v: statistics.fmean(v) if v else float("nan")  # noqa: E731
    pu = rec.per_update
    return {
        "method": rec.method,
        "setting": rec.setting.name,
        "staleness": rec.setting.staleness,
        "mismatch": rec.setting.mismatch,
        "rounding": rec.setting.rounding,
        "seed": rec.seed,
        "start_success": s[0],
        "final_success": s[-1],
        "auc": auc(xs, s),
        "final_sampled_success": rec.curve["sampled_success"][-1] if rec.curve["sampled_success"] else None,
        "stopped_at": rec.stopped_at,
        "skipped_updates": rec.skipped_updates,
        "nonzero_adv_frac": mean(rec.per_step["nonzero_adv_frac"]),
        "abs_prob_diff_mean": mean(rec.per_step["abs_prob_diff"]),
        "ratio_max": max(rec.per_step["ratio_max"]) if rec.per_step["ratio_max"] else float("nan"),
        "grad_norm_median": statistics.median(pu["grad_norm"]) if pu["grad_norm"] else float("nan"),
        "grad_norm_max": max(pu["grad_norm"]) if pu["grad_norm"] else float("nan"),
        "w_mean": mean(pu["w_mean"]),
        "w_min": min(pu["w_min"]) if pu["w_min"] else float("nan"),
        "w_max": max(pu["w_max"]) if pu["w_max"] else float("nan"),
        "beyond_own_boundary": mean(pu["beyond_own_boundary"]),
        "loss_metrics": {k: mean(v) for k, v in sorted(rec.loss_metrics.items())},
        "curve": rec.curve,
        "per_step": rec.per_step,
        "per_update": rec.per_update,
        "tokens_trained": rec.tokens_trained,
        "wall_s": rec.wall_s,
    }


def gradient_relative_difference(cfg: LabConfig, init_state: dict, seed: int, method_a: str, method_b: str,
                                 setting: Setting) -> dict:
    """||g_a - g_b|| / ||g_b|| for the two methods' full-batch gradients on one rollout of `setting` from the warm
    start (the mechanism check DRPO(delta=12.5) ~ PG-IS), with the batch's max |pi - mu|."""
    task = Task(cfg.task)
    model = new_model(cfg, task, seed)
    model.load_state_dict(init_state)
    if setting.rounding and not setting.rounding.endswith("_logits"):
        round_weights(model, setting.rounding)
    gen_prompts = torch.Generator().manual_seed(10_000 + seed)
    gen_sample = torch.Generator().manual_seed(20_000 + seed)
    symbols = task.sample_symbols(cfg.prompts_per_step, gen_prompts)
    prompts = [p for p in task.encode_prompts(symbols) for _ in range(cfg.group_size)]
    ro = generate(model, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen_sample,
                  logit_noise_std=setting.mismatch, logit_rounding=logit_rounding(setting))
    model.load_state_dict(init_state)
    sym_rep = [s for s in symbols for _ in range(cfg.group_size)]
    rewards = torch.tensor(
        [task.reward(s, r[m.bool()].tolist()) for s, r, m in zip(sym_rep, ro.response_ids, ro.response_mask)]
    )
    adv = group_advantages(rewards, cfg.group_size)[:, None] * ro.response_mask
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
        "setting": setting.name,
        "seed": seed,
        # None when the batch has no non-zero advantage (both gradients are 0)
        "relative_difference": ((grads[0] - grads[1]).norm() / grads[1].norm()).item() if grads[1].norm() > 0
        else None,
        "max_abs_prob_diff": (pi[m].exp() - ro.rollout_log_probs[m].exp()).abs().max().item() if m.any() else 0.0,
        "nonzero_adv_tokens": int(m.sum()),
        "config": asdict(setting),
    }

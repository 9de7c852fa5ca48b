"""One lab run: a supervised warm start (shared by all methods of a seed), then RL with verl's loss path.

RL step (one rollout):
1. draw ``prompts_per_step`` prompts, sample ``group_size`` responses each from the behaviour policy (the weights
   of ``staleness`` optimizer steps ago, logits perturbed by ``mismatch``), keep log mu of every sampled token;
2. reward 1/0 by exact match; advantage = reward - group mean (no division by the group std, as the paper);
3. split the batch into ``mini_batches`` consecutive mini-batches (whole groups) and take one AdamW step on each,
   loss = verl's ``ppo_loss`` anchored on mu; clip the gradient norm at 1.0 and log the norm before clipping.
Every ``eval_every`` RL steps the trained policy pi (no noise) decodes a fixed held-out prompt set greedily; the
success rate is the fraction answered exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .policy import (
    ModelSpec,
    Rollout,
    SnapshotQueue,
    build_model,
    left_pad,
    generate,
    response_log_probs,
    sequence_log_probs,
)
from .task import Task, TaskSpec
from .verl_path import MiniBatch, make_actor_config, verl_policy_loss

EVAL_SEED = 1_000_003  # the held-out prompt set is the same for every seed and method


@dataclass(frozen=True)
class LabConfig:
    """Everything that defines a lab run except method, setting and seed. Defaults are the documented design."""

    task: TaskSpec = field(default_factory=TaskSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    sft_steps: int = 400
    sft_batch: int = 64
    sft_lr: float = 3e-3
    steps: int = 50  # RL steps (rollouts)
    prompts_per_step: int = 16
    group_size: int = 8
    mini_batches: int = 4  # optimizer steps per rollout
    lr: float = 5e-4
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    eval_every: int = 10
    eval_prompts: int = 256
    success_threshold: float = 0.8  # "steps to threshold" uses this greedy success rate
    collapse_ratio: float = 0.5  # collapsed if the final success < collapse_ratio * best success (or non-finite)

    def __post_init__(self):
        for name in ("sft_batch", "steps", "prompts_per_step", "group_size", "mini_batches", "eval_every",
                     "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sft_steps < 0:
            raise ValueError(f"sft_steps must be >= 0, got {self.sft_steps}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 for group-centred advantages")
        if self.prompts_per_step % self.mini_batches:
            raise ValueError(
                f"prompts_per_step ({self.prompts_per_step}) must be divisible by mini_batches ({self.mini_batches})"
                " so that every mini-batch holds whole groups"
            )
        if not (self.lr > 0 and self.sft_lr > 0 and self.clip_grad > 0):
            raise ValueError("lr, sft_lr and clip_grad must be > 0")


@dataclass(frozen=True)
class Setting:
    """Off-policy knobs. staleness: optimizer steps between behaviour and trained weights (0 = fresh weights at
    each rollout; the later mini-batches of a rollout are still 1..mini_batches-1 steps off). mismatch: std of the
    Gaussian noise added to the behaviour logits (0 = the rollout computes pi exactly)."""

    staleness: int = 0
    mismatch: float = 0.0

    def __post_init__(self):
        if self.staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {self.staleness}")
        if not (math.isfinite(self.mismatch) and self.mismatch >= 0):
            raise ValueError(f"mismatch must be finite and >= 0, got {self.mismatch}")

    @property
    def name(self) -> str:
        return f"k={self.staleness},sigma={self.mismatch:g}"


def _eval_set(task: Task, n: int):
    gen = torch.Generator().manual_seed(EVAL_SEED)
    symbols = task.sample_symbols(n, gen)
    return symbols, task.encode_prompts(symbols)


@torch.no_grad()
def evaluate(model, task: Task, eval_set) -> float:
    """Success rate of pi on the held-out prompts, one sample each at temperature 1 (like avg@k, k=1), with a fixed
    sampling seed so that two policies are compared on the same random numbers."""
    symbols, prompts = eval_set
    model.eval()
    gen = torch.Generator().manual_seed(EVAL_SEED + 1)
    ro = generate(model, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen=gen)
    resp = [row[m.bool()].tolist() for row, m in zip(ro.response_ids, ro.response_mask)]
    return sum(task.reward(s, r) for s, r in zip(symbols, resp)) / len(symbols)


def warm_start(cfg: LabConfig, seed: int, log=None) -> dict:
    """Supervised warm start (teacher forcing on the answers). Returns {"state": state_dict, "success": float}."""
    task = Task(cfg.task)
    model = build_model(task.vocab_size, cfg.model, max_positions=cfg.task.max_prompt_len + cfg.task.max_response_len,
                        seed=seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    model.train()
    for _ in range(cfg.sft_steps):
        symbols = task.sample_symbols(cfg.sft_batch, gen)
        batch = _teacher_batch(task, symbols)
        logp = response_log_probs(model, batch)
        loss = -(logp * batch.response_mask).sum() / batch.response_mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
    success = evaluate(model, task, _eval_set(task, cfg.eval_prompts))
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "success": success}


def _teacher_batch(task: Task, symbols) -> Rollout:
    prompt_ids, prompt_mask = left_pad(task.encode_prompts(symbols), task.pad_id)
    answers = task.encode_answers(symbols)
    width = max(len(a) for a in answers)
    resp = torch.full((len(answers), width), task.pad_id, dtype=torch.long)
    mask = torch.zeros((len(answers), width), dtype=torch.long)
    for i, a in enumerate(answers):
        resp[i, : len(a)] = torch.tensor(a)
        mask[i, : len(a)] = 1
    return Rollout(prompt_ids, prompt_mask, resp, mask, torch.zeros(resp.shape))


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


def run_rl(method: str, setting: Setting, seed: int, cfg: LabConfig, init_state: dict, progress=None) -> dict:
    """RL from the warm start with one method; returns curves and summary numbers (all plain Python)."""
    torch.manual_seed(seed)
    task = Task(cfg.task)
    max_pos = cfg.task.max_prompt_len + cfg.task.max_response_len
    model = build_model(task.vocab_size, cfg.model, max_positions=max_pos, seed=seed)
    model.load_state_dict(init_state)
    behaviour = build_model(task.vocab_size, cfg.model, max_positions=max_pos, seed=seed)
    behaviour.eval()
    n_seq = cfg.prompts_per_step * cfg.group_size
    mb_size = n_seq // cfg.mini_batches
    actor_cfg = make_actor_config(method, mb_size, cfg.group_size, loss_scale_factor=cfg.task.max_response_len)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # prompts and sampling noise depend on the seed only, so every method of a seed sees the same prompt stream
    gen_prompts = torch.Generator().manual_seed(10_000 + seed)
    gen_sample = torch.Generator().manual_seed(20_000 + seed)
    eval_set = _eval_set(task, cfg.eval_prompts)
    snapshots = SnapshotQueue(setting.staleness)
    opt_step = 0
    snapshots.push(opt_step, model)

    curve = {"eval_step": [0], "success": [evaluate(model, task, eval_set)]}
    per_step = {k: [] for k in ("reward", "abs_prob_diff", "grad_norm", "behaviour_age", "ratio_max", "loss")}
    loss_metrics: dict[str, list[float]] = {}
    tokens_trained = 0
    skipped = 0
    collapsed_at = None
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        b_step, b_state = snapshots.behaviour_state()
        behaviour.load_state_dict(b_state)
        symbols = task.sample_symbols(cfg.prompts_per_step, gen_prompts)
        prompts = [p for p in task.encode_prompts(symbols) for _ in range(cfg.group_size)]
        ro = generate(behaviour, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen_sample,
                      logit_noise_std=setting.mismatch)
        sym_rep = [s for s in symbols for _ in range(cfg.group_size)]
        rewards = torch.tensor(
            [task.reward(s, r[m.bool()].tolist()) for s, r, m in zip(sym_rep, ro.response_ids, ro.response_mask)]
        )
        adv_seq = group_advantages(rewards, cfg.group_size)
        advantages = adv_seq[:, None] * ro.response_mask
        with torch.no_grad():
            pi_now = response_log_probs(model, ro)
        per_step["abs_prob_diff"].append(mean_abs_prob_diff(pi_now, ro.rollout_log_probs, ro.response_mask))
        per_step["reward"].append(rewards.mean().item())
        per_step["behaviour_age"].append(opt_step - b_step)

        model.train()
        gnorms, rmax, losses = [], 0.0, []
        for i in range(cfg.mini_batches):
            idx = torch.arange(i * mb_size, (i + 1) * mb_size)
            part = ro.select(idx)
            mb = MiniBatch(part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask,
                           part.rollout_log_probs, advantages[idx])
            seq_lp = sequence_log_probs(model, part.input_ids, part.attention_mask)
            loss, metrics = verl_policy_loss(actor_cfg, seq_lp, mb)
            for k, v in metrics.items():
                loss_metrics.setdefault(k, []).append(v)
            with torch.no_grad():
                p = part.prompt_ids.shape[1]
                lr_ = (seq_lp[:, p - 1 : -1] - part.rollout_log_probs)[part.response_mask.bool()]
                rmax = max(rmax, lr_.clamp(-20, 20).exp().max().item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad).item()
            gnorms.append(gnorm)
            losses.append(loss.item())
            tokens_trained += int(part.response_mask.sum())
            if not math.isfinite(gnorm) or not math.isfinite(loss.item()):
                skipped += 1  # as verl: a non-finite gradient skips the update
                continue
            opt.step()
            opt_step += 1
            snapshots.push(opt_step, model)
        per_step["grad_norm"].append(sum(gnorms) / len(gnorms))
        per_step["ratio_max"].append(rmax)
        per_step["loss"].append(sum(losses) / len(losses))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve["eval_step"].append(step)
            curve["success"].append(evaluate(model, task, eval_set))
        if progress is not None:
            progress(1)
        if skipped >= cfg.mini_batches * 3 and collapsed_at is None:
            collapsed_at = step
            break
    wall = time.perf_counter() - t0
    return summarize(method, setting, seed, cfg, curve, per_step, loss_metrics, tokens_trained, wall, skipped,
                     collapsed_at)


def summarize(method, setting, seed, cfg, curve, per_step, loss_metrics, tokens, wall, skipped, collapsed_at) -> dict:
    s = curve["success"]
    best = max(s)
    final = s[-1]
    steps_to = next((st for st, v in zip(curve["eval_step"], s) if v >= cfg.success_threshold), None)
    # area under the success curve, normalised by the RL horizon (trapezoid over eval points), in [0, 1]
    xs = curve["eval_step"]
    auc = sum((xs[i + 1] - xs[i]) * (s[i] + s[i + 1]) / 2 for i in range(len(xs) - 1)) / max(xs[-1] - xs[0], 1)
    collapsed = collapsed_at is not None or (best > 0 and final < cfg.collapse_ratio * best)
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return {
        "method": method,
        "setting": setting.name,
        "staleness": setting.staleness,
        "mismatch": setting.mismatch,
        "seed": seed,
        "start_success": s[0],
        "final_success": final,
        "best_success": best,
        "auc": auc,
        "steps_to_threshold": steps_to,
        "collapsed": bool(collapsed),
        "skipped_updates": skipped,
        "abs_prob_diff_mean": mean(per_step["abs_prob_diff"]),
        "grad_norm_mean": mean(per_step["grad_norm"]),
        "ratio_max": max(per_step["ratio_max"]) if per_step["ratio_max"] else float("nan"),
        "loss_metrics": {k: mean(v) for k, v in sorted(loss_metrics.items())},
        "curve": curve,
        "per_step": per_step,
        "tokens_trained": tokens,
        "wall_s": wall,
        "config": {"lab": _plain(asdict(cfg))},
    }


def _plain(d):
    return {k: (_plain(v) if isinstance(v, dict) else v) for k, v in d.items()}

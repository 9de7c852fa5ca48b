"""The supervised warm start: teacher forcing with label smoothing, one per seed, shared by every method and
condition of that seed (so that differences between methods are paired by seed)."""

from __future__ import annotations

import torch

from .design import LabConfig
from .evaluate import eval_set, exact_success, teacher_batch
from .policy import Rollout, new_model, next_token_logits
from .task import Task


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

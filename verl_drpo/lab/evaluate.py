"""Exact evaluation: the expected success of a policy on the fixed held-out prompt set.

Every prompt has one correct answer, so the probability that pi, sampling at temperature 1, writes it is
prod_t pi(a*_t | prompt, a*_<t): one teacher-forced pass over the whole held-out set, with no sampling noise.
``sampled_success`` is the noisy alternative (one temperature-1 sample per prompt), reported by ``--full`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import Rollout, generate, left_pad, response_log_probs
from .task import Task

EVAL_SEED = 1_000_003  # the held-out prompt set is the same for every seed and method


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

"""What one run measured (its curves and per-step / per-update diagnostics), reduced to the numbers the report
aggregates over seeds: start, final, AUC, and the diagnostics' means and extremes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .design import Condition


@dataclass
class RunRecord:
    """What one run measured, before summarising."""

    method: str
    condition: Condition
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


def auc(eval_steps: list[int], success: list[float]) -> float:
    """Mean success over the run: trapezoid over the evaluation points, normalised by the horizon."""
    xs, s = eval_steps, success
    return sum((xs[i + 1] - xs[i]) * (s[i] + s[i + 1]) / 2 for i in range(len(xs) - 1)) / max(xs[-1] - xs[0], 1)


def summarize(rec: RunRecord) -> dict:
    """One run as a plain dict (a row of runs.csv plus its curves); the keys are the results file's."""
    xs, s = rec.curve["eval_step"], rec.curve["success"]
    if rec.stopped_at is not None:  # a run stopped on non-finite gradients counts as failing from there on
        xs, s = xs + [rec.steps], s + [0.0]
    mean = lambda v: statistics.fmean(v) if v else float("nan")  # noqa: E731
    pu = rec.per_update
    return {
        "method": rec.method,
        "setting": rec.condition.name,
        "staleness": rec.condition.staleness,
        "mismatch": rec.condition.mismatch,
        "rounding": rec.condition.rounding,
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

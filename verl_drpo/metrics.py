"""Metric names, written once: what the losses log, and the verl metrics this project's tools read.

The losses' statistics are computed in ``verl_drpo.fast`` (in the order of ``STATISTICS``) and named by
``verl_drpo.plugin``; ``launch.check_run``, ``scripts/plot_runs.py`` and the glossary in docs/metrics.md (checked by a
test) read the names here. No torch, no verl.
"""

from __future__ import annotations

PREFIX = "actor/drpo/"

# The statistics a loss evaluation returns, in order; all but INTERNAL are logged as logged_name(name).
STATISTICS: tuple[str, ...] = (
    "abs_prob_diff_mean", "abs_prob_diff_max", "weight_min", "weight_mean", "weight_max", "penalty_mean",
    "ratio_mean", "ratio_max", "k3_kl", "abs_log_ratio_mean", "neg_log_ratio_mean", "signed_shift_max",
    "beyond_boundary_pos_frac", "beyond_boundary_neg_frac", "negative_weight_frac",
)
# Used inside the evaluation (signed_shift_max decides whether boundary counts are needed) or logged under verl's
# own name (neg_log_ratio_mean is verl's ppo_kl), not as PREFIX + name.
INTERNAL: frozenset[str] = frozenset({"neg_log_ratio_mean", "signed_shift_max"})

# What verl 0.9.1 does with a loss's metrics: ppo_loss wraps each in Metric(aggregation=MEAN) (a Metric the loss
# returns with MAX or MIN makes that wrapping raise: aggregation mismatch), the worker averages them unweighted over
# micro-batches and data-parallel ranks (Metric.aggregate_dp; an empty micro-batch counts), and the trainer's
# reduce_metrics then takes, over the step's mini-batches, the max of a name containing "max", the min of one
# containing "min", the mean of any other. A per-micro-batch extreme therefore reaches the log as a mean of
# extremes, and is logged under a name that says so; "max"/"min" stay in the last path segment, so a reduction that
# reads only that segment still takes the max (min) over mini-batches.
EXTREMA: dict[str, str] = {
    "abs_prob_diff_max": "abs_prob_diff_microbatch_max_mean",
    "weight_min": "weight_microbatch_min_mean",
    "weight_max": "weight_microbatch_max_mean",
    "ratio_max": "ratio_microbatch_max_mean",
}


def logged_name(statistic: str) -> str:
    """The name under which a statistic of STATISTICS (not INTERNAL) is logged."""
    return PREFIX + EXTREMA.get(statistic, statistic)


# verl's dashboard conventions, filled by every verl-drpo loss: name -> what it is, in the statistics' terms.
PG_CLIPFRAC = "actor/pg_clipfrac"  # beyond_boundary_pos_frac + beyond_boundary_neg_frac (where DPPO would mask)
PG_CLIPFRAC_LOWER = "actor/pg_clipfrac_lower"  # beyond_boundary_neg_frac
PPO_KL = "actor/ppo_kl"  # neg_log_ratio_mean: mean(log mu - log pi)
VERL_CONVENTIONS: tuple[str, ...] = (PG_CLIPFRAC, PG_CLIPFRAC_LOWER, PPO_KL)

# Counted by verl_drpo.plugin, not by the evaluation:
# share of the micro-batch's valid tokens left out of the loss because an input was not finite
# (modes.NONFINITE_FIELD); 0.0 when none;
NONFINITE_FRAC = PREFIX + "nonfinite_frac"
# 1.0 for a micro-batch whose statistics cover no token (no valid token, or none with finite inputs; every
# statistic is then 0.0), else 0.0: after verl's averaging, the share of such micro-batches, f, so that a mean over
# the micro-batches that have tokens is the logged mean / (1 - f).
EMPTY_MICROBATCH_FRAC = PREFIX + "empty_microbatch_frac"

# The names a verl-drpo loss logs on every call (docs/metrics.md has a row for each).
LOGGED: tuple[str, ...] = (tuple(logged_name(s) for s in STATISTICS if s not in INTERNAL)
                           + (NONFINITE_FRAC, EMPTY_MICROBATCH_FRAC) + VERL_CONVENTIONS)

ANCHOR_GAP = PREFIX + "abs_prob_diff_mean"  # mean |pi - mu|
MISMATCH = PREFIX + "abs_log_ratio_mean"  # mean |log pi - log mu|, unclamped
WEIGHT_MIN, WEIGHT_MEAN, WEIGHT_MAX = logged_name("weight_min"), PREFIX + "weight_mean", logged_name("weight_max")
RATIO_MEAN = PREFIX + "ratio_mean"
BEYOND_POS, BEYOND_NEG = PREFIX + "beyond_boundary_pos_frac", PREFIX + "beyond_boundary_neg_frac"


# ---- verl's own metrics that the tools read (verl 0.9.1's names) -----------------------------------------------------
PG_LOSS = "actor/pg_loss"
GRAD_NORM = "actor/grad_norm"
ENTROPY = "actor/entropy"  # verl's old-log-prob pass (not run in bypass mode)
ENTROPY_LOSS = "actor/entropy_loss"  # the update's entropy (with actor.calculate_entropy=True)
ADVANTAGES_MAX, ADVANTAGES_MIN = "critic/advantages/max", "critic/advantages/min"
SCORE_MEAN = "critic/score/mean"
RESPONSE_LENGTH_MEAN = "response_length/mean"
RESPONSE_LENGTH_MIN, RESPONSE_LENGTH_MAX = "response_length/min", "response_length/max"
PROMPT_LENGTH = ("prompt_length/mean", "prompt_length/max", "prompt_length/min")
ROLLOUT_PROBS_DIFF = "training/rollout_probs_diff_mean"  # recomputed old log-probs vs the rollout's (decoupled mode)
STALENESS = "training/off_policy/trajectory_staleness/"  # + min / mean / max: per-sample policy-version lag
# + min / mean / max: the lag of a trajectory's oldest token (partial rollout spreads one over several versions)
STALENESS_WORST = "training/off_policy/trajectory_staleness_worst/"
FULLY_ASYNC_DROPPED = "fully_async/count/dropped_stale_samples"  # fully_async: samples dropped as stale, cumulative
FULLY_ASYNC_STALE = "fully_async/count/stale_trajectory_processed"  # fully_async: trained with lag >= 1, cumulative
EVICTED = "training/off_policy/evicted_samples"  # groups' samples the replay buffer dropped as too stale, per step
STEP_TIME = "timing_s/step"
VALIDATION = "val-core/*/mean@*"  # a pattern: validation accuracy per data source

# What scripts/plot_runs.py draws by default (the set docs/reproduction.md says to watch).
WATCH: tuple[str, ...] = (
    VALIDATION, SCORE_MEAN, ENTROPY, ENTROPY_LOSS, RESPONSE_LENGTH_MEAN, MISMATCH, ANCHOR_GAP, BEYOND_POS, BEYOND_NEG,
    WEIGHT_MEAN, PG_CLIPFRAC, GRAD_NORM,
)

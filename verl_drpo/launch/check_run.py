"""Check a finished verl run from its logged metrics (verl's ``file`` logger: one JSON object per step).

    python -m verl_drpo.launch.check_run RUN.jsonl --steps N --loss-mode MODE [checks...]

Always asserted (exit status 1 with the list of failures otherwise):

- every step ``--first-step``..N was logged (the run completed) and every logged number is finite;
- the update had something to follow: non-zero advantages and a non-zero, finite ``actor/grad_norm`` at every step;
- the loss that ran is the one asked for: for verl-drpo's modes (``verl_drpo.modes.REGISTERED_NAMES``) the
  ``actor/drpo/*`` diagnostics are present, finite and ``actor/drpo/weight_mean`` is non-zero, and no token was left
  out of the loss for a non-finite input (``actor/drpo/nonfinite_frac`` is 0 where logged); for verl's own modes
  no ``actor/drpo/*`` key appears.

Optional checks, each reading verl's (or the plugin's) own metrics:

- ``--max-anchor-gap G``: mean |pi - mu| (``actor/drpo/abs_prob_diff_mean``) <= G at every step. With one mini-batch
  per step the update sees the weights that sampled, so this is round-off exactly when the rollout engine has the
  actor's weights: at step 1 after the initial sync, at later steps after each step's weight sync.
- ``--max-rollout-probs-diff G``: verl's ``training/rollout_probs_diff_mean`` (recomputed old log-probs against the
  rollout's) <= G at every step: the decoupled (recompute) anchor.
- ``--staleness K``: the per-sample policy-version lag verl logs, ``training/off_policy/trajectory_staleness/*``
  (current version minus the newest version a trajectory was sampled with), is at most K at every step and exactly
  K for every sample at the last step (needs N > K: the first K steps train on warm-up data).
- ``--min-stale-gap G``: at every step whose samples all lag >= 1 version, mean |pi - mu| >= G (staleness is
  measurable in the anchor gap, not only in the version counter).
- ``--max-weight-deviation W``: the loss's gradient weight stays within 1 +- W at every step
  (``actor/drpo/weight_microbatch_min_mean`` >= 1 - W, ``weight_microbatch_max_mean`` <= 1 + W, each divided by
  1 - ``empty_microbatch_frac`` first, so that verl's zeros for empty micro-batches do not count). For ``drpo_prox``
  with one mini-batch per step the update sees pi = pi_prox, so its weight 1 - sign(A)(pi - pi_prox)/delta is 1 up to round-off, while a weight
  centred on mu would be off by |pi - mu|/delta on a stale step: with ``--min-stale-gap`` this shows the loss got
  pi_prox as the centre and recovered mu as the anchor.
- ``--max-lag K``: no trained trajectory's oldest token lags more than K policy versions
  (``training/off_policy/trajectory_staleness_worst/max`` <= K at every step): docs/recipes.md's bound for
  ``STALENESS=K``, without ``--staleness``'s requirement that the last step's lag be exactly K.
- ``--max-evicted E``: at most E samples evicted as too stale over the whole run (verl's
  ``training/off_policy/evicted_samples``, logged only at steps that evicted, and fully_async's cumulative
  ``fully_async/count/dropped_stale_samples``; with
  ``trainer.v1.sampler.max_off_policy_strategy=wait``, verl's dropless strategy, it must stay 0).
- ``--allow-flat-steps``: a step whose every group got identical rewards (zero advantages, hence zero gradient) is
  reported, not failed: for measurement runs whose model is rarely right (the long-tailed smoke model), where such
  a step says nothing about the plumbing. At least one step must still have had a gradient.
- ``--ragged``: response lengths differ within a step (``response_length/min`` < ``response_length/max``).
- ``--resumed-from OTHER.jsonl``: this run resumed from a checkpoint of OTHER; at each of its steps the data-side
  metrics (``DATA_KEYS``: which prompts, how long) equal OTHER's at the same step. The sampled responses are not
  compared: see docs/cpu-smoke.md for what verl makes non-deterministic across a resume.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from verl_drpo import metrics as M
from verl_drpo import modes
from verl_drpo.launch import run_log
from verl_drpo.modes import REGISTERED_NAMES

DRPO_PREFIX, ANCHOR_GAP, ROLLOUT_PROBS_DIFF, STALENESS = M.PREFIX, M.ANCHOR_GAP, M.ROLLOUT_PROBS_DIFF, M.STALENESS
DATA_KEYS = M.PROMPT_LENGTH


def load_steps(path: str | Path) -> dict[int, dict[str, float]]:
    """step -> metrics of a verl file-logger log (``launch.run_log``; a cut-off last line is skipped)."""
    return run_log.read(str(path)).steps()


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def check(steps: dict[int, dict], n_steps: int, loss_mode: str, max_anchor_gap: float | None = None,
          max_rollout_probs_diff: float | None = None, staleness: int | None = None,
          min_stale_gap: float | None = None, ragged: bool = False, first_step: int = 1,
          resumed_from: dict[int, dict] | None = None, max_weight_deviation: float | None = None,
          max_evicted: int | None = None, max_lag: int | None = None,
          allow_flat_steps: bool = False) -> list[str]:
    """Return the list of failed checks (empty: the run passes)."""
    errors: list[str] = []
    missing = [s for s in range(first_step, n_steps + 1) if s not in steps]
    if missing:
        errors.append(f"steps not logged (run incomplete): {missing}; logged: {sorted(steps)}")
    own_mode = loss_mode in REGISTERED_NAMES
    # fully_async logs its rollouter's statistics for version 0 as step 0, before any training step: not checked
    steps = {s: m for s, m in steps.items() if s >= first_step}
    flat_steps: list[int] = []
    for s in sorted(steps):
        m = steps[s]
        bad = [k for k, v in m.items() if _num(v) is not None and not math.isfinite(_num(v))]
        if bad:
            errors.append(f"step {s}: non-finite metrics {bad}")
        for key in (M.PG_LOSS, M.GRAD_NORM, M.ADVANTAGES_MAX, M.ADVANTAGES_MIN):
            if key not in m:
                errors.append(f"step {s}: metric {key} missing")
        gn = _num(m.get(M.GRAD_NORM))
        amax, amin = _num(m.get(M.ADVANTAGES_MAX)), _num(m.get(M.ADVANTAGES_MIN))
        flat = amax is not None and amin is not None and amax == 0 and amin == 0
        if allow_flat_steps and flat:
            flat_steps.append(s)
        else:
            if gn is not None and not gn > 0:
                errors.append(f"step {s}: {M.GRAD_NORM} = {gn} (no gradient)")
            if flat:
                errors.append(f"step {s}: all advantages are zero (rewards identical within every group)")
        drpo_keys = [k for k in m if k.startswith(DRPO_PREFIX)]
        if own_mode:
            for key in (M.WEIGHT_MEAN, ANCHOR_GAP, M.RATIO_MEAN):
                if key not in m:
                    errors.append(f"step {s}: {key} missing: the {loss_mode} loss did not run")
            w = _num(m.get(M.WEIGHT_MEAN))
            if w is not None and w == 0:
                errors.append(f"step {s}: {M.WEIGHT_MEAN} is 0")
            left_out = _num(m.get(M.NONFINITE_FRAC))
            if left_out:
                errors.append(f"step {s}: {M.NONFINITE_FRAC} = {left_out:.3g}: tokens with a non-finite log-prob, "
                              "advantage or weight were left out of the loss (docs/metrics.md)")
        elif drpo_keys:
            errors.append(f"step {s}: loss_mode {loss_mode} but verl-drpo metrics were logged: {drpo_keys[:3]}")
        for key, bound, what in ((ANCHOR_GAP, max_anchor_gap, "the rollout engine does not hold the actor's "
                                  "weights (weight sync) or its log-probs are not the sampling distribution"),
                                 (ROLLOUT_PROBS_DIFF, max_rollout_probs_diff, "verl's recomputed old log-probs "
                                  "disagree with the rollout's")):
            if bound is None:
                continue
            gap = _num(m.get(key))
            if gap is None:
                errors.append(f"step {s}: {key} missing")
            elif gap > bound:
                errors.append(f"step {s}: {key} = {gap:.3g} > {bound}: {what}")
        if max_weight_deviation is not None:
            w_lo, w_hi = _num(m.get(M.WEIGHT_MIN)), _num(m.get(M.WEIGHT_MAX))
            with_tokens = 1.0 - (_num(m.get(M.EMPTY_MICROBATCH_FRAC)) or 0.0)  # verl averages in a 0 per empty one
            if w_lo is not None and w_hi is not None and with_tokens > 0:
                w_lo, w_hi = w_lo / with_tokens, w_hi / with_tokens
            if w_lo is None or w_hi is None:
                errors.append(f"step {s}: {M.WEIGHT_MIN}/max missing")
            elif w_lo < 1 - max_weight_deviation or w_hi > 1 + max_weight_deviation:
                errors.append(f"step {s}: gradient weight in [{w_lo:.6g}, {w_hi:.6g}], beyond 1 +- "
                              f"{max_weight_deviation}: the regularizer is not centred on the policy being updated")
        if ragged:
            lo, hi = _num(m.get(M.RESPONSE_LENGTH_MIN)), _num(m.get(M.RESPONSE_LENGTH_MAX))
            if lo is None or hi is None or not lo < hi:
                errors.append(f"step {s}: response lengths not ragged (response_length min {lo}, max {hi})")
    if flat_steps:
        print(f"[check_run] note: steps {flat_steps} had identical rewards in every group (no gradient); allowed")
        if len(flat_steps) == len(steps):
            errors.append("no step had a gradient (every group's rewards identical at every step)")
    if max_lag is not None:
        for s in sorted(steps):
            worst = _num(steps[s].get(M.STALENESS_WORST + "max"))
            if worst is None:
                errors.append(f"step {s}: {M.STALENESS_WORST}max missing (verl logs it in its V1 async trainers)")
            elif worst > max_lag:
                errors.append(f"step {s}: a trajectory's oldest token lags {worst:g} policy versions > {max_lag}")
    if max_evicted is not None:
        evicted = {s: _num(m.get(M.EVICTED)) or 0.0 for s, m in steps.items()}
        if sum(evicted.values()) > max_evicted:
            errors.append(f"{sum(evicted.values()):g} samples evicted as too stale (> {max_evicted}), per step "
                          f"{ {s: v for s, v in sorted(evicted.items()) if v} }")
        dropped = max((_num(m.get(M.FULLY_ASYNC_DROPPED)) or 0.0 for m in steps.values()), default=0.0)
        if dropped > max_evicted:  # fully_async's own count, cumulative over the run
            errors.append(f"fully_async dropped {dropped:g} stale samples (> {max_evicted})")
    if staleness is not None:
        errors += _check_staleness(steps, n_steps, staleness, min_stale_gap)
    if resumed_from is not None:
        for s in sorted(steps):
            if s not in resumed_from:
                errors.append(f"step {s}: not in the uninterrupted run (logged: {sorted(resumed_from)})")
                continue
            for key in DATA_KEYS:
                a, b = _num(steps[s].get(key)), _num(resumed_from[s].get(key))
                if a is None or a != b:
                    errors.append(f"step {s}: {key} = {a} after the resume, {b} in the uninterrupted run: the "
                                  "resumed run did not continue the data where the checkpoint left it")
    return errors


def _check_staleness(steps: dict[int, dict], n_steps: int, k: int, min_stale_gap: float | None) -> list[str]:
    errors = []
    if n_steps <= k:
        return [f"--staleness {k} needs more than {k} steps (the first {k} train on warm-up data)"]
    for s in sorted(steps):
        m = steps[s]
        lo, hi = _num(m.get(STALENESS + "min")), _num(m.get(STALENESS + "max"))
        if lo is None or hi is None:
            errors.append(f"step {s}: {STALENESS}min/max missing (verl logs them in its V1 async trainers)")
            continue
        if hi > k:
            errors.append(f"step {s}: a sample lags {hi:g} policy versions > STALENESS {k}")
        if min_stale_gap is not None and lo >= 1:
            gap = _num(m.get(ANCHOR_GAP, m.get(ROLLOUT_PROBS_DIFF)))
            if gap is None or gap < min_stale_gap:
                errors.append(f"step {s}: samples lag >= 1 version but mean |pi - mu| = {gap} < {min_stale_gap}: "
                              "staleness is not visible in the anchor gap")
    last = steps.get(n_steps, {})
    lo, hi = _num(last.get(STALENESS + "min")), _num(last.get(STALENESS + "max"))
    if (lo, hi) != (k, k):
        errors.append(f"step {n_steps}: per-sample lag min {lo}, max {hi}; expected exactly {k} (STALENESS)")
    return errors


SUMMARY_KEYS = (M.SCORE_MEAN, M.PG_LOSS, M.GRAD_NORM, M.WEIGHT_MIN, M.WEIGHT_MEAN, M.WEIGHT_MAX, ANCHOR_GAP,
                M.NONFINITE_FRAC, M.EMPTY_MICROBATCH_FRAC,
                ROLLOUT_PROBS_DIFF, STALENESS + "min", STALENESS + "mean", STALENESS + "max",
                M.STALENESS_WORST + "max", M.EVICTED, M.FULLY_ASYNC_STALE, M.FULLY_ASYNC_DROPPED,
                M.RESPONSE_LENGTH_MEAN, M.STEP_TIME)


def summary(steps: dict[int, dict]) -> str:
    lines = []
    for s in sorted(steps):
        parts = [f"{k.split('/', 1)[-1] if k.startswith(DRPO_PREFIX) else k}={_num(steps[s][k]):.4g}"
                 for k in SUMMARY_KEYS if k in steps[s] and _num(steps[s][k]) is not None]
        lines.append(f"  step {s}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verl_drpo.launch.check_run",
                                 description="Check a verl run's logged metrics (see module docstring).")
    ap.add_argument("jsonl", help="the file logger's output: $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl")
    ap.add_argument("--steps", type=int, required=True, help="the last training step the run must have logged")
    ap.add_argument("--first-step", type=int, default=1, help="the first step it must have logged (a resumed run)")
    ap.add_argument("--loss-mode", required=True)
    ap.add_argument("--max-anchor-gap", type=float, default=None)
    ap.add_argument("--max-rollout-probs-diff", type=float, default=None)
    ap.add_argument("--staleness", type=int, default=None)
    ap.add_argument("--min-stale-gap", type=float, default=None)
    ap.add_argument("--max-weight-deviation", type=float, default=None)
    ap.add_argument("--max-evicted", type=int, default=None)
    ap.add_argument("--max-lag", type=int, default=None)
    ap.add_argument("--allow-flat-steps", action="store_true")
    ap.add_argument("--ragged", action="store_true")
    ap.add_argument("--resumed-from", default=None, help="the metrics file of the run whose checkpoint this resumed")
    args = ap.parse_args(argv)
    try:
        modes.get(args.loss_mode)
    except ValueError as err:
        ap.error(f"--loss-mode: {err}")
    if args.steps < 1:
        ap.error(f"--steps must be >= 1 (the last step the run must have logged), got {args.steps}")
    if not 1 <= args.first_step <= args.steps:
        ap.error(f"--first-step must be between 1 and --steps ({args.steps}), got {args.first_step}")
    path = Path(args.jsonl)
    logs = {}
    for p in (path, Path(args.resumed_from) if args.resumed_from else None):
        if p is None:
            continue
        if not p.exists():
            print(f"[check_run] FAIL: {p} does not exist (the run logged nothing)", file=sys.stderr)
            return 1
        try:
            logs[p] = run_log.read(str(p))
        except run_log.RunLogError as err:
            print(f"[check_run] FAIL: {err}", file=sys.stderr)
            return 1
        if logs[p].cut_off:
            print(f"[check_run] note: the last line of {p} is cut off (a logger stopped mid-write); skipped")
    steps = logs[path].steps()
    print(f"[check_run] {path} ({args.loss_mode}):\n{summary(steps)}")
    errors = check(steps, args.steps, args.loss_mode, max_anchor_gap=args.max_anchor_gap,
                   max_rollout_probs_diff=args.max_rollout_probs_diff, staleness=args.staleness,
                   min_stale_gap=args.min_stale_gap, ragged=args.ragged, first_step=args.first_step,
                   resumed_from=logs[Path(args.resumed_from)].steps() if args.resumed_from else None,
                   max_weight_deviation=args.max_weight_deviation, max_evicted=args.max_evicted,
                   max_lag=args.max_lag, allow_flat_steps=args.allow_flat_steps)
    if errors:
        print("[check_run] FAIL:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    print("[check_run] OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Check a finished verl run from its logged metrics (verl's ``file`` logger: one JSON object per step).

    python -m verl_drpo.cpu.check_run RUN.jsonl --steps 2 --loss-mode drpo [--max-anchor-gap 1e-3]

What it asserts (exit status 1 with the list of failures otherwise):

- every step 1..N was logged (the run completed) and every logged number is finite;
- the update had something to follow: non-zero advantages and a non-zero, finite ``actor/grad_norm`` at every step;
- the loss that ran is the one asked for: for verl-drpo's modes (drpo, mask_drpo, spo, pg_is) the ``actor/drpo/*``
  diagnostics are present, finite and ``actor/drpo/weight_mean`` is non-zero; for verl's own modes (vanilla,
  dppo_tv, dppo_kl) no ``actor/drpo/*`` key appears;
- optionally (``--max-anchor-gap``), that the anchor mu is the sampling distribution: with one mini-batch per step the
  first update sees the very weights that sampled, so ``actor/drpo/abs_prob_diff_mean`` (mean |pi - mu|) must be
  ~0; for a run with verl's recomputed old log-probs, ``training/rollout_probs_diff_mean`` is checked instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DRPO_MODES = ("drpo", "mask_drpo", "spo", "pg_is")
DRPO_PREFIX = "actor/drpo/"


def load_steps(path: str | Path) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            steps.setdefault(int(rec["step"]), {}).update(rec["data"])
    return steps


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def check(steps: dict[int, dict], n_steps: int, loss_mode: str, max_anchor_gap: float | None = None,
          min_staleness: int | None = None) -> list[str]:
    """Return the list of failed checks (empty: the run passes)."""
    errors: list[str] = []
    missing = [s for s in range(1, n_steps + 1) if s not in steps]
    if missing:
        errors.append(f"steps not logged (run incomplete): {missing}; logged: {sorted(steps)}")
    for s in sorted(steps):
        m = steps[s]
        bad = [k for k, v in m.items() if _num(v) is not None and not math.isfinite(_num(v))]
        if bad:
            errors.append(f"step {s}: non-finite metrics {bad}")
        for key in ("actor/pg_loss", "actor/grad_norm", "critic/advantages/max", "critic/advantages/min"):
            if key not in m:
                errors.append(f"step {s}: metric {key} missing")
        gn = _num(m.get("actor/grad_norm"))
        if gn is not None and not gn > 0:
            errors.append(f"step {s}: actor/grad_norm = {gn} (no gradient)")
        amax, amin = _num(m.get("critic/advantages/max")), _num(m.get("critic/advantages/min"))
        if amax is not None and amin is not None and amax == 0 and amin == 0:
            errors.append(f"step {s}: all advantages are zero (rewards identical within every group)")
        drpo_keys = [k for k in m if k.startswith(DRPO_PREFIX)]
        if loss_mode in DRPO_MODES:
            for key in ("actor/drpo/weight_mean", "actor/drpo/abs_prob_diff_mean", "actor/drpo/ratio_mean"):
                if key not in m:
                    errors.append(f"step {s}: {key} missing: the {loss_mode} loss did not run")
            w = _num(m.get("actor/drpo/weight_mean"))
            if w is not None and w == 0:
                errors.append(f"step {s}: actor/drpo/weight_mean is 0")
        elif drpo_keys:
            errors.append(f"step {s}: loss_mode {loss_mode} but verl-drpo metrics were logged: {drpo_keys[:3]}")
        if max_anchor_gap is not None:
            key = "actor/drpo/abs_prob_diff_mean" if loss_mode in DRPO_MODES else "training/rollout_probs_diff_mean"
            gap = _num(m.get(key))
            if gap is None:
                errors.append(f"step {s}: {key} missing (needed for the anchor check)")
            elif gap > max_anchor_gap:
                errors.append(f"step {s}: {key} = {gap:.3g} > {max_anchor_gap}: rollout log-probs are not the "
                              "sampling distribution the actor recomputes")
    if min_staleness is not None:
        worst = max((_num(m.get("training/off_policy/trajectory_staleness/max")) or 0) for m in steps.values())
        if worst < min_staleness:
            errors.append(f"max trajectory staleness {worst} < {min_staleness}: the run was not off-policy")
    return errors


def summary(steps: dict[int, dict]) -> str:
    keys = ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "actor/drpo/weight_mean",
            "actor/drpo/abs_prob_diff_mean", "actor/pg_clipfrac", "training/rollout_probs_diff_mean",
            "training/off_policy/trajectory_staleness/max", "timing_s/step")
    lines = []
    for s in sorted(steps):
        parts = [f"{k.split('/', 1)[-1] if k.startswith('actor/drpo') else k}={_num(steps[s][k]):.4g}"
                 for k in keys if k in steps[s] and _num(steps[s][k]) is not None]
        lines.append(f"  step {s}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check a verl run's logged metrics (see module docstring).")
    ap.add_argument("jsonl", help="the file logger's output: $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl")
    ap.add_argument("--steps", type=int, required=True, help="number of training steps the run must have logged")
    ap.add_argument("--loss-mode", required=True)
    ap.add_argument("--max-anchor-gap", type=float, default=None)
    ap.add_argument("--min-staleness", type=int, default=None)
    args = ap.parse_args(argv)
    path = Path(args.jsonl)
    if not path.exists():
        print(f"[check_run] FAIL: {path} does not exist (the run logged nothing)", file=sys.stderr)
        return 1
    steps = load_steps(path)
    print(f"[check_run] {path} ({args.loss_mode}):\n{summary(steps)}")
    errors = check(steps, args.steps, args.loss_mode, args.max_anchor_gap, args.min_staleness)
    if errors:
        print("[check_run] FAIL:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    print("[check_run] OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

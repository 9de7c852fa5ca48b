"""Over seeds: one summary row per (setting, method) with paired differences against the references, the
multiplicity family of a table (Holm and Benjamini-Hochberg over its distinct comparisons), the learning checks
(final - start per method), and the signs of resolved differences (for comparing two results folders)."""

from __future__ import annotations

import math
import statistics

from .design import REFERENCES
from .stats import ALPHA, benjamini_hochberg, holm, paired_interval, paired_p

VERL_CLIPFRAC = "actor/pg_clipfrac"

RUN_COLUMNS = (
    "method", "setting", "staleness", "mismatch", "rounding", "seed", "start_success", "final_success", "auc",
    "final_sampled_success", "stopped_at", "skipped_updates", "nonzero_adv_frac", "abs_prob_diff_mean", "ratio_max",
    "grad_norm_median", "grad_norm_max", "w_mean", "w_min", "w_max", "beyond_own_boundary", "verl_clipfrac",
    "tokens_trained", "wall_s",
)


def apply_multiplicity(summary: list[dict], references=REFERENCES) -> dict:
    """Adds p, p_holm, p_bh, holm and bh to every paired difference of the summary, within one family: all distinct
    comparisons of the table (both metrics, every setting; A vs B and B vs A counted once). Returns the family's
    size and survivor counts."""
    keys: dict[tuple, float] = {}
    cells = []
    for s in summary:
        for ref in references:
            for short in ("auc", "final"):
                d = s.get(f"d_{short}_vs_{ref}")
                if d is None:
                    continue
                key = (s["setting"], short, frozenset((s["method"], ref)))
                d["p"] = paired_p(d)
                keys.setdefault(key, d["p"])
                cells.append((key, d))
    order = list(keys)
    ph, pb = holm([keys[k] for k in order]), benjamini_hochberg([keys[k] for k in order])
    adj = {k: (h, b) for k, h, b in zip(order, ph, pb)}
    for key, d in cells:
        d["p_holm"], d["p_bh"] = adj[key]
        d["holm"], d["bh"] = adj[key][0] <= ALPHA, adj[key][1] <= ALPHA
    m = len(order)
    return {"comparisons": m, "expected_by_chance": ALPHA * m,
            "uncorrected": sum(keys[k] <= ALPHA for k in order),
            "holm": sum(adj[k][0] <= ALPHA for k in order), "bh": sum(adj[k][1] <= ALPHA for k in order)}


def run_row(r: dict) -> dict:
    row = {k: r.get(k) for k in RUN_COLUMNS}
    row["verl_clipfrac"] = r.get("loss_metrics", {}).get(VERL_CLIPFRAC)
    return row


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else None


def _by_seed(runs, setting, method, key):
    return {r["seed"]: r[key] for r in runs if r["setting"] == setting and r["method"] == method}


def summarize_runs(runs: list[dict], references=REFERENCES) -> list[dict]:
    """One row per (setting, method), in grid order: means over seeds and paired differences to the references."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["method"]), []).append(r)
    out = []
    for (setting, method), rs in groups.items():
        rows = [run_row(r) for r in rs]
        row = {
            "setting": setting, "method": method, "seeds": len(rs),
            "start_mean": _mean([x["start_success"] for x in rows]),
            "final_mean": _mean([x["final_success"] for x in rows]),
            "final_sd": statistics.stdev([x["final_success"] for x in rows]) if len(rows) > 1 else None,
            "auc_mean": _mean([x["auc"] for x in rows]),
            "final_sampled_mean": _mean([x["final_sampled_success"] for x in rows]),
            "stopped": sum(x["stopped_at"] is not None for x in rows),
            "abs_prob_diff_mean": _mean([x["abs_prob_diff_mean"] for x in rows]),
            "ratio_max": max(x["ratio_max"] for x in rows),
            "grad_norm_median": statistics.median([x["grad_norm_median"] for x in rows]),
            "grad_norm_max": max(x["grad_norm_max"] for x in rows),
            "w_mean": _mean([x["w_mean"] for x in rows]),
            "w_min": min(x["w_min"] for x in rows),
            "w_max": max(x["w_max"] for x in rows),
            "beyond_own_boundary": _mean([x["beyond_own_boundary"] for x in rows]),
            "verl_clipfrac": _mean([x["verl_clipfrac"] for x in rows]),
            "nonzero_adv_frac": _mean([x["nonzero_adv_frac"] for x in rows]),
        }
        for ref in references:
            for key in ("auc", "final_success"):
                mine, theirs = _by_seed(runs, setting, method, key), _by_seed(runs, setting, ref, key)
                seeds = sorted(set(mine) & set(theirs))
                short = "auc" if key == "auc" else "final"
                if method != ref and len(seeds) >= 2:
                    iv = paired_interval([mine[s] for s in seeds], [theirs[s] for s in seeds])
                    row[f"d_{short}_vs_{ref}"] = iv.__dict__ | {"resolved": iv.resolved}
                else:
                    row[f"d_{short}_vs_{ref}"] = None
        out.append(row)
    apply_multiplicity(out, references)
    return out


def learning_check(runs: list[dict], setting: str) -> dict | None:
    """On-policy climb: paired (final - start) per method of `setting`, and the spread of the start over seeds."""
    rs = [r for r in runs if r["setting"] == setting]
    if not rs:
        return None
    starts = {r["seed"]: r["start_success"] for r in rs}
    out = {"setting": setting, "start_sd_over_seeds": statistics.stdev(starts.values()) if len(starts) > 1 else None,
           "gain": {}}
    for method in dict.fromkeys(r["method"] for r in rs):
        f, s = _by_seed(runs, setting, method, "final_success"), _by_seed(runs, setting, method, "start_success")
        seeds = sorted(f)
        if len(seeds) >= 2:
            out["gain"][method] = paired_interval([f[x] for x in seeds], [s[x] for x in seeds]).__dict__
    return out


def learning_checks(learning) -> list[dict]:
    return [learning] if isinstance(learning, dict) else [c for c in (learning or []) if c]


def apply_multiplicity_to_learning(learning) -> dict | None:
    """The learning checks (final - start per method and setting) are their own family: Holm and BH over them."""
    gains = [g for c in learning_checks(learning) for g in c["gain"].values()]
    if not gains:
        return None
    for g in gains:
        g["p"] = paired_p(g)
    ph, pb = holm([g["p"] for g in gains]), benjamini_hochberg([g["p"] for g in gains])
    for g, h, b in zip(gains, ph, pb):
        g["p_holm"], g["p_bh"], g["holm"], g["bh"] = h, b, h <= ALPHA, b <= ALPHA
    return {"comparisons": len(gains), "expected_by_chance": ALPHA * len(gains),
            "uncorrected": sum(g["p"] <= ALPHA for g in gains), "holm": sum(g["holm"] for g in gains),
            "bh": sum(g["bh"] for g in gains)}


def resolved_signs(summary: list[dict], references=REFERENCES) -> dict[str, int]:
    """{"setting|method|metric|ref": +1 or -1} for every resolved paired difference (for cross-environment checks)."""
    out = {}
    for s in summary:
        for ref in references:
            for short in ("auc", "final"):
                d = s[f"d_{short}_vs_{ref}"]
                if d is not None and d["resolved"]:
                    out[f"{s['setting']}|{s['method']}|{short}|{ref}"] = 1 if d["mean"] > 0 else -1
    return out


def compare_environments(a: dict, b: dict) -> dict:
    """Resolved signs of two results files (dicts from results.json): agreements, flips, one-sided resolutions."""
    sa = resolved_signs(a["summary"], a.get("meta", {}).get("references", REFERENCES))
    sb = resolved_signs(b["summary"], b.get("meta", {}).get("references", REFERENCES))
    both = sorted(set(sa) & set(sb))
    return {
        "agree": [k for k in both if sa[k] == sb[k]],
        "flipped": [k for k in both if sa[k] != sb[k]],
        "only_first": sorted(set(sa) - set(sb)),
        "only_second": sorted(set(sb) - set(sa)),
    }



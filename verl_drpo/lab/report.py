"""Aggregation over seeds, the results table, CSV/JSON files and the figure."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

# keys of verl's / the plugin's loss metrics shown in the table (means over all updates of a run)
DRPO_WEIGHT_KEY = "actor/drpo/weight_mean"
# fraction of tokens beyond the Binary-TV boundary |pi - mu| > delta; the plugin reports the two sides separately
DRPO_BEYOND_KEYS = ("actor/drpo/beyond_boundary_pos_frac", "actor/drpo/beyond_boundary_neg_frac")
TIMING_KEYS = ("wall_s",)

RUN_COLUMNS = (
    "method", "setting", "staleness", "mismatch", "seed", "start_success", "final_success", "best_success", "auc",
    "steps_to_threshold", "collapsed", "skipped_updates", "abs_prob_diff_mean", "ratio_max", "grad_norm_mean",
    "drpo_weight_mean", "drpo_beyond_boundary_frac", "tokens_trained", "wall_s",
)
SUMMARY_COLUMNS = (
    "method", "setting", "seeds", "final_mean", "final_std", "best_mean", "auc_mean", "auc_std",
    "steps_to_threshold_median", "reached_threshold", "collapsed", "abs_prob_diff_mean", "ratio_max",
    "grad_norm_mean", "drpo_weight_mean", "drpo_beyond_boundary_frac",
)


def run_row(r: dict) -> dict:
    lm = r.get("loss_metrics", {})
    row = {k: r.get(k) for k in RUN_COLUMNS}
    row["drpo_weight_mean"] = lm.get(DRPO_WEIGHT_KEY)
    sides = [lm[k] for k in DRPO_BEYOND_KEYS if k in lm]
    row["drpo_beyond_boundary_frac"] = sum(sides) if sides else None
    return row


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None]
    return statistics.pstdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per (setting, method), in the order they first appear, with mean/std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["method"]), []).append(run_row(r))
    out = []
    for (setting, method), rows in groups.items():
        reached = [x["steps_to_threshold"] for x in rows if x["steps_to_threshold"] is not None]
        out.append({
            "method": method,
            "setting": setting,
            "seeds": len(rows),
            "final_mean": _mean([x["final_success"] for x in rows]),
            "final_std": _std([x["final_success"] for x in rows]),
            "best_mean": _mean([x["best_success"] for x in rows]),
            "auc_mean": _mean([x["auc"] for x in rows]),
            "auc_std": _std([x["auc"] for x in rows]),
            "steps_to_threshold_median": statistics.median(reached) if reached else None,
            "reached_threshold": len(reached),
            "collapsed": sum(bool(x["collapsed"]) for x in rows),
            "abs_prob_diff_mean": _mean([x["abs_prob_diff_mean"] for x in rows]),
            "ratio_max": max(x["ratio_max"] for x in rows),
            "grad_norm_mean": _mean([x["grad_norm_mean"] for x in rows]),
            "drpo_weight_mean": _mean([x["drpo_weight_mean"] for x in rows]),
            "drpo_beyond_boundary_frac": _mean([x["drpo_beyond_boundary_frac"] for x in rows]),
        })
    return out


def _f(x, fmt="{:.3f}"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def format_table(summary: list[dict], threshold: float) -> str:
    """A Markdown table (readable in a terminal too)."""
    head = ("| setting | method | final | best | AUC | steps to {t:g} | collapsed | mean abs(pi-mu) | max r | "
            "grad norm | DRPO w mean | beyond bdry |").format(t=threshold)
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for s in summary:
        n = s["seeds"]
        stt = "-" if s["steps_to_threshold_median"] is None else f"{s['steps_to_threshold_median']:g}"
        lines.append(
            f"| {s['setting']} | {s['method']} | {_f(s['final_mean'])} ± {_f(s['final_std'], '{:.2f}')} | "
            f"{_f(s['best_mean'])} | {_f(s['auc_mean'])} ± {_f(s['auc_std'], '{:.2f}')} | "
            f"{stt} ({s['reached_threshold']}/{n}) | {s['collapsed']}/{n} | {_f(s['abs_prob_diff_mean'], '{:.4f}')} | "
            f"{_f(s['ratio_max'], '{:.3g}')} | {_f(s['grad_norm_mean'])} | {_f(s['drpo_weight_mean'])} | "
            f"{_f(s['drpo_beyond_boundary_frac'], '{:.4f}')} |"
        )
    return "\n".join(lines)


def write_outputs(out: Path, runs: list[dict], meta: dict) -> dict:
    """results.json (everything), runs.csv (one row per run), summary.csv (per setting x method), table.md."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_runs(runs)
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1,
                                                 allow_nan=True))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        for r in runs:
            w.writerow(run_row(r))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        w.writerows(summary)
    table = format_table(summary, meta["success_threshold"])
    (out / "table.md").write_text(table + "\n")
    return {"summary": summary, "table": table}


def plot(out_png: Path, runs: list[dict], title: str = "") -> None:
    """Per setting: success-rate curves (mean over seeds, shaded min..max) and mean |pi - mu| per RL step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, len(settings), figsize=(5.2 * len(settings), 7), squeeze=False)
    all_s = [v for r in runs for v in r["curve"]["success"]]
    lo, hi = max(0.0, min(all_s) - 0.05), min(1.0, max(all_s) + 0.05)
    for j, setting in enumerate(settings):
        ax_s, ax_m = axes[0][j], axes[1][j]
        for i, method in enumerate(methods):
            rs = [r for r in runs if r["setting"] == setting and r["method"] == method]
            if not rs:
                continue
            style = "-" if method.startswith("drpo") else "--"
            xs = rs[0]["curve"]["eval_step"]
            n = min(len(r["curve"]["success"]) for r in rs)
            ys = [[r["curve"]["success"][t] for r in rs] for t in range(n)]
            mean = [statistics.fmean(v) for v in ys]
            ax_s.plot(xs[:n], mean, style, color=cmap(i % 10), label=method, lw=1.6)
            ax_s.fill_between(xs[:n], [min(v) for v in ys], [max(v) for v in ys], color=cmap(i % 10), alpha=0.10)
            m = min(len(r["per_step"]["abs_prob_diff"]) for r in rs)
            apd = [statistics.fmean(r["per_step"]["abs_prob_diff"][t] for r in rs) for t in range(m)]
            ax_m.plot(range(1, m + 1), apd, style, color=cmap(i % 10), label=method, lw=1.2)
        ax_s.set_title(f"{setting}: success rate (mean, min-max over seeds)", fontsize=9)
        ax_s.set_xlabel("RL step (rollout)")
        ax_s.set_ylim(lo, hi)  # the same success scale in every panel
        ax_s.grid(alpha=0.3)
        ax_m.set_title(f"{setting}: mean |pi - mu| at rollout", fontsize=9)
        ax_m.set_xlabel("RL step (rollout)")
        ax_m.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)

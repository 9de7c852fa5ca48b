"""The lab's figure: per setting, exact success over RL steps (mean +- sd over seeds) and mean |pi - mu|."""

from __future__ import annotations

import statistics
from pathlib import Path


def plot(out_png: Path, runs: list[dict], title: str = "") -> None:
    """Per setting: exact success curves (mean over seeds, shaded mean ± sd) and mean |pi - mu| per RL step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, len(settings), figsize=(5.0 * len(settings), 6.5), squeeze=False)
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
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in ys]
            ax_s.plot(xs[:n], mean, style, color=cmap(i % 10), label=method, lw=1.6)
            ax_s.fill_between(xs[:n], [m - e for m, e in zip(mean, sd)], [m + e for m, e in zip(mean, sd)],
                              color=cmap(i % 10), alpha=0.10)
            m = min(len(r["per_step"]["abs_prob_diff"]) for r in rs)
            apd = [statistics.fmean(r["per_step"]["abs_prob_diff"][t] for r in rs) for t in range(m)]
            ax_m.plot(range(1, m + 1), apd, style, color=cmap(i % 10), label=method, lw=1.2)
        ax_s.set_title(f"{setting}: exact success (mean ± sd over seeds)", fontsize=9)
        ax_s.set_xlabel("RL step (rollout)")
        ax_s.set_ylim(lo, hi)
        ax_s.grid(alpha=0.3)
        ax_m.set_title(f"{setting}: mean |pi - mu| at rollout", fontsize=9)
        ax_m.set_xlabel("RL step (rollout)")
        ax_m.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)

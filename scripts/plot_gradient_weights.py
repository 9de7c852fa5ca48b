"""Draw the per-token gradient weight w (grad l = -w A r grad log pi) of PPO, SPO, DPPO and DRPO against pi - mu.

Weights come from verl_drpo.losses (DRPO, SPO) and from the definitions of Table 1 (PPO's clip, DPPO's mask), for a
positive advantage and two behaviour probabilities: a common token (mu = 0.3) and a rare one (mu = 0.02). Writes
docs/img/gradient_weights.png.

    .venv/bin/python scripts/plot_gradient_weights.py [--out docs/img/gradient_weights.png]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from verl_drpo import losses  # noqa: E402


def weights(mu: float, eps: float = 0.2, delta: float = 0.2, paper_delta: float = 12.5):
    prob = torch.linspace(1e-4, 1.0, 2000, dtype=torch.float64)
    diff = prob - mu
    ratio = prob / mu
    adv = torch.ones_like(prob)
    return diff, {
        f"PPO clip (eps={eps})": (ratio <= 1 + eps).double(),
        f"SPO (eps={eps})": losses.spo_gradient_weight(ratio, adv, eps),
        f"DPPO Binary-TV (delta={delta})": (diff <= delta).double(),
        f"DRPO (delta={delta})": losses.drpo_gradient_weight(diff, adv, delta),
        f"DRPO (delta={paper_delta}, paper)": losses.drpo_gradient_weight(diff, adv, paper_delta),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("docs", "img", "gradient_weights.png"))
    args = parser.parse_args(argv)

    styles = {"PPO": ("tab:gray", "-"), "SPO": ("tab:orange", "-"), "DPPO": ("tab:blue", "-")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, mu in zip(axes, (0.3, 0.02)):
        diff, curves = weights(mu)
        for label, w in curves.items():
            family = label.split()[0]
            color, line = styles.get(family, ("tab:red", "--" if "paper" in label else "-"))
            ax.plot(diff.numpy(), w.numpy(), color=color, linestyle=line, label=label, linewidth=1.8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axvline(0.2, color="tab:blue", linewidth=0.6, linestyle=":")
        ax.set_xlim(-mu, 1 - mu)
        ax.set_ylim(-2.5, 2.0)
        ax.set_xlabel("pi - mu  (probability shift of the sampled token)")
        ax.set_title(f"A > 0, mu = {mu}" + ("  (rare token)" if mu < 0.1 else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gradient weight w")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle(
        "Per-token gradient weight: ratio-space methods (PPO, SPO) tighten as mu shrinks; "
        "DPPO and DRPO act on pi - mu", fontsize=10
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

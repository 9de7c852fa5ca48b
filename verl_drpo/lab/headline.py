"""The headline test's analysis, fixed in docs/lab/headline-preregistration.md before any run of it.

One primary contrast with a three-word verdict, four secondary contrasts under Holm's correction, an equivalence test
(TOST) of DRPO at the paper's delta against PG-IS, and the manipulation check that the regime is one where trust
regions matter. Everything is computed from the runs of ``--design headline`` (paired by seed); nothing here trains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass

from .design import HEADLINE
from .stats import holm, paired_interval, paired_p, t975, t_two_sided_p

STALE = "k=32,sigma=0"
PRECISION = "k=0,sigma=0,bfloat16_logits"
TOST_MARGIN = 0.02  # AUC; the pre-registration says why
VERDICTS = ("supported", "contradicted", "unresolved")


@dataclass(frozen=True)
class Contrast:
    """ΔAUC of `method` minus `other` in `setting`, paired by seed."""

    method: str
    other: str
    setting: str

    @property
    def name(self) -> str:
        return f"ΔAUC {self.method} − {self.other} at {self.setting}"


PRIMARY = Contrast("drpo", "dppo_tv", STALE)  # the paper predicts > 0; the structural prediction (drpo ≈ pg_is) < 0
SECONDARY = (
    Contrast("drpo_d0.2", "dppo_tv", STALE),
    Contrast("drpo", "vanilla", STALE),
    Contrast("drpo", "dppo_tv", PRECISION),
    Contrast("drpo_d0.2", "dppo_tv", PRECISION),
)
EQUIVALENCE = Contrast("drpo", "pg_is", STALE)
MANIPULATION = Contrast("dppo_tv", "pg_is", STALE)  # trust regions matter here: > 0 (pilot +0.080)


def t_quantile(upper: float, df: int) -> float:
    """The t value with P(T > t) = 1 - upper (e.g. upper = 0.95), by bisection on the closed-form p-value."""
    target = 2 * (1 - upper)
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _aucs(runs: list[dict], method: str, setting: str) -> dict[int, float]:
    return {r["seed"]: r["auc"] for r in runs if r["method"] == method and r["setting"] == setting}


def contrast(runs: list[dict], c: Contrast) -> dict | None:
    a, b = _aucs(runs, c.method, c.setting), _aucs(runs, c.other, c.setting)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    iv = paired_interval([a[s] for s in seeds], [b[s] for s in seeds])
    d = {"contrast": c.name, "estimate": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}
    d["p"] = paired_p({"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    d["sd"] = (iv.high - iv.low) / 2 / t975(iv.n - 1) * math.sqrt(iv.n)  # the paired sd behind the interval
    return d


def verdict(low: float, high: float) -> str:
    """The pre-registered rule for the primary contrast (the paper predicts > 0): the 95 % interval above 0 supports
    it, below 0 contradicts it, and one that contains 0 leaves it unresolved."""
    return "supported" if low > 0 else "contradicted" if high < 0 else "unresolved"


def tost(d: dict, margin: float = TOST_MARGIN) -> dict:
    """Two one-sided tests at 5 %: equivalent when the 90 % interval lies inside (-margin, +margin)."""
    n = d["n"]
    half90 = t_quantile(0.95, n - 1) * d["sd"] / math.sqrt(n)
    low, high = d["estimate"] - half90, d["estimate"] + half90
    return {"contrast": d["contrast"], "margin": margin, "estimate": d["estimate"], "low90": low, "high90": high,
            "equivalent": -margin < low and high < margin}


def analyse(runs: list[dict], seeds: tuple[int, ...]) -> dict | None:
    """Primary, secondary (Holm over the four), TOST and manipulation check; None if the primary is not computable."""
    primary = contrast(runs, PRIMARY)
    if primary is None:
        return None
    primary["verdict"] = verdict(primary["low"], primary["high"])
    primary["preregistered_grid"] = tuple(seeds) == HEADLINE.seeds
    secondary = [d for d in (contrast(runs, c) for c in SECONDARY) if d is not None]
    for d, ph in zip(secondary, holm([d["p"] for d in secondary])):
        d["p_holm"], d["holm"] = ph, ph <= 0.05
    eq = contrast(runs, EQUIVALENCE)
    manipulation = contrast(runs, MANIPULATION)
    return {"primary": primary, "secondary": secondary, "equivalence": tost(eq) if eq else None,
            "manipulation_check": manipulation}


def _iv(d: dict) -> str:
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def primary_line(h: dict) -> str:
    p = h["primary"]
    note = "" if p["preregistered_grid"] else " (NOT the pre-registered seeds: a trial run, not the test)"
    return (f"PRIMARY: {p['contrast']}: estimate {p['estimate']:+.4f}, 95 % interval [{p['low']:+.4f}, "
            f"{p['high']:+.4f}] (n = {p['n']} seeds), verdict {p['verdict']}{note}")


def markdown(h: dict) -> str:
    lines = ["Headline test (rules: docs/lab/headline-preregistration.md). The paper predicts the primary > 0; the "
             "structural prediction (|w − 1| ≤ |π − μ|/δ makes DRPO at δ = 12.5 act like PG-IS) predicts it < 0 here.",
             "", "| contrast | estimate [95 % interval] | p | Holm-adjusted p | survives Holm |", "|---|---|---|---|---|"]
    for d in h["secondary"]:
        lines.append(f"| {d['contrast']} | {_iv(d)} | {d['p']:.4f} | {d['p_holm']:.4f} | "
                     f"{'yes' if d['holm'] else 'no'} |")
    e = h["equivalence"]
    if e:
        lines += ["", f"Equivalence (TOST, margin ±{e['margin']:g} AUC): {e['contrast']}: {e['estimate']:+.4f}, 90 % "
                      f"interval [{e['low90']:+.4f}, {e['high90']:+.4f}]: "
                      + ("equivalent" if e["equivalent"] else "equivalence not shown") + "."]
    m = h["manipulation_check"]
    if m:
        lines += ["", f"Manipulation check (trust regions matter in this regime): {m['contrast']}: {_iv(m)}"
                      + (", holds." if m["low"] > 0 else ", does not hold (interval not above 0).")]
    return "\n".join(lines)


def add_to_outputs(folder: Path, runs: list[dict], meta: dict) -> dict | None:
    """For the headline design: `primary` (and the whole analysis under `headline`) into results.json, and the
    PRIMARY line plus the other contrasts at the top of report.md's conclusions. Returns the analysis, or None."""
    if meta.get("design") != "headline":
        return None
    h = analyse(runs, tuple(meta.get("seeds", ())))
    if h is None:
        return None
    results = json.loads((folder / "results.json").read_text())
    results = {k: v for k, v in results.items() if k != "runs"} | {
        "primary": {k: h["primary"][k] for k in ("contrast", "estimate", "low", "high", "verdict")},
        "headline": h, "runs": results["runs"]}
    (folder / "results.json").write_text(json.dumps(results, indent=1, allow_nan=True))
    report = (folder / "report.md").read_text()
    (folder / "report.md").write_text(primary_line(h) + "\n\n" + markdown(h) + "\n\n" + report)
    return h

"""The verdicts of DRPO-prox's pre-registered test (docs/lab.md, "DRPO-prox"), computed from the two runs' results.

    python -m verl_drpo.lab.prox_test runs/prox_learning runs/prox_degrading

Each hypothesis below is the rule written in docs/lab.md before the runs, applied to the paired intervals that
``report.py`` stored in each folder's ``results.json``; the decision rule is the one fixed there too. Nothing here
chooses what to report: every hypothesis gets a verdict and the numbers it rests on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .stats import Interval

VARIANT, ANCHORED, PG_IS = "drpo_prox_d0.2", "drpo_d0.2", "pg_is"
CONTROL = "k=0,sigma=0"
STALE = ("k=16,sigma=0", "k=32,sigma=0")
NOISY = ("k=0,sigma=1", "k=16,sigma=1", "k=32,sigma=1")


@dataclass(frozen=True)
class Verdict:
    name: str
    claim: str
    outcome: str  # "holds", "falsified", "contradicted", "not tested"
    evidence: str


def _interval(d: dict | None) -> str:
    if d is None:
        return "n/a"
    iv = Interval(d["mean"], d["low"], d["high"], d["n"])
    return iv.text() + (" *" if iv.resolved else "")


def _sign(d: dict | None) -> int:
    """+1 / -1 for a resolved difference, 0 otherwise."""
    if d is None or not d["resolved"]:
        return 0
    return 1 if d["mean"] > 0 else -1


class Results:
    """One results.json: its summary rows by (setting, method) and its per-setting gains (final - start)."""

    def __init__(self, folder: Path):
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise ValueError(f"{folder}: no results.json (run python -m verl_drpo.lab --design ... --out {folder})")
        data = json.loads(path.read_text())
        self.design = data["meta"]["design"]
        self.rows = {(r["setting"], r["method"]): r for r in data["summary"]}
        learning = data.get("learning") or []
        learning = [learning] if isinstance(learning, dict) else learning
        self.gains = {c["setting"]: c["gain"] for c in learning if c}

    def diff(self, setting: str, metric: str, ref: str, method: str = VARIANT) -> dict | None:
        key = (setting, method)
        if key not in self.rows:
            raise ValueError(f"{self.design}: no row for {method} at {setting}")
        return self.rows[key].get(f"d_{metric}_vs_{ref}")

    def gain(self, setting: str, method: str) -> dict | None:
        g = self.gains.get(setting, {}).get(method)
        if g is None:
            return None
        return g | {"resolved": Interval(g["mean"], g["low"], g["high"], g["n"]).resolved}


def verdicts(learning: Results, degrading: Results) -> tuple[list[Verdict], str]:
    """(every hypothesis's verdict, the decision) by the rules of docs/lab.md."""
    out = []
    g = learning.gain(CONTROL, PG_IS)
    m_learn = _sign(g) > 0
    out.append(Verdict("M (learning)", "pg_is rises at k=0, sigma=0 in the learning regime",
                       "holds" if m_learn else "falsified", f"final - start {_interval(g)}"))
    gs = [degrading.gain(s, PG_IS) for s in STALE]
    m_degr = all(_sign(x) < 0 for x in gs)
    out.append(Verdict("M (degrading)", "pg_is falls at k=16 and k=32, sigma=0 in the degrading regime",
                       "holds" if m_degr else "falsified",
                       "; ".join(f"{s}: final - start {_interval(x)}" for s, x in zip(STALE, gs))))

    h0 = [(r.design, m, r.diff(CONTROL, m, ANCHORED)) for r in (learning, degrading) for m in ("auc", "final")]
    out.append(Verdict("H0 (sanity)", "at k=0, sigma=0 no difference from drpo_d0.2 is resolved, in either regime",
                       "holds" if all(_sign(d) == 0 for *_, d in h0) else "falsified",
                       "; ".join(f"{des} Δ{m} {_interval(d)}" for des, m, d in h0)))

    def any_positive_none_negative(results, settings, ref):
        ds = [results.diff(s, "auc", ref) for s in settings]
        signs = [_sign(d) for d in ds]
        ok = any(x > 0 for x in signs) and not any(x < 0 for x in signs)
        return ok, "; ".join(f"{s}: ΔAUC {_interval(d)}" for s, d in zip(settings, ds))

    ok, ev = any_positive_none_negative(learning, STALE, ANCHORED)
    h1 = ok
    out.append(Verdict("H1 (the claim)", "learning regime, sigma=0: ΔAUC vs drpo_d0.2 > 0 at k=16 or k=32, "
                       "< 0 at neither", "holds" if ok else "falsified", ev))
    ok, ev = any_positive_none_negative(learning, NOISY, ANCHORED)
    out.append(Verdict("H2 (noisy mu)", "learning regime, sigma=1: ΔAUC vs drpo_d0.2 > 0 at some k, < 0 at none",
                       "holds" if ok else "falsified", ev))

    ds = [degrading.diff(s, "auc", ANCHORED) for s in STALE]
    signs = [_sign(d) for d in ds]
    if not m_degr:
        h3 = "not tested"
    elif any(x > 0 for x in signs):
        h3 = "contradicted"
    elif any(x < 0 for x in signs):
        h3 = "holds"
    else:
        h3 = "falsified"
    out.append(Verdict("H3 (the brake)", "degrading regime, sigma=0: ΔAUC vs drpo_d0.2 < 0 at k=16 or k=32", h3,
                       "; ".join(f"{s}: ΔAUC {_interval(d)}" for s, d in zip(STALE, ds))))

    settings = (CONTROL, *STALE, *NOISY)
    ds = [learning.diff(s, "auc", PG_IS) for s in settings]
    h4 = not any(_sign(d) < 0 for d in ds)
    out.append(Verdict("H4 (no cost)", "learning regime: ΔAUC vs pg_is not resolved < 0 in any setting",
                       "holds" if h4 else "falsified",
                       "; ".join(f"{s}: {_interval(d)}" for s, d in zip(settings, ds))))

    holds = out[2].outcome == "holds" and h1 and h4
    decision = ("DRPO-prox holds (H0, H1 and H4 hold): it ships as a loss mode." if holds else
                "DRPO-prox does not hold (the decision rule needs H0, H1 and H4; "
                + ", ".join(v.name.split()[0] for v in (out[2], out[3], out[6]) if v.outcome != "holds")
                + " did not hold): it stays a documented ablation.")
    return out, decision


def markdown(vs: list[Verdict], decision: str) -> str:
    lines = ["| hypothesis | claim | verdict | evidence (mean [95 % interval], * resolved) |", "|---|---|---|---|"]
    lines += [f"| {v.name} | {v.claim} | **{v.outcome}** | {v.evidence} |" for v in vs]
    return "\n".join(lines) + f"\n\n**Decision (rule fixed before the runs):** {decision}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verl_drpo.lab.prox_test", description=__doc__.splitlines()[0])
    ap.add_argument("learning", type=Path, help="the --out folder of --design prox_learning")
    ap.add_argument("degrading", type=Path, help="the --out folder of --design prox_degrading")
    args = ap.parse_args(argv)
    try:
        learning, degrading = Results(args.learning), Results(args.degrading)
        if (learning.design, degrading.design) != ("prox_learning", "prox_degrading"):
            raise ValueError(f"expected the prox_learning and prox_degrading designs, got {learning.design} and "
                             f"{degrading.design}")
        vs, decision = verdicts(learning, degrading)
    except (ValueError, KeyError) as e:
        print(f"prox_test: error: {e}", file=sys.stderr)
        return 2
    print(markdown(vs, decision))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

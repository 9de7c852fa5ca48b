"""The lab's Markdown: the outcome and diagnostics tables, and the conclusions generated from them (a difference is
stated only where it survives the Benjamini-Hochberg correction within the table's family)."""

from __future__ import annotations

import math

from .aggregate import apply_multiplicity, apply_multiplicity_to_learning, learning_checks
from .design import REFERENCES
from .stats import Interval


def _f(x, fmt="{:.3f}"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _marks(d) -> str:
    """`*` the 95 % interval excludes 0 (uncorrected); `H` survives Holm, `B` survives Benjamini-Hochberg (5 %,
    within the table's family)."""
    marks = ("*" if d["resolved"] else "") + ("H" if d.get("holm") else "") + ("B" if d.get("bh") else "")
    return f" {marks}" if marks else ""


def _iv(d):
    if d is None:
        return "ref"
    return Interval(d["mean"], d["low"], d["high"], d["n"]).text() + _marks(d)


def format_tables(summary: list[dict], references=REFERENCES) -> str:
    """Two Markdown tables: outcomes with paired differences, and diagnostics."""
    refs = references
    head = ["setting", "method", "start", "final", "AUC"] + [f"ΔAUC vs {r}" for r in refs] + \
        [f"Δfinal vs {r}" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for s in summary:
        cells = [s["setting"], s["method"], _f(s["start_mean"]), _f(s["final_mean"]), _f(s["auc_mean"])]
        cells += [_iv(s[f"d_auc_vs_{r}"]) for r in refs] + [_iv(s[f"d_final_vs_{r}"]) for r in refs]
        lines.append("| " + " | ".join(cells) + " |")
    family = apply_multiplicity(summary, refs)
    lines.append("")
    lines.append(f"Marks: `*` uncorrected 95 % interval excludes 0; `H` survives Holm, `B` survives Benjamini-Hochberg "
                 f"(5 %, family: the {family['comparisons']} distinct comparisons of this table; about "
                 f"{family['expected_by_chance']:.1f} would have `*` by chance).")
    head2 = ["setting", "method", "mean abs(π−μ)", "max r", "w mean", "w min", "w max", "beyond own bdry",
             "verl pg_clipfrac", "grad norm median", "grad norm max", "sampled final", "stopped"]
    lines += ["", "| " + " | ".join(head2) + " |", "|" + "|".join(["---"] * len(head2)) + "|"]
    for s in summary:
        cells = [s["setting"], s["method"], _f(s["abs_prob_diff_mean"], "{:.4f}"), _f(s["ratio_max"], "{:.3g}"),
                 _f(s["w_mean"]), _f(s["w_min"], "{:.3g}"), _f(s["w_max"], "{:.3g}"),
                 _f(s["beyond_own_boundary"], "{:.4f}"), _f(s["verl_clipfrac"], "{:.4f}"),
                 _f(s["grad_norm_median"]), _f(s["grad_norm_max"], "{:.3g}"), _f(s["final_sampled_mean"]),
                 f"{s['stopped']}/{s['seeds']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _survives(d) -> str:
    return "survives Holm and BH" if d.get("holm") else "survives BH, not Holm"


def conclusions(summary: list[dict], learning, references=REFERENCES) -> list[str]:
    """Sentences generated from the table: a difference is stated only where it survives the Benjamini-Hochberg
    correction (false-discovery rate 5 %) within the table's family, and each says whether it also survives Holm
    (family-wise 5 %). `learning` is one `learning_check` (the control setting) or a list of them (the first is the
    control); the learning checks are a family of their own."""
    out = []
    family = apply_multiplicity(summary, references)
    if family["comparisons"]:
        out.append(f"Multiplicity: the table makes {family['comparisons']} distinct paired comparisons; "
                   f"{family['uncorrected']} have an uncorrected 95 % interval that excludes 0, where about "
                   f"{family['expected_by_chance']:.1f} would by chance if no method differed; {family['holm']} "
                   f"survive Holm and {family['bh']} survive Benjamini-Hochberg at 5 %. Only those are stated below.")
    checks = learning_checks(learning)
    apply_multiplicity_to_learning(checks)
    for i, check in enumerate(checks):
        where = f"On-policy ({check['setting']})" if i == 0 else f"In {check['setting']}"
        for method, g in check["gain"].items():
            iv = Interval(g["mean"], g["low"], g["high"], g["n"])
            verdict = (("rises" if iv.mean > 0 else "falls") + f" ({_survives(g)})" if g.get("bh")
                       else "shows no change that survives correction")
            out.append(f"{where}, {method} {verdict}: final − start = {iv.text()} "
                       f"(seed spread of the start: sd {_f(check['start_sd_over_seeds'])}).")
    for setting in dict.fromkeys(s["setting"] for s in summary):
        rows = [s for s in summary if s["setting"] == setting]
        for ref in references:
            resolved, unresolved = [], []
            for s in rows:
                if s["method"] == ref:
                    continue
                for short, label in (("auc", "AUC"), ("final", "final success")):
                    d = s[f"d_{short}_vs_{ref}"]
                    if d is None:
                        continue
                    if d.get("bh"):
                        word = "higher" if d["mean"] > 0 else "lower"
                        iv = Interval(d["mean"], d["low"], d["high"], d["n"]).text()
                        resolved.append(f"{s['method']} has a {word} {label} than {ref} ({iv}; {_survives(d)})")
                    else:
                        unresolved.append(f"{s['method']} ({label})")
            if not resolved and not unresolved:
                out.append(f"{setting}, against {ref}: one seed only, no intervals.")
                continue
            text = f"{setting}, against {ref}: "
            text += ("; ".join(resolved) + ". " if resolved else "")
            if unresolved:
                text += "No difference survives correction for " + ", ".join(unresolved) + "."
            out.append(text.strip())
    return out


def report_markdown(summary: list[dict], learning: dict | None, meta: dict) -> str:
    lines = ["**Conclusions (generated from the table; `*` marks an uncorrected 95 % interval that excludes 0, `H` a "
             "difference that survives Holm's correction and `B` one that survives Benjamini-Hochberg's, both at 5 % "
             "within the table's family; only `B` differences are stated):**", ""]
    lines += [f"- {c}" for c in conclusions(summary, learning, meta.get("references", REFERENCES))]
    mc = [c for c in meta.get("mechanism_check") or [] if c["relative_difference"] is not None]
    if mc:
        rd = [c["relative_difference"] for c in mc]
        lines += ["", f"Mechanism check, DRPO(δ=12.5) against PG-IS on one rollout of {mc[0]['setting']} from each "
                      f"seed's warm start: relative gradient difference ‖g_drpo − g_pg_is‖/‖g_pg_is‖ = "
                      + ", ".join(f"{x:.4f}" for x in rd)
                      + f" (max |π−μ| in the batch {max(c['max_abs_prob_diff'] for c in mc):.3f}; "
                        f"the weight bound |w − 1| ≤ |π−μ|/δ gives at most "
                        f"{max(c['max_abs_prob_diff'] for c in mc) / 12.5:.3f} per token)."]
    return "\n".join(lines)



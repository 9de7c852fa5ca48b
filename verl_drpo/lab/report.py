"""Aggregation over seeds, paired comparisons, the generated conclusions, the output files and the figure."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .design import REFERENCES

# Student-t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95 % intervals); 1.96 beyond.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
VERL_CLIPFRAC = "actor/pg_clipfrac"

RUN_COLUMNS = (
    "method", "setting", "staleness", "mismatch", "rounding", "seed", "start_success", "final_success", "auc",
    "final_sampled_success", "stopped_at", "skipped_updates", "nonzero_adv_frac", "abs_prob_diff_mean", "ratio_max",
    "grad_norm_median", "grad_norm_max", "w_mean", "w_min", "w_max", "beyond_own_boundary", "verl_clipfrac",
    "tokens_trained", "wall_s",
)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least 2 paired values")
    return T975[df - 1] if df <= len(T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """Mean of paired differences with its two-sided 95 % t-interval (sample std, n - 1)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, fmt: str = "{:+.3f}") -> str:
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def paired_interval(xs: list[float], ys: list[float]) -> Interval:
    """95 % t-interval of mean(x_i - y_i) over pairs (the same seed)."""
    if len(xs) != len(ys):
        raise ValueError(f"paired values need equal lengths, got {len(xs)} and {len(ys)}")
    d = [x - y for x, y in zip(xs, ys)]
    if len(d) < 2:
        raise ValueError("a confidence interval needs at least 2 paired values")
    m = statistics.fmean(d)
    half = t975(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return Interval(m, m - half, m + half, len(d))


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with an integer number of degrees of freedom, in closed form (Abramowitz &
    Stegun 26.7.3-4: a finite series in cos(theta), theta = atan(|t| / sqrt(df))); no scipy needed."""
    if df < 1:
        raise ValueError("a t-test needs at least 2 paired values")
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, sin, cos = math.cos(theta) ** 2, math.sin(theta), math.cos(theta)
    if df % 2:  # odd
        series, term = (1.0 if df > 1 else 0.0), 1.0
        for k in range(1, (df - 1) // 2):  # 1, (2/3) c2, (2*4)/(3*5) c2^2, ... up to df - 3
            term *= c2 * (2 * k) / (2 * k + 1)
            series += term
        inside = 2 / math.pi * (theta + sin * cos * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, df // 2):  # 1, (1/2) c2, (1*3)/(2*4) c2^2, ... up to df - 2
            term *= c2 * (2 * k - 1) / (2 * k)
            series += term
        inside = sin * series
    return min(1.0, max(0.0, 1.0 - inside))


def paired_p(d: dict) -> float:
    """Two-sided p of the paired t-test behind an interval dict (mean, low, high, n): sd/sqrt(n) from the width."""
    n = d["n"]
    se = (d["high"] - d["low"]) / 2 / t975(n - 1)
    if se == 0:
        return 1.0 if d["mean"] == 0 else 0.0
    return t_two_sided_p(d["mean"] / se, n - 1)


def holm(ps: list[float], alpha: float = 0.05) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error): p_(i) * (m - i + 1), made monotone, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def benjamini_hochberg(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false-discovery rate): p_(i) * m / i, made monotone from the top."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i], reverse=True)
    out, running = [0.0] * m, 1.0
    for pos, i in enumerate(order):
        rank = m - pos  # 1-based rank from the smallest
        running = min(running, ps[i] * m / rank)
        out[i] = min(1.0, running)
    return out


ALPHA = 0.05


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


def _learning_checks(learning) -> list[dict]:
    return [learning] if isinstance(learning, dict) else [c for c in (learning or []) if c]


def apply_multiplicity_to_learning(learning) -> dict | None:
    """The learning checks (final - start per method and setting) are their own family: Holm and BH over them."""
    gains = [g for c in _learning_checks(learning) for g in c["gain"].values()]
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
    checks = _learning_checks(learning)
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


MANIFEST = "manifest.json"  # the list of files the lab wrote into an output folder; --force replaces only those
# what the lab wrote before it kept a manifest: an output folder without one may hold only these
LAB_OUTPUT_NAMES = frozenset({"results.json", "runs.csv", "summary.csv", "table.md", "report.md", "cost.json",
                              "lab.png", MANIFEST})


def _lab_files(folder: Path) -> set[str]:
    """Names the lab wrote into `folder`: its manifest's list, or the lab's fixed output names if it has none."""
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
            return set(listed) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return set(LAB_OUTPUT_NAMES)


class OutputFolder:
    """The results folder, validated before any work and written atomically.

    ``check()`` fails at once if ``path`` is a file, if it is a non-empty folder and ``force`` is off, if ``force``
    is on but the folder holds anything the lab did not write (its manifest lists what it wrote), or if its parent
    is not writable (it creates the hidden staging folder next to it, which proves that). ``commit()`` writes the
    manifest and moves the staged files into place with renames; ``discard()`` removes the staging folder. A crash
    before ``commit`` leaves ``path`` as it was. A user's own file in ``path`` is never deleted.
    """

    def __init__(self, path: Path, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.staging: Path | None = None

    def check(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {p}: exists and is not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not self.force:
                raise ValueError(f"--out {p}: folder is not empty (pass --force to replace an earlier lab output, "
                                 f"or choose another --out)")
            foreign = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir()
                             if c.name not in _lab_files(p) or not c.is_file() or c.is_symlink())
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise ValueError(f"--out {p}: --force replaces only what the lab wrote, and this folder also holds "
                                 f"{shown}; move them or choose another --out")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{p.name}.staging-", dir=p.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp's 0700 would make the results private
        except OSError as e:
            raise ValueError(f"--out {p}: cannot write there ({e.strerror or e})") from None

    def commit(self) -> None:
        assert self.staging is not None, "check() first"
        names = sorted(c.name for c in self.staging.iterdir() if c.name != MANIFEST)
        (self.staging / MANIFEST).write_text(json.dumps({"written_by": "python -m verl_drpo.lab",
                                                          "files": names}, indent=1) + "\n")
        if self.path.exists() and any(c.name not in _lab_files(self.path) for c in self.path.iterdir()):
            kept, self.staging = self.staging, None  # discard() must not delete the new results
            raise RuntimeError(f"--out {self.path}: a file the lab did not write appeared there during the run; "
                               f"the new results are left in {kept}")
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.staging, self.path)
        self.staging = None
        if old is not None:
            shutil.rmtree(old)

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def write_outputs(folder: Path, runs: list[dict], meta: dict) -> dict:
    """results.json (everything), runs.csv (one row per run), summary.csv, table.md and report.md, into `folder`."""
    references = tuple(meta.get("references", REFERENCES))
    summary = summarize_runs(runs, references)
    if meta.get("gain_settings"):  # the control first
        learning = [learning_check(runs, s) for s in meta["gain_settings"]]
    else:
        learning = learning_check(runs, meta["control_setting"]) if meta.get("control_setting") else None
    multiplicity = {"table": apply_multiplicity(summary, references),
                    "learning": apply_multiplicity_to_learning(learning)}
    (folder / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "learning": learning, "multiplicity": multiplicity, "runs": runs},
        indent=1, allow_nan=True))
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        for r in runs:
            w.writerow(run_row(r))
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in s.items()} for s in summary]
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    table = format_tables(summary, references)
    (folder / "table.md").write_text(table + "\n")
    report = report_markdown(summary, learning, meta)
    (folder / "report.md").write_text(table + "\n\n" + report + "\n")
    return {"summary": summary, "table": table, "report": report}


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

"""The lab's statistics: paired t-intervals against a hand computation, the generated conclusions, the
cross-environment comparison and the design's validation. No training here: these tests take milliseconds."""

import math

import pytest

from verl_drpo.lab import aggregate, markdown, stats
from verl_drpo.lab.design import DEFAULT, FULL, METHODS, QUICK, REFERENCES, Condition, LabConfig


def test_paired_interval_matches_hand_computation():
    # d = [0.1, 0.2, 0.1]: mean 0.1333, sample sd sqrt(((-1/30)^2 + (2/30)^2 + (-1/30)^2) / 2) = 0.057735,
    # half width t(0.975, 2) * sd / sqrt(3) = 4.303 * 0.033333 = 0.143433
    iv = stats.paired_interval([0.5, 0.6, 0.7], [0.4, 0.4, 0.6])
    assert iv.mean == pytest.approx(0.133333, abs=1e-6)
    assert iv.low == pytest.approx(0.133333 - 0.143433, abs=1e-5)
    assert iv.high == pytest.approx(0.133333 + 0.143433, abs=1e-5)
    assert not iv.resolved and iv.n == 3
    # five pairs, d = [0.10, 0.12, 0.11, 0.13, 0.09]: sd = sqrt(0.001 / 4) = 0.0158114, t(0.975, 4) = 2.776
    iv = stats.paired_interval([0.6, 0.62, 0.61, 0.63, 0.59], [0.5] * 5)
    half = 2.776 * math.sqrt(0.001 / 4) / math.sqrt(5)
    assert (iv.low, iv.high) == pytest.approx((0.11 - half, 0.11 + half), abs=1e-9)
    assert iv.resolved
    # the sample sd (n - 1), not the population sd: with pstdev the interval would be narrower by sqrt(4/5)
    assert iv.high - iv.low == pytest.approx(2 * half, rel=1e-9)


def test_interval_rejects_too_few_or_unpaired_values():
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_interval([0.1], [0.2])
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_interval([0.1, 0.2], [0.2])
    assert stats.t975(4) == 2.776 and stats.t975(1000) == 1.96


def _runs(values: dict[str, list[float]], setting="k=0,sigma=0", start=0.3):
    """Synthetic runs: AUC and final equal to the given per-seed values."""
    out = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            out.append({"method": method, "setting": setting, "seed": seed, "start_success": start,
                        "final_success": v, "auc": v, "ratio_max": 1.0, "grad_norm_median": 1.0,
                        "grad_norm_max": 1.0, "w_min": 1.0, "w_max": 1.0, "stopped_at": None})
    return out


def test_conclusions_state_only_resolved_differences():
    runs = _runs({
        "pg_is": [0.50, 0.52, 0.48, 0.51, 0.49],
        "dppo_tv": [0.60, 0.63, 0.57, 0.62, 0.58],  # +0.10 +- small: resolved, higher
        "spo": [0.30, 0.70, 0.40, 0.65, 0.45],  # mean 0.5, wide: not resolved
    })
    summary = aggregate.summarize_runs(runs)
    row = {s["method"]: s for s in summary}
    assert row["dppo_tv"]["d_auc_vs_pg_is"]["resolved"] and row["dppo_tv"]["d_auc_vs_pg_is"]["mean"] > 0
    assert not row["spo"]["d_auc_vs_pg_is"]["resolved"]
    assert row["pg_is"]["d_auc_vs_pg_is"] is None  # a reference is not compared with itself
    text = markdown.conclusions(summary, None)
    vs_pg = next(t for t in text if "against pg_is" in t)
    assert "dppo_tv has a higher AUC than pg_is" in vs_pg
    assert "No difference survives correction for spo (AUC), spo (final success)" in vs_pg
    assert "survives Holm and BH" in vs_pg
    assert "spo has" not in vs_pg
    vs_dppo = next(t for t in text if "against dppo_tv" in t)
    assert "pg_is has a lower AUC than dppo_tv" in vs_dppo
    signs = aggregate.resolved_signs(summary)
    assert signs["k=0,sigma=0|dppo_tv|auc|pg_is"] == 1 and "k=0,sigma=0|spo|auc|pg_is" not in signs


def test_learning_check_reports_the_climb_against_the_seed_spread():
    runs = _runs({"pg_is": [0.50, 0.55, 0.52]})
    for r, s in zip(runs, (0.30, 0.32, 0.31)):
        r["start_success"] = s
    lc = aggregate.learning_check(runs, "k=0,sigma=0")
    assert lc["gain"]["pg_is"]["mean"] == pytest.approx(0.2133333, abs=1e-6)
    assert lc["start_sd_over_seeds"] == pytest.approx(0.01)
    assert "pg_is rises" in markdown.conclusions(aggregate.summarize_runs(runs), lc)[0]


def test_compare_environments_finds_agreements_flips_and_one_sided():
    a = {"summary": aggregate.summarize_runs(_runs({"pg_is": [0.50, 0.52, 0.48, 0.51, 0.49],
                                                 "dppo_tv": [0.60, 0.63, 0.57, 0.62, 0.58]}))}
    b = {"summary": aggregate.summarize_runs(_runs({"pg_is": [0.50, 0.52, 0.48, 0.51, 0.49],
                                                 "dppo_tv": [0.40, 0.43, 0.37, 0.42, 0.38]}))}
    c = {"summary": aggregate.summarize_runs(_runs({"pg_is": [0.50, 0.52, 0.48, 0.51, 0.49],
                                                 "dppo_tv": [0.30, 0.70, 0.40, 0.65, 0.45]}))}
    same = aggregate.compare_environments(a, a)
    assert same["flipped"] == [] and len(same["agree"]) == 4
    flipped = aggregate.compare_environments(a, b)
    assert len(flipped["flipped"]) == 4 and flipped["agree"] == []
    one_sided = aggregate.compare_environments(a, c)
    assert len(one_sided["only_first"]) == 4 and one_sided["only_second"] == []


def test_designs_are_consistent():
    assert len(DEFAULT.seeds) >= 5 and len(FULL.seeds) >= 10
    assert set(REFERENCES) <= set(DEFAULT.methods) and set(REFERENCES) <= set(FULL.methods)
    for d in (DEFAULT, FULL, QUICK):
        assert set(d.methods) <= set(METHODS)
        assert d.config.eval_prompts >= 512 or d is QUICK
    # one axis at a time: staleness at sigma 0, noise at k 0, including k in {0, 16}
    assert Condition(0, 0.0) in DEFAULT.conditions and Condition(16, 0.0) in DEFAULT.conditions
    assert all(s.staleness == 0 or (s.mismatch == 0 and s.rounding is None)
               for s in DEFAULT.conditions + FULL.conditions)
    assert {s.rounding for s in FULL.conditions} >= {"bfloat16", "float16"}
    assert any(METHODS[m].clip_grad == 0 for m in FULL.methods)
    with pytest.raises(ValueError, match="dtype"):
        LabConfig(dtype="float16")
    with pytest.raises(ValueError, match="rounding"):
        Condition(0, 0.0, "int8")


def test_t_p_values_match_tables():
    # the 0.975 quantiles of the t table give p = 0.05; t = 1 with 1 df is the Cauchy: P(|T| > 1) = 1/2;
    # with 2 df P(|T| > t) = 1 - t / sqrt(2 + t^2), so t = 1 gives 1 - 1/sqrt(3)
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (19, 2.093), (30, 2.042)):
        assert stats.t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4), df
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert stats.t_two_sided_p(1.0, 2) == pytest.approx(1 - 1 / math.sqrt(3), abs=1e-12)
    assert stats.t_two_sided_p(0.0, 7) == 1.0 and stats.t_two_sided_p(-3.0, 5) == stats.t_two_sided_p(3.0, 5)


def test_holm_and_benjamini_hochberg_against_hand_computation():
    ps = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06,
    # 0.06, back in input order
    assert stats.holm(ps) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted p * 4 / rank = 0.02, 0.02, 0.04, 0.04 -> running min from the top: unchanged
    assert stats.benjamini_hochberg(ps) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # where they differ: five p-values of 0.02 survive BH (0.02 * 5 / 5 = 0.02) but not Holm (0.02 * 5 = 0.1)
    assert all(p <= 0.05 for p in stats.benjamini_hochberg([0.02] * 5))
    assert all(p > 0.05 for p in stats.holm([0.02] * 5))
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]


def test_conclusions_state_only_differences_that_survive_correction():
    # dppo_tv clearly above pg_is (and so above every other method); spo just resolved above pg_is without
    # correction (p = 0.040); vanilla and drpo at chance level
    base = [0.50, 0.52, 0.48, 0.51, 0.49]
    values = {"pg_is": base, "dppo_tv": [b + 0.1 + e for b, e in zip(base, (0.0, 0.01, -0.01, 0.005, -0.005))]}
    values["spo"] = [b + d for b, d in zip(base, (0.010, 0.013, 0.001, 0.012, 0.002))]
    values["vanilla"] = [b + d for b, d in zip(base, (0.03, -0.02, 0.01, -0.03, 0.02))]
    values["drpo"] = [b + d for b, d in zip(base, (-0.01, 0.02, -0.02, 0.0, 0.01))]
    summary = aggregate.summarize_runs(_runs(values))
    row = {s["method"]: s for s in summary}
    d = row["spo"]["d_auc_vs_pg_is"]
    # 14 distinct comparisons (4 methods vs pg_is, 3 vs dppo_tv, 2 metrics); 8 have tiny p, then spo's two at
    # 0.040: BH 0.040 * 14 / 10 = 0.056 and Holm 0.040 * 6 = 0.24, so neither correction keeps them
    assert d["resolved"] and d["p"] == pytest.approx(0.0403, abs=1e-4) and not d["holm"] and not d["bh"]
    assert d["p_bh"] == pytest.approx(d["p"] * 14 / 10) and d["p_holm"] == pytest.approx(d["p"] * 6)
    assert row["dppo_tv"]["d_auc_vs_pg_is"]["holm"] and row["dppo_tv"]["d_auc_vs_pg_is"]["bh"]
    text = " ".join(markdown.conclusions(summary, None))
    assert "spo has a higher" not in text and "dppo_tv has a higher AUC than pg_is" in text
    assert "No difference survives correction for spo (AUC), spo (final success), vanilla (AUC)" in text
    assert "14 distinct paired comparisons" in text and "2 have an uncorrected" not in text
    table = markdown.format_tables(summary)
    assert " *HB" in table and "| +0.008 [" in table and "] * |" in table


def test_headline_verdict_rule_holm_and_tost_on_synthetic_runs(tmp_path):
    from verl_drpo.lab import headline
    from verl_drpo.lab.design import HEADLINE

    assert headline.t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert headline.t_quantile(0.95, 19) == pytest.approx(1.729, abs=1e-3)
    assert headline.verdict(0.01, 0.05) == "supported" and headline.verdict(-0.05, -0.01) == "contradicted"
    assert headline.verdict(-0.01, 0.05) == "unresolved"
    seeds = list(HEADLINE.seeds)
    base = [0.30 + 0.01 * (i % 5) for i in range(len(seeds))]
    jitter = [0.002 * ((i * 7) % 5 - 2) for i in range(len(seeds))]  # -0.004..+0.004, mean 0
    runs = []
    for setting in ("k=0,sigma=0", "k=32,sigma=0", "k=0,sigma=0,bfloat16_logits"):
        shift = {"pg_is": -0.08, "drpo": -0.08, "drpo_d0.2": -0.02, "dppo_tv": 0.0, "vanilla": -0.05}
        for method, sft in shift.items():
            for seed, b, j in zip(seeds, base, jitter):
                v = b + (sft + (j if method == "drpo" else 0.0) if setting == "k=32,sigma=0" else 0.0)
                runs.append({"method": method, "setting": setting, "seed": seed, "auc": v})
    h = headline.analyse(runs, tuple(seeds))
    p = h["primary"]
    assert p["estimate"] == pytest.approx(-0.08) and p["high"] < 0 and p["verdict"] == "contradicted"
    assert p["preregistered_grid"] and headline.primary_line(h).startswith("PRIMARY: ΔAUC drpo − dppo_tv at k=32")
    # drpo - pg_is differs only by the jitter (sd 0.0029): the 90 % interval is far inside +-0.02
    assert h["equivalence"]["equivalent"] and h["equivalence"]["margin"] == 0.02
    assert h["manipulation_check"]["low"] > 0
    assert [d["holm"] for d in h["secondary"][:2]] == [True, True]
    assert len(h["secondary"]) == 4
    assert not headline.analyse(runs, (0, 1))["primary"]["preregistered_grid"]

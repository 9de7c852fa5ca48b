"""The pre-registered verdicts of DRPO-prox (verl_drpo.lab.prox_test) on synthetic results: each rule as written."""

import json

import pytest

from verl_drpo.lab import prox_test
from verl_drpo.lab.design import PROX_DEGRADING, PROX_LEARNING

SETTINGS = [s.name for s in PROX_LEARNING.conditions]


def iv(mean, half=0.01):
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": 10, "resolved": abs(mean) > half}


def write(folder, design, d_anchored, d_pg_is, gains):
    """results.json with the variant's ΔAUC/Δfinal vs drpo_d0.2 and vs pg_is per setting, and pg_is's gains."""
    rows = []
    for s in SETTINGS:
        rows.append({"setting": s, "method": "drpo_prox_d0.2", "d_auc_vs_drpo_d0.2": iv(d_anchored.get(s, 0.0)),
                     "d_final_vs_drpo_d0.2": iv(0.0), "d_auc_vs_pg_is": iv(d_pg_is.get(s, 0.0))})
    learning = [{"setting": s, "gain": {"pg_is": iv(gains.get(s, 0.1))}} for s in SETTINGS]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"meta": {"design": design}, "summary": rows,
                                                     "learning": learning}))
    return folder


def verdicts(tmp_path, learn_anchored, degr_anchored=None, learn_pg_is=None, degr_gains=None):
    lf = write(tmp_path / "l", PROX_LEARNING.name, learn_anchored, learn_pg_is or {}, {})
    df = write(tmp_path / "d", PROX_DEGRADING.name, degr_anchored or {}, {},
               degr_gains if degr_gains is not None else {"k=16,sigma=0": -0.1, "k=32,sigma=0": -0.1})
    vs, decision = prox_test.verdicts(prox_test.Results(lf), prox_test.Results(df))
    return {v.name.split()[0] + (" " + v.name.split()[1] if v.name.startswith("M") else ""): v.outcome
            for v in vs}, decision


def test_all_rules_met_ships_the_variant(tmp_path):
    out, decision = verdicts(tmp_path, {"k=16,sigma=0": 0.05, "k=0,sigma=1": 0.05},
                             degr_anchored={"k=32,sigma=0": -0.05})
    assert out == {"M (learning)": "holds", "M (degrading)": "holds", "H0": "holds", "H1": "holds", "H2": "holds",
                   "H3": "holds", "H4": "holds"}
    assert "ships as a loss mode" in decision


def test_h1_needs_a_resolved_gain_and_no_resolved_loss(tmp_path):
    out, decision = verdicts(tmp_path, {"k=16,sigma=0": 0.05, "k=32,sigma=0": -0.05})
    assert out["H1"] == "falsified" and "does not hold" in decision and "H1" in decision
    out, _ = verdicts(tmp_path / "b", {"k=16,sigma=0": 0.005})  # not resolved
    assert out["H1"] == "falsified"


def test_a_resolved_difference_at_the_control_falsifies_the_sanity_check(tmp_path):
    out, decision = verdicts(tmp_path, {"k=0,sigma=0": 0.05, "k=16,sigma=0": 0.05})
    assert out["H0"] == "falsified" and "H0" in decision


def test_a_resolved_loss_against_pg_is_anywhere_falsifies_h4(tmp_path):
    out, decision = verdicts(tmp_path, {"k=16,sigma=0": 0.05}, learn_pg_is={"k=32,sigma=1": -0.05})
    assert out["H4"] == "falsified" and "H4" in decision


def test_h3_is_not_tested_when_the_degrading_regime_does_not_degrade(tmp_path):
    out, _ = verdicts(tmp_path, {}, degr_anchored={"k=16,sigma=0": -0.05}, degr_gains={"k=16,sigma=0": -0.1})
    assert out["M (degrading)"] == "falsified" and out["H3"] == "not tested"
    out, _ = verdicts(tmp_path / "b", {}, degr_anchored={"k=16,sigma=0": 0.05})
    assert out["H3"] == "contradicted"


def test_the_command_line_refuses_folders_of_other_designs(tmp_path, capsys):
    lf = write(tmp_path / "l", "default", {}, {}, {})
    df = write(tmp_path / "d", PROX_DEGRADING.name, {}, {}, {})
    assert prox_test.main([str(lf), str(df)]) == 2
    assert "expected the prox_learning and prox_degrading designs" in capsys.readouterr().err
    assert prox_test.main([str(tmp_path / "missing"), str(df)]) == 2

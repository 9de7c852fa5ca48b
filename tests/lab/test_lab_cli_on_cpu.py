"""The lab's command line end to end: --quick output is complete and well-formed, and runs are deterministic."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_drpo.lab.verl_path import DEFAULT_METHODS

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
RUN_KEYS = {"method", "setting", "staleness", "mismatch", "seed", "start_success", "final_success", "best_success",
            "auc", "steps_to_threshold", "collapsed", "abs_prob_diff_mean", "grad_norm_mean", "ratio_max",
            "loss_metrics", "curve", "per_step", "tokens_trained", "wall_s"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab_quick")
    proc = subprocess.run([sys.executable, "-m", "verl_drpo.lab", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_quick_outputs_complete_and_well_formed(quick):
    out, proc = quick
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    assert [r["method"] for r in runs] == list(DEFAULT_METHODS)  # every method, in grid order
    steps = res["meta"]["config"]["steps"]
    for r in runs:
        assert RUN_KEYS <= set(r), RUN_KEYS - set(r)
        assert r["staleness"] == 2 and r["mismatch"] == 0.5
        assert len(r["per_step"]["abs_prob_diff"]) == steps and len(r["per_step"]["grad_norm"]) == steps
        assert r["curve"]["eval_step"][0] == 0 and r["curve"]["eval_step"][-1] == steps
        assert all(0.0 <= s <= 1.0 for s in r["curve"]["success"])
        assert r["best_success"] == max(r["curve"]["success"])
        for key in ("final_success", "auc", "abs_prob_diff_mean", "grad_norm_mean", "ratio_max"):
            assert math.isfinite(r[key]), (r["method"], key)
        assert r["abs_prob_diff_mean"] > 0  # staleness and noise make pi != mu
        assert r["tokens_trained"] > 0
        assert "actor/pg_loss" in r["loss_metrics"]
        if r["method"].startswith("drpo"):
            assert "actor/drpo/weight_mean" in r["loss_metrics"]
    # the warm start gives some success, so the advantages are not all zero and the gradients flow
    assert any(r["grad_norm_mean"] > 0 for r in runs)
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == len(runs)
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert [s["method"] for s in summary] == list(DEFAULT_METHODS)
    png = (out / "lab.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "table.md").read_text()
    assert table.count("\n") == len(runs) + 2
    assert "| k=2,sigma=0.5 | drpo_d0.2 |" in table
    assert "throughput:" in proc.stdout and "tokens/s" in proc.stdout
    assert table.strip() in proc.stdout


def test_same_command_same_numbers_any_worker_count(tmp_path):
    from verl_drpo.lab.__main__ import main

    def strip(d):  # wall-clock fields are the only ones allowed to differ
        for r in d["runs"]:
            r.pop("wall_s")
        return d["runs"], d["summary"]

    args = ["--quick", "--methods", "drpo_d0.2,pg_is", "--steps", "3", "--no-plot", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a = strip(json.loads((tmp_path / "a" / "results.json").read_text()))
    b = strip(json.loads((tmp_path / "b" / "results.json").read_text()))
    assert a == b
    assert (tmp_path / "a" / "table.md").read_text() == (tmp_path / "b" / "table.md").read_text()


def test_cli_rejects_bad_input(tmp_path):
    for bad in (["--methods", "drpo,nope"], ["--staleness", "x"], ["--mismatch", "-1"], ["--workers", "0"]):
        proc = subprocess.run([sys.executable, "-m", "verl_drpo.lab", "--quick", "--out", str(tmp_path), *bad],
                              capture_output=True, text=True, env=ENV, timeout=120)
        assert proc.returncode != 0, bad
        assert ("unknown method" in proc.stderr or "expected" in proc.stderr or "mismatch" in proc.stderr
                or "workers" in proc.stderr), proc.stderr[-800:]
        assert not (Path(tmp_path) / "results.json").exists()

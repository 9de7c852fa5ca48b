"""The run checker that the CPU smoke test relies on: it must pass good runs and catch each kind of bad one."""

import json

from verl_drpo.cpu.check_run import check, load_steps, main


def _step(**over):
    m = {"actor/pg_loss": -0.01, "actor/grad_norm": 0.2, "critic/advantages/max": 0.75,
         "critic/advantages/min": -0.25, "critic/score/mean": 0.25, "actor/drpo/weight_mean": 1.0,
         "actor/drpo/abs_prob_diff_mean": 2e-7, "actor/drpo/ratio_mean": 1.0,
         "training/off_policy/trajectory_staleness/max": 0}
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


def _write(tmp_path, steps):
    p = tmp_path / "run.jsonl"
    p.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in steps.items()))
    return p


def test_good_drpo_run_passes(tmp_path):
    p = _write(tmp_path, {1: _step(), 2: _step()})
    assert check(load_steps(p), 2, "drpo", max_anchor_gap=1e-4) == []
    assert main([str(p), "--steps", "2", "--loss-mode", "drpo", "--max-anchor-gap", "1e-4"]) == 0


def test_each_failure_is_reported(tmp_path):
    steps = {1: _step(), 2: _step()}
    assert any("not logged" in e for e in check(steps, 3, "drpo"))
    assert any("non-finite" in e for e in check({1: _step(**{"actor/pg_loss": float("nan")})}, 1, "drpo"))
    assert any("no gradient" in e for e in check({1: _step(**{"actor/grad_norm": 0.0})}, 1, "drpo"))
    assert any("advantages are zero" in e for e in check(
        {1: _step(**{"critic/advantages/max": 0.0, "critic/advantages/min": 0.0})}, 1, "drpo"))
    assert any("did not run" in e for e in check({1: _step(**{"actor/drpo/weight_mean": None})}, 1, "drpo"))
    assert any("verl-drpo metrics were logged" in e for e in check(steps, 2, "vanilla"))
    assert any("not the sampling distribution" in e for e in check(
        {1: _step(**{"actor/drpo/abs_prob_diff_mean": 3e-4})}, 1, "drpo", max_anchor_gap=1e-4))
    assert any("not off-policy" in e for e in check(steps, 2, "drpo", min_staleness=1))


def test_verl_loss_run_uses_verl_anchor_metric(tmp_path):
    clean = {k: v for k, v in _step().items() if not k.startswith("actor/drpo/")}
    steps = {1: {**clean, "training/rollout_probs_diff_mean": 1e-7}}
    assert check(steps, 1, "vanilla", max_anchor_gap=1e-4) == []
    assert any("missing" in e for e in check({1: clean}, 1, "vanilla", max_anchor_gap=1e-4))
    assert main([str(tmp_path / "absent.jsonl"), "--steps", "1", "--loss-mode", "vanilla"]) == 1

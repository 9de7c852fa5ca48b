"""The run checker that the CPU smoke test relies on: it must pass good runs and catch each kind of bad one."""

import json

from verl_drpo.launch.check_run import check, load_steps, main
from verl_drpo.modes import OWN_MODES, REGISTERED_NAMES

LAG = "training/off_policy/trajectory_staleness/"


def _step(**over):
    m = {"actor/pg_loss": -0.01, "actor/grad_norm": 0.2, "critic/advantages/max": 0.75,
         "critic/advantages/min": -0.25, "critic/score/mean": 0.25, "actor/drpo/weight_mean": 1.0,
         "actor/drpo/abs_prob_diff_mean": 2e-7, "actor/drpo/ratio_mean": 1.0, "response_length/min": 3,
         "response_length/max": 8, "prompt_length/mean": 30.5, "prompt_length/max": 33, "prompt_length/min": 29}
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


def _write(tmp_path, steps, name="run.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in steps.items()))
    return p


def test_good_drpo_run_passes(tmp_path):
    p = _write(tmp_path, {1: _step(), 2: _step()})
    assert check(load_steps(p), 2, "drpo", max_anchor_gap=1e-4, ragged=True) == []
    assert main([str(p), "--steps", "2", "--loss-mode", "drpo", "--max-anchor-gap", "1e-4", "--ragged"]) == 0


def test_every_registered_name_of_our_modes_expects_drpo_metrics():
    assert set(OWN_MODES) <= set(REGISTERED_NAMES)
    for name in REGISTERED_NAMES:
        assert any("did not run" in e for e in check({1: _step(**{"actor/drpo/weight_mean": None})}, 1, name))
    assert check({1: _step()}, 1, "spo_adaptive_eps") == []  # an alias


def test_each_failure_is_reported(tmp_path):
    steps = {1: _step(), 2: _step()}
    assert any("not logged" in e for e in check(steps, 3, "drpo"))
    assert any("not logged" in e for e in check({3: _step()}, 3, "drpo"))
    assert check({3: _step()}, 3, "drpo", first_step=3) == []
    assert any("non-finite" in e for e in check({1: _step(**{"actor/pg_loss": float("nan")})}, 1, "drpo"))
    assert any("no gradient" in e for e in check({1: _step(**{"actor/grad_norm": 0.0})}, 1, "drpo"))
    assert any("advantages are zero" in e for e in check(
        {1: _step(**{"critic/advantages/max": 0.0, "critic/advantages/min": 0.0})}, 1, "drpo"))
    assert any("did not run" in e for e in check({1: _step(**{"actor/drpo/weight_mean": None})}, 1, "drpo"))
    assert any("verl-drpo metrics were logged" in e for e in check(steps, 2, "vanilla"))
    assert any("weight sync" in e for e in check(
        {1: _step(**{"actor/drpo/abs_prob_diff_mean": 3e-4})}, 1, "drpo", max_anchor_gap=1e-4))
    assert any("not ragged" in e for e in check({1: _step(**{"response_length/min": 8})}, 1, "drpo", ragged=True))


def test_recompute_anchor_uses_verl_rollout_probs_diff():
    clean = {k: v for k, v in _step().items() if not k.startswith("actor/drpo/")}
    steps = {1: {**clean, "training/rollout_probs_diff_mean": 1e-7}}
    assert check(steps, 1, "vanilla", max_rollout_probs_diff=1e-4) == []
    assert any("missing" in e for e in check({1: clean}, 1, "vanilla", max_rollout_probs_diff=1e-4))
    bad = {1: {**clean, "training/rollout_probs_diff_mean": 1e-2}}
    assert any("disagree" in e for e in check(bad, 1, "vanilla", max_rollout_probs_diff=1e-4))
    assert main([str("/nonexistent/absent.jsonl"), "--steps", "1", "--loss-mode", "vanilla"]) == 1


def _lagged(lo, hi, gap):
    return _step(**{LAG + "min": lo, LAG + "max": hi, LAG + "mean": (lo + hi) / 2,
                    "actor/drpo/abs_prob_diff_mean": gap})


def test_staleness_is_read_from_verl_per_sample_lag():
    good = {1: _lagged(0, 0, 2e-7), 2: _lagged(1, 1, 3e-3), 3: _lagged(2, 2, 5e-3)}
    assert check(good, 3, "drpo", staleness=2, min_stale_gap=1e-4) == []
    assert any("expected exactly 1" in e for e in check(good, 3, "drpo", staleness=1))
    assert any("lags 2 policy versions > STALENESS 1" in e for e in check(good, 3, "drpo", staleness=1))
    on_policy = {s: _lagged(0, 0, 2e-7) for s in (1, 2, 3)}
    assert any("expected exactly 2" in e for e in check(on_policy, 3, "drpo", staleness=2))
    invisible = {1: _lagged(0, 0, 2e-7), 2: _lagged(1, 1, 1e-6)}
    assert any("not visible in the anchor gap" in e for e in check(invisible, 2, "drpo", staleness=1,
                                                                    min_stale_gap=1e-4))
    assert any("missing" in e for e in check({1: _step(), 2: _step()}, 2, "drpo", staleness=1))
    assert any("needs more than" in e for e in check(good, 2, "drpo", staleness=2))


def test_resume_compares_the_data_side_with_the_uninterrupted_run(tmp_path):
    full = {1: _step(), 2: _step(), 3: _step(**{"prompt_length/mean": 31.25})}
    resumed = {3: _step(**{"prompt_length/mean": 31.25, "actor/pg_loss": 0.5})}  # other samples: other loss
    assert check(resumed, 3, "drpo", first_step=3, resumed_from=full) == []
    restarted = {3: _step()}  # the data loader started over: other prompts at step 3
    assert any("did not continue the data" in e for e in check(restarted, 3, "drpo", first_step=3,
                                                                resumed_from=full))
    a, b = _write(tmp_path, resumed, "resumed.jsonl"), _write(tmp_path, full, "full.jsonl")
    assert main([str(a), "--steps", "3", "--first-step", "3", "--loss-mode", "drpo", "--resumed-from", str(b)]) == 0


def test_max_weight_deviation_tells_a_prox_centred_weight_from_a_mu_centred_one(tmp_path):
    """drpo_prox at a one-mini-batch update: pi = pi_prox, so w = 1 even where |pi - mu| is large (the smoke's
    `prox` run); a weight centred on mu would be 1 -+ |pi - mu|/delta."""
    stale = {"actor/drpo/abs_prob_diff_mean": 3e-2, "actor/drpo/weight_microbatch_min_mean": 1.0,
             "actor/drpo/weight_microbatch_max_mean": 1.0}
    assert check({1: _step(**stale)}, 1, "drpo_prox", max_weight_deviation=1e-2) == []
    mu_centred = {**stale, "actor/drpo/weight_microbatch_min_mean": -2.0,
                  "actor/drpo/weight_microbatch_max_mean": 4.0}
    assert any("not centred on the policy" in e
               for e in check({1: _step(**mu_centred)}, 1, "drpo_prox", max_weight_deviation=1e-2))
    assert any("weight_microbatch_min_mean/max missing" in e for e in check({1: _step()}, 1, "drpo_prox", max_weight_deviation=1e-2))
    p = _write(tmp_path, {1: _step(**stale)})
    assert main([str(p), "--steps", "1", "--loss-mode", "drpo_prox", "--max-weight-deviation", "1e-2"]) == 0
    # one micro-batch in four empty: verl averages a 0 in for it; the check takes the mean over the other three
    quarter_empty = {**stale, "actor/drpo/weight_microbatch_min_mean": 0.75,
                     "actor/drpo/weight_microbatch_max_mean": 0.75, "actor/drpo/empty_microbatch_frac": 0.25}
    assert check({1: _step(**quarter_empty)}, 1, "drpo_prox", max_weight_deviation=1e-2) == []


def test_a_step_that_left_tokens_out_for_non_finite_inputs_fails():
    assert check({1: _step(**{"actor/drpo/nonfinite_frac": 0.0})}, 1, "drpo") == []
    errors = check({1: _step(**{"actor/drpo/nonfinite_frac": 0.01})}, 1, "drpo")
    assert any("actor/drpo/nonfinite_frac = 0.01: tokens with a non-finite" in e for e in errors)


def test_max_evicted_counts_verl_evictions_over_the_run(tmp_path):
    evicted = "training/off_policy/evicted_samples"
    steps = {1: _step(), 2: _step(), 3: _step()}  # verl logs the key only at steps that evicted
    assert check(steps, 3, "drpo", max_evicted=0) == []
    steps[2] = _step(**{evicted: 8})
    errors = check(steps, 3, "drpo", max_evicted=0)
    assert len(errors) == 1 and "8 samples evicted" in errors[0] and "{2: 8.0}" in errors[0]
    assert check(steps, 3, "drpo", max_evicted=8) == []
    p = _write(tmp_path, steps)
    assert main([str(p), "--steps", "3", "--loss-mode", "drpo", "--max-evicted", "0"]) == 1


def test_max_lag_bounds_the_worst_token_lag_at_every_step():
    worst = "training/off_policy/trajectory_staleness_worst/max"
    steps = {1: _step(**{worst: 0}), 2: _step(**{worst: 1}), 3: _step(**{worst: 1})}
    assert check(steps, 3, "drpo", max_lag=1) == []
    steps[3] = _step(**{worst: 2})
    assert any("lags 2 policy versions > 1" in e for e in check(steps, 3, "drpo", max_lag=1))
    assert any("missing" in e for e in check({1: _step()}, 1, "drpo", max_lag=1))


def test_fully_async_rollouter_step_0_is_not_a_training_step_and_its_drops_count():
    rollouter_only = {"fully_async/rollouter/active_time": 50.0}
    steps = {0: rollouter_only, 1: _step(), 2: _step()}
    assert check(steps, 2, "drpo", max_evicted=0) == []
    steps[2] = _step(**{"fully_async/count/dropped_stale_samples": 4.0})
    assert any("fully_async dropped 4 stale samples" in e for e in check(steps, 2, "drpo", max_evicted=0))


def test_allow_flat_steps_tolerates_an_all_wrong_step_but_not_a_run_without_gradient():
    flat = {"critic/advantages/max": 0.0, "critic/advantages/min": 0.0, "actor/grad_norm": 0.0}
    steps = {1: _step(), 2: _step(**flat), 3: _step()}
    assert any("advantages are zero" in e for e in check(steps, 3, "drpo"))
    assert check(steps, 3, "drpo", allow_flat_steps=True) == []
    all_flat = {s: _step(**flat) for s in (1, 2)}
    assert any("no step had a gradient" in e for e in check(all_flat, 2, "drpo", allow_flat_steps=True))
    # a zero gradient with non-zero advantages is still a failure
    assert any("no gradient" in e for e in check({1: _step(**{"actor/grad_norm": 0.0})}, 1, "drpo",
                                                 allow_flat_steps=True))

"""DRPO-prox (beyond the paper): its closed form, its fast path, mu recovered from verl's decoupled-mode weights,
verl's ppo_loss with the inputs the V1 trainer builds, and the refusals of inputs and configs that lose mu."""

import math

import pytest
import torch
import verl  # noqa: F401  (registers the plugin through its entry point)
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights
from verl.workers.utils.losses import ppo_loss

from verl_drpo import fast, losses, modes, plugin
from verl_drpo.config import DRPOPolicyLossConfig
from verl_drpo.launch import preflight

from helpers import PL, actor_config, autograd_grad, call, composed, ppo_loss_data, random_inputs


def three_policies(shape=(6, 40), dtype=torch.float64, seed=0):
    """log pi, log mu, log pi_prox and A, with pi_prox between mu and pi (the policy has moved since mu)."""
    lp, mu_lp, adv = random_inputs(shape, dtype, seed, spread=1.0)
    gen = torch.Generator().manual_seed(seed + 100)
    prox_lp = (mu_lp + 0.6 * torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)).clamp(max=0.0)
    return lp, mu_lp, prox_lp, adv


def verl_weights(prox_lp, mu_lp, mask, threshold=modes.UNTRUNCATED_IS_THRESHOLD, level="token"):
    """verl's own decoupled-mode weights pi_prox / mu (rollout_corr_helper)."""
    m = mask.to(prox_lp.dtype)
    weights, _ = compute_rollout_correction_weights((prox_lp - mu_lp) * m, m, rollout_is=level,
                                                    rollout_is_threshold=threshold)
    return weights


# ---- the mathematics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.2, 12.5])
def test_value_and_gradient_match_the_closed_form(delta):
    lp, mu_lp, prox_lp, adv = three_policies()
    pi, mu, prox = lp.exp(), mu_lp.exp(), prox_lp.exp()
    expected = -adv * pi / mu + adv.abs() * (pi - prox) ** 2 / (2 * delta * mu)
    torch.testing.assert_close(losses.drpo_prox_token_loss(lp, mu_lp, prox_lp, adv, delta), expected,
                               rtol=1e-10, atol=1e-10)
    w = 1 - torch.sign(adv) * (pi - prox) / delta
    grad = autograd_grad(losses.drpo_prox_token_loss, lp, mu_lp, prox_lp, adv, delta)
    torch.testing.assert_close(grad, -w * adv * (pi / mu), rtol=1e-9, atol=1e-10)


def test_is_drpo_when_the_proximal_policy_is_mu():
    lp, mu_lp, _, adv = three_policies()
    torch.testing.assert_close(losses.drpo_prox_token_loss(lp, mu_lp, mu_lp, adv, 0.2),
                               losses.drpo_token_loss(lp, mu_lp, adv, 0.2), rtol=0, atol=1e-12)


def test_per_token_optimum_is_the_proximal_policy_plus_sign_a_delta():
    """argmin over pi of the per-token loss is pi_prox + sign(A) delta, whatever mu and |A| are."""
    delta = 0.2
    pi = torch.linspace(1e-4, 1.0, 200_001, dtype=torch.float64)
    for mu, prox, a in [(0.1, 0.4, 1.0), (0.6, 0.3, -0.5), (0.02, 0.5, 2.0), (0.5, 0.7, -1.0)]:
        loss = losses.drpo_prox_token_loss(pi.log(), torch.full_like(pi, mu).log(), torch.full_like(pi, prox).log(),
                                           torch.full_like(pi, a), delta)
        assert pi[loss.argmin()].item() == pytest.approx(prox + math.copysign(delta, a), abs=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("compiled", [False, True])
def test_fast_path_matches_the_formula_with_padding_and_clamped_tokens(dtype, tol, compiled):
    lp, mu_lp, prox_lp, adv = three_policies(dtype=dtype)
    lp[0, 0], mu_lp[0, 0] = 0.0, -25.0  # a clamped log-ratio: zero gradient
    mask = torch.arange(40).unsqueeze(0) < torch.tensor([[40], [3], [17], [40], [1], [29]])
    lp_padded = torch.where(mask, lp, torch.nan)  # garbage at padded positions must not matter
    spec = losses.drpo_prox(0.2)
    x = lp_padded.clone().requires_grad_(True)
    if compiled:
        values, grad_coef, stats = fast.CompiledEvaluate()(spec, x, mu_lp, adv, mask, prox_lp)
    else:
        values, grad_coef, stats = fast.evaluate(spec, x, mu_lp, adv, mask, "always", prox_lp)
    got = fast.attach_gradient(x, values, grad_coef)
    x_ref = lp.clone().requires_grad_(True)
    ref = losses.drpo_prox_token_loss(x_ref, mu_lp, prox_lp, adv, 0.2) * mask
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad * mask, rtol=tol, atol=tol)
    assert x.grad[0, 0] == 0
    w = 1 - torch.sign(adv) * (lp.exp() - prox_lp.exp()) / 0.2
    assert stats["weight_min"].item() == pytest.approx(w[mask].min().item(), rel=tol * 10)


def test_the_centre_must_be_given_exactly_when_the_loss_is_centred_on_pi_prox():
    lp, mu_lp, prox_lp, adv = three_policies()
    mask = torch.ones_like(lp, dtype=torch.bool)
    with pytest.raises(ValueError, match="centre_log_prob"):
        fast.evaluate(losses.drpo_prox(0.2), lp, mu_lp, adv, mask)
    with pytest.raises(ValueError, match="centre_log_prob"):
        fast.evaluate(losses.drpo(0.2), lp, mu_lp, adv, mask, "always", prox_lp)


# ---- verl's inputs: mu recovered from the decoupled-mode weights ---------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_mu_is_recovered_from_verls_own_untruncated_token_weights(dtype, tol):
    _, mu_lp, prox_lp, _ = three_policies(dtype=dtype)
    mask = torch.ones_like(mu_lp, dtype=torch.bool)
    weights = verl_weights(prox_lp, mu_lp, mask)
    assert weights.max() > 2.0  # verl's default threshold 2.0 would have truncated these
    recovered, recoverable = plugin.rollout_log_prob_from_decoupled(prox_lp, weights, mask)
    assert recoverable.all()
    torch.testing.assert_close(recovered, mu_lp, rtol=0, atol=tol)


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
def test_verls_ppo_loss_with_decoupled_inputs_equals_the_formula_on_mu(loss_agg_mode):
    """What verl's V1 trainer hands the loss in decoupled mode (old_log_probs = pi_prox, rollout_is_weights from
    rollout_corr_helper) gives the formula evaluated on the true mu: the weights are not multiplied in again."""
    lp, mu_lp, prox_lp, adv = three_policies(shape=(8, 24), dtype=torch.float32)
    mask = torch.arange(24).unsqueeze(0) < torch.randint(1, 25, (8, 1), generator=torch.Generator().manual_seed(3))
    config = actor_config("drpo_prox", loss_agg_mode, loss_scale_factor=24, use_kl_loss=False, entropy_coeff=0.0)
    flat_lp, data = ppo_loss_data(lp, prox_lp, adv, mask)
    data["rollout_is_weights"] = verl_weights(prox_lp, mu_lp, mask)
    loss, metrics = ppo_loss(config, {"log_probs": flat_lp}, data)
    x = lp.clone().requires_grad_(True)
    ref = agg_loss(loss_mat=losses.drpo_prox_token_loss(x, mu_lp, prox_lp, adv, 0.3), loss_mask=mask,
                   loss_agg_mode=loss_agg_mode, loss_scale_factor=24)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref.backward()
    # gather the response part of the flat gradient back into (bs, len) as ppo_loss_data laid it out
    grads, offset = torch.zeros_like(lp), 0
    for i, n in enumerate(mask.sum(-1).tolist()):
        grads[i, :n] = flat_lp.grad[offset + 2 : offset + 2 + n]
        offset += 2 + n + 1
    torch.testing.assert_close(grads, x.grad * mask, rtol=1e-4, atol=1e-6)
    assert "actor/drpo/weight_mean" in metrics


def test_drpo_prox_at_mu_is_drpo_through_verl():
    """With pi_prox = mu (weights exactly 1) the decoupled variant and bypass-mode DRPO give the same loss."""
    lp, mu_lp, _, adv = three_policies(shape=(8, 24), dtype=torch.float64)
    mask = torch.ones_like(lp, dtype=torch.bool)
    prox_loss, _ = call("drpo_prox", lp, mu_lp, adv, mask, actor_config("drpo_prox"),
                        rollout_is_weights=torch.ones_like(lp))
    drpo_loss, _ = call("drpo", lp, mu_lp, adv, mask, actor_config("drpo"))
    torch.testing.assert_close(prox_loss, drpo_loss, rtol=1e-12, atol=1e-12)


# ---- refusals: inputs and configurations from which mu cannot be recovered ------------------------------------------


def test_without_rollout_is_weights_it_names_the_decoupled_overrides():
    lp, mu_lp, _, adv = three_policies(shape=(4, 8))
    mask = torch.ones_like(lp, dtype=torch.bool)
    with pytest.raises(ValueError, match="decoupled mode.*bypass_mode=False.*rollout_is=token"):
        get_policy_loss_fn("drpo_prox")(old_log_prob=mu_lp, log_prob=lp, advantages=adv, response_mask=mask,
                                        loss_agg_mode="token-mean", config=actor_config("drpo_prox"),
                                        rollout_is_weights=None)


def strict(loss_mode="drpo_prox"):
    return actor_config(loss_mode, policy_loss=DRPOPolicyLossConfig(loss_mode=loss_mode, drpo_delta=0.3,
                                                                    nonfinite_tokens="raise"))


@pytest.mark.parametrize("bad", [0.0, math.exp(20.0), math.exp(-20.0), math.nan, math.inf])
def test_a_weight_mu_cannot_be_recovered_from_leaves_its_valid_token_out_and_strict_mode_refuses_it(bad, monkeypatch):
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport())
    lp, mu_lp, prox_lp, adv = three_policies(shape=(4, 8), dtype=torch.float32)
    mask = torch.ones_like(lp, dtype=torch.bool)
    mask[3, 5:] = False
    weights = verl_weights(prox_lp, mu_lp, mask)
    at_padding = weights.clone()
    at_padding[3, 6] = bad
    _, clean = call("drpo_prox", lp, prox_lp, adv, mask, actor_config("drpo_prox"), rollout_is_weights=weights)
    _, padded = call("drpo_prox", lp, prox_lp, adv, mask, actor_config("drpo_prox"), rollout_is_weights=at_padding)
    assert padded == clean and clean["actor/drpo/nonfinite_frac"] == 0.0
    call("drpo_prox", lp, prox_lp, adv, mask, strict(), rollout_is_weights=at_padding)  # fine in strict mode too
    at_valid = weights.clone()
    at_valid[1, 2] = bad
    reduced = mask.clone()
    reduced[1, 2] = False
    x, x_ref = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="left 1 of 29 valid tokens"):
        loss, metrics = call("drpo_prox", x, prox_lp, adv, mask, actor_config("drpo_prox"), rollout_is_weights=at_valid)
    ref, ref_metrics = call("drpo_prox", x_ref, prox_lp, adv, reduced, actor_config("drpo_prox"),
                            rollout_is_weights=weights)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert metrics.pop("actor/drpo/nonfinite_frac") == pytest.approx(1 / 29)
    ref_metrics.pop("actor/drpo/nonfinite_frac")
    assert metrics == pytest.approx(ref_metrics)
    with pytest.raises(ValueError, match="1 of 29 valid tokens .* mu cannot be recovered"):
        call("drpo_prox", lp, prox_lp, adv, mask, strict(), rollout_is_weights=at_valid)


def test_icepop_zeroed_weights_from_verl_are_left_out_and_refused_in_strict_mode(monkeypatch):
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport())
    lp, mu_lp, prox_lp, adv = three_policies(shape=(4, 8), dtype=torch.float32)
    mask = torch.ones_like(lp, dtype=torch.bool)
    weights = verl_weights(prox_lp, mu_lp, mask, threshold="0.5_2.0")  # IcePop: zero outside [0.5, 2]
    zeroed = int((weights == 0).sum())
    assert zeroed
    with pytest.warns(RuntimeWarning, match=f"left {zeroed} of 32 valid tokens"):
        _, metrics = call("drpo_prox", lp, prox_lp, adv, mask, actor_config("drpo_prox"), rollout_is_weights=weights)
    assert metrics["actor/drpo/nonfinite_frac"] == pytest.approx(zeroed / 32)
    with pytest.raises(ValueError, match="mu cannot be recovered"):
        call("drpo_prox", lp, prox_lp, adv, mask, strict(), rollout_is_weights=weights)


DECOUPLED_CFG = [f"{PL}.loss_mode=drpo_prox", *modes.DECOUPLED_OVERRIDES]


def test_the_tables_decoupled_overrides_pass_the_preflight_on_verls_composed_config():
    cfg = composed(*DECOUPLED_CFG)
    assert preflight.decoupled_input_problems(cfg) == []
    assert not [w for w in preflight.trainer_config_warnings(cfg) if "anchor" in w]
    assert modes.recipe_overrides("drpo_prox")[-len(modes.DECOUPLED_OVERRIDES):] == list(modes.DECOUPLED_OVERRIDES)


@pytest.mark.parametrize("override,reason", [
    ("algorithm.rollout_correction.bypass_mode=True", "bypass_mode=True"),
    ("algorithm.rollout_correction.rollout_is=sequence", "rollout_is=sequence"),
    ("algorithm.rollout_correction.rollout_is=null", "rollout_is=None"),
    ("algorithm.rollout_correction.rollout_is_threshold=2.0", "rollout_is_threshold=2.0"),
    ("algorithm.rollout_correction.rollout_is_threshold='0.5_2.0'", "rollout_is_threshold=0.5_2.0"),
    ("algorithm.rollout_correction.rollout_is_batch_normalize=True", "rollout_is_batch_normalize=True"),
    ("actor_rollout_ref.rollout.calculate_log_probs=False", "calculate_log_probs=False"),
])
def test_each_configuration_that_loses_mu_is_refused_with_the_fix(override, reason):
    cfg = composed(*DECOUPLED_CFG, override)
    problems = preflight.decoupled_input_problems(cfg)
    assert len(problems) == 1 and reason in problems[0] and "Set algorithm.rollout_correction.bypass_mode=False" \
        in problems[0]
    assert problems[0] in preflight.trainer_start_problems(cfg)  # what the dry run reports


def test_verls_default_decoupled_config_is_refused_but_other_modes_are_untouched():
    assert preflight.decoupled_input_problems(composed(f"{PL}.loss_mode=drpo_prox"))  # rollout_is=null, 2.0
    assert preflight.decoupled_input_problems(composed("algorithm.rollout_correction.rollout_is_threshold=2.0")) == []


def test_the_recovery_bounds_are_verls_own():
    """If verl changes the clamp of its IS log-ratio, the refusal of clamped weights must change with it."""
    from verl.trainer.ppo import rollout_corr_helper

    assert rollout_corr_helper.SAFETY_BOUND == modes.LOG_RATIO_CLAMP
    assert modes.UNTRUNCATED_IS_THRESHOLD > math.exp(rollout_corr_helper.SAFETY_BOUND)

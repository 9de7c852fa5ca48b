"""DRPO's mathematics against closed forms (verl_drpo.losses; no verl involved)."""

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_drpo import losses, modes

from helpers import autograd_grad, random_inputs


def closed_form_drpo(log_prob, rollout_log_prob, advantages, delta):
    """The penalty in its probability form, |A| (pi - mu)^2 / (2 delta mu) (drpo-math.md), not the code's form."""
    pi, mu = log_prob.double().exp(), rollout_log_prob.double().exp()
    a = advantages.double()
    return -a * pi / mu + a.abs() * (pi - mu) ** 2 / (2 * delta * mu)


@pytest.mark.parametrize("delta", [0.2, 1.0, 12.5])
def test_drpo_value_matches_closed_form(delta):
    lp, mu_lp, adv = random_inputs()
    got = losses.drpo_token_loss(lp, mu_lp, adv, delta)
    torch.testing.assert_close(got, closed_form_drpo(lp, mu_lp, adv, delta), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("delta", [0.2, 12.5])
def test_drpo_autograd_gradient_is_minus_w_a_r(dtype, tol, delta):
    """Eq. 9: d l / d log pi = -w A r with w = 1 - sign(A) (pi - mu) / delta."""
    lp, mu_lp, adv = random_inputs(dtype=dtype)
    grad = autograd_grad(losses.drpo_token_loss, lp, mu_lp, adv, delta)
    pi, mu = lp.double().exp(), mu_lp.double().exp()
    w = 1 - torch.sign(adv.double()) * (pi - mu) / delta
    expected = -w * adv.double() * pi / mu
    torch.testing.assert_close(grad.double(), expected, rtol=tol, atol=tol)


def test_bf16_log_probs_are_upcast_and_gradient_flows_back_in_bf16():
    lp, mu_lp, adv = random_inputs(dtype=torch.float32)
    lp_bf16 = lp.to(torch.bfloat16)
    loss = losses.drpo_token_loss(lp_bf16, mu_lp, adv, 0.2)
    assert loss.dtype == torch.float32
    grad = autograd_grad(losses.drpo_token_loss, lp_bf16, mu_lp, adv, 0.2)
    assert grad.dtype == torch.bfloat16
    # exact Eq. 9 at the bf16-rounded log-probs, compared at bf16 resolution
    pi, mu = lp_bf16.double().exp(), mu_lp.double().exp()
    expected = -(1 - torch.sign(adv.double()) * (pi - mu) / 0.2) * adv.double() * pi / mu
    torch.testing.assert_close(grad.double(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "mu,adv,delta", [(0.3, 1.0, 0.2), (0.3, 5.0, 0.2), (0.6, -1.0, 0.25), (0.6, -0.01, 0.25), (0.05, 2.0, 0.5)]
)
def test_per_token_optimum_is_the_binary_tv_boundary(mu, adv, delta):
    """argmin_pi l(pi) = mu + sign(A) delta, independent of |A| (the 'same trust-region geometry' claim)."""
    pi = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    mu_t = torch.full_like(pi, mu)
    loss = losses.drpo_token_loss(pi.log(), mu_t.log(), torch.full_like(pi, adv), delta)
    expected = min(max(mu + math.copysign(delta, adv), 0.0), 1.0)
    assert abs(pi[loss.argmin()].item() - expected) < 1e-4


@settings(max_examples=200, deadline=None)
@given(
    pi=st.floats(1e-6, 1.0),
    mu=st.floats(1e-6, 1.0),
    adv=st.floats(-10, 10).filter(lambda a: a != 0),
    delta=st.floats(0.01, 50.0),
)
def test_drpo_weight_bounded_for_every_token(pi, mu, adv, delta):
    w = losses.drpo_gradient_weight(torch.tensor(pi - mu, dtype=torch.float64), torch.tensor(adv), delta).item()
    assert 1 - 1 / delta - 1e-12 <= w <= 1 + 1 / delta + 1e-12


def test_gradient_weights_keep_the_precision_of_the_shift():
    # float32 advantages with float64 shifts: the weight is computed in float64, not in the advantages' dtype
    # (found by the property test above at pi=1e-6, mu=1, delta=34: 1 + (1 - 1e-6)/34 rounded up past 1 + 1/34)
    shift = torch.tensor([1e-6 - 1.0], dtype=torch.float64)
    w = losses.drpo_gradient_weight(shift, torch.tensor([1.0]), 34.0)
    assert w.dtype == torch.float64 and w.item() == 1 + (1 - 1e-6) / 34
    ratio = torch.tensor([1.0 + 1e-9], dtype=torch.float64)
    assert losses.spo_gradient_weight(ratio, torch.tensor([1.0]), 12.5).dtype == torch.float64


def test_spo_weight_is_unbounded_as_mu_goes_to_zero():
    adv = torch.tensor([1.0], dtype=torch.float64)
    weights = [
        losses.spo_gradient_weight(torch.tensor([0.5 / mu], dtype=torch.float64), adv, 12.5).item()
        for mu in (1e-1, 1e-3, 1e-5)
    ]
    assert weights[0] > weights[1] > weights[2] and weights[2] < -1000


def grad_at(fn, pi, mu, adv):
    lp = torch.tensor([math.log(pi)], dtype=torch.float64)
    return autograd_grad(fn, lp, torch.tensor([math.log(mu)], dtype=torch.float64), torch.tensor([adv])).item()


def test_drpo_gradient_is_continuous_across_the_boundary_where_dppo_jumps():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import ActorConfig

    mu, adv, delta, eps = 0.4, 1.0, 0.2, 1e-7
    below, above = mu + delta - eps, mu + delta + eps
    drpo = lambda lp, m, a: losses.drpo_token_loss(lp, m, a, delta)  # noqa: E731
    assert abs(grad_at(drpo, below, mu, adv) - grad_at(drpo, above, mu, adv)) < 1e-5
    # and is zero exactly at the boundary (the optimum), not a step
    assert abs(grad_at(drpo, mu + delta, mu, adv)) < 1e-9

    config = ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=delta, clip_ratio_low=delta,
        clip_ratio_high=delta, clip_ratio_c=1e4,
    )
    dppo = get_policy_loss_fn("dppo_tv")

    def dppo_grad(pi):
        lp = torch.tensor([[math.log(pi)]], dtype=torch.float64, requires_grad=True)
        loss, _ = dppo(
            old_log_prob=torch.tensor([[math.log(mu)]], dtype=torch.float64), log_prob=lp,
            advantages=torch.tensor([[adv]], dtype=torch.float64), response_mask=torch.ones(1, 1, dtype=torch.bool),
            loss_agg_mode="token-mean", config=config,
        )
        loss.backward()
        return lp.grad.item()

    assert abs(dppo_grad(below) - dppo_grad(above)) > 0.5  # DPPO's mask switches the whole gradient off


def test_drpo_reduces_to_spo_when_mu_is_one():
    lp, _, adv = random_inputs()
    ones = torch.zeros_like(lp)  # log mu = 0
    torch.testing.assert_close(
        losses.drpo_token_loss(lp, ones, adv, 0.7), losses.spo_token_loss(lp, ones, adv, 0.7), rtol=0, atol=1e-12
    )


def test_drpo_reduces_to_pg_is_as_delta_grows():
    lp, mu_lp, adv = random_inputs()
    pg_is = losses.pg_is_token_loss(lp, mu_lp, adv)
    gaps = [(losses.drpo_token_loss(lp, mu_lp, adv, d) - pg_is).abs().max().item() for d in (1e2, 1e4, 1e6)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4


def test_mask_drpo_penalises_only_outside_the_tv_region():
    lp, mu_lp, adv = random_inputs(spread=1.0)
    delta, delta_tv = 0.5, 0.1
    got = losses.mask_drpo_token_loss(lp, mu_lp, adv, delta, delta_tv)
    diff = lp.exp() - mu_lp.exp()
    outside = ((adv > 0) & (diff > delta_tv)) | ((adv < 0) & (-diff > delta_tv))
    assert 0 < outside.sum() < outside.numel()
    expected = torch.where(
        outside, losses.drpo_token_loss(lp, mu_lp, adv, delta), losses.pg_is_token_loss(lp, mu_lp, adv)
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_log_ratio_is_clamped_like_verl():
    lp = torch.tensor([[0.0, -50.0]], dtype=torch.float64)
    mu_lp = torch.tensor([[-30.0, 0.0]], dtype=torch.float64)
    ratio = losses.importance_ratio(lp, mu_lp)
    torch.testing.assert_close(ratio, torch.tensor([[math.exp(20), math.exp(-20)]], dtype=torch.float64))


# Each verl-drpo mode's per-token loss in probability form (drpo-math.md), written here from the papers and not from
# the code's ratio form: the oracle of losses.TOKEN_LOSSES, the mapping the plugin tests and gpu_check compare with.
SETTINGS = SimpleNamespace(drpo_delta=0.3, spo_epsilon=2.0, mask_drpo_tv_delta=0.1)
CLOSED_FORMS = {
    "drpo": lambda pi, mu, prox, a, s: -a * pi / mu + a.abs() * (pi - mu) ** 2 / (2 * s.drpo_delta * mu),
    "mask_drpo": lambda pi, mu, prox, a, s: -a * pi / mu + (torch.sign(a) * (pi - mu) > s.mask_drpo_tv_delta)
    * a.abs() * (pi - mu) ** 2 / (2 * s.drpo_delta * mu),
    "spo": lambda pi, mu, prox, a, s: -a * pi / mu + a.abs() * (pi / mu - 1) ** 2 / (2 * s.spo_epsilon),
    "pg_is": lambda pi, mu, prox, a, s: -a * pi / mu,
    "drpo_prox": lambda pi, mu, prox, a, s: -a * pi / mu + a.abs() * (pi - prox) ** 2 / (2 * s.drpo_delta * mu),
}


def test_every_registered_mode_has_a_readable_formula_and_a_closed_form():
    """A mode added to the table without its formula in losses.TOKEN_LOSSES, or without its oracle here, fails."""
    assert set(losses.TOKEN_LOSSES) == set(modes.OWN_MODES) == set(CLOSED_FORMS)


@pytest.mark.parametrize("mode", modes.OWN_MODES)
def test_each_modes_readable_formula_is_its_closed_form(mode):
    lp, mu_lp, adv = random_inputs(spread=1.0)
    prox_lp = (mu_lp + 0.3 * torch.randn(mu_lp.shape, generator=torch.Generator().manual_seed(7),
                                         dtype=torch.float64)).clamp(max=0.0)
    got = losses.TOKEN_LOSSES[mode](SETTINGS, lp, mu_lp, adv, prox_lp)
    expected = CLOSED_FORMS[mode](lp.exp(), mu_lp.exp(), prox_lp.exp(), adv, SETTINGS)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

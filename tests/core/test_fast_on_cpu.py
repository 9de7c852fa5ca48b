"""The fast path (verl_drpo.fast, what verl's call runs) against the reference formulas of verl_drpo.losses: values,
gradients, statistics, padding, and the compiled evaluation (graph count, fallback)."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_drpo import fast, losses, modes

from helpers import random_inputs


def fast_loss(spec, log_prob, anchor_log_prob, advantages, mask=None, compiled=False):
    """Per-token loss values with their gradient attached, as verl's call computes them."""
    mask = torch.ones_like(log_prob, dtype=torch.bool) if mask is None else mask
    if compiled:
        values, grad_coef, stats = fast.compiled_evaluate(spec, log_prob, anchor_log_prob, advantages, mask)
    else:
        values, grad_coef, stats = fast.evaluate(spec, log_prob, anchor_log_prob, advantages, mask, "always")
    return fast.attach_gradient(log_prob, values, grad_coef), stats


REFERENCE = {
    "drpo": (lambda d: losses.drpo(d), lambda lp, m, a, d: losses.drpo_token_loss(lp, m, a, d)),
    "spo": (lambda d: losses.spo(d, 0.15), lambda lp, m, a, d: losses.spo_token_loss(lp, m, a, d)),
    "pg_is": (lambda d: losses.pg_is(0.15), lambda lp, m, a, d: losses.pg_is_token_loss(lp, m, a)),
    "mask_drpo": (
        lambda d: losses.mask_drpo(d, 0.1),
        lambda lp, m, a, d: losses.mask_drpo_token_loss(lp, m, a, d, 0.1),
    ),
}


def test_every_mode_anchored_on_mu_alone_has_a_reference_here():
    """drpo_prox (decoupled inputs, a second anchor) has its fast-path tests in test_drpo_prox_on_cpu.py."""
    assert set(REFERENCE) == {m for m in modes.OWN_MODES if not modes.uses_decoupled_inputs(m)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fast_path_matches_reference_value_and_gradient(name, dtype, tol):
    spec_of, reference = REFERENCE[name]
    lp, mu_lp, adv = random_inputs(dtype=dtype, spread=1.0)
    lp[0, 0], mu_lp[0, 0] = 0.0, -25.0  # a clamped log-ratio: value at the clamp, zero gradient
    lp[1, 1], mu_lp[1, 1] = -30.0, -1.0
    spec = spec_of(0.3)
    x_fast, x_ref = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    got, _ = fast_loss(spec, x_fast, mu_lp, adv)
    ref = reference(x_ref, mu_lp, adv, 0.3)
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    upstream = torch.rand_like(ref)  # a non-uniform upstream gradient, as agg_loss gives
    (got * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=tol, atol=tol)
    assert x_fast.grad[0, 0] == 0 and x_fast.grad[1, 1] == 0


def test_fast_path_penalty_and_weight_match_their_formulas():
    lp, mu_lp, adv = random_inputs(spread=1.0)
    spec = losses.drpo(0.3)
    terms = fast.token_terms(lp, mu_lp, adv, torch.ones_like(lp, dtype=torch.bool))
    pi, mu = lp.exp(), mu_lp.exp()
    torch.testing.assert_close(spec.gradient_weight(terms), 1 - torch.sign(adv) * (pi - mu) / 0.3)
    torch.testing.assert_close(spec.penalty(terms), adv.abs() * (pi - mu) ** 2 / (2 * 0.3 * mu))


def test_statistics_match_direct_computation_on_valid_tokens():
    lp, mu_lp, adv = random_inputs(shape=(8, 50), spread=1.0, dtype=torch.float32)
    mask = torch.arange(50).unsqueeze(0) < torch.tensor([[50], [10], [1], [30], [49], [25], [7], [40]])
    lp = torch.where(mask, lp, torch.tensor(5.0))  # garbage at padded positions must not matter
    delta = 0.15
    spec = losses.drpo(delta)
    _, stats = fast_loss(spec, lp, mu_lp, adv, mask)
    stats = {k: v.item() for k, v in stats.items()}
    assert list(stats) == list(fast.STATISTIC_NAMES)

    v_lp, v_mu_lp, v_adv = lp[mask].double(), mu_lp[mask].double(), adv[mask].double()
    pi, mu = v_lp.exp(), v_mu_lp.exp()
    r = pi / mu
    w = 1 - torch.sign(v_adv) * (pi - mu) / delta
    expected = {
        "abs_prob_diff_mean": (pi - mu).abs().mean(),
        "abs_prob_diff_max": (pi - mu).abs().max(),
        "weight_min": w.min(),
        "weight_mean": w.mean(),
        "weight_max": w.max(),
        "negative_weight_frac": (w < 0).double().mean(),
        "beyond_boundary_pos_frac": ((v_adv > 0) & (pi - mu > delta)).double().mean(),
        "beyond_boundary_neg_frac": ((v_adv < 0) & (mu - pi > delta)).double().mean(),
        "penalty_mean": (v_adv.abs() * (pi - mu) ** 2 / (2 * delta * mu)).mean(),
        "ratio_mean": r.mean(),
        "ratio_max": r.max(),
        "k3_kl": (r - 1 - r.log()).mean(),
        "abs_log_ratio_mean": (v_lp - v_mu_lp).abs().mean(),
    }
    assert expected["negative_weight_frac"] > 0 and expected["beyond_boundary_pos_frac"] > 0
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value.item(), rel=1e-4, abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(REFERENCE)),
    rows=st.lists(
        st.tuples(st.floats(-12.0, 0.0), st.floats(-12.0, 0.0), st.floats(-5.0, 5.0)), min_size=1, max_size=12
    ),
    delta=st.floats(0.05, 20.0),
)
def test_fast_path_matches_reference_on_arbitrary_tokens(name, rows, delta):
    lp, mu_lp, adv = (torch.tensor([[r[i] for r in rows]], dtype=torch.float64) for i in range(3))
    spec_of, reference = REFERENCE[name]
    x_fast, x_ref = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    got, _ = fast_loss(spec_of(delta), x_fast, mu_lp, adv)
    ref = reference(x_ref, mu_lp, adv, delta)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-9, atol=1e-9)


def test_non_finite_values_at_padded_positions_never_reach_values_gradient_or_statistics():
    lp, mu_lp, adv = random_inputs(shape=(4, 10), spread=1.0)
    mask = torch.arange(10).unsqueeze(0) < torch.tensor([[10], [3], [7], [1]])
    nan = torch.tensor(float("nan"), dtype=lp.dtype)
    values, grad_coef, stats = fast.evaluate(losses.drpo(0.3), torch.where(mask, lp, nan),
                                             torch.where(mask, mu_lp, -torch.inf), torch.where(mask, adv, nan), mask)
    clean_values, clean_grad, clean_stats = fast.evaluate(losses.drpo(0.3), lp, mu_lp, adv, mask)
    assert (values[~mask] == 0).all() and (grad_coef[~mask] == 0).all()
    torch.testing.assert_close(values, clean_values)
    torch.testing.assert_close(grad_coef, clean_grad)
    assert {k: v.item() for k, v in stats.items()} == pytest.approx({k: v.item() for k, v in clean_stats.items()})


# ---- compiled evaluation (verl's actor.use_torch_compile=True, its default) -----------------------------------------

# micro-batch shapes as verl produces them: varying batch and longest response, batch 1 and length 1 included
SHAPES = [(8, 24), (6, 31), (1, 17), (5, 1), (64, 300), (1, 1), (3, 2), (2, 257)]


def test_compiled_evaluation_matches_eager_with_a_bounded_number_of_graphs():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = fast.CompiledEvaluate()
    spec = losses.drpo(0.3)
    graphs_per_pass = []
    for _ in range(2):  # a second pass over the same shapes builds nothing new
        for dtype in (torch.float32, torch.bfloat16):
            for seed, shape in enumerate(SHAPES):
                lp, mu_lp, adv = random_inputs(shape=shape, dtype=torch.float32, seed=seed, spread=1.0)
                lp = lp.to(dtype)
                mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.8
                mask[0, 0] = True
                got = compiled(spec, lp, mu_lp, adv, mask)
                want = fast.evaluate(spec, lp, mu_lp, adv, mask, "always")
                torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(got[1], want[1], rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                                           atol=1e-5)
                for key in want[2]:
                    torch.testing.assert_close(got[2][key], want[2][key], rtol=1e-4, atol=1e-6)
        graphs_per_pass.append(counters["stats"]["unique_graphs"])
    # per log-prob dtype at most two graphs whatever the shape (inductor's CPU code generation guards on the token
    # count at 4096); sizes 0 and 1 run eagerly
    assert 2 <= graphs_per_pass[0] <= 4 and graphs_per_pass[1] == graphs_per_pass[0], graphs_per_pass
    assert compiled.failed is None


def test_compilation_failure_falls_back_to_eager_with_one_warning():
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("forced compiler failure")

    torch._dynamo.reset()
    compiled = fast.CompiledEvaluate(backend=failing_backend)
    spec = losses.drpo(0.3)
    lp, mu_lp, adv = random_inputs(shape=(4, 12), dtype=torch.float32)
    mask = torch.ones_like(lp, dtype=torch.bool)
    want = fast.evaluate(spec, lp, mu_lp, adv, mask, "always")
    with pytest.warns(RuntimeWarning, match="torch.compile of the policy-loss evaluation failed") as record:
        got = compiled(spec, lp, mu_lp, adv, mask)
    assert len(record) == 1 and "forced compiler failure" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, eager from then on
        again = compiled(spec, lp, mu_lp, adv, mask)
    for result in (got, again):
        torch.testing.assert_close(result[0], want[0])
        torch.testing.assert_close(result[1], want[1])

"""The registered verl losses (verl_drpo.plugin) through verl's own registry, agg_loss and ppo_loss."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import verl  # noqa: F401  (registers the plugin through its entry point)
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.config import PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from verl_drpo import LOSS_MODES, losses, modes, plugin
from verl_drpo.config import DRPOPolicyLossConfig

from helpers import DECOUPLED, actor_config, batch, call, decoupled_weights, ppo_loss_data

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
# What actor_config sets (drpo_delta 0.3) and the table's defaults of the rest, written out here: the values the
# registered losses must read from the config (so not plugin.hyperparameters, which is under test).
SETTINGS = SimpleNamespace(drpo_delta=0.3, spo_epsilon=12.5, mask_drpo_tv_delta=0.15)


def reference(loss_mode, lp, old, adv):
    """The mode's readable token loss (losses.TOKEN_LOSSES, each checked against a closed form written in
    test_losses_on_cpu.py) on the inputs `call` passes: for a decoupled mode `old` is log pi_prox and
    mu = pi_prox / decoupled_weights."""
    if loss_mode in DECOUPLED:
        return losses.TOKEN_LOSSES[loss_mode](SETTINGS, lp, old - decoupled_weights(old).log(), adv, old)
    return losses.TOKEN_LOSSES[loss_mode](SETTINGS, lp, old, adv)


def test_all_modes_registered_next_to_verls_own():
    for mode in (*modes.MODES, *modes.ALIASES):  # verl-drpo's and verl's own modes of the table
        assert mode in POLICY_LOSS_REGISTRY
    assert POLICY_LOSS_REGISTRY["drpo"] is plugin.compute_policy_loss_drpo


@pytest.mark.parametrize("loss_mode", LOSS_MODES)
@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
def test_loss_equals_verl_agg_of_the_reference_formula(loss_mode, loss_agg_mode):
    lp, old, adv, mask = batch()
    config = actor_config(loss_mode, loss_agg_mode)
    x = lp.clone().requires_grad_(True)
    loss, metrics = call(loss_mode, x, old, adv, mask, config)
    x_ref = lp.clone().requires_grad_(True)
    ref = agg_loss(loss_mat=reference(loss_mode, x_ref, old, adv), loss_mask=mask, loss_agg_mode=loss_agg_mode)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)
    assert all(isinstance(v, float) for v in metrics.values())
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", "actor/drpo/weight_mean"} <= set(metrics)


def split_like_verl(lp, old, adv, mask, loss_mode, loss_agg_mode, dp_size, micro_batches):
    """Sum of per-micro-batch losses over dp_size ranks, with verl's global_batch_info; gradients averaged over
    ranks as FSDP does. Returns (loss, grad) to compare with the whole mini-batch on one rank."""
    x = lp.clone().requires_grad_(True)
    info = {
        "dp_size": dp_size, "batch_num_tokens": int(mask.sum()),
        "global_batch_size": int((mask.sum(-1) > 0).sum()), "loss_scale_factor": None,
    }
    config = actor_config(loss_mode, loss_agg_mode)
    config.global_batch_info.update(info)
    total = 0.0
    for rank_rows in torch.arange(lp.shape[0]).chunk(dp_size):
        for rows in rank_rows.chunk(micro_batches):
            loss, _ = call(loss_mode, x[rows], old[rows], adv[rows], mask[rows], config)
            total = total + loss / dp_size  # FSDP all-reduce averages the ranks' gradients
    total.backward()
    return total, x.grad


@pytest.mark.parametrize("loss_mode", ["drpo", "mask_drpo"])
@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
@pytest.mark.parametrize("dp_size,micro_batches", [(1, 4), (2, 2), (4, 1)])
def test_micro_batch_and_data_parallel_invariance(loss_mode, loss_agg_mode, dp_size, micro_batches):
    lp, old, adv, mask = batch(bs=8)
    x = lp.clone().requires_grad_(True)
    config = actor_config(loss_mode, loss_agg_mode)
    whole, _ = call(loss_mode, x, old, adv, mask, config)
    whole.backward()
    split, split_grad = split_like_verl(lp, old, adv, mask, loss_mode, loss_agg_mode, dp_size, micro_batches)
    torch.testing.assert_close(split, whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(split_grad, x.grad, rtol=1e-9, atol=1e-12)


def test_rollout_is_weights_multiply_the_token_loss_and_warn_about_the_anchor(monkeypatch):
    plugin._warn_decoupled_anchor.cache_clear()
    lp, old, adv, mask = batch()
    weights = torch.rand_like(lp) * 2
    config = actor_config("drpo", "seq-mean-token-mean")
    with pytest.warns(UserWarning, match="bypass_mode=True"):
        loss, _ = call("drpo", lp, old, adv, mask, config, rollout_is_weights=weights)
    ref = agg_loss(
        loss_mat=reference("drpo", lp, old, adv) * weights, loss_mask=mask, loss_agg_mode="seq-mean-token-mean"
    )
    torch.testing.assert_close(loss, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per micro-batch
        call("drpo", lp, old, adv, mask, config, rollout_is_weights=weights)


def test_plain_policy_loss_config_uses_the_package_defaults():
    lp, old, adv, mask = batch()
    plain = actor_config(policy_loss=PolicyLossConfig(loss_mode="drpo"))
    hooked = actor_config(policy_loss=DRPOPolicyLossConfig(loss_mode="drpo"))
    a, metrics = call("drpo", lp, old, adv, mask, plain)
    b, _ = call("drpo", lp, old, adv, mask, hooked)
    torch.testing.assert_close(a, b)
    ref = agg_loss(loss_mat=losses.drpo_token_loss(lp, old, adv, 12.5), loss_mask=mask, loss_agg_mode="token-mean")
    torch.testing.assert_close(a, ref)
    assert 1 - 1 / 12.5 <= metrics["actor/drpo/weight_microbatch_min_mean"] <= metrics["actor/drpo/weight_microbatch_max_mean"] <= 1 + 1 / 12.5


def test_boundary_metrics_follow_verl_clipfrac_conventions():
    lp, old, adv, mask = batch(seed=3)
    _, metrics = call("drpo", lp, old, adv, mask, actor_config("drpo"))
    pos, neg = metrics["actor/drpo/beyond_boundary_pos_frac"], metrics["actor/drpo/beyond_boundary_neg_frac"]
    assert pos > 0 and neg > 0
    assert metrics["actor/pg_clipfrac"] == pytest.approx(pos + neg)
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(neg)
    # for DRPO the corrective regime (w < 0) is exactly the region beyond its boundary
    assert metrics["actor/drpo/negative_weight_frac"] == pytest.approx(pos + neg)
    # never an entropy or KL term: the loss is the pure policy loss
    assert not any("entropy" in k or "kl_loss" in k for k in metrics)


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
def test_full_call_through_verls_ppo_loss(loss_agg_mode):
    lp, old, adv, mask = batch(dtype=torch.float32)
    flat_lp, data = ppo_loss_data(lp, old, adv, mask)
    config = actor_config("drpo", loss_agg_mode, use_kl_loss=False, entropy_coeff=0.0)
    loss, metrics = ppo_loss(config, {"log_probs": flat_lp}, data)
    loss.backward()
    x = lp.clone().requires_grad_(True)
    ref = agg_loss(loss_mat=reference("drpo", x, old, adv), loss_mask=mask, loss_agg_mode=loss_agg_mode,
                   dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=lp.shape[0])
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert "actor/drpo/abs_prob_diff_mean" in metrics and "actor/pg_loss" in metrics
    # the gradient reached the flat model output at the response positions, and only there
    assert flat_lp.grad.abs().sum() > 0
    torch.testing.assert_close(flat_lp.grad.abs().sum(), x.grad.abs().sum(), rtol=1e-5, atol=1e-6)


def test_compiled_evaluation_matches_eager_and_is_reused_across_shapes():
    """With verl's actor.use_torch_compile=True the loss is compiled (fused kernels); same numbers as eager."""
    for seed, (bs, length) in enumerate([(8, 24), (6, 31), (5, 17)]):  # verl's micro-batches change shape
        lp, old, adv, mask = batch(bs=bs, length=length, seed=seed, dtype=torch.float32)
        results = []
        for compiled in (False, True):
            x = lp.clone().requires_grad_(True)
            loss, metrics = call("drpo", x, old, adv, mask, actor_config("drpo", use_torch_compile=compiled))
            loss.backward()
            results.append((loss, x.grad, metrics))
        (eager_loss, eager_grad, eager_metrics), (comp_loss, comp_grad, comp_metrics) = results
        torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(comp_grad, eager_grad, rtol=1e-5, atol=1e-6)
        assert comp_metrics.keys() == eager_metrics.keys()
        for key in eager_metrics:
            assert comp_metrics[key] == pytest.approx(eager_metrics[key], rel=1e-4, abs=1e-6), key
        assert eager_metrics["actor/drpo/negative_weight_frac"] > 0  # boundary counts exercised on both paths


# ---- bad input --------------------------------------------------------------------------------------------------


# ---- non-finite inputs at valid tokens: left out of the loss and counted (strict mode: a rank-local error) ---------


def strict_config(loss_mode="drpo", loss_agg_mode="token-mean"):
    return actor_config(loss_mode, loss_agg_mode, policy_loss=DRPOPolicyLossConfig(
        loss_mode=loss_mode, drpo_delta=0.3, nonfinite_tokens="raise"))


BAD_AT = ((0, 0), (3, 0))  # two valid tokens of batch() (every sequence has at least one)


@pytest.mark.parametrize("name", ["log_prob", "old_log_prob", "advantages", "rollout_is_weights"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("loss_mode", LOSS_MODES)
@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_a_non_finite_input_leaves_its_token_out_exactly_as_the_mask_would(name, bad, loss_mode, loss_agg_mode,
                                                                           monkeypatch):
    """Value, gradient and every statistic equal those of the same call with the bad tokens removed from the mask;
    the gradient is finite everywhere and zero at the bad tokens; nonfinite_frac is their share of valid tokens."""
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport())
    lp, old, adv, mask = batch()
    tensors = {"log_prob": lp, "old_log_prob": old, "advantages": adv,
               "rollout_is_weights": decoupled_weights(old) if loss_mode in DECOUPLED else torch.rand_like(lp) + 0.5}
    clean = {k: v.clone() for k, v in tensors.items()}
    for at in BAD_AT:
        assert mask[at]
        tensors[name][at] = bad
    reduced = mask.clone()
    for at in BAD_AT:
        reduced[at] = False
    config = actor_config(loss_mode, loss_agg_mode)

    def run(t, m):
        x = t["log_prob"].clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decoupled-anchor and non-finite warnings
            loss, metrics = call(loss_mode, x, t["old_log_prob"], t["advantages"], m, config, t["rollout_is_weights"])
        loss.backward()
        return loss, x.grad, metrics

    loss, grad, metrics = run(tensors, mask)
    ref_loss, ref_grad, ref_metrics = run(clean, reduced)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(grad).all() and all(grad[at] == 0 for at in BAD_AT)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert metrics.pop("actor/drpo/nonfinite_frac") == pytest.approx(2 / int(mask.sum()))
    assert ref_metrics.pop("actor/drpo/nonfinite_frac") == 0.0
    assert metrics == pytest.approx(ref_metrics)


def test_when_every_valid_token_is_non_finite_the_loss_is_zero_with_a_finite_gradient(monkeypatch):
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport())
    lp, old, adv, mask = batch(bs=2, length=4)
    old = torch.full_like(old, float("-inf"))
    x = lp.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="not finite"):
        loss, metrics = call("drpo", x, old, adv, mask, actor_config())
    assert loss.item() == 0.0 and metrics["actor/drpo/nonfinite_frac"] == 1.0
    assert metrics["actor/drpo/weight_mean"] == 0.0
    loss.backward()
    assert (x.grad == 0).all()


def test_a_term_that_overflows_from_finite_inputs_leaves_its_token_out(monkeypatch):
    """float32: an advantage of 3e38 times a ratio of e^20 is inf although every input is finite."""
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport())
    lp, old, adv, mask = batch(dtype=torch.float32)
    adv[0, 0], lp[0, 0], old[0, 0] = 3e38, 0.0, -25.0
    reduced = mask.clone()
    reduced[0, 0] = False
    config = actor_config()
    with pytest.warns(RuntimeWarning, match="left 1 of"):
        loss, metrics = call("drpo", lp, old, adv, mask, config)
    ref, ref_metrics = call("drpo", lp, old, adv, reduced, config)
    torch.testing.assert_close(loss, ref)
    assert metrics["actor/drpo/nonfinite_frac"] == pytest.approx(1 / int(mask.sum()))
    assert metrics["actor/drpo/ratio_mean"] == pytest.approx(ref_metrics["actor/drpo/ratio_mean"])


def test_the_non_finite_warning_comes_at_most_once_an_interval_with_the_counts_since_the_last(monkeypatch):
    lp, old, adv, mask = batch()
    old[0, 0] = float("-inf")
    n = int(mask.sum())
    monkeypatch.setattr(plugin, "_nonfinite_report", plugin._NonFiniteReport(interval_s=3600.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):  # five micro-batches of one step
            call("drpo", lp, old, adv, mask, actor_config())
    assert [str(w.message).split(" in ")[0] for w in caught] == [f"loss_mode=drpo: left 1 of {n} valid tokens out of "
                                                                  "the loss"]
    plugin._nonfinite_report.interval_s = 0.0
    with pytest.warns(RuntimeWarning, match=f"left 5 of {5 * n} valid tokens .* in 5 micro-batch"):
        call("drpo", lp, old, adv, mask, actor_config())  # the four held back, and this one


@pytest.mark.parametrize("name", ["log_prob", "old_log_prob", "advantages"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_strict_mode_raises_a_clear_error_naming_the_input(name, bad):
    lp, old, adv, mask = batch()
    tensors = {"log_prob": lp, "old_log_prob": old, "advantages": adv}
    tensors[name][0, 0] = bad
    with pytest.raises(FloatingPointError, match=f"{name}: 1 non-finite at valid tokens"):
        call("drpo", tensors["log_prob"], tensors["old_log_prob"], tensors["advantages"], mask, strict_config())


def test_strict_mode_is_a_validated_choice_of_the_config():
    with pytest.raises(ValueError, match="nonfinite_tokens must be one of 'mask', 'raise', got 'skip'"):
        DRPOPolicyLossConfig(loss_mode="drpo", nonfinite_tokens="skip")
    assert DRPOPolicyLossConfig(loss_mode="drpo").nonfinite_tokens == "mask"
    lp, old, adv, mask = batch()
    _, metrics = call("drpo", lp, old, adv, mask, strict_config())
    assert metrics["actor/drpo/nonfinite_frac"] == 0.0


@pytest.mark.parametrize("loss_agg_mode", AGG_MODES)
def test_non_finite_values_at_padded_positions_are_ignored(loss_agg_mode):
    lp, old, adv, mask = batch()
    config = actor_config("drpo", loss_agg_mode)
    clean, clean_metrics = call("drpo", lp, old, adv, mask, config)
    padded = ~mask
    assert padded.any()
    dirty_lp = torch.where(padded, torch.tensor(float("nan"), dtype=lp.dtype), lp)
    dirty_old = torch.where(padded, torch.tensor(float("-inf"), dtype=lp.dtype), old)
    x = dirty_lp.clone().requires_grad_(True)
    loss, metrics = call("drpo", x, dirty_old, adv, mask, config)
    torch.testing.assert_close(loss, clean)
    loss.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[padded] == 0).all()
    assert metrics == pytest.approx(clean_metrics)


def test_empty_mask_gives_a_zero_loss_with_a_graph():
    lp, old, adv, mask = batch()
    x = lp.clone().requires_grad_(True)
    loss, metrics = call("drpo", x, old, adv, torch.zeros_like(mask), actor_config())
    assert loss.item() == 0.0
    loss.backward()
    assert (x.grad == 0).all()
    assert metrics["actor/pg_clipfrac"] == 0.0


def test_mismatched_shapes_are_a_clear_error():
    lp, old, adv, mask = batch()
    with pytest.raises(ValueError, match=r"advantages has shape \(8, 1\) but response_mask has \(8, 24\)"):
        call("drpo", lp, old, adv[:, :1], mask, actor_config())


def test_integer_log_probs_are_a_clear_error():
    lp, old, adv, mask = batch()
    with pytest.raises(TypeError, match="old_log_prob must be a floating-point tensor"):
        call("drpo", lp, old.long(), adv, mask, actor_config())


def test_missing_config_is_a_clear_error():
    lp, old, adv, mask = batch()
    with pytest.raises(ValueError, match="needs the actor config"):
        get_policy_loss_fn("drpo")(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask)


def test_unknown_loss_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="Unsupported loss mode: drop"):
        get_policy_loss_fn("drop")
    with pytest.raises(ValueError, match="did you mean 'drpo'"):
        plugin.require_registered("DRPO")
    with pytest.raises(ValueError, match="python -m verl_drpo doctor"):
        plugin.require_registered("drpo_typo")


# ---- empty micro-batches (verl pads a batch that does not divide with all-masked samples) -------------------------


@pytest.mark.parametrize("loss_mode", LOSS_MODES)
@pytest.mark.parametrize("compiled", [False, True])
def test_every_return_path_gives_the_same_metric_keys(loss_mode, compiled):
    lp, old, adv, mask = batch(dtype=torch.float32)
    config = actor_config(loss_mode, use_torch_compile=compiled)
    _, full = call(loss_mode, lp, old, adv, mask, config)
    _, empty = call(loss_mode, lp, old, adv, torch.zeros_like(mask), config)
    _, zero_batch = call(loss_mode, lp[:0], old[:0], adv[:0], mask[:0], config)
    _, zero_length = call(loss_mode, lp[:, :0], old[:, :0], adv[:, :0], mask[:, :0], config)
    assert list(empty) == list(full) == list(zero_batch) == list(zero_length)
    assert empty.pop("actor/drpo/empty_microbatch_frac") == 1.0 and full["actor/drpo/empty_microbatch_frac"] == 0.0
    assert set(empty.values()) == {0.0}


@pytest.mark.parametrize("shape", [(0, 24), (8, 0), (0, 0)])
def test_zero_size_tensors_are_handled_like_an_empty_mask(shape):
    x = torch.zeros(shape, dtype=torch.float32, requires_grad=True)
    loss, metrics = call("drpo", x, torch.zeros(shape), torch.zeros(shape), torch.zeros(shape, dtype=torch.bool),
                         actor_config())
    assert loss.item() == 0.0 and metrics["actor/drpo/weight_mean"] == 0.0
    loss.backward()
    assert x.grad.shape == shape


def test_metrics_of_two_ranks_one_with_an_empty_micro_batch_aggregate_in_verl():
    """verl appends each micro-batch's metrics per rank (append_to_dict), gathers them across data-parallel ranks
    and aggregates each key with Metric.aggregate_dp, which requires every rank to have the same number of values."""
    from verl.utils.metric.utils import Metric
    from verl.utils.py_functional import append_to_dict

    lp, old, adv, mask = batch(bs=8, dtype=torch.float32)
    config = actor_config("drpo", use_kl_loss=False, entropy_coeff=0.0)
    empty = torch.zeros_like(mask)
    micro_batches = {0: [(slice(0, 2), mask), (slice(2, 4), mask)], 1: [(slice(4, 6), mask), (slice(6, 8), empty)]}
    per_rank = {}
    for rank, parts in micro_batches.items():
        per_rank[rank] = {}
        for rows, m in parts:
            flat_lp, data = ppo_loss_data(lp[rows], old[rows], adv[rows], m[rows])
            tu.assign_non_tensor(data, dp_size=2, batch_num_tokens=int(mask[:6].sum()), global_batch_size=6)
            _, metrics = ppo_loss(config, {"log_probs": flat_lp}, data)
            append_to_dict(per_rank[rank], metrics)
    assert per_rank[0].keys() == per_rank[1].keys()
    aggregated = {k: Metric.aggregate_dp([per_rank[0][k], per_rank[1][k]]) for k in per_rank[0]}
    assert "actor/drpo/weight_mean" in aggregated and all(map(math.isfinite, aggregated.values()))


# ---- seq-mean-token-sum-norm: the horizon (verl pads each micro-batch only to its own longest response) -------------


def contribution_of_the_first_sequence(sibling_length, loss_scale_factor):
    """Gradient on sequence 0 (10 tokens) through verl's ppo_loss, in a micro-batch padded, as verl pads it, to the
    longest response it holds: that of its one sibling."""
    lp, old, adv, _ = batch(bs=2, length=64, dtype=torch.float32, seed=5)
    lengths = torch.tensor([[10], [sibling_length]])
    width = int(lengths.max())  # the micro-batch's own padded width
    lp, old, adv = lp[:, :width], old[:, :width], adv[:, :width]
    mask = torch.arange(width).unsqueeze(0) < lengths
    flat_lp, data = ppo_loss_data(lp, old, adv, mask)
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=4)
    config = actor_config("drpo", "seq-mean-token-sum-norm", use_kl_loss=False, entropy_coeff=0.0,
                          loss_scale_factor=loss_scale_factor)
    loss, _ = ppo_loss(config, {"log_probs": flat_lp}, data)
    loss.backward()
    return flat_lp.grad[2:12]  # the 10 response positions of sequence 0 (after prompt_len - 1 = 2 positions)


def test_a_sequences_contribution_does_not_depend_on_its_siblings_with_loss_scale_factor_set():
    beside_short = contribution_of_the_first_sequence(12, loss_scale_factor=64)
    beside_long = contribution_of_the_first_sequence(60, loss_scale_factor=64)
    torch.testing.assert_close(beside_short, beside_long)
    # the defect the factor removes: without it verl divides by the micro-batch's longest response (12 vs 60)
    unset_short = contribution_of_the_first_sequence(12, loss_scale_factor=None)
    unset_long = contribution_of_the_first_sequence(60, loss_scale_factor=None)
    torch.testing.assert_close(unset_short, unset_long * 60 / 12)


def test_a_config_without_policy_loss_warns_once_naming_the_defaults():
    """verl's distillation path calls the registered loss with its DistillationLossConfig, which has no
    policy_loss section: the defaults apply, and the loss says so once."""
    from verl.workers.config.distillation import DistillationLossConfig

    plugin._warn_defaults_used.cache_clear()
    lp, old, adv, mask = batch()
    config = DistillationLossConfig()
    fn = get_policy_loss_fn("drpo")
    kwargs = dict(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
                  config=config)
    with pytest.warns(UserWarning, match=r"no policy_loss section .* defaults drpo_delta=12\.5"):
        loss, _ = fn(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per micro-batch
        fn(**kwargs)
    ref = agg_loss(loss_mat=losses.drpo_token_loss(lp, old, adv, 12.5), loss_mask=mask, loss_agg_mode="token-mean")
    torch.testing.assert_close(loss, ref)

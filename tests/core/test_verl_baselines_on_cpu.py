"""The baselines verl ships (cispo, gspo, sapo, dro) as rows of the table of loss modes: verl's own loss, reached
through verl's engine-path ``ppo_loss``, runs with the table's settings (each checked against the mode's closed form
written here from its paper), gives finite values and gradients, and reports verl's metric keys, none of DRPO's."""

import math

import pytest
import torch
import verl  # noqa: F401  (registers the plugin through its entry point)
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn
from verl.workers.utils.losses import ppo_loss

from verl_drpo import modes, plugin
from verl_drpo.config import DRPOPolicyLossConfig, actor_config

from helpers import batch, ppo_loss_data

# verl's own losses in the table beyond its PPO clip family (vanilla, dppo_tv, dppo_kl: their settings are checked in
# tests/recipes, their runs in the CPU smoke); each needs its oracles below: metric keys, paper settings, closed form.
VERL_CLIP_FAMILY = ("vanilla", "dppo_tv", "dppo_kl")
BASELINES = tuple(n for n, m in modes.MODES.items() if m.registered_by == "verl" and n not in VERL_CLIP_FAMILY)
# what each verl loss reports (verl 0.9.1 core_algos), plus ppo_loss's own actor/pg_loss
METRIC_KEYS = {
    "cispo": {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", "actor/pg_loss"},
    "gspo": {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", "actor/pg_loss"},
    "sapo": {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", "actor/pg_loss"},
    "dro": {"actor/ppo_kl", "actor/pg_loss"},
}
PAPER_SETTINGS = {
    "cispo": {"clip_ratio_low": 10.0, "clip_ratio_high": 0.2},
    "gspo": {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4},
    "sapo": {"tau_pos": 1.0, "tau_neg": 1.05},
    "dro": {"dro_beta": 0.05},
}


def closed_form(mode, lp, old, adv, mask, s):
    """(token loss matrix, aggregation) of each baseline's objective with settings ``s``, from its paper."""
    log_ratio = lp - old
    if mode == "dro":  # a quadratic in log-ratio space around the anchor, on the log-likelihood surrogate
        return -(lp * adv - 0.5 * s["dro_beta"] * log_ratio**2), None
    if mode == "cispo":  # a truncated, stop-gradient IS weight on REINFORCE: every token keeps its gradient
        weight = log_ratio.clamp(-20, 20).exp().clamp(1 - s["clip_ratio_low"], 1 + s["clip_ratio_high"])
        return -weight.detach() * adv * lp, None
    if mode == "sapo":  # a sigmoid gate in place of the clip; verl aggregates sapo seq-mean-token-mean always
        tau = torch.where(adv > 0, torch.full_like(adv, s["tau_pos"]), torch.full_like(adv, s["tau_neg"]))
        ratio = log_ratio.clamp(-20, 20).exp()
        return -(4.0 / tau) * torch.sigmoid(tau * (ratio - 1.0)) * adv, "seq-mean-token-mean"
    if mode == "gspo":  # PPO's clip on the length-normalised sequence ratio, its gradient through each token
        m = mask.to(lp.dtype)
        seq = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1)).detach().unsqueeze(-1)
        ratio = (lp - lp.detach() + seq).clamp(max=10.0).exp()
        clipped = ratio.clamp(1 - s["clip_ratio_low"], 1 + s["clip_ratio_high"])
        return torch.maximum(-adv * ratio, -adv * clipped), None
    raise AssertionError(mode)


def test_every_baseline_of_the_table_has_its_oracles_here():
    assert set(BASELINES) == set(METRIC_KEYS) == set(PAPER_SETTINGS) == {"cispo", "gspo", "sapo", "dro"}
    assert set(VERL_CLIP_FAMILY) <= set(modes.MODES)


def test_the_baselines_are_verls_own_registered_losses():
    for name in BASELINES:
        mode = modes.get(name)
        assert mode.registered_by == "verl" and name in POLICY_LOSS_REGISTRY and name not in plugin.REGISTERED
        assert {s.field: s.default for s in mode.settings} == PAPER_SETTINGS[name]


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("loss_mode", BASELINES)
def test_verls_loss_runs_with_the_tables_settings_through_ppo_loss(loss_mode, loss_agg_mode):
    lp, old, adv, mask = batch(dtype=torch.float64)
    config = actor_config(loss_mode, loss_agg_mode=loss_agg_mode, loss_scale_factor=lp.shape[1], rollout_n=4,
                          ppo_micro_batch_size_per_gpu=2, use_torch_compile=False, use_kl_loss=False,
                          entropy_coeff=0.0)
    assert isinstance(config.policy_loss, DRPOPolicyLossConfig) and config.policy_loss.loss_mode == loss_mode
    flat_lp, data = ppo_loss_data(lp, old, adv, mask)
    loss, metrics = ppo_loss(config, {"log_probs": flat_lp}, data)
    loss.backward()
    values = {k: m.aggregate() for k, m in metrics.items()}
    assert set(values) == METRIC_KEYS[loss_mode]  # verl's keys; no actor/drpo/* for verl's own losses
    assert math.isfinite(loss.item()) and all(math.isfinite(float(v)) for v in values.values())
    assert torch.isfinite(flat_lp.grad).all() and flat_lp.grad.abs().sum() > 0

    x = lp.clone().requires_grad_(True)
    token_loss, forced_agg = closed_form(loss_mode, x, old, adv, mask, PAPER_SETTINGS[loss_mode])
    ref = agg_loss(loss_mat=token_loss, loss_mask=mask, loss_agg_mode=forced_agg or loss_agg_mode,
                   **config.global_batch_info)
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
    ref.backward()
    torch.testing.assert_close(padded_grad(flat_lp.grad, mask), x.grad * mask, rtol=1e-9, atol=1e-12)


def padded_grad(flat_grad, mask, prompt_len=3):
    """The gradient on ``ppo_loss_data``'s flat layout (per row: prompt_len - 1 prompt slots, the response's n
    log-probs, one slot for the last token) read back into the padded (batch, response) layout."""
    out = torch.zeros(mask.shape, dtype=flat_grad.dtype)
    start = 0
    for i, n in enumerate(mask.sum(-1).tolist()):
        out[i, :n] = flat_grad[start + prompt_len - 1:start + prompt_len - 1 + n]
        start += prompt_len + n
    return out


@pytest.mark.parametrize("loss_mode,field,other", [("cispo", "clip_ratio_high", 0.05), ("gspo", "clip_ratio_low", 0.5),
                                                   ("sapo", "tau_neg", 3.0), ("dro", "dro_beta", 2.0)])
def test_each_setting_reaches_verls_loss(loss_mode, field, other):
    """A setting that verl silently ignored would leave the loss unchanged: moving each one moves verl's value."""
    lp, old, adv, mask = batch(dtype=torch.float64)
    out = []
    for value in (PAPER_SETTINGS[loss_mode][field], other):
        config = actor_config(loss_mode, use_torch_compile=False, **{field: value})
        assert (getattr(config.policy_loss, field) if field == "dro_beta" else getattr(config, field)) == value
        loss, _ = get_policy_loss_fn(loss_mode)(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                                loss_agg_mode="token-mean", config=config)
        token_loss, forced_agg = closed_form(loss_mode, lp, old, adv, mask, PAPER_SETTINGS[loss_mode] | {field: value})
        ref = agg_loss(loss_mat=token_loss, loss_mask=mask, loss_agg_mode=forced_agg or "token-mean",
                       **config.global_batch_info)
        torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-12)
        out.append(float(loss))
    assert out[0] != out[1]


def test_dro_needs_the_tables_beta_which_verl_does_not_default():
    lp, old, adv, mask = batch(dtype=torch.float64)
    config = actor_config("dro", use_torch_compile=False, dro_beta=None)
    with pytest.raises(ValueError, match="dro_beta"):
        get_policy_loss_fn("dro")(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                  loss_agg_mode="token-mean", config=config)
    assert "actor_rollout_ref.actor.policy_loss.dro_beta=0.05" in modes.recipe_overrides("dro")
    # verl's YAML has the key (null), so the recipe sets it without Hydra's '+'
    assert not [o for o in modes.recipe_overrides("dro") if o.startswith("+")]


@pytest.mark.parametrize("env,raw", [("DRO_BETA", "0"), ("DRO_BETA", "-0.1"), ("SAPO_TAU_NEG", "nan"),
                                     ("CISPO_CLIP_RATIO_HIGH", "x"), ("GSPO_CLIP_RATIO_LOW", "-1")])
def test_a_bad_baseline_variable_is_one_line_naming_it(env, raw):
    mode = {"DRO": "dro", "SAPO": "sapo", "CISPO": "cispo", "GSPO": "gspo"}[env.split("_")[0]]
    with pytest.raises(ValueError) as err:
        modes.recipe_overrides(mode, environ={env: raw})
    assert str(err.value).startswith(f"{env}={raw}: must be a finite number") and "\n" not in str(err.value)


def test_baseline_variables_set_their_keys():
    out = modes.recipe_overrides("sapo", environ={"SAPO_TAU_POS": "0.5", "SAPO_TAU_NEG": "2"})
    assert "actor_rollout_ref.actor.tau_pos=0.5" in out and "actor_rollout_ref.actor.tau_neg=2" in out
    out = modes.recipe_overrides("dro", environ={"DRO_BETA": "0.2"})
    assert "actor_rollout_ref.actor.policy_loss.dro_beta=0.2" in out


def test_dros_stationary_point_is_multiplicative_and_it_penalises_zero_advantage_tokens():
    """docs/algorithm.md's comparison with DRPO: verl's dro has its per-token optimum at log r = A/beta (pi* = mu
    e^(A/beta), not DRPO's mu + sign(A) delta), and pulls back a token with A = 0 that drifted from mu."""
    beta = 0.05
    old = torch.log(torch.tensor([[0.5, 0.01, 0.2, 0.3]], dtype=torch.float64))
    adv = torch.tensor([[0.02, -0.03, 0.0, 0.0]], dtype=torch.float64)
    lp = (old + adv / beta).clone()
    lp[0, 3] = old[0, 3] + 0.1  # zero advantage, drifted
    lp.requires_grad_(True)
    mask = torch.ones_like(lp, dtype=torch.bool)
    config = actor_config("dro", use_torch_compile=False, dro_beta=beta)
    loss, _ = get_policy_loss_fn("dro")(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                        loss_agg_mode="token-sum", config=config)
    loss.backward()
    torch.testing.assert_close(lp.grad[0, :3], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(lp.grad[0, 3], torch.tensor(beta * 0.1, dtype=torch.float64), rtol=1e-9, atol=0)

"""The table of loss modes (verl_drpo.modes) is the one definition: registration, the config hook, the preflight and
the aliases all follow it. (The import graph: test_architecture_on_cpu.py.)"""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import verl
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl.workers.config import PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from verl_drpo import modes, plugin
from verl_drpo.launch import preflight
from verl_drpo.config import DRPOPolicyLossConfig

from helpers import actor_config, batch, ppo_loss_data

def test_every_name_in_the_table_is_registered_by_the_plugin():
    assert set(modes.REGISTERED_NAMES) == set(modes.OWN_MODES) | {"spo_adaptive_eps"} == set(plugin.REGISTERED)
    for name in modes.REGISTERED_NAMES:
        assert POLICY_LOSS_REGISTRY[name] is plugin.REGISTERED[name]
    for mode in modes.MODES.values():  # verl's own modes stay verl's
        if mode.registered_by == "verl":
            assert mode.name in POLICY_LOSS_REGISTRY and mode.name not in plugin.REGISTERED
    assert preflight.missing_modes(POLICY_LOSS_REGISTRY) == []
    assert preflight.missing_modes(["drpo"]) == [n for n in modes.REGISTERED_NAMES if n != "drpo"]


def test_config_fields_defaults_and_help_agree_with_the_table():
    inherited = {f.name for f in fields(PolicyLossConfig)}
    own = {f.name: f.default for f in fields(DRPOPolicyLossConfig) if f.name not in inherited}
    assert own == {name: s.default for name, s in modes.POLICY_LOSS_FIELDS.items()} | {
        modes.NONFINITE_FIELD: modes.NONFINITE_DEFAULT}
    assert f"{modes.NONFINITE_FIELD} (str): {modes.NONFINITE_HELP}" in DRPOPolicyLossConfig.__doc__
    for name, setting in modes.POLICY_LOSS_FIELDS.items():
        assert f"{name} (float): {setting.help} Default {setting.default}." in DRPOPolicyLossConfig.__doc__
    for mode in modes.MODES.values():
        assert set(mode.reads) <= set(modes.POLICY_LOSS_FIELDS)


def test_each_own_mode_builds_its_formula_from_the_config_values_it_reads():
    config = actor_config(policy_loss=DRPOPolicyLossConfig(loss_mode="drpo", drpo_delta=0.3, spo_epsilon=2.0,
                                                           mask_drpo_tv_delta=0.1))
    boundaries = {"drpo": 0.3, "drpo_prox": 0.3, "mask_drpo": 0.1, "spo": 0.1, "pg_is": 0.1}
    for name in modes.OWN_MODES:
        formula = plugin.REGISTERED[name].__wrapped__  # the mode's @verl_loss function
        assert formula is getattr(plugin, name)
        loss = plugin.policy_loss_of(name, formula, config)
        assert loss.name == name
        assert loss.boundary == boundaries[name]


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
def test_spo_adaptive_eps_is_drpo_through_verls_ppo_loss(loss_agg_mode):
    """The authors' verl fork names DRPO `spo_adaptive_eps`: configs written for it give identical values."""
    lp, old, adv, mask = batch(dtype=torch.float32)
    results = {}
    for name in ("drpo", "spo_adaptive_eps"):
        flat_lp, data = ppo_loss_data(lp, old, adv, mask)
        config = actor_config(policy_loss=DRPOPolicyLossConfig(loss_mode=name, drpo_delta=0.3),
                              loss_agg_mode=loss_agg_mode, use_kl_loss=False, entropy_coeff=0.0)
        loss, metrics = ppo_loss(config, {"log_probs": flat_lp}, data)
        loss.backward()
        results[name] = (loss.detach(), flat_lp.grad, {k: m.aggregate() for k, m in metrics.items()})
    (a_loss, a_grad, a_metrics), (b_loss, b_grad, b_metrics) = results["drpo"], results["spo_adaptive_eps"]
    assert torch.equal(a_loss, b_loss) and torch.equal(a_grad, b_grad)
    assert a_metrics == b_metrics


def test_recipe_overrides_come_from_the_table():
    out = modes.recipe_overrides("drpo", environ={"DRPO_DELTA": "0.2"})
    assert f"{modes.POLICY_LOSS_KEY}.loss_mode=drpo" in out and f"+{modes.POLICY_LOSS_KEY}.drpo_delta=0.2" in out
    with pytest.raises(ValueError, match="unknown loss mode 'dpro'"):
        modes.get("dpro")


@pytest.mark.parametrize("mode,env,raw", [("drpo", "DRPO_DELTA", "abc"), ("drpo", "DRPO_DELTA", "-1"),
                                          ("drpo", "DRPO_DELTA", "1e-300"), ("dppo_tv", "DPPO_TV_DELTA", "nan"),
                                          ("vanilla", "CLIP_RATIO_HIGH", "0"), ("vanilla", "CLIP_RATIO_C", "1")])
def test_a_bad_recipe_variable_is_refused_by_name_not_passed_to_hydra(mode, env, raw):
    """Passed on, DRPO_DELTA=abc would end in a traceback from Hydra's instantiate on the driver."""
    with pytest.raises(ValueError, match=rf"^{env}={raw}: must be a finite number (>= 1e-06|> 1) \("):
        modes.recipe_overrides(mode, environ={env: raw})


# ---- mirrored verl checks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", preflight.MIRRORED_CHECKS, ids=lambda c: c.verl_source[:50])
def test_each_mirrored_verl_assertion_is_still_in_verl(check):
    """If verl changes one of the start-up assertions the preflight mirrors, this fails: update the mirror."""
    source = (Path(verl.__file__).parent / check.verl_file).read_text()
    assert check.verl_source in source, f"{check.verl_file} no longer contains {check.verl_source!r}"


def test_a_new_table_entry_reaches_the_config_the_recipes_and_the_docs(monkeypatch):
    """docs/architecture.md's worked example: one Setting line (and the mode's `reads`) is the whole change."""
    import dataclasses

    from verl_drpo import config, doc_tables

    new = modes.Setting("drpo_adv_cap", 5.0, "DRPO_ADV_CAP", "cap on |A| in DRPO's penalty (illustration).")
    table = {**modes.POLICY_LOSS_FIELDS, new.field: new}
    monkeypatch.setattr(modes, "POLICY_LOSS_FIELDS", table)
    monkeypatch.setitem(modes.MODES, "drpo", dataclasses.replace(modes.MODES["drpo"], reads=("drpo_delta", new.field)))

    # the config hook: a validated field with its default and help
    cls = config.policy_loss_config_class(table)
    assert cls(loss_mode="drpo").drpo_adv_cap == 5.0 and cls(loss_mode="drpo", drpo_adv_cap=2.0).drpo_adv_cap == 2.0
    assert "drpo_adv_cap (float): cap on |A| in DRPO's penalty (illustration). Default 5.0." in cls.__doc__
    with pytest.raises(ValueError, match="drpo_adv_cap must be a finite number >= 1e-06"):
        cls(loss_mode="drpo", drpo_adv_cap=0.0)
    # the recipes: the override, its variable, a bad value refused by name
    assert f"+{modes.POLICY_LOSS_KEY}.drpo_adv_cap=5.0" in modes.recipe_overrides("drpo", environ={})
    assert f"+{modes.POLICY_LOSS_KEY}.drpo_adv_cap=2" in modes.recipe_overrides("drpo", environ={"DRPO_ADV_CAP": "2"})
    with pytest.raises(ValueError, match="^DRPO_ADV_CAP=abc: must be a finite number >= 1e-06"):
        modes.recipe_overrides("drpo", environ={"DRPO_ADV_CAP": "abc"})
    # the formula receives it by name
    p = plugin.hyperparameters("drpo", actor_config(policy_loss=cls(loss_mode="drpo", drpo_adv_cap=3.0)))
    assert vars(p) == {"drpo_delta": 12.5, "drpo_adv_cap": 3.0}
    # the docs' generated tables
    assert "| `DRPO_ADV_CAP` | `drpo_adv_cap` | `5` | `drpo` |" in doc_tables.recipe_variables()
    assert "| `drpo_adv_cap` | `5` | cap on \\|A\\|" in doc_tables.config_fields()


def test_the_docs_generated_tables_are_up_to_date():
    from verl_drpo import doc_tables

    assert doc_tables.stale() == [], "run: python -m verl_drpo docs --write"


def test_the_smallest_accepted_threshold_keeps_every_loss_finite_at_verls_clamp():
    """Why SMALLEST_THRESHOLD: at it, float32 losses stay finite for log-ratios at verl's +-20 clamp and large |A|
    (DRPO_DELTA=1e-300 used to pass every check and overflow at the first update)."""
    from verl_drpo.config import actor_config

    delta = modes.SMALLEST_THRESHOLD
    log_mu = torch.tensor([[-25.0, -0.1, -3.0, -1e-6]])
    log_pi = torch.tensor([[-5.0, -22.0, -3.0 + 19.9, -1e-6]])
    mask = torch.ones_like(log_mu, dtype=torch.bool)
    for name in modes.OWN_MODES:
        if modes.uses_decoupled_inputs(name):
            continue
        config = actor_config(name, drpo_delta=delta, spo_epsilon=delta, mask_drpo_tv_delta=delta)
        for adv in (1e3, -1e3):
            lp = log_pi.clone().requires_grad_()
            loss, _ = plugin.REGISTERED[name](old_log_prob=log_mu, log_prob=lp, advantages=torch.full_like(lp, adv),
                                              response_mask=mask, loss_agg_mode="token-mean", config=config)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(lp.grad).all(), (name, adv)

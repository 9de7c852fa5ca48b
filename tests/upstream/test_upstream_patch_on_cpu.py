"""The patch in upstream/ that adds `drpo` to verl itself: it applies to the installed verl 0.9.1 (a copy of it), its
own verl-layout test passes there, verl's generated configs agree with its YAML, and the patched verl's `drpo` gives
the plugin's numbers (loss values, gradients w.r.t. log_prob, metrics) on the same inputs.

The patched verl runs in a subprocess with the copy first on PYTHONPATH and VERL_USE_EXTERNAL_PLUGINS=none (so the
plugin cannot register its own `drpo` over it); the plugin runs here. Inputs and outputs travel through tmp files.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from verl_drpo import plugin
from verl_drpo.config import actor_config

pytestmark = pytest.mark.slow  # two fresh verl imports and the patch's own test: ~20 s of CPU

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "upstream" / "apply_and_test.sh"
PATCH = REPO / "upstream" / "verl-0.9.1-drpo.patch"

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
# (loss_agg_mode, delta, rollout_is_weights?, global_batch_info): every mode at both deltas, then the extra inputs
# verl passes on some paths (IS weights in decoupled mode; global batch sizes with data parallelism).
CASES = [(mode, delta, False, {}) for mode in AGG_MODES for delta in (0.2, 12.5)] + [
    ("token-mean", 0.2, True, {}),
    ("seq-mean-token-sum-norm", 12.5, True, {}),
    ("token-mean", 0.2, False, {"dp_size": 2, "batch_num_tokens": 150, "global_batch_size": 16}),
    ("seq-mean-token-sum-norm", 0.2, False, {"dp_size": 2, "global_batch_size": 16, "loss_scale_factor": 40}),
]
METRICS = ["actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"]


def _subprocess_env(**extra):
    dropped = ("PYTHONPATH", "VERL_USE_EXTERNAL_PLUGINS", "VERL_USE_EXTERNAL_MODULES")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def patched_copy(tmp_path_factory):
    """Runs upstream/apply_and_test.sh on a new folder: copy, patch, the patch's own test. Returns (folder, log)."""
    workdir = tmp_path_factory.mktemp("upstream") / "verl-repo"
    result = subprocess.run(
        ["bash", str(SCRIPT), "--workdir", str(workdir)],
        env=_subprocess_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return workdir, log


def test_patch_applies_and_its_own_test_passes(patched_copy):
    workdir, log = patched_copy
    assert "OK: the patch applies to verl 0.9.1 and its test passes" in log
    assert " passed" in log and " failed" not in log
    core_algos = (workdir / "verl" / "trainer" / "ppo" / "core_algos.py").read_text()
    assert core_algos.count('@register_policy_loss("drpo")') == 1
    assert (workdir / "docs" / "algo" / "drpo.md").is_file()


def test_script_refuses_a_patch_that_does_not_apply(tmp_path):
    """One clear line, non-zero exit, when the patch's context is not in the installed verl."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "apply_and_test.sh").write_text(SCRIPT.read_text())
    (upstream / "verl-0.9.1-drpo.patch").write_text(
        PATCH.read_text().replace("     dro_beta: Optional[float] = None\n", "     dro_beta: float = 0.0\n", 1)
    )
    result = subprocess.run(
        ["bash", str(upstream / "apply_and_test.sh"), "--no-test"],
        env=_subprocess_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("apply_and_test: the patch does not apply"), result.stderr


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    """A micro-batch as verl passes it (float32, bool mask): ragged lengths, one fully masked row (verl's padding
    samples), per-sequence advantages of both signs and some zeros (a group with equal rewards), random finite
    values at padded positions. Probabilities mu = sigmoid(z), pi = sigmoid(z + eps), so both regimes of delta = 0.2
    occur (inside the trust region and past its boundary)."""
    gen = torch.Generator().manual_seed(seed)
    batch_size, length = 8, 20
    logits = 2.5 * torch.randn(batch_size, length, generator=gen)
    old_log_prob = torch.nn.functional.logsigmoid(logits)
    log_prob = torch.nn.functional.logsigmoid(logits + 0.8 * torch.randn(batch_size, length, generator=gen))
    advantages = torch.randn(batch_size, 1, generator=gen).expand(batch_size, length).clone()
    advantages[1] = 0.0
    advantages[2] += 0.3 * torch.randn(length, generator=gen)  # token-level advantages in one row
    lengths = torch.randint(1, length + 1, (batch_size,), generator=gen)
    lengths[3] = 0
    response_mask = torch.arange(length)[None, :] < lengths[:, None]
    rollout_is_weights = 0.5 + torch.rand(batch_size, length, generator=gen)
    return {"old_log_prob": old_log_prob, "log_prob": log_prob, "advantages": advantages,
            "response_mask": response_mask, "rollout_is_weights": rollout_is_weights}


# Runs in the patched copy's environment: verl's own drpo through verl's registry, as verl's ppo_loss calls it.
PATCHED_SIDE = r'''
import sys
import torch
import verl
from verl.trainer.ppo.core_algos import compute_policy_loss_drpo, get_policy_loss_fn
from verl.workers.config import ActorConfig, PolicyLossConfig

workdir, cases_file, out_file = sys.argv[1:]
assert verl.__file__ == f"{workdir}/verl/__init__.py", verl.__file__
assert "verl_drpo" not in sys.modules, "the plugin was loaded although VERL_USE_EXTERNAL_PLUGINS=none"
loss_fn = get_policy_loss_fn("drpo")
assert loss_fn is compute_policy_loss_drpo, loss_fn

results = []
for case in torch.load(cases_file, weights_only=True):
    config = ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, loss_agg_mode=case["loss_agg_mode"],
        use_torch_compile=False, global_batch_info=dict(case["global_batch_info"]),
        policy_loss=PolicyLossConfig(loss_mode="drpo", drpo_delta=case["delta"]),
    )
    log_prob = case["log_prob"].clone().requires_grad_(True)
    loss, metrics = loss_fn(
        old_log_prob=case["old_log_prob"], log_prob=log_prob, advantages=case["advantages"],
        response_mask=case["response_mask"], loss_agg_mode=case["loss_agg_mode"], config=config,
        rollout_is_weights=case["rollout_is_weights"],
    )
    loss.backward()
    results.append({"loss": loss.detach(), "grad": log_prob.grad, "metrics": metrics})
torch.save(results, out_file)
'''


def _plugin_side(case: dict) -> dict:
    config = actor_config("drpo", loss_agg_mode=case["loss_agg_mode"], use_torch_compile=False,
                          global_batch_info=dict(case["global_batch_info"]), drpo_delta=case["delta"])
    log_prob = case["log_prob"].clone().requires_grad_(True)
    with warnings.catch_warnings():  # the plugin warns once that IS weights mean verl's decoupled anchor
        warnings.simplefilter("ignore", UserWarning)
        loss, metrics = plugin.REGISTERED["drpo"](
            old_log_prob=case["old_log_prob"], log_prob=log_prob, advantages=case["advantages"],
            response_mask=case["response_mask"], loss_agg_mode=case["loss_agg_mode"], config=config,
            rollout_is_weights=case["rollout_is_weights"],
        )
    loss.backward()
    return {"loss": loss.detach(), "grad": log_prob.grad, "metrics": metrics}


def test_patched_verl_drpo_equals_the_plugin(patched_copy, tmp_path):
    workdir, _ = patched_copy
    cases = []
    for seed, (mode, delta, with_weights, batch_info) in enumerate(CASES):
        inputs = _inputs(seed)
        if not with_weights:
            inputs["rollout_is_weights"] = None
        cases.append({**inputs, "loss_agg_mode": mode, "delta": delta, "global_batch_info": batch_info})
    torch.save(cases, tmp_path / "cases.pt")

    result = subprocess.run(
        [sys.executable, "-c", PATCHED_SIDE, str(workdir), str(tmp_path / "cases.pt"), str(tmp_path / "patched.pt")],
        env=_subprocess_env(PYTHONPATH=str(workdir), VERL_USE_EXTERNAL_PLUGINS="none", PYTHONDONTWRITEBYTECODE="1"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    patched = torch.load(tmp_path / "patched.pt", weights_only=True)

    reached_boundary = False
    for case, theirs in zip(cases, patched, strict=True):
        ours = _plugin_side(case)
        label = f"{case['loss_agg_mode']}, delta={case['delta']}, weights={case['rollout_is_weights'] is not None}"
        # float32 round-off: the two compute the same terms in a different order (relative ~1e-7 per operation).
        loss_scale = max(ours["loss"].abs().item(), 1e-3)
        torch.testing.assert_close(theirs["loss"], ours["loss"], rtol=2e-6, atol=2e-6 * loss_scale, msg=label)
        grad_scale = ours["grad"].abs().max().item()
        torch.testing.assert_close(theirs["grad"], ours["grad"], rtol=2e-6, atol=2e-6 * grad_scale, msg=label)
        assert not theirs["grad"][~case["response_mask"]].any(), label
        for key in METRICS:
            assert theirs["metrics"][key] == pytest.approx(ours["metrics"][key], rel=1e-6, abs=1e-7), (label, key)
        reached_boundary |= ours["metrics"]["actor/pg_clipfrac"] > 0
    assert reached_boundary, "the inputs never crossed the delta=0.2 boundary: the corrective regime went untested"


# Runs in the patched copy's environment: verl's Hydra config composes drpo_delta into the actor's policy_loss, the
# generated reference configs agree with that composition, and the dataclass validates it.
CONFIG_SIDE = r'''
import sys
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass

config_dir = sys.argv[1] + "/verl/trainer/config"
for generated, overrides in [("_generated_ppo_trainer.yaml", []),
                             ("_generated_ppo_megatron_trainer.yaml", ["model_engine=megatron"]),
                             ("_generated_ppo_veomni_trainer.yaml", ["model_engine=veomni"]),
                             ("_generated_ppo_torchtitan_trainer.yaml", ["model_engine=torchtitan"])]:
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    with open(f"{config_dir}/{generated}") as f:
        reference = yaml.safe_load(f)
    for key, value in reference.items():
        assert OmegaConf.to_container(cfg[key]) == value, (generated, key)
    assert cfg.actor_rollout_ref.actor.policy_loss.drpo_delta == 12.5, generated

with initialize_config_dir(config_dir=config_dir, version_base=None):
    cfg = compose("ppo_trainer", overrides=["actor_rollout_ref.actor.policy_loss.loss_mode=drpo",
                                            "actor_rollout_ref.actor.policy_loss.drpo_delta=0.2"])
    assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).drpo_delta == 0.2
    cfg = compose("ppo_trainer", overrides=["actor_rollout_ref.actor.policy_loss.drpo_delta=0"])
try:  # Hydra wraps the dataclass's ValueError in an InstantiationException that keeps its message
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
except Exception as error:
    assert "policy_loss.drpo_delta must be positive, got 0" in str(error), error
else:
    raise AssertionError("drpo_delta=0 was accepted")
print("config ok")
'''


def test_patched_config_composes_and_matches_verls_generated_files(patched_copy):
    workdir, _ = patched_copy
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_SIDE, str(workdir)],
        env=_subprocess_env(PYTHONPATH=str(workdir), VERL_USE_EXTERNAL_PLUGINS="none", PYTHONDONTWRITEBYTECODE="1"),
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "config ok" in result.stdout, result.stdout + result.stderr

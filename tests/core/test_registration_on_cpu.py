"""Registration where verl's workers live: fresh processes and a real Ray worker; the verl APIs it needs; the doctor."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import verl

from verl_drpo import LOSS_MODES, _compat
from verl_drpo.launch import doctor

PROBE = "import json, verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; print(json.dumps(sorted(R)))"


def fresh_registry(**env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full_env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # fresh interpreter / subprocess
def test_plain_import_verl_registers_everything_in_a_fresh_process():
    registry = fresh_registry()
    assert set(LOSS_MODES) <= set(registry)


@pytest.mark.slow  # fresh interpreter / subprocess
def test_external_modules_fallback_when_entry_points_are_off():
    assert not set(LOSS_MODES) & set(fresh_registry(VERL_USE_EXTERNAL_PLUGINS="none"))
    registry = fresh_registry(VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="verl_drpo.plugin")
    assert set(LOSS_MODES) <= set(registry)


def test_the_entry_point_is_installed():
    from importlib.metadata import entry_points

    assert "verl_drpo.plugin" in {ep.value for ep in entry_points(group="verl.plugins")}


RAY_WORKER = textwrap.dedent(
    """
    import json, ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def worker_loss():
        import torch, verl  # nothing imported from verl_drpo by hand: the entry point must do it
        from verl.trainer.ppo.core_algos import get_policy_loss_fn
        from verl.workers.config import ActorConfig, PolicyLossConfig
        config = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, use_torch_compile=False,
                             policy_loss=PolicyLossConfig(loss_mode="drpo"))
        lp = torch.log(torch.tensor([[0.5, 0.2]]))
        loss, metrics = get_policy_loss_fn("drpo")(
            old_log_prob=torch.log(torch.tensor([[0.4, 0.2]])), log_prob=lp, advantages=torch.tensor([[1.0, 1.0]]),
            response_mask=torch.ones(1, 2, dtype=torch.bool), loss_agg_mode="token-mean", config=config)
        return loss.item(), metrics["actor/drpo/abs_prob_diff_mean"]

    print(json.dumps(ray.get(worker_loss.remote(), timeout=240)))
    ray.shutdown()
    """
)


@pytest.mark.slow  # fresh interpreter / subprocess
def test_a_ray_worker_computes_the_drpo_loss_after_a_plain_import_verl():
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    out = subprocess.run([sys.executable, "-c", RAY_WORKER], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loss, mismatch = json.loads(out.stdout.strip().splitlines()[-1])
    # token 1: r = 1.25, penalty |A| mu (r-1)^2 / (2 * 12.5); token 2: r = 1
    expected = (-1.25 + 0.4 * 0.25**2 / 25 - 1.0) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    assert mismatch == pytest.approx(0.05, rel=1e-4)


def test_a_version_outside_the_tested_range_loads_with_a_warning(monkeypatch):
    """A verl 0.9.2 or a source build with every API the plugin uses is not refused (issue 19, item 12)."""
    assert _compat.check_verl() == "0.9.1"
    monkeypatch.setattr(verl, "__version__", "0.9.2")
    with pytest.warns(UserWarning, match=r"verl 0\.9\.2 is outside the tested range"):
        assert _compat.check_verl() == "0.9.2"
    monkeypatch.setattr(verl, "__version__", "0.10.0.dev0+g1234abc")
    with pytest.warns(UserWarning, match="outside the tested range"):
        _compat.check_verl()


def test_a_missing_verl_api_is_refused_by_name(monkeypatch):
    from verl.trainer.ppo import core_algos

    monkeypatch.delattr(core_algos, "agg_loss")
    with pytest.raises(_compat.UnsupportedVerlError, match=r"lacks what verl-drpo uses: verl\.trainer\.ppo\.core_algos\.agg_loss"):
        _compat.check_verl()


def test_a_changed_verl_signature_is_refused_by_name(monkeypatch):
    from verl.trainer.ppo import core_algos

    monkeypatch.setattr(core_algos, "agg_loss", lambda loss_mat, loss_mask, loss_agg_mode, dp_size=1: None)
    assert _compat.missing_verl_apis() == [f"agg_loss({k})" for k in
                                           ("batch_num_tokens", "global_batch_size", "loss_scale_factor")]


@pytest.mark.slow  # fresh interpreter / subprocess
def test_the_plugin_registers_under_another_version_in_a_fresh_process():
    code = ("import verl; verl.__version__ = '0.9.7'\n"  # entry points off: the plugin loads after the change
            "import verl_drpo.plugin\n"
            "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY; print('drpo' in POLICY_LOSS_REGISTRY)")
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
    assert "verl 0.9.7 is outside the tested range" in out.stderr


def run_doctor(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "verl_drpo", "doctor", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


@pytest.mark.slow  # fresh interpreter / subprocess
def test_doctor_passes_here():
    out = run_doctor("--quick")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


@pytest.mark.slow  # fresh interpreter / subprocess
def test_doctor_fails_with_the_cause_when_plugins_are_switched_off():
    out = run_doctor("--quick", "--json", VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report[-1]["check"] == "registration" and not report[-1]["ok"]
    assert "VERL_USE_EXTERNAL_PLUGINS='none'" in report[-1]["detail"]


def test_doctor_surfaces_the_import_error_verl_swallows(monkeypatch):
    monkeypatch.delenv("VERL_USE_EXTERNAL_PLUGINS", raising=False)
    monkeypatch.setattr(doctor, "PLUGIN_IMPORT_PROBE", "raise ImportError('simulated broken plugin')")
    cause = doctor.missing_modes_cause()
    assert "verl swallowed this error" in cause and "simulated broken plugin" in cause


def test_the_package_depends_on_the_supported_range_not_one_version():
    """pip must not replace a cluster's verl 0.9.x with 0.9.1: setup.cfg names the range _compat stands behind."""
    import configparser
    import re
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    lines = [cfg["options"]["install_requires"], *cfg["options.extras_require"].values()]
    verl_specs = [m.group(1) for text in lines for m in re.finditer(r"^verl(?:\[[^\]]*\])?(\S*)$", text, re.M)]
    assert len(verl_specs) >= 3, verl_specs  # install_requires, core, cpu
    assert set(verl_specs) == {">=0.9.1,<0.10"}, verl_specs
    assert _compat.TESTED_RANGE.startswith(">=0.9.1,<0.10")

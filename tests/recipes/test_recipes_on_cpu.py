"""The bash recipes under recipe/drpo/, proven against the installed verl without Ray or a GPU.

Two layers:
- each script runs for real with DRY_RUN=1 (a subprocess: bash -> python -m verl_drpo.dry_run -> Hydra compose +
  verl's validate_config), once per script, plus once with a misspelt override that must be rejected;
- the matrix of LOSS_MODE x TRAINER_MODE runs the scripts with a stand-in interpreter that records the exact argument
  list they would pass, which is then composed and validated in this process (Hydra composition is the slow part
  of a subprocess; in-process it is a fraction of a second per configuration).
"""

import json
import os
import subprocess
import sys

import pytest

from verl_drpo import dry_run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPES = {
    "gsm8k": os.path.join(ROOT, "recipe", "drpo", "run_drpo_gsm8k.sh"),
    "math": os.path.join(ROOT, "recipe", "drpo", "run_drpo_math.sh"),
}
FAKE_PYTHON = os.path.join(os.path.dirname(__file__), "fake_python.sh")
LOSS_MODES = ("drpo", "mask_drpo", "spo", "pg_is", "dppo_tv", "dppo_kl", "vanilla")
TRAINER_MODES = ("sync", "colocate_async", "separate_async", "fully_async")
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "RAY_AUTH_MODE": "disabled"}


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LOSS_MODE", "TRAINER_MODE", "STALENESS", "DRY_RUN")}
    env.update(BASE_ENV)
    env["VERL_FILE_LOGGER_ROOT"] = str(tmp_path / "runs")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def record_calls(tmp_path, recipe, *args, doctor_rc=0, **env):
    """Run a recipe with the stand-in interpreter; return (completed process, list of recorded argv lists)."""
    calls_dir = tmp_path / f"calls-{len(list(tmp_path.iterdir()))}"
    calls_dir.mkdir()
    proc = subprocess.run(
        ["bash", RECIPES[recipe], *args],
        env=_env(tmp_path, PYTHON=FAKE_PYTHON, FAKE_PYTHON_DIR=calls_dir, FAKE_DOCTOR_RC=doctor_rc, **env),
        capture_output=True, text=True, timeout=60,
    )
    calls = [p.read_bytes().split(b"\0")[:-1] for p in sorted(calls_dir.iterdir())]
    return proc, [[a.decode() for a in call] for call in calls]


def dry_run_argv(calls):
    """The argv the recipe gave `python -m verl_drpo.dry_run`, after the module name."""
    (call,) = [c for c in calls if c[:2] == ["-m", "verl_drpo.dry_run"]]
    return call[2:]


def overrides_of(argv):
    assert argv[0] == "--entry" and "--" in argv
    return argv[1], argv[argv.index("--") + 1:]


# ----------------------------------------------------------------------------------------- real subprocess runs
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_dry_run_end_to_end(tmp_path, recipe):
    """The unmodified script, DRY_RUN=1, real interpreter: exits 0 and prints the resolved settings."""
    out_json = tmp_path / "settings.json"
    # SKIP_DOCTOR: the doctor starts fresh interpreters and a Ray worker (most of a minute on 2 shared cores); its
    # own tests cover it, and test_doctor_failure_stops_the_script_before_verl covers the recipe's call to it.
    proc = subprocess.run(["bash", RECIPES[recipe]], capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path, PYTHON=sys.executable, DRY_RUN=1, DRY_RUN_JSON=out_json, SKIP_DOCTOR=1))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[dry-run] OK" in proc.stdout

    settings = json.loads(out_json.read_text())["settings"]
    assert settings["loss_mode"] == "drpo"
    assert settings["policy_loss_config"] == "verl_drpo.config.DRPOPolicyLossConfig"
    assert settings["drpo_delta"] == 12.5
    assert settings["bypass_mode"] is True and settings["calculate_log_probs"] is True
    assert settings["norm_adv_by_std_in_grpo"] is False
    assert settings["loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert settings["use_kl_loss"] is False
    assert settings["calculate_entropy"] is True and settings["entropy_coeff"] == 0
    assert settings["rollout_name"] == "vllm" and settings["rollout_mode"] == "async"
    assert settings["temperature"] == 1.0
    assert settings["optimizer_steps_per_rollout"] == 4
    assert settings["val_files"].endswith("test.parquet")


def test_misspelt_override_is_rejected(tmp_path):
    proc = subprocess.run(
        ["bash", RECIPES["gsm8k"], "actor_rollout_ref.actor.ppo_mini_bach_size=8"],
        capture_output=True, text=True, timeout=300,
        env=_env(tmp_path, PYTHON=sys.executable, DRY_RUN=1, SKIP_DOCTOR=1),
    )
    assert proc.returncode == dry_run.EXIT_COMPOSE, proc.stderr[-2000:]
    assert "REJECTED" in proc.stderr and "ppo_mini_bach_size" in proc.stderr


# ----------------------------------------------------------------------------------------- bash-level behaviour
def test_doctor_failure_stops_the_script_before_verl(tmp_path):
    proc, calls = record_calls(tmp_path, "gsm8k", doctor_rc=3, DRY_RUN=0)
    assert proc.returncode != 0
    assert "doctor failed" in proc.stderr and "not registered" in proc.stderr
    assert calls == [["-m", "verl_drpo", "doctor", "--quick"]]


def test_real_run_command_and_skip_doctor(tmp_path):
    proc, calls = record_calls(tmp_path, "gsm8k", "trainer.total_training_steps=3", SKIP_DOCTOR=1, DRY_RUN=0)
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert call[:2] == ["-m", "verl.trainer.main_ppo"]
    assert call[-1] == "trainer.total_training_steps=3"  # "$@" comes last, so it wins


def test_fully_async_uses_its_own_entry_point(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=0, TRAINER_MODE="fully_async")
    assert calls[0][:2] == ["-m", "verl.experimental.fully_async_policy.fully_async_main"]


@pytest.mark.parametrize("var,value", [("LOSS_MODE", "drpoo"), ("TRAINER_MODE", "async")])
def test_unknown_mode_variable_fails_in_bash(tmp_path, var, value):
    proc, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, **{var: value})
    assert proc.returncode != 0 and f"{var}={value} is not one of" in proc.stderr
    assert calls == []


def test_batch_geometry_is_checked_in_bash(tmp_path):
    proc, calls = record_calls(tmp_path, "math", SKIP_DOCTOR=1, DRY_RUN=1, TRAIN_BATCH_SIZE=60, PPO_MINI_BATCH_SIZE=16)
    assert proc.returncode != 0 and "must be a multiple of PPO_MINI_BATCH_SIZE=16" in proc.stderr
    assert calls == []


def test_runtime_env_fallback_is_one_variable_away(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, USE_RUNTIME_ENV_PLUGIN=1)
    entry, overrides = overrides_of(dry_run_argv(calls))
    key = "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
    assert key in overrides
    report = dry_run.run_dry(overrides, entry)
    assert report.settings["external_modules_env"] == "verl_drpo.plugin"


def test_command_line_plus_key_replaces_the_recipes_own(tmp_path):
    """Hydra refuses to '+'-add a key twice; the recipe drops its own copy when the command line sets it."""
    _, calls = record_calls(tmp_path, "gsm8k", "+actor_rollout_ref.actor.policy_loss.drpo_delta=0.2",
                            SKIP_DOCTOR=1, DRY_RUN=1)
    entry, overrides = overrides_of(dry_run_argv(calls))
    assert [o for o in overrides if "drpo_delta" in o] == ["+actor_rollout_ref.actor.policy_loss.drpo_delta=0.2"]
    assert dry_run.run_dry(overrides, entry).settings["drpo_delta"] == 0.2


# ----------------------------------------------------------------------------------------- in-process matrix
EXPECTED_LOSS_SETTINGS = {
    "drpo": {"drpo_delta": 12.5},
    "mask_drpo": {"drpo_delta": 12.5, "mask_drpo_tv_delta": 0.15},
    "spo": {"spo_epsilon": 12.5},
    "pg_is": {},
    "dppo_tv": {"clip_ratio_low": 0.15, "clip_ratio_high": 0.15, "clip_ratio_c": 10000.0},
    "dppo_kl": {"clip_ratio_low": 0.05, "clip_ratio_high": 0.05, "clip_ratio_c": 10000.0},
    "vanilla": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0},
}


@pytest.mark.parametrize("loss_mode", LOSS_MODES)
def test_loss_mode_sets_the_papers_hyper_parameters(tmp_path, loss_mode):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, LOSS_MODE=loss_mode)
    entry, overrides = overrides_of(dry_run_argv(calls))
    report = dry_run.run_dry(overrides, entry)
    assert report.settings["loss_mode"] == loss_mode
    for key, value in EXPECTED_LOSS_SETTINGS[loss_mode].items():
        assert report.settings[key] == value, key
    assert report.settings["bypass_mode"] is True
    assert not [w for w in report.warnings if "not anchored" in w]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("trainer_mode", TRAINER_MODES)
def test_trainer_modes_validate(tmp_path, recipe, trainer_mode):
    _, calls = record_calls(tmp_path, recipe, SKIP_DOCTOR=1, DRY_RUN=1, TRAINER_MODE=trainer_mode, STALENESS=3)
    entry, overrides = overrides_of(dry_run_argv(calls))
    assert entry == ("fully_async" if trainer_mode == "fully_async" else "main_ppo")
    s = dry_run.run_dry(overrides, entry).settings
    assert s["trainer_mode"] == trainer_mode
    if trainer_mode in ("colocate_async", "separate_async"):
        assert s["max_off_policy_threshold"] == 3
    if trainer_mode == "separate_async":
        assert s["parameter_sync_step"] * s["ppo_mini_batch_size"] == s["train_batch_size"]
        assert s["rollout_pool"] == "1x4" and s["n_gpus_per_node"] == 4
    if trainer_mode == "fully_async":
        assert s["staleness_threshold"] == 3
        assert s["trigger_parameter_sync_step"] == 4


def test_model_size_variable_selects_the_model(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, MODEL_SIZE="3B")
    _, overrides = overrides_of(dry_run_argv(calls))
    assert "actor_rollout_ref.model.path=Qwen/Qwen2.5-3B-Instruct" in overrides


# ----------------------------------------------------------------------------------------- dry_run's own checks
def _base(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1)
    return overrides_of(dry_run_argv(calls))


def test_unregistered_loss_mode_is_caught(tmp_path):
    entry, overrides = _base(tmp_path)
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides, "actor_rollout_ref.actor.policy_loss.loss_mode=not_a_loss"], entry)
    assert err.value.exit_code in (dry_run.EXIT_INVALID, dry_run.EXIT_UNREGISTERED)
    assert "not_a_loss" in str(err.value)


def test_unregistered_loss_mode_behind_verls_own_config_class(tmp_path):
    """verl's PolicyLossConfig accepts any loss_mode string; only the registry check stops it before Ray."""
    entry, overrides = _base(tmp_path)
    overrides = [o for o in overrides if "drpo_delta" not in o]
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides,
                         "actor_rollout_ref.actor.policy_loss._target_=verl.workers.config.PolicyLossConfig",
                         "actor_rollout_ref.actor.policy_loss.loss_mode=not_a_loss"], entry)
    assert err.value.exit_code == dry_run.EXIT_UNREGISTERED and "doctor" in str(err.value)


def test_unknown_plus_field_is_caught_by_validation(tmp_path):
    entry, overrides = _base(tmp_path)
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides, "+actor_rollout_ref.actor.policy_loss.drpo_detla=1.0"], entry)
    assert err.value.exit_code == dry_run.EXIT_INVALID and "drpo_detla" in str(err.value)


def test_separate_async_batch_rule_is_checked(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, TRAINER_MODE="separate_async")
    entry, overrides = overrides_of(dry_run_argv(calls))
    with pytest.raises(dry_run.DryRunError, match="parameter_sync_step"):
        dry_run.run_dry([*overrides, "trainer.v1.separate_async.parameter_sync_step=3"], entry)


def test_truncated_sampling_is_warned(tmp_path):
    entry, overrides = _base(tmp_path)
    report = dry_run.run_dry([*overrides, "actor_rollout_ref.rollout.top_p=0.9"], entry)
    assert any("truncates the sampling distribution" in w for w in report.warnings)


# ----------------------------------------------------------------------------------------- the sweep
def test_sweep_runs_every_loss_mode_and_seed(tmp_path):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "recipe", "drpo", "sweep.sh"), "trainer.total_training_steps=2"],
        env=_env(tmp_path, PYTHON=FAKE_PYTHON, FAKE_PYTHON_DIR=calls_dir, LOSS_MODES="drpo vanilla", SEEDS="1 2",
                 RECIPE="math"),
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = [[a.decode() for a in p.read_bytes().split(b"\0")[:-1]] for p in sorted(calls_dir.iterdir())]
    assert calls[0] == ["-m", "verl_drpo", "doctor", "--quick"]  # once for the whole sweep
    runs = calls[1:]
    assert len(runs) == 4 and all(c[:2] == ["-m", "verl.trainer.main_ppo"] for c in runs)
    seen = set()
    for call in runs:
        mode = next(a.split("=", 1)[1] for a in call if a.startswith("actor_rollout_ref.actor.policy_loss.loss_mode="))
        seed = next(a.split("=", 1)[1] for a in call if a.startswith("actor_rollout_ref.rollout.seed="))
        name = next(a.split("=", 1)[1] for a in call if a.startswith("trainer.experiment_name="))
        assert name == f"math-{mode}-sync-seed{seed}"
        assert call[-1] == "trainer.total_training_steps=2"
        seen.add((mode, seed))
    assert seen == {("drpo", "1"), ("drpo", "2"), ("vanilla", "1"), ("vanilla", "2")}
    assert sorted(os.listdir(tmp_path / "runs" / "logs")) == sorted(f"math-{m}-sync-seed{s}.log" for m, s in seen)


def test_non_unit_temperature_is_warned_once(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, TEMPERATURE="0.7")
    entry, overrides = overrides_of(dry_run_argv(calls))
    report = dry_run.run_dry(overrides, entry)
    assert report.settings["temperature"] == 0.7
    assert len([w for w in report.warnings if "temperature" in w]) == 1

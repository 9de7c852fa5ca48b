"""The bash recipes under recipe/drpo/, proven against the installed verl without Ray or a GPU.

Two layers:
- a few runs of the unmodified scripts with DRY_RUN=1 and the real interpreter (bash -> python -m verl_drpo.dry_run
  -> Hydra compose + verl's validate_config), one per recipe, plus a misspelt override that must be rejected;
- everything else runs the scripts with a stand-in interpreter (fake_python.sh) that records the exact argument list
  they would pass; that list is then composed and validated in this process (Hydra composition is the slow part of a
  subprocess; in-process it is a fraction of a second per configuration).
Every subprocess runs with cwd=tmp_path and a temporary VERL_FILE_LOGGER_ROOT, so nothing is written into the checkout.
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from verl_drpo import modes
from verl_drpo.launch import dry_run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPE_DIR = os.path.join(ROOT, "recipe", "drpo")
RECIPES = {
    "gsm8k": os.path.join(RECIPE_DIR, "run_drpo_gsm8k.sh"),
    "math": os.path.join(RECIPE_DIR, "run_drpo_math.sh"),
    "dapo_qwen3_4b": os.path.join(RECIPE_DIR, "run_drpo_dapo_qwen3_4b.sh"),
    "moe_qwen3_30b_a3b": os.path.join(RECIPE_DIR, "run_drpo_moe_qwen3_30b_a3b.sh"),
}
SWEEP = os.path.join(RECIPE_DIR, "sweep.sh")
FAKE_PYTHON = os.path.join(os.path.dirname(__file__), "fake_python.sh")
# every mode of the table that runs on verl's bypass-mode inputs (drpo_prox, decoupled, has its own test below)
BYPASS_MODES = tuple(m for m in modes.MODES if not modes.uses_decoupled_inputs(m))
TRAINER_MODES = ("sync", "colocate_async", "separate_async", "fully_async")
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "RAY_AUTH_MODE": "disabled"}
DRPO_DELTA_KEY = "actor_rollout_ref.actor.policy_loss.drpo_delta"


def _env(tmp_path, **extra):
    """A clean environment: none of the recipe variables of the calling shell leak in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    env.update(BASE_ENV)
    env["VERL_FILE_LOGGER_ROOT"] = str(tmp_path / "runs")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _calls_dir(tmp_path):
    calls_dir = tmp_path / f"calls-{len(list(tmp_path.glob('calls-*')))}"
    calls_dir.mkdir()
    return calls_dir


def _read_calls(calls_dir):
    return [[a.decode() for a in p.read_bytes().split(b"\0")[:-1]] for p in sorted(calls_dir.iterdir())]


def record_calls(tmp_path, recipe, *args, doctor_rc=0, script=None, **env):
    """Run a recipe with the stand-in interpreter; return (completed process, list of recorded argv lists)."""
    calls_dir = _calls_dir(tmp_path)
    env.setdefault("PYTHON", FAKE_PYTHON)
    proc = subprocess.run(
        ["bash", script or RECIPES[recipe], *args], cwd=tmp_path,
        env=_env(tmp_path, FAKE_PYTHON_DIR=calls_dir, FAKE_REAL_PYTHON=sys.executable, FAKE_DOCTOR_RC=doctor_rc,
                 **env),
        capture_output=True, text=True, timeout=60,
    )
    return proc, _read_calls(calls_dir)


def dry_run_argv(calls):
    """The argv the recipe gave `python -m verl_drpo.dry_run`, after the module name."""
    (call,) = [c for c in calls if c[:2] == ["-m", "verl_drpo.dry_run"]]
    return call[2:]


def overrides_of(argv):
    assert argv[0] == "--entry" and "--" in argv
    return argv[1], argv[argv.index("--") + 1:]


def recorded_overrides(tmp_path, recipe="gsm8k", *args, **env):
    proc, calls = record_calls(tmp_path, recipe, *args, SKIP_DOCTOR=1, DRY_RUN=1, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return overrides_of(dry_run_argv(calls))


def composed(tmp_path, recipe="gsm8k", *args, **env):
    """(composed config, dry-run report) of a recipe's recorded overrides, in process."""
    entry, overrides = recorded_overrides(tmp_path, recipe, *args, **env)
    cfg = dry_run.compose_config(overrides, entry)
    return cfg, dry_run.check_config(cfg, entry)


# ----------------------------------------------------------------------------------------- real subprocess runs
@pytest.mark.slow  # fresh interpreter / subprocess
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_dry_run_end_to_end(tmp_path, recipe):
    """The unmodified script, DRY_RUN=1, real interpreter: exits 0, prints the resolved settings, writes only the
    JSON it was asked for (no log, no Hydra outputs/ folder)."""
    out_json = tmp_path / "out" / "settings.json"
    # SKIP_DOCTOR: the doctor starts fresh interpreters and a Ray worker (most of a minute on 2 shared cores); its
    # own tests cover it, and test_doctor_failure_stops_the_script_before_verl covers the recipe's call to it.
    proc = subprocess.run(["bash", RECIPES[recipe]], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_env(tmp_path, PYTHON=sys.executable, DRY_RUN=1, DRY_RUN_JSON=out_json, SKIP_DOCTOR=1))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[dry-run] OK" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["out"]

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
    assert settings["optimizer_steps_per_rollout"] == (8 if recipe == "moe_qwen3_30b_a3b" else 4)  # 256 / 32
    assert settings["actor_strategy"] == ("megatron" if recipe == "moe_qwen3_30b_a3b" else "fsdp2")
    assert settings["logger"] == ["console", "file"]


@pytest.mark.slow  # fresh interpreter / subprocess
def test_misspelt_override_is_rejected(tmp_path):
    proc = subprocess.run(
        ["bash", RECIPES["gsm8k"], "actor_rollout_ref.actor.ppo_mini_bach_size=8"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=_env(tmp_path, PYTHON=sys.executable, DRY_RUN=1, SKIP_DOCTOR=1),
    )
    assert proc.returncode == dry_run.EXIT_COMPOSE, proc.stderr[-2000:]
    assert "REJECTED" in proc.stderr and "ppo_mini_bach_size" in proc.stderr


# ----------------------------------------------------------------------------------------- the recipes' shape
def _code_lines(path):
    return [line.strip() for line in open(path) if line.strip() and not line.lstrip().startswith("#")]


def test_the_recipes_share_no_block_beyond_a_few_lines():
    """The shared run lives once, in common.sh: any two recipes have at most a few identical consecutive lines (the
    `source`, the --help line and the launch lines), so a change to the shared run cannot be made in one recipe only."""
    longest = 0
    names = sorted(RECIPES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            la, lb = _code_lines(RECIPES[a]), _code_lines(RECIPES[b])
            run = [[0] * (len(lb) + 1) for _ in range(len(la) + 1)]
            for x in range(len(la)):
                for y in range(len(lb)):
                    if la[x] == lb[y]:
                        run[x + 1][y + 1] = run[x][y] + 1
                        longest = max(longest, run[x + 1][y + 1])
    assert 3 <= longest <= 6, longest  # >= 3: the launch lines themselves are shared, so the check sees the files


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_the_final_command_is_in_the_recipe_itself(recipe):
    lines = _code_lines(RECIPES[recipe])
    assert lines[-1] == ('"$PYTHON" -m "$ENTRY" "${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" '
                         '"${TRAINER[@]}" "$@"')
    assert lines[-4].startswith('drpo_compose "$@"; set -- "${USER_OVERRIDES[@]}"')


def test_the_override_groups_are_named_arrays_in_common_sh():
    text = open(os.path.join(RECIPE_DIR, "common.sh")).read()
    for group in ("DATA", "ALGORITHM", "ACTOR", "ROLLOUT", "TRAINER"):
        assert f"\n  {group}=(" in text, group


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


def test_fully_async_without_the_module_is_one_clear_line(tmp_path):
    """A verl without verl.experimental.fully_async_policy (it is moving to verl-recipe): a message, not an
    ImportError. The real interpreter, with a stand-in `verl` package first on its path."""
    (tmp_path / "shadow" / "verl").mkdir(parents=True)
    (tmp_path / "shadow" / "verl" / "__init__.py").write_text("")
    proc = subprocess.run(["bash", RECIPES["gsm8k"]], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=_env(tmp_path, PYTHON=sys.executable, PYTHONPATH=tmp_path / "shadow",
                                   TRAINER_MODE="fully_async", DRY_RUN=1, SKIP_DOCTOR=1))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TRAINER_MODE=fully_async" in lines[0] and "verl-recipe" in lines[0], proc.stderr


BAD_VALUES = [
    ({"PPO_MINI_BATCH_SIZE": "abc"}, "PPO_MINI_BATCH_SIZE=abc: must be an integer >= 1"),
    ({"TRAIN_BATCH_SIZE": "-64"}, "TRAIN_BATCH_SIZE=-64: must be an integer >= 1"),
    ({"ROLLOUT_N": "08"}, "ROLLOUT_N=08: must be an integer"),
    ({"LOSS_MODE": "drpoo"}, "LOSS_MODE=drpoo: unknown loss mode"),
    ({"DRPO_DELTA": "abc"}, "DRPO_DELTA=abc: must be a finite number >= 1e-06"),
    ({"LOSS_MODE": "dppo_tv", "DPPO_TV_DELTA": "-0.2"}, "DPPO_TV_DELTA=-0.2: must be a finite number >= 1e-06"),
    ({"TRAINER_MODE": "async"}, "TRAINER_MODE=async: must be one of: sync colocate_async"),
    ({"TRAINER_MODE": "colocate_async", "STALENESS": "-1"}, "STALENESS=-1: must be an integer >= 0"),
    ({"TRAINER_MODE": "fully_async", "STALENESS": "half"}, "STALENESS=half: must be a number >= 0"),
    ({"TRAINER_MODE": "colocate_async", "STALENESS_STRATEGY": "keep"}, "STALENESS_STRATEGY=keep: must be one of"),
    ({"TRAINER_MODE": "separate_async", "ROLLOUT_GPUS_PER_NODE": "8"}, "ROLLOUT_GPUS_PER_NODE=8: must be less than"),
    ({"TRAINER_MODE": "separate_async", "ROLLOUT_GPUS_PER_NODE": "3", "ROLLOUT_TP": "2"},
     "ROLLOUT_GPUS_PER_NODE=3 with ROLLOUT_TP=2: verl builds 1 replica(s) of 2 GPUs and leaves 1 GPU(s) idle"),
    ({"TRAINER_MODE": "fully_async", "ROLLOUT_GPUS_PER_NODE": "1", "ROLLOUT_TP": "2"},
     "ROLLOUT_GPUS_PER_NODE=1 with ROLLOUT_TP=2: verl builds 0 replica(s)"),
    ({"LR": "fast"}, "LR=fast: must be a number > 0"),
    ({"TEMPERATURE": "0"}, "TEMPERATURE=0: must be a number > 0"),
    ({"GPU_MEMORY_UTILIZATION": "1.5"}, "GPU_MEMORY_UTILIZATION=1.5: must be a number > 0 and <= 1"),
    ({"USE_DYNAMIC_BSZ": "yes"}, "USE_DYNAMIC_BSZ=yes: must be one of: True False"),
    ({"USE_DYNAMIC_BSZ": "True", "PPO_MAX_TOKEN_LEN_PER_GPU": "1000"}, "PPO_MAX_TOKEN_LEN_PER_GPU=1000: must be >= "),
    ({"MODEL_SIZE": "2B"}, "MODEL_SIZE=2B: must be one of"),
    ({"DRY_RUN": "yes"}, "DRY_RUN=yes: must be one of: 0 1"),
    ({"LOGGER": "console"}, "LOGGER=console: must be a list"),
    ({"REWARD": "mathverify"}, "REWARD=mathverify: must be one of: default math_verify"),
    ({"TRAIN_BATCH_SIZE": "60"}, "TRAIN_BATCH_SIZE=60: must be a multiple of PPO_MINI_BATCH_SIZE=16"),
]


@pytest.mark.parametrize("env,message", BAD_VALUES, ids=[next(iter(e)) + "=" + e[next(iter(e))] for e, _ in BAD_VALUES])
def test_a_bad_value_is_one_clear_line_before_anything_runs(tmp_path, env, message):
    env = {"DRY_RUN": 1, **env}
    proc, calls = record_calls(tmp_path, "gsm8k", **env)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith("run_drpo_gsm8k.sh: "), lines[0]  # raised in bash or in Python, named alike
    assert "unbound" not in proc.stderr
    assert calls == []  # neither the doctor nor verl ran


@pytest.mark.parametrize("script", ["gsm8k", "sweep"])
def test_help_is_the_recipes_own_variables_in_a_screenful(tmp_path, script):
    path = SWEEP if script == "sweep" else RECIPES[script]
    proc, calls = record_calls(tmp_path, None, "--help", script=path)
    assert proc.returncode == 0, proc.stderr
    assert calls == []  # no doctor, no Hydra help
    lines = proc.stdout.splitlines()
    assert len(lines) <= 63  # 60 before ENGINE, ROLLOUT, PRECISION (issue 21): the coordinator may fold them
    assert "TRAINER_MODE: sync | colocate_async | separate_async | fully_async" in proc.stdout
    for name in (("RECIPE", "LOSS_MODES", "SEEDS") if script == "sweep" else
                 ("PPO_MINI_BATCH_SIZE", "STALENESS", "LOGGER", "USE_DYNAMIC_BSZ", "MAX_RESPONSE_LENGTH")):
        assert any(line.split()[:1] == [name] for line in lines), name
    # the loss modes come from the table, through the real interpreter
    real = subprocess.run(["bash", path, "-h"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=_env(tmp_path, PYTHON=sys.executable))
    assert "LOSS_MODE: drpo | mask_drpo | spo" in real.stdout and "DRPO_DELTA" in real.stdout


# names and paths, any text verl accepts (a missing data file or model is verl's own error, after the doctor)
FREE_TEXT_VARIABLES = {"MODEL_PATH", "MODEL_TAG", "DATA_DIR", "TRAIN_FILES", "VAL_FILES", "PROJECT_NAME",
                       "EXPERIMENT_NAME", "VERL_FILE_LOGGER_ROOT", "DRY_RUN_JSON"}


@pytest.mark.slow  # one recipe run per variable
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_variable_of_help_refuses_garbage_before_anything_runs(tmp_path, recipe):
    """docs/recipes.md: bad values stop the recipe before anything runs. Every variable --help lists, set to garbage
    in a real (not dry) launch: exit 2, one line naming it, and neither the doctor nor verl was started."""
    proc, _ = record_calls(tmp_path, recipe, "--help")
    listed = [line.split()[0] for line in proc.stdout.split("Variables (default, meaning):")[1].splitlines()
              if line.startswith("  ") and line.split()[0].isupper()]
    assert {"LOSS_MODE", "STALENESS_STRATEGY", "MAX_RESPONSE_LENGTH"} <= set(listed), listed
    accepted = []
    for name in listed:
        if name in FREE_TEXT_VARIABLES or (name == "MODEL_SIZE" and recipe != "gsm8k"):
            continue  # MODEL_SIZE: any value is refused by the one-model recipes (their own test)
        proc, calls = record_calls(tmp_path, recipe, **{"DRY_RUN": 0, name: "garbage!"})
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[recipe]")]
        if not (proc.returncode == 2 and calls == [] and len(lines) == 1 and f"{name}=garbage!" in lines[0]):
            accepted.append((name, proc.returncode, lines[:2]))
    assert not accepted, accepted


@pytest.mark.slow  # the real interpreter imports verl's Tracking
def test_a_real_launch_checks_the_logger_against_verls_backends_first(tmp_path):
    proc = subprocess.run(["bash", RECIPES["gsm8k"]], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=_env(tmp_path, PYTHON=sys.executable, SKIP_DOCTOR=1, LOGGER='["console","fiel"]'))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "LOGGER=" in lines[0] and "does not know fiel" in lines[0], proc.stderr
    assert "file" in lines[0] and "tensorboard" in lines[0]  # verl's own list
    assert not (tmp_path / "runs").exists()


def test_default_python_is_the_projects_venv_and_an_explicit_one_wins(tmp_path):
    """With PYTHON unset the recipe uses <its repository>/.venv/bin/python, wherever it is called from."""
    repo = tmp_path / "repo"
    shutil.copytree(RECIPE_DIR, repo / "recipe" / "drpo")
    (repo / ".venv" / "bin").mkdir(parents=True)
    os.symlink(FAKE_PYTHON, repo / ".venv" / "bin" / "python")
    script = str(repo / "recipe" / "drpo" / "run_drpo_gsm8k.sh")
    proc, calls = record_calls(tmp_path, None, script=script, PYTHON="", DRY_RUN=1, SKIP_DOCTOR=1)
    assert proc.returncode == 0, proc.stderr
    assert [c[:2] for c in calls] == [["-m", "verl_drpo.dry_run"]]  # the .venv's (fake) interpreter ran

    other = tmp_path / "other_python"
    other.write_text('#!/usr/bin/env bash\necho "other $*" >&2\nexit 7\n')
    other.chmod(0o755)
    proc, calls = record_calls(tmp_path, None, script=script, PYTHON=other, DRY_RUN=1, SKIP_DOCTOR=1)
    assert calls == [] and "other -m verl_drpo overrides drpo" in proc.stderr


def test_runtime_env_fallback_is_one_variable_away(tmp_path):
    entry, overrides = recorded_overrides(tmp_path, USE_RUNTIME_ENV_PLUGIN=1)
    key = "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
    assert key in overrides
    report = dry_run.run_dry(overrides, entry)
    assert report.settings["external_modules_env"] == "verl_drpo.plugin"


@pytest.mark.parametrize("form", ["", "+", "++"])
def test_every_hydra_override_form_of_a_recipe_key_works_last_one_wins(tmp_path, form):
    """`key=v`, `+key=v` and `++key=v` for a key the recipe adds with '+' (the config hook's fields) all compose, and
    the last one wins (a plain `key=v` was rejected when the recipe dropped its own '+key' for it)."""
    cfg, report = composed(tmp_path, "gsm8k", f"{DRPO_DELTA_KEY}=0.3", f"{form}{DRPO_DELTA_KEY}=0.2")
    assert report.settings["drpo_delta"] == 0.2
    # and a key of verl's own YAML, set by the recipe, in the forms Hydra accepts for it
    cfg, _ = composed(tmp_path, "gsm8k", "actor_rollout_ref.actor.optim.lr=3e-6", "++actor_rollout_ref.actor.optim.lr=2e-6")
    assert cfg.actor_rollout_ref.actor.optim.lr == 2e-6


def test_the_runtime_env_key_takes_every_form_too(tmp_path):
    key = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"
    for form in ("", "+", "++"):
        _, report = composed(tmp_path, "gsm8k", f"{form}{key}=other.module", USE_RUNTIME_ENV_PLUGIN=1)
        assert report.settings["external_modules_env"] == "other.module", form


# ----------------------------------------------------------------------------------------- in-process matrix
EXPECTED_LOSS_SETTINGS = {
    "drpo": {"drpo_delta": 12.5},
    "mask_drpo": {"drpo_delta": 12.5, "mask_drpo_tv_delta": 0.15},
    "spo": {"spo_epsilon": 12.5},
    "pg_is": {},
    "dppo_tv": {"clip_ratio_low": 0.15, "clip_ratio_high": 0.15, "clip_ratio_c": 10000.0},
    "dppo_kl": {"clip_ratio_low": 0.05, "clip_ratio_high": 0.05, "clip_ratio_c": 10000.0},
    "vanilla": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0},
    # the baselines verl ships, with their papers' (or verl examples') settings
    "cispo": {"clip_ratio_low": 10.0, "clip_ratio_high": 0.2},
    "gspo": {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4},
    "sapo": {"tau_pos": 1.0, "tau_neg": 1.05},
    "dro": {"dro_beta": 0.05},
}


def test_every_bypass_mode_of_the_table_has_its_expected_settings_here():
    assert set(EXPECTED_LOSS_SETTINGS) == set(BYPASS_MODES)


@pytest.mark.parametrize("loss_mode", BYPASS_MODES)
def test_loss_mode_sets_the_papers_hyper_parameters(tmp_path, loss_mode):
    entry, overrides = recorded_overrides(tmp_path, LOSS_MODE=loss_mode)
    report = dry_run.run_dry(overrides, entry)
    assert report.settings["loss_mode"] == loss_mode
    for key, value in EXPECTED_LOSS_SETTINGS[loss_mode].items():
        assert report.settings[key] == value, key
    assert report.settings["bypass_mode"] is True
    assert not [w for w in report.warnings if "not anchored" in w]


def test_drpo_prox_selects_verls_decoupled_mode_with_untruncated_token_weights(tmp_path):
    """LOSS_MODE=drpo_prox: the table's decoupled overrides come after the recipe's bypass-mode lines and win."""
    entry, overrides = recorded_overrides(tmp_path, LOSS_MODE="drpo_prox", DRPO_DELTA="0.2")
    report = dry_run.run_dry(overrides, entry)
    s = report.settings
    assert (s["loss_mode"], s["drpo_delta"], s["bypass_mode"], s["rollout_is"]) == ("drpo_prox", 0.2, False, "token")
    assert s["rollout_is_threshold"] >= math.exp(20) and s["rollout_is_batch_normalize"] is False
    assert not [w for w in report.warnings if "anchor" in w]


@pytest.mark.slow  # fresh interpreter / subprocess
def test_a_real_launch_of_drpo_prox_refuses_a_truncating_override_before_verl_starts(tmp_path):
    """The loss cannot see verl's rollout_correction section, so the recipe runs the dry run's checks first."""
    proc, calls = record_calls(tmp_path, "gsm8k", "trainer.total_training_steps=2", LOSS_MODE="drpo_prox",
                               SKIP_DOCTOR=1, FAKE_REAL_DRY_RUN=1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = [c[1] for c in calls]
    assert modules == ["verl_drpo.dry_run", "verl.trainer.main_ppo"]
    proc, calls = record_calls(tmp_path, "gsm8k", "algorithm.rollout_correction.rollout_is_threshold=2.0",
                               LOSS_MODE="drpo_prox", SKIP_DOCTOR=1, FAKE_REAL_DRY_RUN=1)
    assert proc.returncode != 0
    assert "rollout_is_threshold=2.0" in proc.stderr and "nothing was started" in proc.stderr
    assert [c[1] for c in calls] == ["verl_drpo.dry_run"]  # verl's trainer never started


def test_other_modes_start_without_the_extra_preflight(tmp_path):
    _, calls = record_calls(tmp_path, "gsm8k", LOSS_MODE="drpo", SKIP_DOCTOR=1, FAKE_REAL_DRY_RUN=1)
    assert [c[1] for c in calls] == ["verl.trainer.main_ppo"]


def test_the_authors_name_for_drpo_runs_drpo(tmp_path):
    """LOSS_MODE=spo_adaptive_eps (the authors' verl fork) selects DRPO with DRPO's settings."""
    import verl  # noqa: F401  (loads the plugin's registrations)
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    if "spo_adaptive_eps" not in POLICY_LOSS_REGISTRY:
        pytest.skip("verl_drpo.plugin does not register the alias spo_adaptive_eps in this checkout (issue 13.2)")
    _, report = composed(tmp_path, LOSS_MODE="spo_adaptive_eps")
    assert report.settings["loss_mode"] == "spo_adaptive_eps" and report.settings["drpo_delta"] == 12.5


def test_loss_hyper_parameters_come_from_their_recipe_variables(tmp_path):
    """The table reads DRPO_DELTA, DPPO_TV_DELTA, ... from the environment the recipe passes on."""
    _, report = composed(tmp_path, LOSS_MODE="drpo", DRPO_DELTA="0.2")
    assert report.settings["drpo_delta"] == 0.2
    _, report = composed(tmp_path, LOSS_MODE="dppo_tv", DPPO_TV_DELTA="0.2")
    assert report.settings["clip_ratio_low"] == report.settings["clip_ratio_high"] == 0.2


@pytest.mark.parametrize("recipe,horizon", [("gsm8k", 1024), ("math", 3072), ("dapo_qwen3_4b", 8192)])
def test_the_loss_horizon_is_the_maximum_response_length(tmp_path, recipe, horizon):
    """seq-mean-token-sum-norm divides by loss_scale_factor; unset, verl uses each micro-batch's longest response."""
    cfg, _ = composed(tmp_path, recipe)
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum-norm"
    assert cfg.actor_rollout_ref.actor.loss_scale_factor == horizon == cfg.data.max_response_length
    cfg, _ = composed(tmp_path, recipe, MAX_RESPONSE_LENGTH=2048)
    assert cfg.actor_rollout_ref.actor.loss_scale_factor == 2048
    # a Hydra override of the length moves the horizon with it (one value, not a copy left behind)
    cfg, report = composed(tmp_path, recipe, "data.max_response_length=3072")
    assert cfg.actor_rollout_ref.actor.loss_scale_factor == 3072 == report.settings["loss_scale_factor"]


@pytest.mark.parametrize("recipe", ["gsm8k", "math"])
@pytest.mark.parametrize("trainer_mode", TRAINER_MODES)
def test_trainer_modes_validate(tmp_path, recipe, trainer_mode):
    staleness = {} if trainer_mode == "sync" else {"STALENESS": 3}  # sync refuses a STALENESS
    entry, overrides = recorded_overrides(tmp_path, recipe, TRAINER_MODE=trainer_mode, **staleness)
    assert entry == ("fully_async" if trainer_mode == "fully_async" else "main_ppo")
    s = dry_run.run_dry(overrides, entry).settings
    assert s["trainer_mode"] == trainer_mode
    if trainer_mode == "separate_async":
        assert s["parameter_sync_step"] * s["ppo_mini_batch_size"] == s["train_batch_size"]
        assert s["rollout_pool"] == "1x4" and s["n_gpus_per_node"] == 4
    if trainer_mode == "fully_async":
        assert s["staleness_threshold"] == 3
        assert s["trigger_parameter_sync_step"] == 4


@pytest.mark.parametrize("trainer_mode", ["colocate_async", "separate_async"])
@pytest.mark.parametrize("staleness", [0, 1, 3])
def test_staleness_sets_the_prefetch_depth_and_a_consistent_drop_cap(tmp_path, trainer_mode, staleness):
    """STALENESS=k: k batches prefetched (the lag verl produces) and groups spanning more than k+1 steps dropped, so
    trained data is at most k policy versions behind; the cap no longer drops the prefetched batches themselves."""
    cfg, _ = composed(tmp_path, TRAINER_MODE=trainer_mode, STALENESS=staleness)
    v1 = cfg.trainer.v1
    assert v1[trainer_mode].num_warmup_batches == staleness
    assert v1.sampler.max_off_policy_threshold == staleness + 1
    assert v1.sampler.max_off_policy_strategy == "wait"  # dropless by default: nothing generated and thrown away


@pytest.mark.parametrize("strategy", ["wait", "drop"])
def test_the_staleness_strategy_is_dropless_unless_drop_is_asked_for(tmp_path, strategy):
    cfg, _ = composed(tmp_path, TRAINER_MODE="colocate_async", STALENESS_STRATEGY=strategy)
    assert cfg.trainer.v1.sampler.max_off_policy_strategy == strategy


@pytest.mark.parametrize("staleness", ["0", "0.0", "0.5", "2"])
def test_fully_async_staleness_is_any_number_from_zero(tmp_path, staleness):
    proc, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=1, TRAINER_MODE="fully_async",
                               STALENESS=staleness)
    assert proc.returncode == 0, proc.stderr
    assert f"async_training.staleness_threshold={staleness}" in overrides_of(dry_run_argv(calls))[1]


def test_staleness_default_is_verls_prefetch_depth(tmp_path):
    cfg, _ = composed(tmp_path, TRAINER_MODE="colocate_async")
    assert cfg.trainer.v1.colocate_async.num_warmup_batches == 1
    assert cfg.trainer.v1.sampler.max_off_policy_threshold == 2


def test_separate_async_serves_rollout_from_the_standalone_pool_only(tmp_path):
    """hybrid_engine=False: verl builds no colocated rollout replicas on the trainer GPUs (trainer_separate_async.py)."""
    cfg, report = composed(tmp_path, TRAINER_MODE="separate_async", N_GPUS_PER_NODE=4, ROLLOUT_GPUS_PER_NODE=2)
    assert cfg.actor_rollout_ref.hybrid_engine is False
    assert report.settings["rollout_pool"] == "1x2" and report.settings["n_gpus_per_node"] == 2


def test_separate_async_runs_verls_workers_at_warn_and_refuses_info(tmp_path):
    """verl 0.9.1's separate_async _setup calls logger.info(..., flush=True) (a TypeError at INFO): the recipe runs
    verl's workers at WARN, and an explicit INFO is one clear line, not a crash after the cluster started."""
    entry, overrides = recorded_overrides(tmp_path, TRAINER_MODE="separate_async")
    assert "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_LOGGING_LEVEL=WARN" in overrides
    entry, overrides = recorded_overrides(tmp_path, TRAINER_MODE="sync")
    assert not any("VERL_LOGGING_LEVEL" in o for o in overrides)
    proc, _ = record_calls(tmp_path, "gsm8k", DRY_RUN=1, TRAINER_MODE="separate_async", VERL_LOGGING_LEVEL="INFO")
    assert proc.returncode == 2 and "VERL_LOGGING_LEVEL=INFO" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_checkpoints_are_on_by_default_bounded_and_off_only_when_asked(tmp_path, recipe):
    """verl saves only when save_freq > 0 (then also at the last step): a day-long run must not end without weights."""
    cfg, report = composed(tmp_path, recipe)
    assert cfg.trainer.save_freq == 50 and cfg.trainer.max_actor_ckpt_to_keep == 2
    assert report.settings["save_freq"] == 50 and report.settings["resume_mode"] == "auto"
    cfg, _ = composed(tmp_path, recipe, SAVE_FREQ=-1, MAX_CKPT_TO_KEEP=5)
    assert cfg.trainer.save_freq == -1 and cfg.trainer.max_actor_ckpt_to_keep == 5


@pytest.mark.parametrize("env,message", [({"SAVE_FREQ": "0"}, "SAVE_FREQ=0: say -1 for no checkpoints"),
                                         ({"MAX_CKPT_TO_KEEP": "0"}, "MAX_CKPT_TO_KEEP=0: must be an integer >= 1")])
def test_a_checkpoint_setting_that_keeps_nothing_is_refused(tmp_path, env, message):
    proc, _ = record_calls(tmp_path, "gsm8k", DRY_RUN=1, **env)
    assert proc.returncode == 2 and message in proc.stderr


def test_model_size_variable_selects_the_model(tmp_path):
    _, overrides = recorded_overrides(tmp_path, MODEL_SIZE="3B")
    assert "actor_rollout_ref.model.path=Qwen/Qwen2.5-3B-Instruct" in overrides


@pytest.mark.parametrize("logger", ['["console","file","tensorboard"]', '["console","file","wandb"]'])
def test_logger_is_one_variable(tmp_path, logger):
    _, report = composed(tmp_path, LOGGER=logger)
    assert report.settings["logger"] == json.loads(logger)


def test_token_budget_batching_reaches_actor_ref_and_rollout(tmp_path):
    cfg, _ = composed(tmp_path, USE_DYNAMIC_BSZ="True", PPO_MAX_TOKEN_LEN_PER_GPU=6144)
    arr = cfg.actor_rollout_ref
    assert arr.actor.use_dynamic_bsz and arr.ref.log_prob_use_dynamic_bsz and arr.rollout.log_prob_use_dynamic_bsz
    assert arr.actor.ppo_max_token_len_per_gpu == 6144
    cfg, _ = composed(tmp_path)  # default: off, budget twice the longest sequence
    assert not cfg.actor_rollout_ref.actor.use_dynamic_bsz
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 2 * (512 + 1024)


def test_token_budgets_follow_verls_rule_two_and_three_sequences(tmp_path):
    """Issue 19 item 6: verl's rule, 2 x (prompt + response) per GPU for the update and 3 x for the log-prob passes
    (the DAPO recipe had 10,240 = 1 x, twice the micro-batches); an explicit budget still wins."""
    cfg, _ = composed(tmp_path, "dapo_qwen3_4b", LOSS_MODE="drpo_prox")  # drpo_prox: its log-prob pass runs
    arr, seq = cfg.actor_rollout_ref, 2048 + 8192
    assert arr.actor.use_dynamic_bsz is True and arr.actor.ppo_max_token_len_per_gpu == 2 * seq
    assert arr.rollout.log_prob_max_token_len_per_gpu == 3 * seq
    cfg, _ = composed(tmp_path, USE_DYNAMIC_BSZ="True", LOSS_MODE="drpo_prox", LOG_PROB_MAX_TOKEN_LEN_PER_GPU=5000)
    assert cfg.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu == 5000
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 2 * (512 + 1024)


def test_validation_is_greedy_by_default_and_sampled_on_request(tmp_path):
    """verl's agent loop reads only val_kwargs.temperature (not do_sample): greedy validation needs temperature 0."""
    cfg, _ = composed(tmp_path)
    val = cfg.actor_rollout_ref.rollout.val_kwargs
    assert val.temperature == 0 and val.do_sample is False and val.n == 1
    cfg, _ = composed(tmp_path, VAL_DO_SAMPLE="True", VAL_N=4)
    val = cfg.actor_rollout_ref.rollout.val_kwargs
    assert val.temperature == 1.0 and val.do_sample is True and val.n == 4


def test_the_papers_dapo_recipe_is_the_released_configuration(tmp_path):
    cfg, report = composed(tmp_path, "dapo_qwen3_4b")
    s, arr = report.settings, cfg.actor_rollout_ref
    assert s["model"] == "Qwen/Qwen3-4B-Base"
    assert s["train_batch_size"] == 64 and s["rollout_n"] == 8 and s["ppo_mini_batch_size"] == 16
    assert s["optimizer_steps_per_rollout"] == 4 and s["lr"] == 1e-6 and s["grad_clip"] == 1.0
    assert s["max_response_length"] == 8192 and arr.actor.loss_scale_factor == 8192
    assert s["loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert s["temperature"] == 1.0 and s["top_p"] == 1.0 and s["top_k"] == -1
    assert s["use_kl_loss"] is False and s["use_kl_in_reward"] is False and s["entropy_coeff"] == 0
    assert s["norm_adv_by_std_in_grpo"] is False and s["bypass_mode"] is True
    val = arr.rollout.val_kwargs
    assert val.n == 16 and val.do_sample is True and val.temperature == 1.0 and val.top_p == 1.0
    assert [os.path.basename(f) for f in s["val_files"]] == ["aime24.parquet", "aime25.parquet"]
    assert arr.actor.use_dynamic_bsz is True and arr.actor.ppo_max_token_len_per_gpu == 2 * (2048 + 8192)
    assert arr.rollout.tensor_model_parallel_size == 2 and s["total_training_steps"] == 800
    # the chat-template switch docs/reproduction.md suggests composes
    cfg, _ = composed(tmp_path, "dapo_qwen3_4b", "+data.apply_chat_template_kwargs.enable_thinking=True")
    assert cfg.data.apply_chat_template_kwargs.enable_thinking is True


# ----------------------------------------------------------------------------------------- REWARD=math_verify
@pytest.mark.slow  # fresh interpreter / subprocess
def test_math_verify_reward_without_the_package_is_one_clear_line(tmp_path):
    proc = subprocess.run(["bash", RECIPES["dapo_qwen3_4b"]], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=_env(tmp_path, PYTHON=sys.executable, REWARD="math_verify", DRY_RUN=1,
                                                 SKIP_DOCTOR=1))
    if importlib.util.find_spec("math_verify") is not None:
        pytest.skip("math-verify is installed here")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "pip install math-verify" in lines[0], proc.stderr


def test_math_verify_reward_is_verls_custom_reward_function(tmp_path):
    """REWARD=math_verify selects verl_drpo.data.rewards.math_verify_score (tested in test_rewards_on_cpu.py) through
    verl's reward.custom_reward_function hook; the default keeps verl's scorer of the data_source."""
    cfg, _ = composed(tmp_path, "gsm8k", REWARD="math_verify")  # the stand-in's package probes succeed
    assert cfg.reward.custom_reward_function.path == "pkg://verl_drpo.data.rewards"
    assert cfg.reward.custom_reward_function.name == "math_verify_score"
    cfg, _ = composed(tmp_path, "gsm8k")
    assert cfg.reward.custom_reward_function.path is None
    cfg, _ = composed(tmp_path, "dapo_qwen3_4b", REWARD="default")
    assert cfg.reward.custom_reward_function.path is None


def test_the_dapo_recipe_grades_with_the_papers_math_verify_by_default(tmp_path):
    """Issue 19 item 7: the paper's recipe uses the paper's reward (Math-Verify, 1/0), not math_dapo's +-1."""
    cfg, _ = composed(tmp_path, "dapo_qwen3_4b")
    assert cfg.reward.custom_reward_function.path == "pkg://verl_drpo.data.rewards"
    assert cfg.reward.custom_reward_function.name == "math_verify_score"


def test_the_dapo_recipe_without_math_verify_is_one_line_before_launch(tmp_path):
    """A PYTHON that cannot import math_verify: the DAPO recipe's default stops with one line naming the package."""
    no_math_verify = tmp_path / "python_without_math_verify.sh"
    no_math_verify.write_text('#!/usr/bin/env bash\n'
                              'if [[ "${1:-}" == -c && "${2:-}" == *math_verify* ]]; then exit 1; fi\n'
                              f'exec {FAKE_PYTHON} "$@"\n')
    no_math_verify.chmod(0o755)
    proc, calls = record_calls(tmp_path, "dapo_qwen3_4b", PYTHON=no_math_verify, SKIP_DOCTOR=1)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "math-verify" in lines[0], proc.stderr
    assert not calls  # nothing launched
    proc, calls = record_calls(tmp_path, "dapo_qwen3_4b", PYTHON=no_math_verify, SKIP_DOCTOR=1, REWARD="default")
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------------- dry_run's own checks
def test_unregistered_loss_mode_is_caught(tmp_path):
    entry, overrides = recorded_overrides(tmp_path)
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides, "actor_rollout_ref.actor.policy_loss.loss_mode=not_a_loss"], entry)
    assert err.value.exit_code in (dry_run.EXIT_INVALID, dry_run.EXIT_UNREGISTERED)
    assert "not_a_loss" in str(err.value)


def test_unregistered_loss_mode_behind_verls_own_config_class(tmp_path):
    """verl's PolicyLossConfig accepts any loss_mode string; only the registry check stops it before Ray."""
    entry, overrides = recorded_overrides(tmp_path)
    overrides = [o for o in overrides if "drpo_delta" not in o]
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides,
                         "actor_rollout_ref.actor.policy_loss._target_=verl.workers.config.PolicyLossConfig",
                         "actor_rollout_ref.actor.policy_loss.loss_mode=not_a_loss"], entry)
    assert err.value.exit_code == dry_run.EXIT_UNREGISTERED and "doctor" in str(err.value)


def test_unknown_plus_field_is_caught_by_validation(tmp_path):
    entry, overrides = recorded_overrides(tmp_path)
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*overrides, "+actor_rollout_ref.actor.policy_loss.drpo_detla=1.0"], entry)
    assert err.value.exit_code == dry_run.EXIT_INVALID and "drpo_detla" in str(err.value)


def test_separate_async_batch_rule_is_checked(tmp_path):
    entry, overrides = recorded_overrides(tmp_path, TRAINER_MODE="separate_async")
    with pytest.raises(dry_run.DryRunError, match="parameter_sync_step"):
        dry_run.run_dry([*overrides, "trainer.v1.separate_async.parameter_sync_step=3"], entry)


def test_truncated_sampling_is_warned(tmp_path):
    entry, overrides = recorded_overrides(tmp_path)
    report = dry_run.run_dry([*overrides, "actor_rollout_ref.rollout.top_p=0.9"], entry)
    assert any("truncates the sampling distribution" in w for w in report.warnings)


def test_non_unit_temperature_is_warned_once(tmp_path):
    _, report = composed(tmp_path, TEMPERATURE="0.7")
    assert report.settings["temperature"] == 0.7
    assert len([w for w in report.warnings if "temperature" in w]) == 1


# ----------------------------------------------------------------------------------------- outputs are never lost
def test_a_real_run_never_truncates_an_earlier_runs_metrics(tmp_path):
    """verl's file logger opens <experiment>.jsonl with "wb"; the recipe points a re-run at a fresh file instead."""
    metrics = tmp_path / "runs" / "verl_drpo_gsm8k"
    metrics.mkdir(parents=True)
    (metrics / "exp.jsonl").write_text('{"step": 1}\n')
    (metrics / "exp.run2.jsonl").write_text('{"step": 1}\n')
    env_log = tmp_path / "env.log"
    proc, calls = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=0, EXPERIMENT_NAME="exp",
                               FAKE_ENV_LOG=env_log)
    assert proc.returncode == 0, proc.stderr
    assert env_log.read_text().strip() == f"VERL_FILE_LOGGER_PATH={metrics / 'exp.run3.jsonl'}"
    assert "exp.run3.jsonl" in proc.stderr
    # a first run keeps verl's own name
    proc, _ = record_calls(tmp_path, "gsm8k", SKIP_DOCTOR=1, DRY_RUN=0, EXPERIMENT_NAME="new", FAKE_ENV_LOG=env_log)
    assert env_log.read_text().splitlines()[-1] == "VERL_FILE_LOGGER_PATH="


def _sweep(tmp_path, *args, **env):
    calls_dir = _calls_dir(tmp_path)
    proc = subprocess.run(["bash", SWEEP, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path, PYTHON=FAKE_PYTHON, FAKE_PYTHON_DIR=calls_dir,
                                   FAKE_REAL_PYTHON=sys.executable, **env))
    return proc, _read_calls(calls_dir)


def test_sweep_runs_every_loss_mode_and_seed_and_appends_to_its_logs(tmp_path):
    logs = tmp_path / "runs" / "logs"
    logs.mkdir(parents=True)
    (logs / "math-drpo-sync-seed1.log").write_text("an earlier run's log\n")
    proc, calls = _sweep(tmp_path, "trainer.total_training_steps=2", LOSS_MODES="drpo vanilla", SEEDS="1 2",
                         RECIPE="math")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert calls[0] == ["-m", "verl_drpo", "doctor", "--quick"]  # once for the whole sweep
    checks, runs = calls[1:3], calls[3:]  # every loss mode's dry run first, then the runs
    assert [c[:2] for c in checks] == [["-m", "verl_drpo.dry_run"]] * 2
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
    assert sorted(os.listdir(logs)) == sorted(f"math-{m}-sync-seed{s}.log" for m, s in seen)
    kept = (logs / "math-drpo-sync-seed1.log").read_text()
    assert kept.startswith("an earlier run's log\n") and "=== sweep run math-drpo-sync-seed1" in kept


def test_sweep_dry_run_writes_no_log(tmp_path):
    logs = tmp_path / "runs" / "logs"
    logs.mkdir(parents=True)
    (logs / "gsm8k-drpo-sync-seed1.log").write_text("the real run's log\n")
    proc, calls = _sweep(tmp_path, DRY_RUN=1, LOSS_MODES="drpo", SEEDS="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [c[:2] for c in calls[1:]] == [["-m", "verl_drpo.dry_run"]]
    assert (logs / "gsm8k-drpo-sync-seed1.log").read_text() == "the real run's log\n"
    assert os.listdir(logs) == ["gsm8k-drpo-sync-seed1.log"]
    assert "no log written" in proc.stdout and "all runs finished" not in proc.stdout
    # and into a fresh root it creates nothing at all
    proc, _ = _sweep(tmp_path, DRY_RUN=1, LOSS_MODES="drpo", SEEDS="1", VERL_FILE_LOGGER_ROOT=tmp_path / "fresh")
    assert proc.returncode == 0 and not (tmp_path / "fresh").exists()


def test_a_sweep_checks_every_run_before_the_first_starts(tmp_path):
    """A typo in the last loss mode stops the sweep before the first (hours-long) run, not when it is reached."""
    proc, calls = _sweep(tmp_path, LOSS_MODES="drpo typo", SEEDS="1 2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not any(c[:2] == ["-m", "verl.trainer.main_ppo"] for c in calls)
    assert "LOSS_MODE=typo" in proc.stderr and "no run of the sweep was started" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("seeds", [" ", "   "])  # empty is the default list
def test_a_sweep_of_no_seeds_is_refused_not_validated(tmp_path, seeds):
    proc, calls = _sweep(tmp_path, DRY_RUN=1, SEEDS=seeds)
    assert proc.returncode == 2 and "SEEDS is empty" in proc.stderr and "validated" not in proc.stdout


@pytest.mark.parametrize("recipe", ["math", "dapo_qwen3_4b", "moe_qwen3_30b_a3b"])
def test_model_size_is_refused_by_the_one_model_recipes(tmp_path, recipe):
    proc, calls = record_calls(tmp_path, recipe, DRY_RUN=1, MODEL_SIZE="7B")
    assert proc.returncode == 2 and calls == [] or not any("dry_run" in " ".join(c) for c in calls)
    assert "MODEL_SIZE=7B" in proc.stderr and "MODEL_PATH" in proc.stderr


@pytest.mark.parametrize("staleness", ["abc", "2"])
def test_staleness_with_sync_is_refused_not_ignored(tmp_path, staleness):
    proc, calls = record_calls(tmp_path, "gsm8k", DRY_RUN=1, TRAINER_MODE="sync", STALENESS=staleness)
    assert proc.returncode == 2 and f"STALENESS={staleness}: TRAINER_MODE=sync" in proc.stderr
    assert not any("dry_run" in " ".join(c) for c in calls)


def test_sweep_bad_value_is_one_clear_line(tmp_path):
    proc, calls = _sweep(tmp_path, RECIPE="gsm9k")
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.strip() == "sweep.sh: RECIPE=gsm9k: must be one of: gsm8k math dapo_qwen3_4b moe_qwen3_30b_a3b"


@pytest.mark.parametrize("engine", ["fsdp2", "megatron"])
@pytest.mark.parametrize("rollout", ["vllm", "sglang"])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp8-rollout"])
def test_engine_rollout_and_precision_compose_from_verls_own_keys(tmp_path, engine, rollout, precision):
    """Every ENGINE x ROLLOUT x PRECISION composes against verl's schema and passes the dry run's checks (issue 21);
    composed only: no Megatron, SGLang or fp8 run happens on these machines."""
    cfg, _ = composed(tmp_path, "gsm8k", ENGINE=engine, ROLLOUT=rollout, PRECISION=precision)  # raises on a problem
    assert cfg.actor_rollout_ref.rollout.name == rollout
    assert cfg.actor_rollout_ref.rollout.calculate_log_probs is True  # the anchor mu, from either engine
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "drpo"
    rollout_cfg = cfg.actor_rollout_ref.rollout
    assert (rollout_cfg.get("quantization") == "fp8") == (precision == "fp8-rollout")
    assert (rollout_cfg.dtype == "float16") == (precision == "fp16")
    if engine == "megatron":
        assert "megatron" in cfg.actor_rollout_ref.actor and cfg.actor_rollout_ref.actor.strategy == "megatron"
        assert (cfg.actor_rollout_ref.actor.megatron.dtype == "float16") == (precision == "fp16")
    else:
        assert cfg.actor_rollout_ref.actor.strategy == "fsdp2"
        mixed = cfg.actor_rollout_ref.actor.fsdp_config.get("mixed_precision") or {}
        assert (mixed.get("param_dtype") == "fp16") == (precision == "fp16")


# ----------------------------------------------------------------------------------------- vLLM's share of a GPU
@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"moe_qwen3_30b_a3b"}))  # the MoE recipe's own: below
@pytest.mark.parametrize("trainer_mode,share", [("sync", 0.6), ("colocate_async", 0.6),
                                                ("separate_async", 0.8), ("fully_async", 0.8)])
def test_vllms_memory_share_follows_the_trainer_mode_and_a_set_value_wins(tmp_path, recipe, trainer_mode, share):
    """Issue 19 item 4: vLLM shares each GPU with the actor's resident state in sync / colocate_async, and has its
    GPUs to itself in separate_async / fully_async (verl's fully-async DAPO example uses 0.8). Before: one value for
    every mode (0.4 in the DAPO recipe, 0.6 elsewhere), on dedicated rollout GPUs too."""
    cfg, report = composed(tmp_path, recipe, TRAINER_MODE=trainer_mode)
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == share
    assert report.settings["gpu_memory_utilization"] == share  # what the dry run (DRY_RUN_JSON) shows
    cfg, report = composed(tmp_path, recipe, TRAINER_MODE=trainer_mode, GPU_MEMORY_UTILIZATION="0.45")
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.45 == report.settings["gpu_memory_utilization"]


# ----------------------------------------------------------------------------------------- log-prob passes
REF_LOG_PROB_KEYS = ("actor_rollout_ref.ref.log_prob_use_dynamic_bsz", "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
                     "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu")
OLD_LOG_PROB_BUDGET = "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu"


def _keys(overrides):
    return {o.lstrip("+").split("=", 1)[0] for o in overrides}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_log_prob_settings_are_passed_only_where_verl_runs_a_log_prob_pass(tmp_path, recipe):
    """Issue 19 item 8: in bypass mode (drpo and the other table modes) verl 0.9.1 runs no old-log-prob pass and
    builds no reference worker, so their budgets are not passed; drpo_prox (bypass_mode=False) gets the old-log-prob
    budget. What verl checks in every run stays: rollout.log_prob_micro_batch_size_per_gpu (validate_config) and
    rollout.log_prob_use_dynamic_bsz (the actor worker asserts it equals actor.use_dynamic_bsz)."""
    _, overrides = recorded_overrides(tmp_path, recipe, USE_DYNAMIC_BSZ="True")
    keys = _keys(overrides)
    assert OLD_LOG_PROB_BUDGET not in keys and not keys & set(REF_LOG_PROB_KEYS), sorted(keys)
    assert "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True" in overrides
    assert any(o.startswith("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=") for o in overrides)
    _, overrides = recorded_overrides(tmp_path, recipe, USE_DYNAMIC_BSZ="True", LOSS_MODE="drpo_prox",
                                      LOG_PROB_MAX_TOKEN_LEN_PER_GPU=40000)
    assert f"{OLD_LOG_PROB_BUDGET}=40000" in overrides and not _keys(overrides) & set(REF_LOG_PROB_KEYS)
    # a bypass_mode=False from the command line also runs the pass, and its budget follows
    _, overrides = recorded_overrides(tmp_path, recipe, "algorithm.rollout_correction.bypass_mode=False")
    assert OLD_LOG_PROB_BUDGET in _keys(overrides)


@pytest.mark.parametrize("dynamic", ["False", "True"])
def test_a_kl_term_gets_a_reference_worker_that_verl_accepts(tmp_path, dynamic):
    """A KL loss on the command line makes verl build a reference worker: its log-prob settings are then passed, and
    the composed config passes verl's validate_config (which, without dynamic batching, requires the reference's
    micro-batch size; before, the recipes never passed it)."""
    cfg, _ = composed(tmp_path, "gsm8k", "actor_rollout_ref.actor.use_kl_loss=True", USE_DYNAMIC_BSZ=dynamic,
                      LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=6)
    ref = cfg.actor_rollout_ref.ref
    assert ref.log_prob_micro_batch_size_per_gpu == 6 and ref.log_prob_use_dynamic_bsz is (dynamic == "True")
    assert ref.log_prob_max_token_len_per_gpu == 3 * (512 + 1024)
    _, overrides = recorded_overrides(tmp_path, "gsm8k", "++algorithm.use_kl_in_reward=true")
    assert set(REF_LOG_PROB_KEYS) <= _keys(overrides)


# ----------------------------------------------------------------------------------------- the MoE recipe (Megatron)
MOE = "moe_qwen3_30b_a3b"
MEGATRON_KEY = "actor_rollout_ref.actor.megatron."


def test_the_moe_recipe_is_verls_dppo_example_on_megatron(tmp_path):
    """Issue 21 item 2: verl's examples/dppo_trainer/run_qwen3_30b_a3b_megatron.sh, composed against verl's Megatron
    config (model_engine=megatron) with DRPO's anchor and loss; composed only, never run here."""
    cfg, report = composed(tmp_path, MOE)
    s, arr = report.settings, cfg.actor_rollout_ref
    assert s["model"] == "Qwen/Qwen3-30B-A3B-Base" and s["actor_strategy"] == "megatron"
    assert [os.path.basename(f) for f in (s["train_files"], s["val_files"])] == ["train.parquet", "aime24.parquet"]
    assert (s["train_batch_size"], s["ppo_mini_batch_size"], s["rollout_n"]) == (256, 32, 16)
    assert s["max_response_length"] == 8192 == arr.actor.loss_scale_factor and s["lr"] == 1e-6
    assert s["loss_agg_mode"] == "seq-mean-token-sum-norm" and s["bypass_mode"] is True
    assert arr.actor.use_dynamic_bsz is True and arr.actor.ppo_max_token_len_per_gpu == 30720
    assert arr.rollout.tensor_model_parallel_size == 4 and arr.rollout.gpu_memory_utilization == 0.8
    # the example's one budget reaches the old-log-prob pass where verl runs one (drpo_prox); none in bypass mode
    _, overrides = recorded_overrides(tmp_path, MOE, LOSS_MODE="drpo_prox")
    assert "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=30720" in overrides
    mc = arr.actor.megatron
    assert (mc.tensor_model_parallel_size, mc.pipeline_model_parallel_size, mc.expert_model_parallel_size,
            mc.expert_tensor_parallel_size) == (2, 1, 8, 1)
    assert mc.param_offload and mc.optimizer_offload and mc.use_mbridge
    tc = mc.override_transformer_config
    assert tc.moe_router_dtype == "fp32" and tc.moe_permute_fusion is True
    assert (tc.recompute_method, tc.recompute_granularity, tc.recompute_num_layers) == ("uniform", "full", 1)
    assert mc.router_replay.mode == "disabled" and arr.rollout.enable_rollout_routing_replay is False


@pytest.mark.parametrize("trainer_mode", ["sync", "colocate_async"])
def test_the_moe_recipes_vllm_share_is_its_own_in_every_colocated_mode(tmp_path, trainer_mode):
    """The DPPO example's 0.8 even colocated: its Megatron actor offloads weights and optimizer while vLLM generates,
    so vLLM does not share the GPU with the actor's resident state (the reason the other recipes take 0.6 there)."""
    cfg, report = composed(tmp_path, MOE, TRAINER_MODE=trainer_mode)
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.8 == report.settings["gpu_memory_utilization"]
    cfg, _ = composed(tmp_path, MOE, TRAINER_MODE=trainer_mode, GPU_MEMORY_UTILIZATION="0.5")
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.5


def test_the_moe_recipe_has_drpo_and_dppo_one_variable_apart(tmp_path):
    """LOSS_MODE alone switches DRPO to the DPPO example's dppo_tv (0.15 / 0.15, clip_ratio_c 10000): nothing else in
    the command line differs but the experiment name."""
    _, drpo = recorded_overrides(tmp_path, MOE)
    entry, dppo = recorded_overrides(tmp_path, MOE, LOSS_MODE="dppo_tv")
    differ = {o.split("=", 1)[0].lstrip("+") for o in set(drpo) ^ set(dppo)}
    assert differ and all(k.startswith("actor_rollout_ref.actor.") or k == "trainer.experiment_name"
                          for k in differ), differ
    assert not any(k.startswith(MEGATRON_KEY) or "rollout." in k for k in differ), differ
    s = dry_run.run_dry(dppo, entry).settings
    assert (s["loss_mode"], s["clip_ratio_low"], s["clip_ratio_high"], s["clip_ratio_c"]) == ("dppo_tv", 0.15, 0.15,
                                                                                              10000.0)


def test_the_moe_recipes_router_replay_r3_composes_from_verls_keys(tmp_path):
    cfg, _ = composed(tmp_path, MOE, ROUTER_REPLAY="R3")  # the dry run converts the actor to McoreActorConfig
    assert cfg.actor_rollout_ref.actor.megatron.router_replay.mode == "R3"
    assert cfg.actor_rollout_ref.rollout.enable_rollout_routing_replay is True


def test_router_replay_r2_is_one_line_and_is_verls_own_rule(tmp_path):
    """verl 0.9.1's validate_config refuses R2 with bypass_mode=True (the anchor); the recipe says so before anything
    starts, and the dry run shows the refusal is verl's (if verl lifts it, this test says the recipe may allow R2)."""
    proc, calls = record_calls(tmp_path, MOE, ROUTER_REPLAY="R2")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and calls == [] and len(lines) == 1, proc.stderr
    assert "ROUTER_REPLAY=R2" in lines[0] and "bypass_mode" in lines[0] and "R3" in lines[0]
    entry, overrides = recorded_overrides(tmp_path, MOE)
    with pytest.raises(dry_run.DryRunError, match="bypass_mode"):
        dry_run.run_dry([*overrides, f"{MEGATRON_KEY}router_replay.mode=R2"], entry)


def test_the_moe_recipe_on_fsdp2_refuses_megatron_settings_instead_of_ignoring_them(tmp_path):
    for env, name in (({"ACTOR_EP": "4"}, "ACTOR_EP=4"), ({"ROUTER_REPLAY": "R3"}, "ROUTER_REPLAY=R3")):
        proc, calls = record_calls(tmp_path, MOE, ENGINE="fsdp2", **env)
        assert proc.returncode == 2 and calls == [] and name in proc.stderr and "ENGINE=megatron" in proc.stderr
    cfg, _ = composed(tmp_path, MOE, ENGINE="fsdp2")
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2" and "megatron" not in cfg.actor_rollout_ref.actor


def test_the_moe_recipes_parallel_sizes_must_fit_the_trainers_gpus(tmp_path):
    """megatron-core refuses a world size that is not a multiple of TP x PP x CP and of ETP x EP x PP, but only once
    the workers start; the dry run says so first. separate_async on 8 GPUs leaves the trainer 4: EP 8 cannot fit."""
    entry, overrides = recorded_overrides(tmp_path, MOE, TRAINER_MODE="separate_async")
    with pytest.raises(dry_run.DryRunError, match=r"4 GPU\(s\).*ETP x EP x PP = 1 x 8 x 1 = 8"):
        dry_run.run_dry(overrides, entry)
    cfg, _ = composed(tmp_path, MOE, TRAINER_MODE="separate_async", ACTOR_EP=4)  # fits: composes
    assert cfg.trainer.n_gpus_per_node == 4 and cfg.actor_rollout_ref.actor.megatron.expert_model_parallel_size == 4
    entry, overrides = recorded_overrides(tmp_path, MOE, ACTOR_TP=3)
    with pytest.raises(dry_run.DryRunError, match=r"8 GPU\(s\).*TP x PP x CP = 3 x 1 x 1 = 3"):
        dry_run.run_dry(overrides, entry)

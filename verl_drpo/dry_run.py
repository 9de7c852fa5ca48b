"""Prove that a recipe's Hydra overrides start on the installed verl, without Ray, a GPU, a model or data.

Usage::

    python -m verl_drpo.dry_run [--entry main_ppo|fully_async] [--json PATH] [--quiet] OVERRIDE [OVERRIDE ...]

What it does, in the order verl itself would meet each problem:

1. composes verl's packaged trainer config (``verl/trainer/config/ppo_trainer.yaml``, or the fully-async one) with
   the overrides through Hydra's compose API, so a misspelt key fails here exactly as it would in
   ``python -m verl.trainer.main_ppo``;
2. runs verl's own ``verl.utils.config.validate_config`` (the driver-side check ``main_ppo`` runs before
   ``ray.init``), which also converts the actor section to its dataclass and validates batch sizes;
3. converts the actor section once more with ``omega_conf_to_dataclass`` and reports the policy-loss config class
   (``_target_``) that the workers will build;
4. checks that the loss mode is in verl's policy-loss registry (an unregistered mode would otherwise pass every
   config check and fail only at the first actor update, inside a Ray worker);
5. checks what verl's trainers assert in their constructors (they run only after Ray and the workers are up on a
   real job): ``verl_drpo.preflight.trainer_start_problems``;
6. prints the warnings of ``verl_drpo.preflight.trainer_config_warnings`` (anchor, temperature, horizon, ...);
7. prints the resolved settings that decide what the run computes, and exits 0.

It also warns about local data files and model directories that do not exist here (remote paths pass), and for
``fully_async`` shows the policy-lag bound that ``staleness_threshold`` implies (``fully_async_lag_bound``).

Exit status: 0 valid; 2 the overrides do not compose (unknown key, bad syntax, a missing fully_async module) or
``--json`` cannot be written (checked first; the file is written atomically); 3 verl or this package rejects the
composed config; 4 the loss mode is not registered.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from verl_drpo import modes, preflight

# entry name -> (package whose config/ directory holds the primary config, primary config name, the python module a
# real run starts). Both entry points use @hydra.main(config_path="config") relative to their own module.
ENTRIES: dict[str, tuple[str, str, str]] = {
    "main_ppo": ("verl.trainer", "ppo_trainer", "verl.trainer.main_ppo"),
    "fully_async": (
        "verl.experimental.fully_async_policy",
        "fully_async_ppo_trainer",
        "verl.experimental.fully_async_policy.fully_async_main",
    ),
}

EXIT_OK, EXIT_COMPOSE, EXIT_INVALID, EXIT_UNREGISTERED = 0, 2, 3, 4


class DryRunError(Exception):
    """A recipe's overrides were rejected; ``exit_code`` says at which stage."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class DryRunReport:
    entry: str
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def compose_config(overrides: list[str], entry: str = "main_ppo"):
    """Compose verl's packaged config for ``entry`` with ``overrides``; raise DryRunError(exit 2) on failure."""
    import importlib.util

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if entry not in ENTRIES:
        raise DryRunError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)}", EXIT_COMPOSE)
    package, config_name, _ = ENTRIES[entry]
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # a parent package is missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        if entry == "fully_async":
            raise DryRunError(
                f"TRAINER_MODE=fully_async needs {package}, which the installed verl does not have: fully_async is "
                "moving out of verl into verl-recipe (docs/recipes.md). Install a verl that still ships it (verl-drpo "
                "supports verl 0.9.1, which does), or choose trainer.v1.trainer_mode=sync, colocate_async or "
                "separate_async.",
                EXIT_COMPOSE,
            )
        raise DryRunError(f"{package} is not importable: is verl installed in this interpreter?", EXIT_COMPOSE)
    config_dir = os.path.join(list(spec.submodule_search_locations)[0], "config")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))
    except Exception as exc:  # Hydra wraps the OmegaConf error; show both layers
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}" + (f"\n  cause: {type(cause).__name__}: {cause}" if cause is not None else "")
        if "Ambiguous value for argument" in str(exc):
            hint = ("Hydra reads a comma in a value as a list or a sweep. For one path that contains a comma, quote "
                    "it inside the override: \"data.train_files='/data/a,b.parquet'\" (the outer quotes are for "
                    "the shell; the recipes' TRAIN_FILES/VAL_FILES variables need the inner ones too); for several "
                    "files write a list: data.train_files=[/data/a.parquet,/data/b.parquet].")
        else:
            hint = (f"Check the key's spelling (`python -m {ENTRIES[entry][2]} --cfg job` prints every key). A "
                    "leading '+' is only for the fields a selected dataclass adds, e.g. "
                    "+actor_rollout_ref.actor.policy_loss.drpo_delta=12.5.")
        raise DryRunError(
            f"the overrides do not compose with verl's {config_name}.yaml ({type(exc).__name__}):\n  {detail}\n"
            f"{hint}",
            EXIT_COMPOSE,
        ) from exc
    finally:
        GlobalHydra.instance().clear()


def _get(cfg, dotted: str, default=None):
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, dotted, default=default, throw_on_missing=False)
    if value is not None and not isinstance(value, str | int | float | bool):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def check_config(cfg, entry: str = "main_ppo") -> DryRunReport:
    """Run verl's and this package's start-up checks on a composed config; raise DryRunError on a rejection."""
    import warnings

    from omegaconf import open_dict

    # verl announces every optional engine it cannot import (megatron, torchtitan, ...): noise for a dry run
    warnings.filterwarnings("ignore", message=r".* engine is not available")
    warnings.filterwarnings("ignore", message=r"Disabled critic as algorithm.adv_estimator")
    import verl  # noqa: F401  (loads the verl.plugins entry points, as every real process does)
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    if entry == "fully_async":
        # fully_async_main.main copies these two before starting Ray
        cfg.actor_rollout_ref.rollout.nnodes = cfg.rollout.nnodes
        cfg.actor_rollout_ref.rollout.n_gpus_per_node = cfg.rollout.n_gpus_per_node

    checked = cfg
    if entry == "fully_async":
        # fully_async_main does not call validate_config: its data.train_batch_size is 0 by design and the trainer
        # consumes ppo_mini_batch_size * require_batches prompts per optimizer step, trigger_parameter_sync_step
        # steps per weight sync. Validate a copy that carries that effective batch, so verl's divisibility and
        # micro-batch checks still run on the numbers the job will use.
        checked = copy.deepcopy(cfg)
        with open_dict(checked):
            checked.data.train_batch_size = (cfg.actor_rollout_ref.actor.ppo_mini_batch_size
                                             * cfg.async_training.require_batches
                                             * cfg.async_training.trigger_parameter_sync_step)
    try:
        validate_config(config=checked, use_reference_policy=need_reference_policy(checked),
                        use_critic=need_critic(checked))
        actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    except Exception as exc:
        hint = ""
        if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
            hint = ("\n  a '+' key reached a dataclass that has no such field: check its spelling, and that "
                    "actor_rollout_ref.actor.policy_loss._target_ selects verl_drpo.config.DRPOPolicyLossConfig")
        raise DryRunError(f"verl's validate_config rejected the config: {type(exc).__name__}: {exc}{hint}",
                          EXIT_INVALID) from exc

    try:
        preflight.require_registered(actor.policy_loss.loss_mode)
    except ValueError as exc:
        raise DryRunError(str(exc), EXIT_UNREGISTERED) from exc

    problems = preflight.trainer_start_problems(cfg, entry)
    if problems:
        raise DryRunError("verl would reject this run at start-up:\n  - " + "\n  - ".join(problems), EXIT_INVALID)
    warnings = preflight.trainer_config_warnings(cfg) + missing_local_paths(cfg)

    return DryRunReport(entry=entry, settings=resolved_settings(cfg, actor, entry), warnings=warnings)


REMOTE_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # hdfs://, s3://, gs://, https://, ...
HF_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name: verl downloads it


def missing_local_paths(cfg) -> list[str]:
    """Warnings for the local data files and model directory the config names that do not exist here (a cluster
    would find out only after Ray starts). Remote paths, and a model path shaped like a Hugging Face id, pass."""
    found = []
    for key in ("data.train_files", "data.val_files"):
        value = _get(cfg, key)
        for path in [value] if isinstance(value, str) else (value or []):
            if isinstance(path, str) and not REMOTE_PATH.match(path) and not os.path.exists(os.path.expanduser(path)):
                found.append(f"{key}: {path} does not exist on this machine (fine if the cluster's nodes have it)")
    model = _get(cfg, "actor_rollout_ref.model.path")
    if (isinstance(model, str) and not REMOTE_PATH.match(model) and not os.path.exists(os.path.expanduser(model))
            and not HF_MODEL_ID.match(model)):
        found.append(f"actor_rollout_ref.model.path: {model} does not exist on this machine and is not a Hugging Face "
                     "id (org/name)")
    return found


def fully_async_lag_bound(cfg) -> dict[str, Any]:
    """How verl 0.9.1's fully_async sizes its queue from async_training.staleness_threshold, and the policy lag that
    implies (verl/experimental/fully_async_policy/fully_async_rollouter.py, set_max_required_samples and
    _should_pause_generation).

    The trainer takes R = ppo_mini_batch_size * require_batches samples per optimizer step and syncs the weights
    every K = trigger_parameter_sync_step steps, so it consumes R*K samples per parameter version. The rollouter
    caps the samples it has queued or in flight (counted again at every sync) at (s + 1) * R * K, s the
    staleness_threshold, and the trainer takes them oldest first. A sample started under version v therefore waits
    behind at most (s + 1) * R * K - 1 others and is trained on at version v + ceil(s) or earlier: a lag of at most
    ceil(s) parameter versions, ceil(s) * K optimizer steps. With partial_rollout=True an interrupted sample is
    resumed with the new weights, so its later tokens are fresher than its first ones.
    """
    import math

    s = float(_get(cfg, "async_training.staleness_threshold"))
    mini_batch = int(_get(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size"))
    per_step = mini_batch * int(_get(cfg, "async_training.require_batches"))
    sync = int(_get(cfg, "async_training.trigger_parameter_sync_step"))
    versions = math.ceil(s)
    return {
        "max_queued_samples": int(per_step * (s + 1) * sync),
        "policy_lag_bound": f"<= {versions} parameter versions = {versions * sync} optimizer steps "
                            f"(staleness_threshold={s:g}, trigger_parameter_sync_step={sync})",
    }


def resolved_settings(cfg, actor, entry: str) -> dict[str, Any]:
    """The settings that decide what a run computes, resolved, as a flat dict."""
    policy_loss = actor.policy_loss
    pl_cls = type(policy_loss)
    settings: dict[str, Any] = {
        "entry": ENTRIES[entry][2],
        "model": _get(cfg, "actor_rollout_ref.model.path"),
        "train_files": _get(cfg, "data.train_files"),
        "val_files": _get(cfg, "data.val_files"),
        "loss_mode": policy_loss.loss_mode,
        "policy_loss_config": f"{pl_cls.__module__}.{pl_cls.__qualname__}",
    }
    for name in modes.POLICY_LOSS_FIELDS:
        if hasattr(policy_loss, name):
            settings[name] = getattr(policy_loss, name)
    train_bs = _get(cfg, "data.train_batch_size")
    settings.update({
        "clip_ratio_low": actor.clip_ratio_low,
        "clip_ratio_high": actor.clip_ratio_high,
        "clip_ratio_c": actor.clip_ratio_c,
        "loss_agg_mode": actor.loss_agg_mode,
        "loss_scale_factor": actor.loss_scale_factor,
        "use_kl_loss": actor.use_kl_loss,
        "entropy_coeff": actor.entropy_coeff,
        "calculate_entropy": actor.calculate_entropy,
        "lr": actor.optim.lr,
        "grad_clip": _get(cfg, "actor_rollout_ref.actor.optim.clip_grad"),
        "actor_strategy": actor.strategy,
        "ppo_epochs": actor.ppo_epochs,
        "train_batch_size": train_bs,
        "ppo_mini_batch_size": _get(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size"),
        "ppo_micro_batch_size_per_gpu": _get(cfg, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"),
        "adv_estimator": _get(cfg, "algorithm.adv_estimator"),
        "norm_adv_by_std_in_grpo": _get(cfg, "algorithm.norm_adv_by_std_in_grpo"),
        "use_kl_in_reward": _get(cfg, "algorithm.use_kl_in_reward"),
        "bypass_mode": _get(cfg, "algorithm.rollout_correction.bypass_mode"),
        "rollout_is": _get(cfg, "algorithm.rollout_correction.rollout_is"),
        "rollout_is_threshold": _get(cfg, "algorithm.rollout_correction.rollout_is_threshold"),
        "rollout_is_batch_normalize": _get(cfg, "algorithm.rollout_correction.rollout_is_batch_normalize"),
        "rollout_name": _get(cfg, "actor_rollout_ref.rollout.name"),
        "rollout_mode": _get(cfg, "actor_rollout_ref.rollout.mode"),
        "rollout_n": _get(cfg, "actor_rollout_ref.rollout.n"),
        "calculate_log_probs": _get(cfg, "actor_rollout_ref.rollout.calculate_log_probs"),
        "logprobs_mode": _get(cfg, "actor_rollout_ref.rollout.logprobs_mode"),
        "temperature": _get(cfg, "actor_rollout_ref.rollout.temperature"),
        "top_p": _get(cfg, "actor_rollout_ref.rollout.top_p"),
        "top_k": _get(cfg, "actor_rollout_ref.rollout.top_k"),
        "max_prompt_length": _get(cfg, "data.max_prompt_length"),
        "max_response_length": _get(cfg, "data.max_response_length"),
        "n_gpus_per_node": _get(cfg, "trainer.n_gpus_per_node"),
        "nnodes": _get(cfg, "trainer.nnodes"),
        "total_training_steps": _get(cfg, "trainer.total_training_steps"),
        "project_name": _get(cfg, "trainer.project_name"),
        "experiment_name": _get(cfg, "trainer.experiment_name"),
        "logger": _get(cfg, "trainer.logger"),
        "external_modules_env": _get(cfg, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"),
    })
    if entry == "fully_async":
        settings.update({
            "trainer_mode": "fully_async",
            "staleness_threshold": _get(cfg, "async_training.staleness_threshold"),
            "trigger_parameter_sync_step": _get(cfg, "async_training.trigger_parameter_sync_step"),
            "require_batches": _get(cfg, "async_training.require_batches"),
            "partial_rollout": _get(cfg, "async_training.partial_rollout"),
            "rollout_pool": f"{_get(cfg, 'rollout.nnodes')}x{_get(cfg, 'rollout.n_gpus_per_node')}",
            "total_rollout_steps": _get(cfg, "rollout.total_rollout_steps"),
            **fully_async_lag_bound(cfg),
        })
    else:
        mode = _get(cfg, "trainer.v1.trainer_mode")
        settings["trainer_mode"] = mode
        if mode != "sync":
            settings["max_off_policy_threshold"] = _get(cfg, "trainer.v1.sampler.max_off_policy_threshold")
            settings["max_off_policy_strategy"] = _get(cfg, "trainer.v1.sampler.max_off_policy_strategy")
        if mode == "separate_async":
            settings["parameter_sync_step"] = _get(cfg, "trainer.v1.separate_async.parameter_sync_step")
            rollout = cfg.actor_rollout_ref.rollout
            settings["rollout_pool"] = f"{rollout.nnodes}x{rollout.n_gpus_per_node}"
        if isinstance(train_bs, int) and isinstance(settings["ppo_mini_batch_size"], int) and settings[
            "ppo_mini_batch_size"
        ]:
            settings["optimizer_steps_per_rollout"] = train_bs // settings["ppo_mini_batch_size"] * actor.ppo_epochs
    return settings


def run_dry(overrides: list[str], entry: str = "main_ppo") -> DryRunReport:
    """Compose and check; the in-process form of ``python -m verl_drpo.dry_run`` (raises DryRunError)."""
    cfg = compose_config(overrides, entry)
    return check_config(cfg, entry)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m verl_drpo.dry_run",
        description="Compose Hydra overrides with verl's packaged trainer config and run verl's start-up "
        "validation without Ray or a GPU.",
    )
    parser.add_argument("--entry", choices=sorted(ENTRIES), default="main_ppo",
                        help="which verl entry point the overrides are for (default: main_ppo)")
    parser.add_argument("--json", metavar="PATH", help="also write the resolved settings and warnings as JSON")
    parser.add_argument("--quiet", action="store_true", help="print only errors and warnings")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to the real entry point")
    return parser.parse_args(argv)


def json_path_problem(path: str) -> str | None:
    """Why the settings cannot be written to `path` (checked before any work), or None."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        example = os.path.join(path, "dry_run.json")
        return f"--json (DRY_RUN_JSON) {path} is a directory; give a file path, e.g. {example}"
    parent = os.path.dirname(target)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"--json (DRY_RUN_JSON) {path}: {existing} is a file, so its folder cannot be created"
    if not os.access(existing, os.W_OK):
        return f"--json (DRY_RUN_JSON) {path}: {existing} is not writable"
    return None


def write_json_atomically(path: str, data: dict) -> None:
    target = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.tmp-")
    try:
        with os.fdopen(handle, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.json and (problem := json_path_problem(args.json)):
        print(f"[dry-run] REJECTED: {problem}", file=sys.stderr, flush=True)
        return EXIT_COMPOSE
    try:
        report = run_dry(args.overrides, args.entry)
    except DryRunError as err:
        print(f"[dry-run] REJECTED: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    for warning in report.warnings:
        print(f"[dry-run] WARNING: {warning}", file=sys.stderr, flush=True)
    if not args.quiet:
        width = max(len(k) for k in report.settings)
        print(f"[dry-run] resolved settings ({len(args.overrides)} overrides):")
        for key, value in report.settings.items():
            print(f"  {key:<{width}}  {value}")
        print(f"[dry-run] OK: `python -m {ENTRIES[args.entry][2]}` would accept this config", flush=True)
    if args.json:
        write_json_atomically(args.json, {"settings": report.settings, "warnings": report.warnings})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

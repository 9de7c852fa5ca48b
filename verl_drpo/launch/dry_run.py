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
   real job): ``verl_drpo.launch.preflight.trainer_start_problems``;
6. prints the warnings of ``verl_drpo.launch.preflight.trainer_config_warnings`` (anchor, temperature, horizon, ...);
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
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from verl_drpo import files, plugin
from verl_drpo.launch import preflight
from verl_drpo.launch.settings import resolved_settings

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
        from hydra.errors import OverrideParseException

        if isinstance(exc, OverrideParseException):
            bad = _first_unparsable(overrides)
            hint = ("An override is not valid Hydra syntax" + (f" ({bad})" if bad else "") + ": check brackets and "
                    "quotes (a list is key=[a,b]; a value with spaces, commas or brackets needs inner quotes, "
                    "e.g. \"key='a b'\"); https://hydra.cc/docs/advanced/override_grammar/basic/.")
        elif "Ambiguous value for argument" in str(exc):
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


def _first_unparsable(overrides: list[str]) -> str | None:
    """The first override Hydra's grammar rejects on its own, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:  # noqa: BLE001  (Hydra raises OverrideParseException or HydraException)
            return override
    return None


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
        plugin.require_registered(actor.policy_loss.loss_mode)
    except ValueError as exc:
        raise DryRunError(str(exc), EXIT_UNREGISTERED) from exc

    problems = preflight.trainer_start_problems(cfg, entry)
    if problems:
        raise DryRunError("verl would reject this run at start-up:\n  - " + "\n  - ".join(problems), EXIT_INVALID)
    warnings = preflight.trainer_config_warnings(cfg) + preflight.missing_local_paths(cfg)

    settings = resolved_settings(cfg, actor.policy_loss, entry, ENTRIES[entry][2])
    return DryRunReport(entry=entry, settings=settings, warnings=warnings)


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


def is_dry_run_report(path: str) -> bool:
    """Whether ``path`` holds a report an earlier dry run wrote (JSON with exactly its keys)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) == {"settings", "warnings"}


def json_path_problem(path: str) -> str | None:
    """Why the settings cannot be written to ``path``, checked before any work, or None. An existing file is
    replaced only if an earlier dry run wrote it; the folder is probed by really creating (and removing) a file."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        example = os.path.join(path, "dry_run.json")
        return f"--json (DRY_RUN_JSON) {path} is a directory; give a file path, e.g. {example}"
    problem = files.output_problem(target, overwrite=is_dry_run_report(target))
    if problem == "it already exists":
        return (f"--json (DRY_RUN_JSON) {path} exists and is not a dry-run report; refusing to replace it "
                "(remove it or give another path)")
    if problem:
        return f"--json (DRY_RUN_JSON) {path}: {problem}"
    folder = os.path.dirname(target)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:  # os.access can say yes where creating fails (/proc, read-only mounts)
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".dry_run_probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"--json (DRY_RUN_JSON) {path}: cannot create a file in {existing} ({exc.strerror or exc})"
    return None


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
        report_json = json.dumps({"settings": report.settings, "warnings": report.warnings}, indent=1, default=str)
        try:
            files.write_text(args.json, report_json, overwrite=is_dry_run_report(args.json), flag="--json")
        except files.OutputError as err:
            print(f"[dry-run] FAILED to write the settings: {err}", file=sys.stderr, flush=True)
            return EXIT_COMPOSE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

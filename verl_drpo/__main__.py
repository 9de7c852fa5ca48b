"""Command line: `python -m verl_drpo doctor [--quick] [--json]` and `python -m verl_drpo overrides LOSS_MODE`.

`overrides` prints, one per line, the Hydra overrides that select a loss mode with its paper settings (from
`verl_drpo.modes`, each value taken from its recipe variable when set); the recipes read them with `mapfile`.

verl imports plugins on `import verl` and swallows their import errors (logged at DEBUG level), so a broken or
missing plugin surfaces only as "Unsupported loss mode" inside a Ray worker, at the first actor update. The doctor
checks, each in a FRESH process as verl's workers are, that:
  1. the installed verl is the supported version;
  2. a plain `import verl` registers drpo and the baselines (the entry point works), and if not, why not;
  3. the actor config hook instantiates through Hydra and builds a verl ActorConfig;
  4. (skipped with --quick) the same registration holds inside a real Ray worker.
It prints one line per check and exits 1 on the first failure, with its cause.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

from verl_drpo import preflight
from verl_drpo._compat import SUPPORTED_VERL_VERSION
from verl_drpo.modes import REGISTERED_NAMES

_REGISTRY_PROBE = textwrap.dedent(
    """
    import json, verl
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    print(json.dumps({"verl": verl.__version__, "modes": sorted(POLICY_LOSS_REGISTRY)}))
    """
)

_PLUGIN_IMPORT_PROBE = "import verl_drpo.plugin"

_CONFIG_PROBE = textwrap.dedent(
    """
    from hydra.utils import instantiate
    from verl.workers.config import ActorConfig
    policy_loss = instantiate(
        {"_target_": "verl_drpo.config.DRPOPolicyLossConfig", "loss_mode": "drpo", "drpo_delta": 12.5},
        _convert_="partial",
    )
    ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss)
    print(type(policy_loss).__name__, policy_loss.drpo_delta)
    """
)

_RAY_PROBE = textwrap.dedent(
    """
    import json, ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)

    @ray.remote
    def registered_modes():
        import verl
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
        return sorted(POLICY_LOSS_REGISTRY)

    try:
        print(json.dumps(ray.get(registered_modes.remote(), timeout=180)))
    finally:
        ray.shutdown()
    """
)


class CheckFailed(Exception):
    pass


def _python(code: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _last_json_line(stdout: str):
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check_version() -> str:
    proc = _python("import verl; print(verl.__version__)", timeout=120)
    if proc.returncode != 0:
        raise CheckFailed(f"`import verl` fails in a fresh process:\n{_tail(proc.stderr)}")
    version = proc.stdout.strip().splitlines()[-1]
    if version != SUPPORTED_VERL_VERSION:
        raise CheckFailed(
            f"verl {version} is installed; verl-drpo supports verl=={SUPPORTED_VERL_VERSION} only "
            f"(pip install verl=={SUPPORTED_VERL_VERSION})"
        )
    return f"verl {version}"


def _missing_modes_cause() -> str:
    """Why a plain `import verl` did not register our modes: find the swallowed error or the switched-off loader."""
    from importlib.metadata import entry_points

    names = [ep.value for ep in entry_points(group="verl.plugins") if ep.value.startswith("verl_drpo")]
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto")
    if not names:
        return (
            "the `verl.plugins` entry point of verl-drpo is not installed in this environment: reinstall the "
            "package (`pip install -e .` or `pip install verl-drpo`), or set VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    if policy.strip().lower() == "none" or (
        policy.strip().lower() != "auto" and "verl_drpo" not in {p.strip() for p in policy.split(",")}
    ):
        return (
            f"VERL_USE_EXTERNAL_PLUGINS={policy!r} stops verl from loading the verl_drpo entry point; unset it, add "
            "verl_drpo to it, or set VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    proc = _python(_PLUGIN_IMPORT_PROBE, timeout=120)
    if proc.returncode != 0:
        return f"importing verl_drpo.plugin fails (verl swallowed this error):\n{_tail(proc.stderr)}"
    return "the entry point is installed and imports cleanly, yet the modes are missing: please report this"


def check_registration() -> str:
    proc = _python(_REGISTRY_PROBE, timeout=180)
    result = _last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise CheckFailed(f"the registry probe failed:\n{_tail(proc.stderr)}")
    missing = preflight.missing_modes(result["modes"])
    if missing:
        raise CheckFailed(f"`import verl` does not register {missing}: {_missing_modes_cause()}")
    return f"`import verl` registers {', '.join(REGISTERED_NAMES)}"


def check_config_hook() -> str:
    proc = _python(_CONFIG_PROBE, timeout=180)
    if proc.returncode != 0:
        raise CheckFailed(f"the actor config hook does not instantiate:\n{_tail(proc.stderr)}")
    return f"config hook instantiates ({proc.stdout.strip().splitlines()[-1]})"


def check_ray_worker() -> str:
    proc = _python(_RAY_PROBE, timeout=300)
    modes = _last_json_line(proc.stdout)
    if proc.returncode != 0 or modes is None:
        raise CheckFailed(f"could not run a Ray worker:\n{_tail(proc.stderr)}")
    missing = preflight.missing_modes(modes)
    if missing:
        raise CheckFailed(
            f"a Ray worker's `import verl` does not register {missing}. Is verl-drpo installed in the workers' "
            "Python environment? On a cluster, pass "
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    return "a Ray worker's `import verl` registers them too"


def check_worker_env(runtime_env: dict) -> str:
    """5. (with --py-executable / --runtime-env) a Ray worker started with that runtime_env loads verl-drpo."""
    from verl_drpo.worker_env import WorkerEnvError, check_worker_env as probe

    try:
        return probe(runtime_env)
    except WorkerEnvError as error:
        raise CheckFailed(str(error)) from None


def doctor(quick: bool = False, as_json: bool = False, runtime_env: dict | None = None) -> int:
    checks = [("verl version", check_version), ("registration", check_registration), ("config hook", check_config_hook)]
    if not quick:
        checks.append(("ray worker", check_ray_worker))
    if runtime_env is not None:
        checks.append(("worker runtime_env", lambda: check_worker_env(runtime_env)))
    report = []
    status = 0
    for name, check in checks:
        try:
            report.append({"check": name, "ok": True, "detail": check()})
        except (CheckFailed, subprocess.TimeoutExpired) as error:
            report.append({"check": name, "ok": False, "detail": str(error)})
            status = 1
        if not as_json:
            entry = report[-1]
            print(f"[{'ok' if entry['ok'] else 'FAIL'}] {name}: {entry['detail']}", flush=True)
        if status:
            break
    if as_json:
        print(json.dumps(report, indent=2))
    elif status == 0:
        print("verl-drpo doctor: all checks passed")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_drpo", description="verl-drpo tools")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor_parser = sub.add_parser("doctor", help="check that verl loads the DRPO losses everywhere")
    doctor_parser.add_argument("--quick", action="store_true", help="skip the Ray worker check (about 20 s)")
    doctor_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor_parser.add_argument("--py-executable", default=None, metavar="CMD",
                               help="also start a Ray worker under this interpreter command, as "
                                    "ray_kwargs.ray_init.runtime_env.py_executable does (e.g. 'uv run')")
    doctor_parser.add_argument("--runtime-env", default=None, metavar="JSON|FILE",
                               help="also start a Ray worker with this runtime_env (the mapping under "
                                    "ray_kwargs.ray_init.runtime_env, as JSON text or a JSON/YAML file)")
    overrides_parser = sub.add_parser("overrides", help="print the Hydra overrides that select a loss mode")
    overrides_parser.add_argument("loss_mode")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        runtime_env = None
        if args.py_executable is not None or args.runtime_env is not None:
            from verl_drpo.worker_env import build_runtime_env

            try:
                runtime_env = build_runtime_env(args.py_executable, args.runtime_env)
            except ValueError as err:
                print(f"doctor: {err}", file=sys.stderr)
                return 2
        return doctor(quick=args.quick, as_json=args.json, runtime_env=runtime_env)
    if args.command == "overrides":
        from verl_drpo import modes

        try:
            modes.get(args.loss_mode)
        except ValueError as err:
            print(f"LOSS_MODE={args.loss_mode}: {err}", file=sys.stderr)
            return 2
        try:
            print("\n".join(modes.recipe_overrides(args.loss_mode)))
        except ValueError as err:  # a hyper-parameter's variable; the message names it
            print(err, file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

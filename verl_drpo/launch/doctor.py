"""The doctor: will verl load the DRPO losses in the processes a real run starts? ``python -m verl_drpo doctor``.

verl imports plugins on ``import verl`` and swallows their import errors (logged at DEBUG level), so a broken or
missing plugin surfaces only as "Unsupported loss mode" inside a Ray worker, at the first actor update. Each check
runs in a FRESH process, as verl's workers are:

  1. the installed verl has the APIs the plugin uses (``verl_drpo._compat``);
  2. a plain ``import verl`` registers every name of the table (the entry point works), and if not, why not;
  3. the actor config hook instantiates through Hydra and builds a verl ActorConfig;
  4. (skipped with ``quick``) the same registration holds inside a real Ray worker;
  5. (with ``runtime_env``) a Ray worker started with that runtime_env (``--py-executable`` / ``--runtime-env``)
     loads verl-drpo too.

Why 5: verl passes ``ray_kwargs.ray_init.runtime_env`` to ``ray.init``, and its examples set
``runtime_env.py_executable`` to ``uv run ...``: every Ray worker then runs under THAT interpreter, in the environment
``uv`` resolves from the worker's working directory, not in the one where ``pip install verl-drpo`` happened. The check
starts one real Ray worker with the given runtime_env, from the directory the trainer would be launched from (Ray
workers inherit the driver's working directory, which ``uv run`` needs), and reports what it can import, with the fix.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

from verl_drpo import _compat
from verl_drpo.launch import preflight
from verl_drpo.modes import REGISTERED_NAMES

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_ROOT = os.path.dirname(PACKAGE_DIR)


class CheckFailed(Exception):
    """A doctor check failed; the message says why and how to fix it."""


# ---- running probes in fresh processes ------------------------------------------------------------------------------


def probe_env(extra: dict | None = None) -> dict[str, str]:
    """The environment of a probe process: this one's, offline, Ray's token auth off unless set, plus ``extra``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def run_probe(code: str, *args: str, timeout: float, cwd: str | None = None,
              env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=probe_env(env_extra), check=False)


def last_json_line(stdout: str):
    """The last line of ``stdout`` that parses as JSON (probes print one after whatever their imports log)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


_REGISTRY_PROBE = textwrap.dedent(
    """
    import json, verl
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    print(json.dumps({"verl": verl.__version__, "modes": sorted(POLICY_LOSS_REGISTRY)}))
    """
)

PLUGIN_IMPORT_PROBE = "import verl_drpo.plugin"

_API_PROBE = textwrap.dedent(
    """
    import json
    from verl_drpo import _compat
    print(json.dumps({"version": _compat.installed_verl_version(), "missing": _compat.missing_verl_apis()}))
    """
)

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

# Starts one Ray worker with the runtime_env of argv[1] and reports what it imports. Defined in the probe's __main__,
# so Ray ships it by value: the worker needs no verl_drpo to run it.
_RAY_WORKER_PROBE = textwrap.dedent(
    """
    import json, sys, ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env=json.loads(sys.argv[1]) or None)

    @ray.remote
    def probe():
        import sys
        found = {"python": sys.executable}
        try:
            import verl_drpo
            found["verl_drpo"] = verl_drpo.__file__
        except Exception as exc:
            found["verl_drpo_error"] = f"{type(exc).__name__}: {exc}"
        try:
            import verl
            from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
            found["verl"] = verl.__version__
            found["modes"] = sorted(POLICY_LOSS_REGISTRY)
        except Exception as exc:
            found["verl_error"] = f"{type(exc).__name__}: {exc}"
        return found

    try:
        print(json.dumps(ray.get(probe.remote(), timeout=float(sys.argv[2]))))
    finally:
        ray.shutdown()
    """
)


def ray_worker_probe(runtime_env: dict, cwd: str | None = None, timeout: float = 180.0) -> dict:
    """What a Ray worker started with ``runtime_env`` (``{}``: the default) imports: python, verl_drpo, verl and the
    registered loss modes (or the import errors). Raises CheckFailed when no worker ran."""
    env_vars = runtime_env.get("env_vars") or {}
    proc = run_probe(_RAY_WORKER_PROBE, json.dumps(runtime_env), str(timeout), timeout=timeout + 120, cwd=cwd,
                     env_extra=env_vars)
    found = last_json_line(proc.stdout)
    if proc.returncode != 0 or not isinstance(found, dict):
        raise CheckFailed(f"no Ray worker ran with runtime_env {json.dumps(runtime_env)}:\n{tail(proc.stderr)}")
    return found


# ---- the checks -------------------------------------------------------------------------------------------------------


def check_verl_apis() -> str:
    proc = run_probe(_API_PROBE, timeout=120)
    found = last_json_line(proc.stdout)
    if proc.returncode != 0 or not isinstance(found, dict):
        raise CheckFailed(f"`import verl` fails in a fresh process:\n{tail(proc.stderr)}")
    if found["missing"]:
        raise CheckFailed(_compat.missing_apis_message(found["version"], found["missing"]))
    note = "" if _compat.in_tested_range(found["version"]) else f" (outside the tested range {_compat.TESTED_RANGE})"
    return f"verl {found['version']}: every verl API the plugin uses is there{note}"


def missing_modes_cause() -> str:
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
    proc = run_probe(PLUGIN_IMPORT_PROBE, timeout=120)
    if proc.returncode != 0:
        return f"importing verl_drpo.plugin fails (verl swallowed this error):\n{tail(proc.stderr)}"
    return "the entry point is installed and imports cleanly, yet the modes are missing: please report this"


def check_registration() -> str:
    proc = run_probe(_REGISTRY_PROBE, timeout=180)
    result = last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise CheckFailed(f"the registry probe failed:\n{tail(proc.stderr)}")
    missing = preflight.missing_modes(result["modes"])
    if missing:
        raise CheckFailed(f"`import verl` does not register {missing}: {missing_modes_cause()}")
    return f"`import verl` registers {', '.join(REGISTERED_NAMES)}"


def check_config_hook() -> str:
    proc = run_probe(_CONFIG_PROBE, timeout=180)
    if proc.returncode != 0:
        raise CheckFailed(f"the actor config hook does not instantiate:\n{tail(proc.stderr)}")
    return f"config hook instantiates ({proc.stdout.strip().splitlines()[-1]})"


def check_ray_worker() -> str:
    found = ray_worker_probe({}, timeout=180)
    missing = preflight.missing_modes(found.get("modes", []))
    if missing:
        raise CheckFailed(
            f"a Ray worker's `import verl` does not register {missing}. Is verl-drpo installed in the workers' "
            "Python environment? On a cluster, pass "
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    return "a Ray worker's `import verl` registers them too"


# ---- 5: a worker environment given by --py-executable / --runtime-env -----------------------------------------------


def build_runtime_env(py_executable: str | None = None, runtime_env: str | None = None) -> dict:
    """The runtime_env of ``--runtime-env`` (JSON text, or a path to a JSON/YAML file holding the mapping that goes
    under ``ray_kwargs.ray_init.runtime_env``), with ``--py-executable`` set on top. Raises ValueError naming the
    flag."""
    env: dict = {}
    if runtime_env:
        text = runtime_env
        if os.path.isfile(runtime_env):
            with open(runtime_env) as fh:
                text = fh.read()
        elif not runtime_env.lstrip().startswith(("{", "[")) and (
                os.sep in runtime_env or runtime_env.endswith((".json", ".yaml", ".yml"))):
            raise ValueError(f"--runtime-env {runtime_env}: no such file (give a JSON/YAML file or JSON text such "
                             "as '{\"py_executable\": \"uv run\"}')")
        try:
            env = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            try:
                env = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"--runtime-env: neither JSON nor YAML ({exc.__class__.__name__})") from None
        if not isinstance(env, dict):
            raise ValueError("--runtime-env must be a mapping such as '{\"py_executable\": \"uv run\"}', "
                             f"got {text!r}")
        if not isinstance(env.get("env_vars") or {}, dict):
            raise ValueError(f"--runtime-env: env_vars must be a mapping of name: value, got {env['env_vars']!r}")
        if "py_executable" in env and not (isinstance(env["py_executable"], str) and env["py_executable"].strip()):
            raise ValueError(f"--runtime-env: py_executable must be a command such as 'uv run', "
                             f"got {env['py_executable']!r}")
    if py_executable is not None:
        if not py_executable.strip():
            raise ValueError("--py-executable must be a command, e.g. 'uv run' or /path/to/venv/bin/python")
        env["py_executable"] = py_executable
    return env


def fixes(python: str) -> str:
    """The ways to make verl-drpo load in the environment of the interpreter ``python``."""
    return (
        "Fix one of: (1) install verl-drpo into the workers' environment: "
        f"`uv pip install --python {shlex.quote(python)} -e {shlex.quote(PROJECT_ROOT)}` (in a uv project: "
        f"`uv add --editable {shlex.quote(PROJECT_ROOT)}`, or `uv add verl-drpo`); "
        f"(2) add it to the worker command: py_executable='uv run --with-editable {PROJECT_ROOT} ...'; "
        "(3) ship the package with the job: "
        f"+ray_kwargs.ray_init.runtime_env.py_modules=['{PACKAGE_DIR}'] "
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
    )


def check_worker_env(runtime_env: dict, cwd: str | None = None, timeout: float = 180.0) -> str:
    """Start a Ray worker with ``runtime_env`` from ``cwd`` and check that it imports verl_drpo and that its
    ``import verl`` registers every loss mode. Returns a one-line summary; raises CheckFailed with the fix."""
    cwd = cwd or os.getcwd()
    py_executable = runtime_env.get("py_executable")
    if py_executable:
        command = shlex.split(py_executable)[0]
        if shutil.which(command, path=probe_env(runtime_env.get("env_vars")).get("PATH")) is None:
            raise CheckFailed(f"py_executable={py_executable!r}: no such command {command!r} (not an executable "
                              "file, nor on PATH)")
        # Ray execs `<py_executable> default_worker.py ...` through a shell; a command that cannot even import ray
        # leaves the task pending forever, so try the command directly first, where its error can be read.
        start = subprocess.run(["bash", "-c", f'exec {py_executable} -c "import sys, ray; print(sys.executable)"'],
                               capture_output=True, text=True, timeout=timeout, cwd=cwd,
                               env=probe_env(runtime_env.get("env_vars")), check=False)
        if start.returncode != 0:
            raise CheckFailed(
                f"py_executable={py_executable!r} (run from {cwd}) cannot start a Ray worker, it fails to import "
                f"ray:\n{tail(start.stderr or start.stdout, 8)}\nThe workers' environment needs ray, verl and "
                f"verl-drpo, e.g. `uv pip install --python <that python> 'verl>=0.9.1,<0.10' -e {PROJECT_ROOT}`, or point "
                "py_executable at an interpreter that has them"
            )
    found = ray_worker_probe(runtime_env, cwd=cwd, timeout=timeout)
    python = found["python"]
    where = f"a Ray worker with runtime_env {json.dumps(runtime_env)} runs {python}"
    if "verl_drpo_error" in found:
        raise CheckFailed(f"{where} and cannot import verl_drpo ({found['verl_drpo_error']}). {fixes(python)}")
    if "verl_error" in found:
        raise CheckFailed(f"{where}: verl_drpo imports, `import verl` fails ({found['verl_error']}); install verl "
                          "there")
    missing = preflight.missing_modes(found["modes"])
    if missing:
        raise CheckFailed(
            f"{where}: verl_drpo imports (from {found['verl_drpo']}), yet `import verl` does not register {missing} "
            "(no `verl.plugins` entry point there, or VERL_USE_EXTERNAL_PLUGINS excludes it): add "
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    return f"{where}, which imports verl_drpo and registers {', '.join(REGISTERED_NAMES)}"


# ---- the report --------------------------------------------------------------------------------------------------------


def doctor(quick: bool = False, as_json: bool = False, runtime_env: dict | None = None) -> int:
    """Run the checks in order, one line each (or a JSON report); stop at the first failure. Exit status 0 or 1."""
    checks = [("verl APIs", check_verl_apis), ("registration", check_registration),
              ("config hook", check_config_hook)]
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

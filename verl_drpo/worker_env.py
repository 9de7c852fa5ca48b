"""Can the Ray workers that a runtime_env starts load verl-drpo? The doctor's `--py-executable` / `--runtime-env` check.

verl passes `ray_kwargs.ray_init.runtime_env` to `ray.init` (merged over its defaults), and its examples set
`runtime_env.py_executable` to `uv run ...`: every Ray worker then runs under THAT interpreter, in the environment
`uv` resolves from the worker's working directory, not in the one where `pip install verl-drpo` happened. There,
`import verl` finds no `verl.plugins` entry point, registers no DRPO mode, and the run fails at the first actor update
with "Unsupported loss mode". This module starts one real Ray worker with the given runtime_env, from the directory
the trainer would be launched from (Ray workers inherit the driver's working directory, which `uv run` needs), and
reports what that worker can import, with the fix.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap

from verl_drpo.modes import REGISTERED_NAMES

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Runs inside the Ray worker; defined in the probe's __main__, so Ray ships it by value (it needs no verl_drpo).
_RAY_WORKER_PROBE = textwrap.dedent(
    """
    import json, sys, ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env=json.loads(sys.argv[1]))

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


class WorkerEnvError(Exception):
    """The worker interpreter cannot load verl-drpo; the message says why and how to fix it."""


def build_runtime_env(py_executable: str | None = None, runtime_env: str | None = None) -> dict:
    """The runtime_env of `--runtime-env` (JSON text, or a path to a JSON/YAML file holding the mapping that goes
    under `ray_kwargs.ray_init.runtime_env`), with `--py-executable` set on top. Raises ValueError naming the flag."""
    env: dict = {}
    if runtime_env:
        text = runtime_env
        if os.path.isfile(runtime_env):
            with open(runtime_env) as fh:
                text = fh.read()
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


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check_worker_env(runtime_env: dict, cwd: str | None = None, timeout: float = 180.0) -> str:
    """Start a Ray worker with ``runtime_env`` from ``cwd`` and check that it imports verl_drpo and that its
    `import verl` registers every loss mode. Returns a one-line summary; raises WorkerEnvError with the fix."""
    cwd = cwd or os.getcwd()
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    env.update({k: str(v) for k, v in (runtime_env.get("env_vars") or {}).items()})
    py_executable = runtime_env.get("py_executable")
    if py_executable:
        # Ray execs `<py_executable> default_worker.py ...` through a shell; a command that cannot even import ray
        # leaves the task pending forever, so try the command directly first, where its error can be read.
        start = subprocess.run(["bash", "-c", f'exec {py_executable} -c "import sys, ray; print(sys.executable)"'],
                               capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False)
        if start.returncode != 0:
            raise WorkerEnvError(
                f"py_executable={py_executable!r} (run from {cwd}) cannot start a Ray worker, it fails to import "
                f"ray:\n{_tail(start.stderr or start.stdout)}\nThe workers' environment needs ray, verl==0.9.1 "
                f"and verl-drpo, e.g. `uv pip install --python <that python> verl==0.9.1 -e {PROJECT_ROOT}`, or "
                "point py_executable at an interpreter that has them"
            )
    proc = subprocess.run([sys.executable, "-c", _RAY_WORKER_PROBE, json.dumps(runtime_env), str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 120, cwd=cwd, env=env, check=False)
    found = None
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            found = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if proc.returncode != 0 or not isinstance(found, dict):
        raise WorkerEnvError(f"no Ray worker ran with runtime_env {json.dumps(runtime_env)}:\n{_tail(proc.stderr)}")
    python = found["python"]
    where = f"a Ray worker with runtime_env {json.dumps(runtime_env)} runs {python}"
    if "verl_drpo_error" in found:
        raise WorkerEnvError(f"{where} and cannot import verl_drpo ({found['verl_drpo_error']}). {fixes(python)}")
    if "verl_error" in found:
        raise WorkerEnvError(f"{where}: verl_drpo imports, `import verl` fails ({found['verl_error']}); install "
                             "verl==0.9.1 there")
    missing = [m for m in REGISTERED_NAMES if m not in found["modes"]]
    if missing:
        raise WorkerEnvError(
            f"{where}: verl_drpo imports (from {found['verl_drpo']}), yet `import verl` does not register {missing} "
            "(no `verl.plugins` entry point there, or VERL_USE_EXTERNAL_PLUGINS excludes it): add "
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin"
        )
    return f"{where}, which imports verl_drpo and registers {', '.join(REGISTERED_NAMES)}"

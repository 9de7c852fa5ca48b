"""The doctor's runtime_env check (issue 13.3) with real Ray workers started under another interpreter.

The "other interpreter" is a bare venv made here (`python -m venv --without-pip`) whose only link to this project's
environment is a .pth line naming its site-packages: ray, torch and verl import there, but verl-drpo's editable
install (itself a .pth hook, which a .pth path line does not run) does not, as in a `uv run` environment that lacks
the package."""

import json
import os
import subprocess
import sys
import sysconfig

import pytest

pytestmark = pytest.mark.slow  # subprocesses (lab CLI / fresh venvs): seconds each

from verl_drpo import LOSS_MODES
from verl_drpo.launch import doctor as worker_env
from verl_drpo.__main__ import main


def _bare_python(root, link_site_packages):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    if link_site_packages:
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(purelib, "project_site.pth"), "w") as fh:
            fh.write(sysconfig.get_paths()["purelib"] + "\n")
    return str(python)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    python = _bare_python(tmp_path_factory.mktemp("venv") / "bare", link_site_packages=True)
    code = "import ray, verl\ntry:\n import verl_drpo\nexcept ImportError:\n print('no')"
    probe = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/", check=False)
    assert probe.stdout.strip() == "no", probe.stderr  # the premise: ray and verl import, verl_drpo does not
    return python


def test_doctor_reports_a_worker_interpreter_without_verl_drpo_and_the_fix(bare_python, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)  # Ray workers start in the driver's directory; not the checkout, where it imports
    assert main(["doctor", "--quick", "--py-executable", bare_python]) == 1
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("[FAIL] worker runtime_env")]
    assert f"runs {bare_python}" in line and "cannot import verl_drpo" in line
    assert "uv pip install --python" in line and "VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin" in line
    assert "[ok] registration" in out  # the driver's own environment is fine: only the workers' is not


def test_the_projects_own_interpreter_passes(tmp_path):
    summary = worker_env.check_worker_env({"py_executable": sys.executable}, cwd=str(tmp_path))
    assert f"runs {sys.executable}" in summary and "registers " + ", ".join(LOSS_MODES) in summary


def test_the_py_modules_fix_loads_the_plugin_in_the_bare_interpreter(bare_python, tmp_path):
    runtime_env = {"py_executable": bare_python, "py_modules": [worker_env.PACKAGE_DIR],
                   "env_vars": {"VERL_USE_EXTERNAL_MODULES": "verl_drpo.plugin"}}
    summary = worker_env.check_worker_env(runtime_env, cwd=str(tmp_path))
    assert f"runs {bare_python}" in summary and "imports verl_drpo" in summary


def test_an_interpreter_without_ray_fails_fast_with_its_error(tmp_path):
    python = _bare_python(tmp_path / "empty", link_site_packages=False)
    expected = "(?s)cannot start a Ray worker.*No module named 'ray'.*verl>=0.9.1"
    with pytest.raises(worker_env.CheckFailed, match=expected):
        worker_env.check_worker_env({"py_executable": python}, cwd=str(tmp_path), timeout=60)


def test_runtime_env_argument_is_parsed_or_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "env.yaml"
    path.write_text("env_vars:\n  A: '1'\npy_executable: uv run\n")
    assert worker_env.build_runtime_env(None, str(path)) == {"env_vars": {"A": "1"}, "py_executable": "uv run"}
    assert worker_env.build_runtime_env("python3", json.dumps({"py_executable": "x"})) == {"py_executable": "python3"}
    assert main(["doctor", "--runtime-env", "[1, 2]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--runtime-env must be a mapping" in err


@pytest.mark.parametrize("runtime_env,expected", [
    ('{"env_vars": ["A=1"]}', "--runtime-env: env_vars must be a mapping"),
    ('{"py_executable": 3}', "--runtime-env: py_executable must be a command"),
])
def test_a_malformed_runtime_env_field_is_one_line_not_a_traceback(runtime_env, expected, capsys):
    """Before the fix these reached check_worker_env and ended in AttributeError / TypeError tracebacks."""
    assert main(["doctor", "--quick", "--runtime-env", runtime_env]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


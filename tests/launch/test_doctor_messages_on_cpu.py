"""The doctor's messages say what is wrong: a missing --runtime-env file, a --py-executable that does not exist."""

import pytest

from verl_drpo.launch import doctor


@pytest.mark.parametrize("arg", ["/tmp/verl_drpo_no_such_runtime_env.yaml", "no_such_env.json", "conf/missing.yml"])
def test_a_missing_runtime_env_file_is_named_as_missing(arg):
    """Before: "--runtime-env must be a mapping", about a file that does not exist."""
    with pytest.raises(ValueError, match=rf"^--runtime-env {arg}: no such file"):
        doctor.build_runtime_env(None, arg)


def test_runtime_env_text_that_is_not_a_mapping_is_still_said_so():
    with pytest.raises(ValueError, match="must be a mapping"):
        doctor.build_runtime_env(None, "[1, 2]")


@pytest.mark.parametrize("command", ["/no/such/python", "no_such_uv_command run"])
def test_a_py_executable_that_does_not_exist_is_named(command, tmp_path):
    """Before: "cannot start a Ray worker, it fails to import ray" with bash's error underneath."""
    with pytest.raises(doctor.CheckFailed, match=r"no such command '(/no/such/python|no_such_uv_command)'"):
        doctor.check_worker_env({"py_executable": command}, cwd=str(tmp_path), timeout=30)

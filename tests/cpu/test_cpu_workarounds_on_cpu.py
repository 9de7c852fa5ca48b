"""Pins the verl 0.9.1 gap that verl_drpo/cpu/workarounds.py works around (the process-group backend string).

Two tests: one that the workaround still works, and one that the gap still exists. When a verl upgrade closes the
gap (or moves the code the workaround relies on), these fail with a message that says what to change.
"""

import json
import socket

import pytest

from verl_drpo.cpu import workarounds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the process-group backend string repeats the device type on CPU -----------------------------------------------


def _worker_env(port: int) -> dict:
    return {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


# Not a verl worker process (no WG_BACKEND): the workaround stays off and verl's own init runs.
VERL_INIT = """
import verl
from verl.utils.distributed import initialize_global_process_group_ray
try:
    initialize_global_process_group_ray()
    import torch.distributed as dist
    print("INIT_OK", dist.get_backend())
except Exception as e:
    print("INIT_FAILED", repr(e))
"""

# A "verl worker" process: the plugin creates the gloo group on `import verl`.
PLUGIN_INIT = """
import json, verl  # the plugin creates the gloo group here, in a "verl worker" process
import torch, torch.distributed as dist
created_by_plugin = dist.is_initialized()
from verl.utils.distributed import initialize_global_process_group_ray
initialize_global_process_group_ray()  # verl's call: must now be a no-op instead of failing
t = torch.ones(2); dist.all_reduce(t)
print(json.dumps(dict(created=created_by_plugin, backend=dist.get_backend(), world=dist.get_world_size(),
                      sum=t.tolist())))
"""


@pytest.fixture(scope="module")
def fresh(start_python):
    """The module's two fresh interpreters, started together, each with its own free port."""
    return {"verl_init": start_python(VERL_INIT, {"VERL_PLATFORM": "cpu", **_worker_env(_free_port())}),
            "plugin_init": start_python(PLUGIN_INIT, {"VERL_PLATFORM": "cpu", "WG_BACKEND": "ray",
                                                      **_worker_env(_free_port())})}


@pytest.mark.slow  # a fresh interpreter (start_python)
def test_backend_gap_verl_still_builds_a_duplicate_backend_string(fresh):
    r = fresh["verl_init"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()[-1]
    assert not out.startswith("INIT_OK"), (
        "verl's initialize_global_process_group_ray now works on the CPU platform: drop the workaround "
        f"(init_worker_process_group) and this test. Output: {out}"
    )
    assert "Duplicate device type cpu" in out, f"verl fails differently than expected: {out}"


@pytest.mark.slow  # a fresh interpreter (start_python)
def test_backend_gap_workaround_makes_verl_init_a_no_op(fresh):
    r = fresh["plugin_init"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"created": True, "backend": "gloo", "world": 1, "sum": [1.0, 1.0]}


def test_backend_gap_only_in_verl_worker_processes():
    env = {"WG_BACKEND": "ray", **_worker_env(1)}
    assert workarounds.is_verl_worker_process(env)
    assert not workarounds.is_verl_worker_process({k: v for k, v in env.items() if k != "WG_BACKEND"})
    assert not workarounds.is_verl_worker_process({k: v for k, v in env.items() if k != "MASTER_PORT"})
    assert workarounds.init_worker_process_group({"RANK": "0"}) is False

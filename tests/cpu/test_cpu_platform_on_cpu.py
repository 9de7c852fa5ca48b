"""The CPU platform and the registrations verl_drpo.cpu makes when (and only when) VERL_PLATFORM=cpu."""

import json

import pytest
import torch

from verl_drpo.cpu.platform import CPUDeviceModule, CPUPlatform


def test_platform_answers_what_verl_asks():
    p = CPUPlatform()  # instantiation fails if an abstract member of PlatformBase is missing
    assert p.device_name == "cpu"
    assert p.communication_backend_name() == "gloo"
    assert p.ray_resource_name() == "GPU"
    assert p.ray_resource_options(1) == {"num_gpus": 1}
    assert p.current_device() == torch.device("cpu")
    assert p.is_ipc_supported() is False
    assert p.is_platform_available(use_smi_check=True) is False  # never auto-detected on a GPU host
    with p.nvtx_range("x"):
        pass


def test_device_module_facade():
    dm = CPUPlatform().device_module
    assert isinstance(dm, CPUDeviceModule)
    free, total = dm.mem_get_info()
    assert 0 < free <= total
    assert dm.memory_allocated() > 0 and dm.max_memory_reserved() > 0
    assert dm.get_device_name() == "cpu" and dm.is_available() and dm.device_count() == 1
    state = dm.get_rng_state()
    a = torch.rand(3)
    dm.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))
    dm.empty_cache(), dm.synchronize(), dm.ipc_collect(), dm.set_device(0)
    assert dm.Stream is torch.cpu.Stream  # everything else falls through to torch.cpu
    with pytest.raises(AttributeError):
        dm.no_such_call


ACTIVATED = """
import json, os, verl
from verl.plugin.platform import get_platform
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
from verl.workers.engine import EngineRegistry
print(json.dumps(dict(
    platform=type(get_platform()).__name__, device=get_device_name(), backend=get_nccl_backend(),
    mem=get_torch_device().mem_get_info()[1] > 0,
    engine_device=os.environ.get("VERL_ENGINE_DEVICE"),
    engine=EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__)))
"""

INERT = """
import json, os, sys, verl
from verl.plugin.platform import PlatformRegistry
from verl.workers.rollout.replica import RolloutReplicaRegistry
import torch.distributed as dist
print(json.dumps(dict(loaded="verl_drpo.cpu" in sys.modules, heavy="verl_drpo.cpu.vllm_cpu.engine" in sys.modules,
    cpu_platform="cpu" in PlatformRegistry.registered_names(),
    replica=RolloutReplicaRegistry._registry["vllm"].__module__ != "verl.workers.rollout.replica",
    engine_device=os.environ.get("VERL_ENGINE_DEVICE"), pg=dist.is_initialized())))
"""


@pytest.fixture(scope="module")
def fresh(start_python):
    """The module's two fresh interpreters, started together: with VERL_PLATFORM=cpu, and without it in what looks
    like a verl worker process."""
    return {"activated": start_python(ACTIVATED, {"VERL_PLATFORM": "cpu"}),
            "inert": start_python(INERT, {"WG_BACKEND": "ray", "RANK": "0", "WORLD_SIZE": "1",
                                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})}


@pytest.mark.slow  # fresh interpreter / subprocess
def test_activation_registers_everything(fresh):
    r = fresh["activated"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict(platform="CPUPlatform", device="cpu", backend="gloo", mem=True, engine_device="cuda",
                       engine=got["engine"])
    assert "FSDP" in got["engine"]


@pytest.mark.slow  # fresh interpreter / subprocess
def test_inert_without_verl_platform(fresh):
    r = fresh["inert"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict(loaded=True, heavy=False, cpu_platform=False, replica=False, engine_device=None, pg=False)

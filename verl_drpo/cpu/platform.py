"""A ``cpu`` platform for verl's platform registry (``verl.plugin.platform``).

verl asks its platform object for the device name, the torch device module, the collective backend and the Ray
resource to reserve. On a machine without an accelerator this platform answers:

- device ``cpu``, collective backend ``gloo``, no IPC (weights reach the rollout server through Ray);
- Ray resource ``GPU``: verl's resource-pool manager only counts GPU/NPU resources, so a CPU run declares fake ones
  (``+ray_kwargs.ray_init.num_gpus=<n_gpus_per_node>``); each "GPU" is one CPU worker rank;
- ``device_module``: :class:`CPUDeviceModule`, a facade over ``torch.cpu`` that also answers the CUDA-style calls verl
  makes on its device module (memory statistics, ``empty_cache``, RNG state, ``get_device_name`` ...).

It is selected only explicitly, with ``VERL_PLATFORM=cpu`` (verl's auto-detection probes the vendors first and falls
back to nvidia).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

import psutil
import torch

from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


class CPUDeviceModule(ModuleType):
    """``torch.cpu`` plus the CUDA-style calls verl makes on ``get_torch_device()``.

    Memory figures are those of the host (``psutil``): ``mem_get_info`` returns (available, total) RAM, the
    allocator statistics are the resident set size of this process (CPU tensors have no caching allocator).
    Cache, IPC and allocator knobs are no-ops. Anything else is looked up on ``torch.cpu``, so a missing call fails
    with torch's own AttributeError.
    """

    def __init__(self) -> None:
        super().__init__("verl_drpo.cpu.device_module")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # device selection and synchronisation
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"

    @staticmethod
    def get_device_capability(device: Any = None) -> tuple[None, None]:
        return (None, None)

    # random number generation: CPU tensors share torch's default generator
    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    # memory
    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    @staticmethod
    def _rss() -> int:
        return int(psutil.Process(os.getpid()).memory_info().rss)

    def memory_allocated(self, device: Any = None) -> int:
        return self._rss()

    def memory_reserved(self, device: Any = None) -> int:
        return self._rss()

    def max_memory_allocated(self, device: Any = None) -> int:
        return self._rss()

    def max_memory_reserved(self, device: Any = None) -> int:
        return self._rss()

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    def memory_stats(self, device: Any = None) -> dict[str, int]:
        rss = self._rss()
        return {"allocated_bytes.all.current": rss, "reserved_bytes.all.current": rss}


@PlatformRegistry.register(platform=PLATFORM_NAME)
class CPUPlatform(PlatformBase):
    """verl platform for hosts without an accelerator (selected with ``VERL_PLATFORM=cpu``)."""

    _device_module = CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a GPU host that also has this plugin installed must keep its accelerator.
        return False

    def current_device(self) -> torch.device:  # verl moves tensors with `.to(current_device())`
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray fills CUDA_VISIBLE_DEVICES for the fake "GPU" resource; nothing reads it on CPU.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None

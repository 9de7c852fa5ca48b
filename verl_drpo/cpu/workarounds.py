"""The place where verl 0.9.1 offers no public seam for a CPU run, and what this package does about it.

Everything else in ``verl_drpo.cpu`` goes through verl's registries (``PlatformRegistry``,
``RolloutReplicaRegistry``), documented hooks, entry points, environment switches and Hydra overrides (the vLLM-on-CPU
workarounds are in :mod:`verl_drpo.cpu.vllm_cpu`). This one does not, so it lives here, with the upstream change that
would remove it, pinned by a test (``tests/cpu/test_cpu_workarounds_on_cpu.py``) that fails loudly when a verl
upgrade changes the code it relies on.

Process-group backend string (``verl/utils/distributed.py``). ``initialize_global_process_group_ray`` builds
``f"cpu:gloo,{device}:{backend}"``; with device ``cpu`` and backend ``gloo`` that is ``cpu:gloo,cpu:gloo``, which
torch rejects ("Duplicate device type cpu"). The function does nothing when a default process group already exists,
so :func:`init_worker_process_group` creates a plain ``gloo`` group first, in verl's worker processes only (those
verl starts with ``WG_BACKEND=ray`` and ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in their
environment), when ``verl_drpo.cpu`` is imported there (which verl does itself on ``import verl``).
Upstream fix: build the backend string without repeating a device type, e.g. just ``"gloo"`` when
``get_device_name() == "cpu"`` (or take the backend from the platform as a whole).

(An earlier HF-``generate`` rollout needed a second workaround, an entry in verl's private ``_ROLLOUT_REGISTRY``;
with verl's own vLLM rollout the worker side is verl's ``ServerAdapter`` and that workaround is gone.)
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

logger = logging.getLogger(__name__)


def is_verl_worker_process(environ: os._Environ | dict | None = None) -> bool:
    """True in the processes verl's RayWorkerGroup starts (it sets these variables in their runtime env)."""
    env = os.environ if environ is None else environ
    return env.get("WG_BACKEND") == "ray" and all(
        k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    )


def init_worker_process_group(environ: os._Environ | dict | None = None, timeout_s: float = 600.0) -> bool:
    """Create the default ``gloo`` process group in a verl worker process before verl tries to.

    Returns True when this call created the group; False when it is not a verl worker process or a group exists.
    Errors from torch (unreachable master, ...) propagate.
    """
    import torch.distributed as dist

    env = os.environ if environ is None else environ
    if not is_verl_worker_process(env) or dist.is_initialized():
        return False
    rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
    logger.info("verl_drpo.cpu: gloo process group rank %d/%d via %s:%s", rank, world_size,
                env["MASTER_ADDR"], env["MASTER_PORT"])
    dist.init_process_group(
        backend="gloo",
        init_method=f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return True

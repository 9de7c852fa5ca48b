"""The two places where verl 0.9.1 offers no public seam for a CPU run, and what this package does about them.

Everything else in ``verl_drpo.cpu`` goes through verl's registries (``PlatformRegistry``,
``RolloutReplicaRegistry``), entry points, environment switches and Hydra overrides. These two do not, so they live
here, each with the upstream change that would remove it, and each is pinned by a test
(``tests/cpu/test_cpu_workarounds_on_cpu.py``) that fails loudly when a verl upgrade changes the code they rely on.

1. In-worker rollout class (``verl/workers/rollout/base.py``). ``ActorRolloutRefWorker.init_model`` looks the rollout
   class up with ``get_rollout_class(name, mode)`` in the module-level dict ``_ROLLOUT_REGISTRY`` keyed
   ``(name, "async")`` -> dotted class path. There is no register function, so :func:`register_worker_rollout`
   adds an entry to that dict (an insertion only: no verl entry is replaced, no verl function is wrapped).
   Upstream fix: a ``register_rollout_class(name, mode, fqdn)`` beside ``get_rollout_class`` (like
   ``RolloutReplicaRegistry.register`` on the trainer side).

2. Process-group backend string (``verl/utils/distributed.py``). ``initialize_global_process_group_ray`` builds
   ``f"cpu:gloo,{device}:{backend}"``; with device ``cpu`` and backend ``gloo`` that is ``cpu:gloo,cpu:gloo``, which
   torch rejects ("Duplicate device type cpu"). The function does nothing when a default process group already
   exists, so :func:`init_worker_process_group` creates a plain ``gloo`` group first, in verl's worker processes only
   (those verl starts with ``WG_BACKEND=ray`` and ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in their
   environment), when ``verl_drpo.cpu`` is imported there (which verl does itself on ``import verl``).
   Upstream fix: build the backend string without repeating a device type, e.g. just ``"gloo"`` when
   ``get_device_name() == "cpu"`` (or take the backend from the platform as a whole).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

logger = logging.getLogger(__name__)

WORKER_ROLLOUT_CLASS = "verl_drpo.cpu.rollout.HFServerAdapter"


def register_worker_rollout(name: str, fqdn: str = WORKER_ROLLOUT_CLASS, mode: str = "async") -> None:
    """Workaround 1: make ``get_rollout_class(name, mode)`` return the class at ``fqdn``.

    Raises:
        RuntimeError: verl no longer has the ``_ROLLOUT_REGISTRY`` dict this relies on, or ``name`` is one of verl's
            own rollouts (this function never replaces verl's entries).
    """
    from verl.workers.rollout import base as rollout_base

    registry = getattr(rollout_base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise RuntimeError(
            "verl.workers.rollout.base._ROLLOUT_REGISTRY is gone or no longer a dict: verl changed how the in-worker "
            "rollout class is found. Use its new registration seam in verl_drpo/cpu/workarounds.py."
        )
    key = (name, mode)
    current = registry.get(key)
    if current is not None and current != fqdn:
        raise RuntimeError(f"rollout {key} is already registered as {current!r}; refusing to replace it with {fqdn!r}")
    registry[key] = fqdn


def is_verl_worker_process(environ: os._Environ | dict | None = None) -> bool:
    """True in the processes verl's RayWorkerGroup starts (it sets these variables in their runtime env)."""
    env = os.environ if environ is None else environ
    return env.get("WG_BACKEND") == "ray" and all(
        k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    )


def init_worker_process_group(environ: os._Environ | dict | None = None, timeout_s: float = 600.0) -> bool:
    """Workaround 2: create the default ``gloo`` process group in a verl worker process before verl tries to.

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

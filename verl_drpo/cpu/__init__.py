"""Optional CPU support: run verl's own trainer (``python -m verl.trainer.main_ppo``) end to end without an accelerator.

Loaded by the ``verl_drpo_cpu`` entry point (group ``verl.plugins``) on every ``import verl``, in the driver and in
every Ray worker. It does nothing unless ``VERL_PLATFORM=cpu``; then it

- registers the ``cpu`` platform with verl's ``PlatformRegistry`` (:mod:`verl_drpo.cpu.platform`);
- registers the ``hf_cpu`` rollout backend with ``RolloutReplicaRegistry`` (:mod:`verl_drpo.cpu.rollout`);
- sets ``VERL_ENGINE_DEVICE=cuda`` unless already set, so that verl's ``EngineRegistry`` hands out its FSDP engines
  (registered for cuda/npu only; they run on CPU with gloo);
- applies the two workarounds for places without a public seam (:mod:`verl_drpo.cpu.workarounds`).

verl swallows plugin import errors (DEBUG log), so a failure here is also logged as a warning before it propagates.
See docs/cpu-smoke.md.
"""

import os

PLATFORM_ENV = "VERL_PLATFORM"


def cpu_platform_requested() -> bool:
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == "cpu"


def activate() -> None:
    """Register the CPU platform and rollout with verl and apply the workarounds (idempotent)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from . import platform as _platform  # noqa: F401  (registers the "cpu" platform)
    from . import workarounds
    from .rollout import ROLLOUT_NAME

    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")

    def _load_replica():
        from .rollout import HFCPUReplica

        return HFCPUReplica

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    workarounds.register_worker_rollout(ROLLOUT_NAME)
    workarounds.init_worker_process_group()


if cpu_platform_requested():
    try:
        activate()
    except Exception as _e:  # verl would hide this at DEBUG level
        import logging

        logging.getLogger(__name__).warning("verl_drpo.cpu failed to activate the CPU platform: %r", _e)
        raise

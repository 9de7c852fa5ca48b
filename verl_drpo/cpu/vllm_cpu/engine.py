"""W4 of :mod:`verl_drpo.cpu.vllm_cpu`: verl's vLLM replica, server and worker extension, subclassed for a CPU.

Three subclasses, each overriding one thing through a seam verl documents:

- :class:`CPUvLLMReplica` (verl's ``vLLMReplica``): its ``server_class`` is :class:`CPUvLLMHttpServer`. Registered as
  rollout ``vllm`` with ``RolloutReplicaRegistry.register`` by :func:`verl_drpo.cpu.vllm_cpu.activate`.
- :class:`CPUvLLMHttpServer` (verl's ``vLLMHttpServer``): its ``_get_worker_extension_cls`` hook names
  :class:`CPUColocateWorkerExtension`, which vLLM imports by that path in its worker process.
- :class:`CPUColocateWorkerExtension` (verl's ``vLLMColocateWorkerExtension``): ``update_weights_from_ipc`` receives
  the actor's weights with verl's own ``BucketedWeightReceiver`` and loads them with verl's own ``_update_weights``,
  inside vLLM's layerwise reload (so that vLLM's CPU weight packing is undone before and redone after the load),
  cloning each tensor out of the shared-memory bucket. Plain (non-LoRA, unquantized) weights only, which is all the
  CPU smoke needs; anything else raises.
"""

from __future__ import annotations

import logging

import ray
import torch

from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

logger = logging.getLogger(__name__)

EXTENSION_CLS = f"{__name__}.CPUColocateWorkerExtension"


class CPUColocateWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocate worker extension with a weight sync that works on vLLM's CPU model runner."""

    def update_weights_from_ipc(self, peft_config: dict = None, base_sync_done=False, use_shm: bool = False):
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver

        if peft_config or self._is_qat_model or self._is_modelopt_qat:
            raise NotImplementedError(
                "verl_drpo.cpu.vllm_cpu: the CPU weight sync handles plain weights only (no LoRA adapter, no QAT)"
            )
        if self.device is None:
            self.device = torch.device("cpu")
        models = list(self._iter_all_models_with_config())
        for model, _ in models:
            initialize_layerwise_reload(model)

        def on_bucket_received(weights: list[tuple[str, torch.Tensor]], is_last: bool) -> None:
            # clone: the receiver reuses (and finally closes) the shared-memory bucket these tensors view
            self._update_weights([(n, t.clone()) for n, t in weights], peft_config=None,
                                 base_sync_done=base_sync_done)

        receiver = BucketedWeightReceiver(zmq_handle=self._get_zmq_handle(), device=self.device, use_shm=use_shm)
        receiver.receive_weights(on_bucket_received=on_bucket_received)
        for model, model_config in models:
            finalize_layerwise_reload(model, model_config)


class CPUvLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server, naming the CPU worker extension."""

    def _get_worker_extension_cls(self) -> str:
        return EXTENSION_CLS


class CPUvLLMReplica(vLLMReplica):
    """verl's vLLM replica, starting :class:`CPUvLLMHttpServer`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CPUvLLMHttpServer)

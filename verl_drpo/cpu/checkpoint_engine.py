"""A CPU checkpoint engine for verl's disaggregated trainers (``separate_async``, ``fully_async``): ``cpu_gloo``.

When the rollout runs on its own devices, verl moves the trainer's weights into the rollout replicas through a
checkpoint engine looked up by name in ``CheckpointEngineRegistry`` (``verl/checkpoint_engine/base.py``), from
``actor_rollout_ref.rollout.checkpoint_engine.backend``: the actor workers (``ActorRolloutRefWorker.init_model`` in
``verl/workers/engine_workers.py``) and the replicas' ``CheckpointEngineWorker`` each build one, and verl's
``CheckpointEngineManager`` drives them at every weight sync: ``prepare`` on all, ``build_topology`` on the driver,
``init_process_group`` on all, ``send_weights`` on the actor side while the rollout side consumes
``receive_weights`` through its server adapter, ``finalize`` on all. verl 0.9.1 ships engines for NCCL and NIXL (both
need ``cupy``, a CUDA library), HCCL (Ascend), Mooncake and Kimi (RDMA), and ``naive``, which only works when the
rollout lives inside the actor's own process and which ``trainer_separate_async.py`` refuses. So on a CPU the two
disaggregated modes stop before their first step (``Checkpoint engine nccl not registered``).

:class:`GlooCheckpointEngine` is the NCCL engine's broadcast done over a private gloo process group, through the
registry (a public seam: nothing of verl is patched): actor rank 0 broadcasts the full tensors, bucket by bucket, to
one receiver per rollout worker; the other actor ranks only walk the weight generator (producing each full tensor is
collective over the FSDP ranks). The group is rendezvoused through a ``TCPStore`` that actor rank 0 opens in
``prepare`` and dropped in ``finalize``, so every sync builds it afresh (what verl's manager expects: it calls
``prepare``/``init_process_group``/``finalize`` around every sync). Each bucket is three broadcasts: a header (sizes,
last-bucket flag), the pickled ``TensorMeta`` list, the bytes. The receiver hands out views of a freshly allocated
bucket, so nothing it yielded is overwritten by the next bucket.

Registered by :func:`register` (from :func:`verl_drpo.cpu.activate`, i.e. only with ``VERL_PLATFORM=cpu``), and
selected with ``actor_rollout_ref.rollout.checkpoint_engine.backend=cpu_gloo`` (the recipes' ``CHECKPOINT_BACKEND``).
Pinned by ``tests/cpu/test_cpu_checkpoint_engine_on_cpu.py``, which fails if verl's registry or the engine interface
changes, and which moves real weights between two processes through it.

Upstream change that would make it unnecessary: verl ships a gloo (or host shared-memory) checkpoint engine, or its
NCCL engine takes the collective backend from the platform (``communication_backend_name``) and keeps its buckets in
torch tensors instead of ``cupy`` arrays, so that the same engine runs over gloo on a CPU platform.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, AsyncGenerator, Generator, Iterable

import torch

from verl.checkpoint_engine.base import (
    CheckpointEngine,
    CheckpointEngineRegistry,
    merge_weight_chunks,
    split_weight_chunks,
)

logger = logging.getLogger(__name__)

BACKEND = "cpu_gloo"
_STORE_PREFIX = "verl_drpo_cpu_gloo"
_HEADER_FIELDS = 3  # meta bytes, bucket bytes, is_last


@dataclass(frozen=True)
class RendezvousAddress:
    """Where actor rank 0's ``TCPStore`` listens for this sync's process group."""

    host: str
    port: int


def _host_address() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address().strip("[]")
    except Exception:  # outside Ray (the unit test): the loopback address is the right one
        pass
    return socket.gethostbyname("localhost")


class GlooCheckpointEngine(CheckpointEngine):
    """verl checkpoint engine over a private gloo group: actor rank 0 broadcasts to every rollout worker.

    Args:
        bucket_size: bytes per broadcast (verl passes ``update_weights_bucket_megabytes << 20``).
        is_master: True on actor rank 0, the sender (verl passes it to the actor-side engines).
        timeout_s: gloo and store timeout for one sync.
    """

    def __init__(self, bucket_size: int, is_master: bool = False, timeout_s: float = 600.0) -> None:
        if bucket_size <= 0:
            raise ValueError(f"{BACKEND}: bucket_size must be > 0, got {bucket_size}")
        self.bucket_size = int(bucket_size)
        self.is_master = is_master
        self.timeout = timedelta(seconds=timeout_s)
        self.rank: int | None = None
        self.world_size: int | None = None
        self._store = None
        self._group = None

    # --- topology -------------------------------------------------------------------------------------------
    def prepare(self) -> RendezvousAddress | None:
        if not self.is_master:
            return None
        host = _host_address()
        # port 0: the store picks a free port, handed to the other ranks through verl's build_topology
        self._store = torch.distributed.TCPStore(host, 0, is_master=True, wait_for_workers=False,
                                                 timeout=self.timeout)
        return RendezvousAddress(host=host, port=int(self._store.port))

    @classmethod
    def build_topology(cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list):
        address = metadata[0]
        if not isinstance(address, RendezvousAddress):
            raise RuntimeError(f"{BACKEND}: actor rank 0 must be the sender (is_master=True); got {address!r}")
        world_size = 1 + rollout_world_size
        actor = {
            "rank": [0] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world_size] * actor_wg_world_size,
            "address": [address] * actor_wg_world_size,
        }
        rollout = {
            "rank": list(range(1, world_size)),
            "world_size": [world_size] * rollout_world_size,
            "address": [address] * rollout_world_size,
        }
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, address: RendezvousAddress) -> None:
        self.rank, self.world_size = rank, world_size
        if rank < 0:  # an actor rank that only walks the weight generator
            return
        store = self._store
        if rank > 0:
            store = torch.distributed.TCPStore(address.host, address.port, is_master=False, timeout=self.timeout)
            self._store = store
        prefixed = torch.distributed.PrefixStore(_STORE_PREFIX, store)
        self._group = torch.distributed.ProcessGroupGloo(prefixed, rank, world_size, self.timeout)

    def finalize(self) -> None:
        self._group = None
        self._store = None
        self.rank = self.world_size = None

    # --- transfer -------------------------------------------------------------------------------------------
    def _broadcast(self, tensor: torch.Tensor) -> None:
        self._group.broadcast(tensor, 0).wait()

    def _send_bucket(self, bucket: torch.Tensor, metas: list, is_last: bool) -> None:
        meta_bytes = torch.frombuffer(bytearray(pickle.dumps(metas)), dtype=torch.uint8)
        length = sum(m.chunk_size for m in metas)
        self._broadcast(torch.tensor([meta_bytes.numel(), length, int(is_last)], dtype=torch.int64))
        self._broadcast(meta_bytes)
        if length:
            self._broadcast(bucket[:length])

    def _receive_bucket(self) -> tuple[list, torch.Tensor, bool]:
        header = torch.zeros(_HEADER_FIELDS, dtype=torch.int64)
        self._broadcast(header)
        meta_len, length, is_last = (int(x) for x in header)
        meta_bytes = torch.empty(meta_len, dtype=torch.uint8)
        self._broadcast(meta_bytes)
        metas = pickle.loads(meta_bytes.numpy().tobytes())
        bucket = torch.empty(length, dtype=torch.uint8)  # fresh: the views yielded from it stay valid
        if length:
            self._broadcast(bucket)
        return metas, bucket, bool(is_last)

    @torch.no_grad()
    async def send_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]] | Generator, global_steps: int | None = None
    ) -> dict:
        if self.rank is None:
            raise RuntimeError(f"{BACKEND}: send_weights before init_process_group")
        if self.rank > 0:
            raise RuntimeError(f"{BACKEND}: rollout rank {self.rank} cannot send weights")
        if self.rank < 0:
            async for _ in split_weight_chunks(weights, self.bucket_size, meta_only=True):
                pass  # producing each full tensor is collective over the actor ranks: keep in step with rank 0
            return {}
        bucket = torch.empty(self.bucket_size, dtype=torch.uint8)
        metas: list = []
        offset = 0
        async for meta, chunk in split_weight_chunks(weights, self.bucket_size):
            if offset + meta.chunk_size > self.bucket_size:
                await asyncio.to_thread(self._send_bucket, bucket, metas, False)
                metas, offset = [], 0
            meta.offset = offset
            bucket[offset : offset + meta.chunk_size].copy_(chunk.reshape(-1).cpu())
            metas.append(meta)
            offset += meta.chunk_size
        await asyncio.to_thread(self._send_bucket, bucket, metas, True)
        return {}

    async def _receive_chunks(self) -> AsyncGenerator[tuple[Any, torch.Tensor], None]:
        if self.rank is None or self.rank <= 0:
            raise RuntimeError(f"{BACKEND}: receive_weights needs a rollout rank (>= 1), got {self.rank}")
        is_last = False
        while not is_last:
            metas, bucket, is_last = await asyncio.to_thread(self._receive_bucket)
            for meta in metas:
                yield meta, bucket[meta.offset : meta.offset + meta.chunk_size]

    @torch.no_grad()
    async def receive_weights(self, global_steps: int | None = None) -> AsyncGenerator[tuple[str, torch.Tensor], None]:
        async for name, tensor in merge_weight_chunks(self._receive_chunks(), self.bucket_size):
            yield name, tensor


def register() -> type:
    """Register :class:`GlooCheckpointEngine` as :data:`BACKEND` in verl's ``CheckpointEngineRegistry``; idempotent."""
    return CheckpointEngineRegistry.register(BACKEND)(GlooCheckpointEngine)

"""A CPU rollout backend for verl's agent loop: a Hugging Face model served by a Ray actor.

Three pieces, one per interface verl expects from a rollout backend (``rollout.name=hf_cpu``):

- :class:`HFRolloutServer` (a Ray actor per replica): token-in/token-out ``generate`` with the signature
  ``LLMServerClient`` calls, plus the lifecycle calls verl fans out (wake_up, sleep, abort_all_requests,
  resume_generation, kv-cache and profiler calls). Concurrent requests are batched: a request that arrives while
  a batch runs joins the next one (up to ``rollout.max_num_seqs`` per batch).
- :class:`HFCPUReplica` (trainer side, ``RolloutReplicaRegistry``): starts the server in ``launch_servers``.
- :class:`HFServerAdapter` (worker side, the hybrid engine's ``BaseRollout``): receives the actor's weights each step
  (``update_weights``) and pushes them to its replica's server.

Sampling and log-probs. For each new token the server computes the sampling distribution from the last logits:
``softmax(logits / T)`` restricted by top-k and top-p (renormalised), samples from it, and returns the log-probability
of the sampled token under that same distribution: the behaviour probability mu that DRPO anchors on. With top-k
off (-1 or 0) and top-p 1 this equals ``log_softmax(logits / T)``, i.e. exactly what verl's actor recomputes
(it divides the logits by the rollout temperature). With T = 0 (greedy, used for validation) the token is the argmax
and the returned log-prob is that of ``log_softmax(logits)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf_cpu"


def server_actor_name(replica_rank: int) -> str:
    return f"verl_drpo_hf_cpu_rollout_{replica_rank}"


# ----------------------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------------------


def sampling_log_probs(logits: torch.Tensor, temperature: float, top_k: int = -1, top_p: float = 1.0) -> torch.Tensor:
    """Log-probabilities of the distribution tokens are sampled from, for one row of logits.

    Args:
        logits: (vocab,) float logits of the next token.
        temperature: > 0 divides the logits; 0 means greedy (the returned distribution is then ``log_softmax(logits)``
            and the caller takes the argmax).
        top_k: keep the k largest logits (-1 or 0: off).
        top_p: keep the smallest set of tokens whose probability reaches top_p (1.0: off).

    Returns:
        (vocab,) log-probabilities; tokens removed by top-k/top-p get -inf.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scaled = logits.float() / temperature if temperature > 0 else logits.float()
    if top_k is not None and top_k > 0 and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_probs, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token is always kept)
        drop_sorted = (cum - sorted_probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    stop_ids: frozenset
    want_logprobs: bool
    future: asyncio.Future
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    stop_reason: Optional[str] = None


class HFRolloutServer:
    """Token-in/token-out generation with a Hugging Face causal LM on CPU (one per rollout replica).

    Used as a Ray actor by :class:`HFCPUReplica`; also usable as a plain object (tests), from inside a running event
    loop.
    """

    def __init__(self, config: Any, model_path: str, replica_rank: int = 0, trust_remote_code: bool = False,
                 seed: Optional[int] = None, torch_threads: Optional[int] = None):
        from transformers import AutoModelForCausalLM

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.config = config
        self.replica_rank = replica_rank
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        ).eval()
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.model.config, "eos_token_id", None)
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        pad = getattr(self.model.config, "pad_token_id", None)
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        base_seed = int(seed if seed is not None else getattr(config, "seed", 0) or 0)
        self.generator = torch.Generator().manual_seed(base_seed + 1009 * replica_rank)
        self.max_batch_size = max(1, int(getattr(config, "max_num_seqs", 64) or 64))
        self.global_steps: Optional[int] = None
        self.weight_version = 0
        self.awake = True
        # statistics, read by tests and by `stats()`
        self.batch_sizes: list[int] = []
        self.num_aborted = 0
        # request queue and control state (event-loop side)
        self._pending: list[_Request] = []
        self._worker_task: Optional[asyncio.Task] = None
        self._resume_event: Optional[asyncio.Event] = None
        self._reject_requests = False
        # read by the generation thread between tokens
        self._abort_flag = threading.Event()
        self._model_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def ready(self) -> dict:
        return {"replica_rank": self.replica_rank, "pid": os.getpid(),
                "num_params": sum(p.numel() for p in self.model.parameters())}

    def _resume(self) -> asyncio.Event:
        if self._resume_event is None:
            self._resume_event = asyncio.Event()
            self._resume_event.set()
        return self._resume_event

    async def wake_up(self, tags: Optional[list[str]] = None):
        self.awake = True

    async def sleep(self):
        # Weights stay in host memory (nothing to free on CPU); the flag is kept for lifecycle checks.
        self.awake = False

    async def abort_all_requests(self, reject_request: bool = False) -> dict:
        """Stop generation: the running batch ends after the current token with stop_reason "aborted" and partial
        outputs; queued requests are answered "aborted" with no tokens (verl's partial-rollout client resumes them).
        New requests wait for :meth:`resume_generation` (or fail at once when ``reject_request``)."""
        self._resume().clear()
        self._reject_requests = reject_request
        self._abort_flag.set()
        pending, self._pending = self._pending, []
        for req in pending:
            req.stop_reason = "aborted"
            self._finish(req)
        # wait until the running batch, if any, has returned its partial results
        while self._worker_task is not None and not self._worker_task.done():
            await asyncio.sleep(0.005)
        self._abort_flag.clear()
        return {"aborted": len(pending)}

    async def resume_generation(self):
        self._reject_requests = False
        self._resume().set()

    async def clear_kv_cache(self):  # no cache survives a batch
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None

    async def stats(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "num_aborted": self.num_aborted,
                "global_steps": self.global_steps, "weight_version": self.weight_version, "awake": self.awake}

    async def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> dict:
        """Load the trainer's weights (full tensors, HF parameter names) into the served model."""
        own = self.model.state_dict()
        unexpected = sorted(set(state_dict) - set(own))
        if unexpected:
            raise KeyError(f"rollout update_weights: names the served model does not have: {unexpected[:5]}")
        missing = sorted(set(own) - set(state_dict))
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied:
            raise KeyError(f"rollout update_weights: weights not sent: {missing[:5]}")
        for name, tensor in state_dict.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"rollout update_weights: {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(own[name].shape)}")
        with self._model_lock:
            self.model.load_state_dict(state_dict, strict=False)
        self.weight_version += 1
        if global_steps is not None:
            self.global_steps = global_steps
        return {"weight_version": self.weight_version, "num_tensors": len(state_dict)}

    # ------------------------------------------------------------------ generation
    def _max_tokens(self, prompt_len: int, sampling_params: dict) -> int:
        cfg = self.config
        response_length = int(getattr(cfg, "response_length", 512))
        prompt_length = int(getattr(cfg, "prompt_length", 512))
        max_model_len = getattr(cfg, "max_model_len", None) or (prompt_length + response_length)
        room = int(max_model_len) - prompt_len
        if room < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len "
                             f"{max_model_len}")
        if "max_tokens" in sampling_params:
            wanted = sampling_params["max_tokens"]
        elif "max_new_tokens" in sampling_params:
            wanted = sampling_params["max_new_tokens"]
        else:
            wanted = min(response_length, prompt_length + response_length - prompt_len)
        return max(1, min(int(wanted), room))

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict,
                       image_data: Any = None, video_data: Any = None, **kwargs: Any) -> TokenOutput:
        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise NotImplementedError("the hf_cpu rollout is text-only")
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError("empty prompt")
        sp = dict(sampling_params)
        rep = float(sp.get("repetition_penalty", 1.0) or 1.0)
        if rep != 1.0:
            raise NotImplementedError(f"repetition_penalty={rep} is not supported by the hf_cpu rollout (use 1.0)")
        temperature = float(sp.get("temperature", 1.0))
        stop_ids = set(int(t) for t in (sp.get("stop_token_ids") or []))
        if not sp.get("ignore_eos", False):
            stop_ids |= self.eos_ids
        req = _Request(
            prompt_ids=prompt_ids,
            max_tokens=self._max_tokens(len(prompt_ids), sp),
            temperature=temperature,
            top_k=int(sp.get("top_k", -1) if sp.get("top_k") is not None else -1),
            top_p=float(sp.get("top_p", 1.0) if sp.get("top_p") is not None else 1.0),
            stop_ids=frozenset(stop_ids),
            # verl passes a bool; vLLM-style callers pass 0 ("the sampled token's log-prob")
            want_logprobs=sp.get("logprobs") is not None and sp.get("logprobs") is not False,
            future=asyncio.get_running_loop().create_future(),
        )
        if self._reject_requests:
            raise RuntimeError("hf_cpu rollout: generation is paused and rejecting requests")
        await self._resume().wait()
        self._pending.append(req)
        if self._worker_task is None or self._worker_task.done():
            self._worker_task = asyncio.get_running_loop().create_task(self._serve())
        await req.future
        return TokenOutput(
            token_ids=req.token_ids,
            log_probs=req.log_probs if req.want_logprobs else None,
            stop_reason=req.stop_reason,
            extra_fields={"global_steps": self.global_steps},
        )

    def _finish(self, req: _Request) -> None:
        if req.stop_reason == "aborted":
            self.num_aborted += 1
        if not req.future.done():
            req.future.set_result(None)

    async def _serve(self) -> None:
        """Drain the queue batch by batch; requests arriving meanwhile wait for the next batch."""
        await asyncio.sleep(0.01)  # let concurrent callers enqueue before the first batch forms
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size:]
            try:
                await asyncio.to_thread(self._generate_batch, batch)
            except Exception as e:  # hand the error to every caller of this batch, then go on with the next one
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(e)
                continue
            for req in batch:
                self._finish(req)

    @torch.no_grad()
    def _generate_batch(self, batch: list[_Request]) -> None:
        """Sample every request of ``batch`` token by token with a shared KV cache (runs in a worker thread)."""
        self.batch_sizes.append(len(batch))
        bsz = len(batch)
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((bsz, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((bsz, width), dtype=torch.long)
        for i, r in enumerate(batch):  # left padding
            input_ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            attention[i, width - len(r.prompt_ids):] = 1
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        active = [True] * bsz
        past = None
        step_ids, step_pos = input_ids, position_ids
        max_new = max(r.max_tokens for r in batch)
        with self._model_lock:
            for _ in range(max_new):
                if self._abort_flag.is_set():
                    for i, r in enumerate(batch):
                        if active[i]:
                            r.stop_reason = "aborted"
                            active[i] = False
                    break
                out = self.model(input_ids=step_ids, attention_mask=attention, position_ids=step_pos,
                                 past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1, :]
                next_ids = torch.full((bsz,), self.pad_id, dtype=torch.long)
                for i, r in enumerate(batch):
                    if not active[i]:
                        continue
                    logp = sampling_log_probs(logits[i], r.temperature, r.top_k, r.top_p)
                    if r.temperature > 0:
                        tok = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
                    else:
                        tok = int(torch.argmax(logp))
                    r.token_ids.append(tok)
                    r.log_probs.append(float(logp[tok]))
                    next_ids[i] = tok
                    if tok in r.stop_ids or len(r.token_ids) >= r.max_tokens:
                        r.stop_reason = "completed"
                        active[i] = False
                if not any(active):
                    break
                step_ids = next_ids[:, None]
                step_pos = step_pos[:, -1:] + 1
                attention = torch.cat([attention, torch.ones((bsz, 1), dtype=torch.long)], dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# trainer side: the replica
# ----------------------------------------------------------------------------------------------------------------------


def _model_path(model_config: Any) -> str:
    for key in ("local_path", "path"):
        value = model_config.get(key) if hasattr(model_config, "get") else getattr(model_config, key, None)
        if value:
            return str(value)
    raise ValueError("model config has neither local_path nor path")


class HFCPUReplica(RolloutReplica):
    """One ``HFRolloutServer`` actor per replica, on the node of the replica's first worker (hybrid mode only)."""

    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"the hf_cpu rollout supports the hybrid engine only (trainer modes sync and colocate_async), "
                f"not {self.rollout_mode}"
            )
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        options: dict[str, Any] = {
            "name": server_actor_name(self.replica_rank),
            "num_cpus": 0,
            "max_concurrency": self.max_concurrency,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}},
        }
        if node_id is not None:
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        trust = bool(self.model_config.get("trust_remote_code", False)) if hasattr(self.model_config, "get") else False
        server = ray.remote(HFRolloutServer).options(**options).remote(
            self.config, _model_path(self.model_config), self.replica_rank, trust
        )
        info = await server.ready.remote()
        logger.info("hf_cpu rollout replica %d ready: %s", self.replica_rank, info)
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-cpu-replica-{self.replica_rank}"


# ----------------------------------------------------------------------------------------------------------------------
# worker side: the hybrid engine's rollout object
# ----------------------------------------------------------------------------------------------------------------------


class HFServerAdapter(BaseRollout):
    """Pushes the actor's weights to this rank's replica server; one leader rank per replica talks to it."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        per_replica = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                       * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // per_replica if replica_rank == -1 else replica_rank
        self.is_leader = rank % per_replica == 0
        self._server = None
        self.num_updates = 0

    def _handle(self):
        if self._server is None:
            deadline = time.monotonic() + 120
            while True:
                try:
                    self._server = ray.get_actor(server_actor_name(self.replica_rank))
                    break
                except ValueError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"hf_cpu rollout server {server_actor_name(self.replica_rank)} not found")
                    time.sleep(0.2)
        return self._server

    async def resume(self, tags: list[str]):
        if self.is_leader:
            await self._handle().wake_up.remote(tags)

    async def release(self):
        if self.is_leader:
            await self._handle().sleep.remote()

    async def update_weights(self, weights: Iterable, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf_cpu rollout: wire_format {wire_format!r} (only named_tensors)")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("hf_cpu rollout: LoRA adapters are not supported (set lora.merge=True)")
        state: dict[str, torch.Tensor] = {}
        for name, tensor in weights:  # every rank iterates: gathering a sharded tensor is a collective
            if hasattr(tensor, "full_tensor"):
                tensor = tensor.full_tensor()
            if self.is_leader:
                state[name] = tensor.detach().to("cpu", dtype=torch.float32).clone()
        if self.is_leader:
            await self._handle().update_weights.remote(state, kwargs.get("global_steps"))
        self.num_updates += 1

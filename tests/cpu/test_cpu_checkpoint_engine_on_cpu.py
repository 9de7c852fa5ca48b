"""The CPU checkpoint engine (verl_drpo/cpu/checkpoint_engine.py): pinned against verl's registry and engine interface,
and shown to move real weights between processes the way verl's CheckpointEngineManager drives it.

When a verl upgrade changes the registry, the engine's abstract interface, the calls verl makes on it, or ships a
CPU-capable engine of its own, a test here fails with a message that says what to change.
"""

import asyncio
import hashlib
import inspect
import json
import subprocess
import sys

import pytest
import torch

from verl_drpo.cpu import checkpoint_engine as cpu_ckpt

# verl 0.9.1's engines and what each needs; none runs on a CPU-only host except "naive" (colocated only).
VERL_BACKENDS_NOT_FOR_CPU = {"naive", "nccl", "nixl", "hccl", "kimi", "mooncake", "delta_sharded"}


# ---- verl's seam and interface ----------------------------------------------------------------------------------


def test_verl_engine_interface_is_the_one_implemented():
    from verl.checkpoint_engine.base import CheckpointEngine

    abstract = set(CheckpointEngine.__abstractmethods__)
    assert abstract == {"prepare", "build_topology", "init_process_group", "finalize", "send_weights",
                        "receive_weights"}, (
        f"verl's CheckpointEngine interface changed (abstract methods now {sorted(abstract)}): update "
        "verl_drpo/cpu/checkpoint_engine.py to it")
    assert not cpu_ckpt.GlooCheckpointEngine.__abstractmethods__
    assert list(inspect.signature(CheckpointEngine.send_weights).parameters) == ["self", "weights", "global_steps"]
    assert list(inspect.signature(CheckpointEngine.receive_weights).parameters) == ["self", "global_steps"]
    assert getattr(CheckpointEngine, "wire_format", None) == "named_tensors"


def test_verl_builds_and_drives_engines_as_the_engine_expects():
    from verl.checkpoint_engine import base
    from verl.workers import engine_workers

    actor_side = inspect.getsource(engine_workers.ActorRolloutRefWorker.init_model)
    assert "CheckpointEngineRegistry.new(" in actor_side and "is_master=(torch.distributed.get_rank() == 0)" in \
        actor_side and "bucket_size=bucket_size" in actor_side, (
        "verl's actor worker no longer builds its checkpoint engine with is_master=(rank 0) and bucket_size: "
        "GlooCheckpointEngine's sender election relies on it")
    rollout_side = inspect.getsource(base.CheckpointEngineWorker.__init__)
    assert "CheckpointEngineRegistry.new(" in rollout_side and "bucket_size=bucket_size" in rollout_side
    manager = inspect.getsource(base.CheckpointEngineManager.build_process_group)
    for step in ('"prepare"', "build_topology(", '"init_process_group"'):
        assert step in manager, f"verl's CheckpointEngineManager no longer calls {step} when building the group"
    sync = inspect.getsource(base.CheckpointEngineManager.update_weights)
    assert '"finalize"' in sync and "build_process_group(" in sync, (
        "verl's manager no longer builds and finalizes the group at every sync: GlooCheckpointEngine builds its "
        "gloo group per sync")


def test_verl_still_has_no_cpu_engine_of_its_own():
    from verl.checkpoint_engine.base import CheckpointEngineRegistry

    import verl.checkpoint_engine  # noqa: F401  (imports verl's optional engines)

    theirs = {name for name, cls in CheckpointEngineRegistry._registry.items()
              if not cls.__module__.startswith("verl_drpo.")}
    new = theirs - VERL_BACKENDS_NOT_FOR_CPU
    assert not new, (
        f"verl registers checkpoint engines this test does not know: {sorted(new)}. If one runs on a CPU (gloo, "
        "shared memory), use it in scripts/smoke_cpu.sh and retire verl_drpo/cpu/checkpoint_engine.py")


def test_registered_only_with_the_cpu_platform(start_python):
    code = """
import json, verl
from verl.checkpoint_engine.base import CheckpointEngineRegistry
cls = CheckpointEngineRegistry._registry.get("cpu_gloo")
print(json.dumps(None if cls is None else cls.__module__))
"""
    off, on = start_python(code, {}), start_python(code, {"VERL_PLATFORM": "cpu"})  # both interpreters at once
    off, on = off.result(), on.result()
    assert off.returncode == 0, off.stderr[-3000:]
    assert json.loads(off.stdout.strip().splitlines()[-1]) is None
    assert on.returncode == 0, on.stderr[-3000:]
    assert json.loads(on.stdout.strip().splitlines()[-1]) == "verl_drpo.cpu.checkpoint_engine"


def test_topology_one_sender_and_every_rollout_worker():
    address = cpu_ckpt.RendezvousAddress("127.0.0.1", 1234)
    actor, rollout = cpu_ckpt.GlooCheckpointEngine.build_topology(3, 2, [address, None, None, None, None])
    assert actor == {"rank": [0, -1, -1], "world_size": [3, 3, 3], "address": [address] * 3}
    assert rollout == {"rank": [1, 2], "world_size": [3, 3], "address": [address] * 2}
    with pytest.raises(RuntimeError, match="actor rank 0 must be the sender"):
        cpu_ckpt.GlooCheckpointEngine.build_topology(1, 1, [None, None])


# ---- real weights through real gloo, driven as verl's manager drives it ----------------------------------------


def _weights(sync: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(sync)
    return [
        ("model.embed_tokens.weight", torch.randn(40, 16, generator=g)),  # 2560 B: larger than a bucket, chunked
        ("model.layers.0.mlp.up_proj.weight", torch.randn(8, 4, generator=g)),
        ("model.norm.weight", torch.randn(16, generator=g).to(torch.bfloat16)),
        ("lm_head.bias", torch.arange(5, dtype=torch.int64) * (sync + 1)),
    ]


def _digest(named) -> dict:
    return {n: [str(t.dtype), list(t.shape), hashlib.sha256(t.contiguous().view(torch.uint8).numpy()).hexdigest()]
            for n, t in named}


_PEER = """
import asyncio, hashlib, json, sys, torch
from verl_drpo.cpu.checkpoint_engine import GlooCheckpointEngine, RendezvousAddress
role, bucket = sys.argv[1], int(sys.argv[2])
engine = GlooCheckpointEngine(bucket_size=bucket)
assert engine.prepare() is None  # only the sender opens the rendezvous
def digest(named):
    return {n: [str(t.dtype), list(t.shape), hashlib.sha256(t.contiguous().view(torch.uint8).numpy()).hexdigest()]
            for n, t in named}
async def main():
    for line in sys.stdin:
        kw = json.loads(line)
        engine.init_process_group(rank=kw["rank"], world_size=kw["world_size"],
                                  address=RendezvousAddress(kw["host"], kw["port"]))
        if role == "rollout":
            got = [(n, t.clone()) async for n, t in engine.receive_weights(global_steps=kw["sync"])]
            print(json.dumps(digest(got)), flush=True)
        else:  # an actor rank other than 0: walks its (here local) weight generator, sends nothing
            await engine.send_weights(iter([("x", torch.zeros(3))]), global_steps=kw["sync"])
            print(json.dumps({}), flush=True)
        engine.finalize()
asyncio.run(main())
"""


@pytest.mark.slow
def test_weights_reach_every_rollout_worker_at_every_sync(run_python):
    bucket = 1024  # bytes: several buckets per sync, one tensor split across buckets
    sender = cpu_ckpt.GlooCheckpointEngine(bucket_size=bucket, is_master=True)
    env = {k: v for k, v in __import__("os").environ.items() if k != "VERL_PLATFORM"}
    peers = [subprocess.Popen([sys.executable, "-c", _PEER, role, str(bucket)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for role in ("actor", "rollout", "rollout")]
    try:
        for sync in (1, 2):  # the group is rebuilt at each sync, on a fresh rendezvous
            address = sender.prepare()
            actor, rollout = cpu_ckpt.GlooCheckpointEngine.build_topology(2, 2, [address, None, None, None])
            for peer, rank in zip(peers, [actor["rank"][1], *rollout["rank"]]):
                peer.stdin.write(json.dumps(dict(rank=rank, world_size=actor["world_size"][0], host=address.host,
                                                 port=address.port, sync=sync)) + "\n")
                peer.stdin.flush()
            sender.init_process_group(rank=0, world_size=actor["world_size"][0], address=address)
            metrics = asyncio.run(sender.send_weights(iter(_weights(sync)), global_steps=sync))
            assert metrics == {}
            sender.finalize()
            want = _digest(_weights(sync))
            for peer, role in zip(peers, ("actor", "rollout", "rollout")):
                line = peer.stdout.readline()
                assert line, peer.stderr.read()[-3000:]
                got = json.loads(line)
                assert got == ({} if role == "actor" else want), f"sync {sync}, {role}: {got} != {want}"
    finally:
        for peer in peers:
            peer.stdin.close()
        for peer in peers:
            assert peer.wait(timeout=120) == 0, peer.stderr.read()[-3000:]


def test_refuses_misuse():
    with pytest.raises(ValueError, match="bucket_size"):
        cpu_ckpt.GlooCheckpointEngine(bucket_size=0)
    engine = cpu_ckpt.GlooCheckpointEngine(bucket_size=16)
    with pytest.raises(RuntimeError, match="before init_process_group"):
        asyncio.run(engine.send_weights(iter([])))


def test_verl_separate_async_without_hybrid_replicas_still_needs_a_quiet_logger():
    # verl 0.9.1, trainer_separate_async.py _setup, branch hybrid_engine=False (the recipes' setting):
    # logger.info(..., flush=True) raises TypeError whenever the module's logger is at INFO (VERL_LOGGING_LEVEL's
    # default). recipe/drpo/common.sh runs separate_async's workers at WARN for it; docs/recipes.md says so.
    from verl.trainer.ppo.v1 import trainer_separate_async

    src = inspect.getsource(trainer_separate_async.PPOTrainerSeparateAsync._setup)
    assert "flush=True" in src, (
        "verl's separate_async no longer passes flush=True to logger.info: drop VERL_LOGGING_LEVEL=WARN from "
        "recipe/drpo/common.sh (drpo_trainer_mode), docs/recipes.md and the row in docs/cpu-smoke.md")

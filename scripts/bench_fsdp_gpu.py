#!/usr/bin/env python3
"""Time one real actor update of verl's FSDP engine with the DRPO loss against ``vanilla`` (GRPO), in one process.

    python scripts/bench_fsdp_gpu.py                                    # Qwen2.5-0.5B shape, 1 GPU, drpo vs vanilla
    python scripts/bench_fsdp_gpu.py --loss-modes drpo vanilla dppo_tv --batch-size 32 --response-len 1024
    python scripts/bench_fsdp_gpu.py --model-shape qwen3-4b-base --batch-size 8 --group-size 8 --micro-batch-size 1 \
        --prompt-len 512 --response-len 8192 --steps 2 --warmup 1   # the paper's model shape (gpu-h200 figures)
    python scripts/bench_fsdp_gpu.py --entropy on ...                  # with the entropy pass the recipes log
    python scripts/bench_fsdp_gpu.py --device cpu --model-shape tiny --steps 2 --warmup 1      # plumbing check, CPU

What is measured: ``engine.train_batch`` of verl's FSDP2 language-model engine (``EngineRegistry``, the engine the
actor worker uses), i.e. zero_grad + forward + verl's ``ppo_loss`` (which calls the registered policy loss) +
backward over the micro-batches + grad clip + AdamW step, on a randomly initialised model with the shape of
Qwen2.5-0.5B (no download), with verl's FSDP defaults (fp32 master weights, bf16 mixed-precision compute) and
verl's remove-padding path, as in the recipes. Batches are synthetic: random
token ids, left-padded prompts and right-padded responses, mu = the model's own log-probs plus noise (a
training-inference mismatch), binary rewards centred per group of ``--group-size`` as GRPO without std
normalisation does. Loss modes are interleaved step by step (A B A B ...) so drift affects them alike. Reported:
median and mean seconds per update, response tokens per second, peak device memory, and the slowdown of each mode
relative to the first one. The loss itself is a few element-wise ops per token; expect the difference to be
within noise on a GPU.

Needs a CUDA GPU (single process, world size 1; NCCL). ``--device cpu`` runs the same code path on CPU through
verl-drpo's CPU platform (``VERL_PLATFORM=cpu``, gloo) with a tiny model, to check the plumbing without a GPU; its
timings say nothing about GPUs. Not part of the CPU test suite's timing claims.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from functools import partial

from verl_drpo import modes  # the table of loss modes: no torch, no verl

# Qwen2.5-0.5B(-Instruct) architecture (config.json of the released model); weights are random.
QWEN25_05B_SHAPE = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, hidden_act="silu",
)
TINY_SHAPE = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, hidden_act="silu",
)
# Qwen3-4B(-Base), the paper's model (config.json of the released model); 4.02 B parameters with tied embeddings.
# Its heads are 128 wide although 32 heads x 128 != hidden 2560: Qwen3 sets head_dim explicitly.
QWEN3_4B_SHAPE = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, hidden_act="silu",
)
# The Qwen3 code path at a CPU size; head_dim 32 != 64 / 4 like the real model's head_dim != hidden / heads.
TINY_QWEN3_SHAPE = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, hidden_act="silu",
)
# name -> (transformers config class, shape)
SHAPES = {"qwen2.5-0.5b": ("Qwen2Config", QWEN25_05B_SHAPE), "tiny": ("Qwen2Config", TINY_SHAPE),
          "qwen3-4b-base": ("Qwen3Config", QWEN3_4B_SHAPE), "tiny-qwen3": ("Qwen3Config", TINY_QWEN3_SHAPE)}
# --entropy: what verl's actor computes besides the log-probs in the update (actor.calculate_entropy, and
# actor.entropy_checkpointing, which recomputes the entropy in backward instead of keeping its inputs)
ENTROPY = {"off": (False, False), "on": (True, False), "checkpointing": (True, True)}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the bench feeds bypass-mode inputs (old_log_probs = mu); a decoupled-input mode (drpo_prox) would need verl's
    # IS weights as well, so it is not offered
    bypass_modes = sorted(n for n in modes.MODES if not modes.uses_decoupled_inputs(n))
    p.add_argument("--loss-modes", nargs="+", default=["drpo", "vanilla"], choices=bypass_modes,
                   help="loss modes to time; the first is the reference of the slowdown column")
    p.add_argument("--model-shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per update (one mini-batch)")
    p.add_argument("--group-size", type=int, default=8, help="responses per prompt (GRPO group)")
    p.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward/backward")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--response-len", type=int, default=768)
    p.add_argument("--steps", type=int, default=5, help="timed updates per loss mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per loss mode first")
    p.add_argument("--mismatch", type=float, default=0.05, help="std of the noise between log pi and log mu")
    p.add_argument("--entropy", choices=sorted(ENTROPY), default="off",
                   help="entropy in the update (verl's actor.calculate_entropy; checkpointing: also "
                        "actor.entropy_checkpointing). The recipes log it with entropy_coeff=0")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--attn-implementation", default="auto",
                   help="transformers attention: auto = flash_attention_2 on CUDA when flash_attn is installed "
                        "(what verl uses by default), else sdpa")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.batch_size % args.group_size or args.batch_size % args.micro_batch_size:
        p.error("--batch-size must be a multiple of --group-size and of --micro-batch-size")
    if min(args.prompt_len, args.response_len, args.steps) < 1 or args.warmup < 0:
        p.error("lengths and --steps must be >= 1, --warmup >= 0")
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_process(device: str) -> None:
    """World size 1: what verl's engine expects to find (a default process group)."""
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=os.environ.get("MASTER_PORT") or str(_free_port()))
    if device == "cpu":
        os.environ["VERL_PLATFORM"] = "cpu"  # verl-drpo's CPU platform (verl_drpo/cpu), read on `import verl`
    import torch
    import torch.distributed as dist

    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_fsdp_gpu: no CUDA device; use --device cpu --model-shape tiny for a plumbing check")
        torch.cuda.set_device(0)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo", rank=0, world_size=1)


def write_random_model(shape_name: str, path: str, seed: int) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config_class, shape = SHAPES[shape_name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**shape, torch_dtype="bfloat16")
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(path)


def attn_implementation(args) -> str:
    if args.attn_implementation != "auto":
        return args.attn_implementation
    if args.device == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def build_engine(model_path: str, args):
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine import EngineRegistry

    model_config = HFModelConfig(
        path=model_path, load_tokenizer=False, use_remove_padding=True,
        enable_gradient_checkpointing=args.gradient_checkpointing,
        override_config={"attn_implementation": attn_implementation(args)},
    )
    model_config.model_type = "language_model"
    engine_config = FSDPEngineConfig(forward_only=False, strategy="fsdp2", use_remove_padding=True,
                                     entropy_checkpointing=ENTROPY[args.entropy][1])
    optimizer_config = FSDPOptimizerConfig(lr=1e-6, clip_grad=1.0)
    engine = EngineRegistry.new(model_type="language_model", backend="fsdp2", model_config=model_config,
                                engine_config=engine_config, optimizer_config=optimizer_config,
                                checkpoint_config=CheckpointConfig())
    engine.initialize()
    return engine


def bench_config(loss_mode: str, args):
    """The mode's paper settings from the table (``verl_drpo.config.actor_config``), the recipes' aggregation over a
    constant horizon, and this benchmark's batch layout."""
    from verl_drpo.config import actor_config

    return actor_config(loss_mode, strategy="fsdp2", rollout_n=args.group_size,
                        ppo_mini_batch_size=args.batch_size // args.group_size,
                        ppo_micro_batch_size_per_gpu=args.micro_batch_size, loss_agg_mode="seq-mean-token-sum-norm",
                        loss_scale_factor=args.response_len,  # the recipes' constant horizon
                        use_kl_loss=False, entropy_coeff=0.0)


def make_batch(args, vocab_size: int, generator):
    """Padded tensors of one mini-batch: left-padded prompts, right-padded responses, group-centred advantages."""
    import torch

    from verl.utils.model import compute_position_id_with_mask

    b, p, r = args.batch_size, args.prompt_len, args.response_len
    input_ids = torch.randint(0, vocab_size, (b, p + r), generator=generator)
    prompt_lens = torch.randint(max(1, p // 2), p + 1, (b,), generator=generator)
    response_lens = torch.randint(max(1, r // 4), r + 1, (b,), generator=generator)
    cols_p, cols_r = torch.arange(p), torch.arange(r)
    prompt_mask = cols_p[None, :] >= (p - prompt_lens)[:, None]
    response_mask = cols_r[None, :] < response_lens[:, None]
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1).long()
    rewards = torch.randint(0, 2, (b // args.group_size, args.group_size), generator=generator).float()
    advantages = (rewards - rewards.mean(dim=1, keepdim=True)).reshape(b, 1).expand(b, r).contiguous()
    return {
        "input_ids": input_ids,
        "prompts": input_ids[:, :p],
        "responses": input_ids[:, p:],
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
        "response_mask": response_mask.long(),
        "advantages": advantages * response_mask,
    }


def to_engine_input(tensors: dict, args, extra: dict | None = None, calculate_entropy: bool = False):
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data = DataProto.from_single_dict({**tensors, **(extra or {})}, meta_info={"temperature": 1.0})
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, global_batch_size=args.batch_size, micro_batch_size_per_gpu=args.micro_batch_size,
                         use_dynamic_bsz=False, use_remove_padding=True, use_fused_kernels=False,
                         max_token_len_per_gpu=(args.prompt_len + args.response_len) * args.micro_batch_size,
                         calculate_entropy=calculate_entropy)
    return td


def rollout_log_probs(engine, tensors: dict, args, generator):
    """mu: the engine's own log-probs of the sampled tokens, plus Gaussian noise (the rollout engine's mismatch)."""
    import torch

    from verl.workers.utils.padding import no_padding_2_padding

    td = to_engine_input(tensors, args)
    with engine.eval_mode():
        out = engine.infer_batch(td)
    log_probs = no_padding_2_padding(out["model_output"]["log_probs"], td).float().cpu()
    noise = args.mismatch * torch.randn(log_probs.shape, generator=generator)
    return (log_probs + noise).clamp(max=0.0) * tensors["response_mask"]


def timed_update(engine, td, loss_fn, device: str) -> tuple[float, dict]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    with engine.train_mode():
        out = engine.train_batch(td, loss_function=loss_fn)
    sync()
    return time.perf_counter() - start, dict(out.get("metrics", {}))


def _scalar(value):
    import torch

    if isinstance(value, list):
        value = value[-1] if value else float("nan")
    if hasattr(value, "aggregate"):  # verl's Metric (values of the micro-batches + how to combine them)
        value = value.aggregate()
    if isinstance(value, torch.Tensor):
        value = value.float().mean().item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    init_single_process(args.device)
    import torch

    import verl  # noqa: F401  (loads the verl.plugins entry points: registers drpo & co.)
    from verl.workers.utils.losses import ppo_loss

    print(f"[bench] torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
          + f", attention {attn_implementation(args)}, entropy {args.entropy}", flush=True)
    shape = SHAPES[args.model_shape][1]
    generator = torch.Generator().manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_fsdp_") as model_dir:
        print(f"[bench] writing a random {args.model_shape} model to {model_dir}", flush=True)
        write_random_model(args.model_shape, model_dir, args.seed)
        t0 = time.perf_counter()
        engine = build_engine(model_dir, args)
        print(f"[bench] engine ready in {time.perf_counter() - t0:.1f}s", flush=True)

        tensors = make_batch(args, shape["vocab_size"], generator)
        old_log_probs = rollout_log_probs(engine, tensors, args, generator)
        n_tokens = int(tensors["response_mask"].sum())
        loss_fns = {m: partial(ppo_loss, config=bench_config(m, args)) for m in args.loss_modes}
        times: dict[str, list[float]] = {m: [] for m in args.loss_modes}
        last_metrics: dict[str, dict] = {}
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        peak: dict[str, float] = {}
        for step in range(args.warmup + args.steps):
            for mode in args.loss_modes:  # interleaved
                td = to_engine_input(tensors, args, {"old_log_probs": old_log_probs},
                                     calculate_entropy=ENTROPY[args.entropy][0])
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds, metrics = timed_update(engine, td, loss_fns[mode], args.device)
                if args.device == "cuda":
                    peak[mode] = max(peak.get(mode, 0.0), torch.cuda.max_memory_allocated() / 2**30)
                if step >= args.warmup:
                    times[mode].append(seconds)
                last_metrics[mode] = {k: _scalar(v) for k, v in metrics.items()}
                phase = "warm-up" if step < args.warmup else "timed"
                print(f"[bench] step {step + 1}/{args.warmup + args.steps} ({phase}) {mode:<9} {seconds:.3f}s",
                      flush=True)

    ref = statistics.median(times[args.loss_modes[0]])
    results = []
    print(f"\n[bench] {args.model_shape}, batch {args.batch_size} x (prompt {args.prompt_len} + response "
          f"{args.response_len}), micro-batch {args.micro_batch_size}, entropy {args.entropy}, {n_tokens} response "
          "tokens per update")
    vs = "vs " + args.loss_modes[0]
    print(f"{'loss_mode':<10} {'median s':>9} {'mean s':>8} {'resp tok/s':>11} {'peak GiB':>9} {vs:>10}")
    for mode in args.loss_modes:
        med, mean = statistics.median(times[mode]), statistics.fmean(times[mode])
        row = dict(loss_mode=mode, median_s=med, mean_s=mean, tokens_per_s=n_tokens / med,
                   peak_mem_gib=peak.get(mode), relative=med / ref, steps=times[mode],
                   pg_loss=last_metrics[mode].get("actor/pg_loss"), grad_norm=last_metrics[mode].get("grad_norm"),
                   drpo_weight_mean=last_metrics[mode].get("actor/drpo/weight_mean"),
                   entropy=last_metrics[mode].get("actor/entropy_loss", last_metrics[mode].get("actor/entropy")))
        results.append(row)
        peak_s = f"{row['peak_mem_gib']:.2f}" if row["peak_mem_gib"] is not None else "n/a"
        print(f"{mode:<10} {med:>9.3f} {mean:>8.3f} {row['tokens_per_s']:>11.0f} {peak_s:>9} {row['relative']:>9.3f}x")
    for row in results:
        if row["pg_loss"] is None or row["grad_norm"] is None:
            print(f"[bench] WARNING: {row['loss_mode']}: the update reported no pg_loss/grad_norm", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "attention": attn_implementation(args), "response_tokens": n_tokens,
                       "results": results,
                       "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                       "torch": torch.__version__}, fh, indent=1)
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

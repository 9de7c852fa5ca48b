"""Micro-benchmark: DRPO's registered verl loss (with all its diagnostics) against verl's `vanilla` and `dppo_tv`.

Forward + backward of the policy-loss function alone, on realistic shapes, every variant measured side by side in
one run (interleaved rounds, median), printed as ratios to `vanilla`. DRPO runs eager and compiled: the plugin
compiles its evaluation exactly when verl's `actor.use_torch_compile` is on (verl's default); the first compiled call
(excluded, as warm-up) takes seconds. Memory is reported two ways: the bytes the
loss saves for backward (what it adds to a training step's peak; measured with autograd's saved-tensor hooks, on any
device) and, on CUDA, the peak allocated memory of the call.

    .venv/bin/python scripts/bench_loss.py                         # 64 x 8192 tokens on CPU
    .venv/bin/python scripts/bench_loss.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import verl  # noqa: F401  (loads the verl-drpo plugin through its entry point)
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn
from verl.workers.config import ActorConfig

from verl_drpo import losses
from verl_drpo.config import DRPOPolicyLossConfig


def make_inputs(batch, length, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    log_prob = (-torch.rand(batch, length, generator=gen) * 4).to(device=device, dtype=dtype)
    old_log_prob = (log_prob.float() + 0.05 * torch.randn(batch, length, generator=gen).to(device)).clamp(max=0)
    advantages = torch.randn(batch, 1, generator=gen).expand(batch, length).contiguous().to(device)
    lengths = torch.randint(length // 4, length + 1, (batch, 1), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths).to(device)
    return log_prob, old_log_prob, advantages, mask


def actor_config(loss_mode, use_torch_compile=False, **kw):
    return ActorConfig(
        strategy="fsdp",
        use_torch_compile=use_torch_compile,
        rollout_n=8,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode="seq-mean-token-sum-norm",
        policy_loss=DRPOPolicyLossConfig(loss_mode=loss_mode),
        **kw,
    )


def variants():
    bare_delta = 12.5

    def bare_drpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights):
        loss_mat = losses.drpo_token_loss(log_prob, old_log_prob, advantages, bare_delta)  # plain autograd
        return agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode), {}

    return {
        "vanilla": (get_policy_loss_fn("vanilla"), actor_config("vanilla", clip_ratio_low=0.2, clip_ratio_high=0.28)),
        "dppo_tv": (
            get_policy_loss_fn("dppo_tv"),
            actor_config("dppo_tv", clip_ratio=0.15, clip_ratio_low=0.15, clip_ratio_high=0.15, clip_ratio_c=10000.0),
        ),
        "drpo (eager)": (get_policy_loss_fn("drpo"), actor_config("drpo")),
        "drpo (actor.use_torch_compile=True)": (get_policy_loss_fn("drpo"), actor_config("drpo", True)),
        "drpo formula alone, autograd, no diagnostics": (bare_drpo, actor_config("drpo")),
    }


def run_once(fn, config, inputs, device, clock):
    log_prob, old_log_prob, advantages, mask = inputs
    log_prob = log_prob.detach().requires_grad_(True)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = clock()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = fn(
            old_log_prob=old_log_prob,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask,
            loss_agg_mode=config.loss_agg_mode,
            config=config,
            rollout_is_weights=None,
        )
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = clock() - start
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else None
    return elapsed, saved[0], peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "thread"],
        help="thread: CPU time of this thread (use with --threads 1 on a busy machine, where wall time is noise)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        raise SystemExit("--clock thread measures one thread only: add --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")

    inputs = make_inputs(args.batch, args.length, args.device, getattr(torch, args.dtype))
    table = variants()
    times = {name: [] for name in table}
    memory = {}
    for name, (fn, config) in table.items():  # warm-up
        run_once(fn, config, inputs, args.device, clock)
    for round_index in range(args.rounds):
        for name, (fn, config) in table.items():
            elapsed, saved, peak = run_once(fn, config, inputs, args.device, clock)
            times[name].append(elapsed)
            memory[name] = (saved, peak)
        print(f"\rround {round_index + 1}/{args.rounds}", end="", flush=True)
    print()

    tokens = args.batch * args.length
    base = statistics.median(times["vanilla"])
    print(
        f"policy loss forward+backward, {args.batch} x {args.length} = {tokens:,} tokens, {args.dtype} log-probs, "
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.clock} clock, "
        f"median of {args.rounds} interleaved rounds"
    )
    header = f"{'loss':46s} {'time ms':>9s} {'x vanilla':>9s} {'saved for bwd MB':>17s}"
    if args.device == "cuda":
        header += f" {'peak MB':>9s}"
    print(header)
    for name in table:
        t = statistics.median(times[name])
        saved, peak = memory[name]
        line = f"{name:46s} {t * 1e3:9.1f} {t / base:9.2f} {saved / 2**20:17.1f}"
        if peak is not None:
            line += f" {peak / 2**20:9.1f}"
        print(line)


if __name__ == "__main__":
    main()

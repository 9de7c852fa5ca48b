"""Micro-benchmark: DRPO's registered verl loss (with all its diagnostics) against verl's `vanilla` and `dppo_tv`.

Forward + backward of the policy-loss function alone, on realistic shapes, every variant measured side by side in
one run (interleaved rounds, each in a shuffled order; median), printed as ratios to `vanilla`. DRPO runs eager
and compiled: the plugin compiles its evaluation exactly when verl's `actor.use_torch_compile` is on (verl's
default); the first compiled call (excluded, as warm-up) takes seconds. Memory is reported two ways: the bytes the
loss saves for backward (what it adds to a training step's peak; measured with autograd's saved-tensor hooks, on any
device) and, on CUDA, the peak allocated memory of the call.

    .venv/bin/python scripts/bench_loss.py                         # 64 x 8192 tokens on CPU
    .venv/bin/python scripts/bench_loss.py --device cuda --dtype bfloat16
    .venv/bin/python scripts/bench_loss.py --before REV             # also the drpo loss of git revision REV

`--before REV` measures the registered `drpo` of an earlier revision of this repository in the same interleaved
rounds (its package is loaded from `git show REV:verl_drpo/...` under another name; verl's registry is restored
afterwards), so a change to the fast path is compared side by side on the same, possibly busy, machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import verl  # noqa: F401  (loads the verl-drpo plugin through its entry point)
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn

from verl_drpo import losses, modes
from verl_drpo.config import actor_config


def make_inputs(batch, length, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    log_prob = (-torch.rand(batch, length, generator=gen) * 4).to(device=device, dtype=dtype)
    old_log_prob = (log_prob.float() + 0.05 * torch.randn(batch, length, generator=gen).to(device)).clamp(max=0)
    advantages = torch.randn(batch, 1, generator=gen).expand(batch, length).contiguous().to(device)
    lengths = torch.randint(length // 4, length + 1, (batch, 1), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths).to(device)
    return log_prob, old_log_prob, advantages, mask


def bench_config(loss_mode, use_torch_compile=False):
    """The mode's paper settings from the table (``verl_drpo.config.actor_config``) and the recipes' aggregation."""
    return actor_config(loss_mode, use_torch_compile=use_torch_compile, rollout_n=8,
                        loss_agg_mode="seq-mean-token-sum-norm")


def variants(before: str | None = None):
    bare_delta = modes.POLICY_LOSS_FIELDS["drpo_delta"].default

    def bare_drpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights):
        loss_mat = losses.drpo_token_loss(log_prob, old_log_prob, advantages, bare_delta)  # plain autograd
        return agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode), {}

    table = {
        "vanilla": (get_policy_loss_fn("vanilla"), bench_config("vanilla")),
        "dppo_tv": (get_policy_loss_fn("dppo_tv"), bench_config("dppo_tv")),
        "drpo (eager)": (get_policy_loss_fn("drpo"), bench_config("drpo")),
        "drpo (actor.use_torch_compile=True)": (get_policy_loss_fn("drpo"), bench_config("drpo", True)),
        "drpo formula alone, autograd, no diagnostics": (bare_drpo, bench_config("drpo")),
    }
    if before:
        old = drpo_of_revision(before)
        table[f"drpo at {before} (eager)"] = (old, bench_config("drpo"))
        table[f"drpo at {before} (compiled)"] = (old, bench_config("drpo", True))
    return table


def drpo_of_revision(rev: str):
    """The registered `drpo` loss function of git revision `rev`, loaded as package `verl_drpo_at_rev`."""
    repo = Path(__file__).resolve().parents[1]
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "verl_drpo/"], cwd=repo, check=True,
                           capture_output=True, text=True).stdout.split()
    target = Path(tempfile.mkdtemp(prefix="bench_before_")) / "verl_drpo_at_rev"
    target.mkdir()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=repo, check=True, capture_output=True,
                                  text=True).stdout
            (target / Path(name).name).write_text(text.replace("verl_drpo", "verl_drpo_at_rev"))
    sys.path.insert(0, str(target.parent))
    saved = dict(POLICY_LOSS_REGISTRY)
    try:
        importlib.import_module("verl_drpo_at_rev.plugin")
        return POLICY_LOSS_REGISTRY["drpo"]
    finally:  # this revision's losses stay the registered ones
        POLICY_LOSS_REGISTRY.clear()
        POLICY_LOSS_REGISTRY.update(saved)


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
    parser.add_argument("--before", metavar="REV", help="also measure the drpo loss of this git revision")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON (scripts/gpu_check.sh reads it)")
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
    table = variants(args.before)
    times = {name: [] for name in table}
    memory = {}
    for name, (fn, config) in table.items():  # warm-up
        run_once(fn, config, inputs, args.device, clock)
    order = list(table)
    for round_index in range(args.rounds):
        random.Random(round_index).shuffle(order)  # no variant always runs in the wake of the same one
        for name in order:
            fn, config = table[name]
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
    rows = []
    for name in table:
        t = statistics.median(times[name])
        saved, peak = memory[name]
        rows.append(dict(loss=name, median_ms=t * 1e3, relative=t / base, saved_mb=saved / 2**20,
                         peak_mb=None if peak is None else peak / 2**20))
        line = f"{name:46s} {t * 1e3:9.1f} {t / base:9.2f} {saved / 2**20:17.1f}"
        if peak is not None:
            line += f" {peak / 2**20:9.1f}"
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "tokens": tokens, "torch": torch.__version__, "results": rows}, fh, indent=1)


if __name__ == "__main__":
    main()

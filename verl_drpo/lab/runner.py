"""Runs a design's grid (seeds x conditions x methods) in a few worker processes, deterministically.

Each run depends only on (config, method, condition, seed): every worker uses one torch thread and seeded
generators, so the results do not depend on the number of workers or the order runs finish in. Workers ignore
Ctrl-C; the driver stops them and exits with one line.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing import get_context

import torch

from .design import Design
from .mechanism_check import MECHANISM_CHECK, gradient_relative_difference
from .train import run_rl
from .warm_start import warm_start


def _init_worker(threads: int = 1):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _warm(args):
    cfg, seed = args
    return seed, warm_start(cfg, seed)


def _rl(args):
    cfg, method, condition, seed, state = args
    return run_rl(method, condition, seed, cfg, state)


def _mechanism(args):
    cfg, state, seed, condition = args
    return gradient_relative_difference(cfg, state, seed, *MECHANISM_CHECK, condition)


def jobs(design: Design):
    return [(m, st, sd) for st in design.conditions for m in design.methods for sd in design.seeds]


def run_grid(design: Design, workers: int = 1, threads: int = 1, show_progress: bool = True) -> tuple[list, dict]:
    """Returns (runs in grid order, {"warm_start_success": {seed: success}, "mechanism_check": [...]})."""
    from tqdm import tqdm

    cfg = design.config
    grid = jobs(design)
    total = len(design.seeds) * cfg.sft_steps + len(grid) * cfg.steps
    bar = tqdm(total=total, unit="step", desc="lab", disable=not show_progress, file=sys.stderr, smoothing=0.1)
    ctx = get_context("spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) if workers > 1 else None
    imap = pool.imap_unordered if pool else map
    previous_threads = torch.get_num_threads()
    if pool is None:
        torch.set_num_threads(threads)
    try:
        warm = {}
        bar.set_postfix_str("warm start (supervised)")
        for seed, ws in imap(_warm, [(cfg, s) for s in design.seeds]):
            warm[seed] = ws
            bar.update(cfg.sft_steps)
        results = {}
        # the mechanism check runs on the condition with the largest logit noise (pi != mu from the first batch)
        noisy = max(design.conditions, key=lambda s: (s.mismatch, s.rounding is not None, s.staleness))
        checks = list(imap(_mechanism, [(cfg, warm[s]["state"], s, noisy) for s in design.seeds]))
        for r in imap(_rl, [(cfg, m, st, sd, warm[sd]["state"]) for (m, st, sd) in grid]):
            results[(r["method"], r["setting"], r["seed"])] = r
            bar.update(cfg.steps)
            bar.set_postfix_str(f"{r['method']} {r['setting']} seed {r['seed']}: final {r['final_success']:.2f}")
        if pool is not None:
            pool.close()
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.join()
        else:
            torch.set_num_threads(previous_threads)
        bar.close()
    runs = [results[(m, st.name, sd)] for (m, st, sd) in grid]
    return runs, {
        "warm_start_success": {str(s): warm[s]["success"] for s in design.seeds},
        "mechanism_check": sorted(checks, key=lambda c: c["seed"]),
    }


def cpu_seconds() -> float:
    """user + system CPU seconds of this process and its finished children (the workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


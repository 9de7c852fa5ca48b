"""Runs the grid (seeds x settings x methods) in a few worker processes, deterministically.

Each run depends only on (config, method, setting, seed): every worker uses one torch thread and seeded
generators, so the results do not depend on the number of workers or the order runs finish in.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context

import torch

from .train import LabConfig, Setting, run_rl, warm_start


@dataclass(frozen=True)
class Grid:
    methods: tuple[str, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]

    @property
    def jobs(self) -> list[tuple[str, Setting, int]]:
        return [(m, st, sd) for st in self.settings for m in self.methods for sd in self.seeds]


def _init_worker():
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _warm(args):
    cfg, seed = args
    return seed, warm_start(cfg, seed)


def _rl(args):
    cfg, method, setting, seed, state = args
    return run_rl(method, setting, seed, cfg, state)


def run_grid(cfg: LabConfig, grid: Grid, workers: int = 1, show_progress: bool = True) -> tuple[list[dict], dict]:
    """Returns (runs sorted in grid order, {seed: warm-start success})."""
    from tqdm import tqdm

    # validate the methods on the driver before starting anything (a typo fails here, with the list of choices)
    from .verl_path import make_actor_config

    for m in grid.methods:
        make_actor_config(m, 8, cfg.group_size, cfg.task.max_response_len)

    total = len(grid.seeds) * cfg.sft_steps + len(grid.jobs) * cfg.steps
    bar = tqdm(total=total, unit="step", desc="lab", disable=not show_progress, file=sys.stderr, smoothing=0.1)
    t0 = time.perf_counter()
    ctx = get_context("spawn")
    pool = ctx.Pool(workers, initializer=_init_worker) if workers > 1 else None
    imap = pool.imap_unordered if pool else map
    if pool is None:
        _init_worker()
    try:
        warm = {}
        bar.set_postfix_str("warm start (supervised)")
        for seed, ws in imap(_warm, [(cfg, s) for s in grid.seeds]):
            warm[seed] = ws
            bar.update(cfg.sft_steps)
        results = {}
        jobs = [(cfg, m, st, sd, warm[sd]["state"]) for (m, st, sd) in grid.jobs]
        for r in imap(_rl, jobs):
            results[(r["method"], r["setting"], r["seed"])] = r
            bar.update(cfg.steps)
            bar.set_postfix_str(f"{r['method']} {r['setting']} seed {r['seed']}: final {r['final_success']:.2f}")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    runs = [results[(m, st.name, sd)] for (m, st, sd) in grid.jobs]
    return runs, {
        "warm_start_success": {str(s): warm[s]["success"] for s in grid.seeds},
        "wall_s": time.perf_counter() - t0,
    }

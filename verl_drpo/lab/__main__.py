"""python -m verl_drpo.lab: the off-policy lab's command line. See docs/lab.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import DEFAULT_SEEDS, DEFAULT_SETTINGS, QUICK
from .train import LabConfig, Setting
from .verl_path import DEFAULT_METHODS, METHODS


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from e


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from e


def _methods(s: str) -> list[str]:
    ms = [x.strip() for x in s.split(",") if x.strip()]
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad or s!r}; choose from {', '.join(METHODS)}")
    return ms


def _seeds(s: str) -> list[int]:
    xs = _ints(s)
    if "," not in s and len(xs) == 1:  # "--seeds 3" means seeds 0, 1, 2
        if xs[0] < 1:
            raise argparse.ArgumentTypeError("--seeds N needs N >= 1")
        return list(range(xs[0]))
    return xs


def _versions() -> dict:
    """Library versions and the checkout's commit, so that a results file says what produced it."""
    import subprocess

    import torch
    import transformers
    import verl

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent, check=False)
    return {"torch": torch.__version__, "transformers": transformers.__version__, "verl": verl.__version__,
            "git_commit": git.stdout.strip() or None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verl_drpo.lab",
        description="Off-policy lab: DRPO and its baselines through verl's ppo_loss on a tiny Qwen2 policy, "
        "under controlled staleness and training-inference mismatch. Settings are the product "
        "--staleness x --mismatch; without either flag the default pair of settings is "
        + "; ".join(f"k={k},sigma={s:g}" for k, s in DEFAULT_SETTINGS) + ".",
    )
    p.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                   help=f"comma list from {', '.join(METHODS)} (default: all)")
    p.add_argument("--staleness", type=_ints, default=None,
                   help="comma list of k: rollouts come from the weights of k optimizer steps ago (default 0)")
    p.add_argument("--mismatch", type=_floats, default=None,
                   help="comma list of sigma: std of Gaussian noise added to the behaviour logits (default 0)")
    p.add_argument("--seeds", type=_seeds, default=list(range(DEFAULT_SEEDS)),
                   help=f"N (seeds 0..N-1) or a comma list (default {DEFAULT_SEEDS})")
    p.add_argument("--steps", type=int, default=None, help="RL steps (rollouts) per run (default from the design)")
    p.add_argument("--out", type=Path, default=Path("runs/lab"), help="output folder (default runs/lab)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (CI): tiny schedule")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = LabConfig()
    methods, seeds = args.methods, args.seeds
    given_seeds = "--seeds" in " ".join(argv if argv is not None else sys.argv[1:])
    if args.quick:
        cfg = replace(cfg, **QUICK["config"])
        if not given_seeds:
            seeds = [0]
    if args.staleness is None and args.mismatch is None:
        pairs = QUICK["settings"] if args.quick else DEFAULT_SETTINGS
    else:
        pairs = [(k, s) for k in (args.staleness or [0]) for s in (args.mismatch or [0.0])]
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    try:
        settings = tuple(Setting(k, s) for k, s in pairs)
    except ValueError as e:
        raise SystemExit(f"python -m verl_drpo.lab: error: {e}") from None
    from .runner import Grid, run_grid
    from .report import plot, write_outputs

    grid = Grid(tuple(methods), settings, tuple(seeds))
    print(f"[lab] {len(grid.jobs)} runs: methods {','.join(methods)}; settings "
          f"{'; '.join(s.name for s in settings)}; seeds {','.join(map(str, seeds))}; {cfg.steps} RL steps each; "
          f"{args.workers} worker(s); output {args.out}", flush=True)
    t0 = time.perf_counter()
    runs, info = run_grid(cfg, grid, workers=args.workers, show_progress=not args.no_progress)
    meta = {
        "command": "python -m verl_drpo.lab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": json.loads(json.dumps(asdict(cfg))),
        "methods": {m: METHODS[m] for m in methods},
        "settings": [asdict(s) | {"name": s.name} for s in settings],
        "seeds": list(seeds),
        "success_threshold": cfg.success_threshold,
        "warm_start_success": info["warm_start_success"],
        "versions": _versions(),
    }
    res = write_outputs(args.out, runs, meta)
    if not args.no_plot:
        plot(args.out / "lab.png", runs, title=f"verl_drpo.lab: {cfg.steps} RL steps, seeds {list(seeds)}")
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens_trained"] for r in runs)
    rl_cpu = sum(r["wall_s"] for r in runs)
    print()
    print(res["table"])
    print()
    print(f"[lab] warm-start success per seed: {info['warm_start_success']}")
    print(f"[lab] throughput: {tokens} response tokens trained in {rl_cpu:.0f} worker-seconds of RL = "
          f"{tokens / max(rl_cpu, 1e-9):.0f} tokens/s per worker; wall {wall:.0f} s with {args.workers} worker(s)")
    print(f"[lab] wrote {args.out}/results.json, runs.csv, summary.csv, table.md"
          + ("" if args.no_plot else ", lab.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

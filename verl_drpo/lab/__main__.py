"""python -m verl_drpo.lab: the off-policy lab's command line. See docs/lab.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .design import DEFAULT, DESIGNS, DTYPES, METHODS, REFERENCES, Condition, Design

PROG = "python -m verl_drpo.lab"
# CPU features that select different kernels (and so different float round-off) in torch's CPU backend
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


MAX_SEED = 2**32 - 1  # torch generators take 64-bit seeds; the lab offsets a seed by up to 20000 per stream
MAX_SEED_COUNT = 1_000_000  # "--seeds N" builds the list 0..N-1; far larger lists exhaust memory before any check
LARGE_GRID_RUNS = 2000  # above this many runs the lab states the cost and asks for --yes (--full has 1120)
VALUE_OPTIONS = ("--methods", "--staleness", "--mismatch", "--seeds")  # options whose value may start with "-"


def _ints(s: str) -> list[int]:
    try:
        xs = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not xs:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {s!r}")
    return xs


def _floats(s: str) -> list[float]:
    try:
        xs = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None
    if not xs:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {s!r}")
    return xs


def _methods(s: str) -> list[str]:
    ms = [x.strip() for x in s.split(",") if x.strip()]
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad or s!r}; choose from {', '.join(METHODS)}")
    if len(set(ms)) != len(ms):
        raise argparse.ArgumentTypeError(f"duplicate method in {s!r}")
    return ms


def _seeds(s: str) -> list[int]:
    try:
        xs = _ints(s)
    except argparse.ArgumentTypeError:
        if s.strip(" ,") == "":
            raise argparse.ArgumentTypeError("empty seed list") from None
        raise
    if "," not in s and len(xs) == 1:  # "--seeds 5" means seeds 0..4
        if xs[0] < 2:
            raise argparse.ArgumentTypeError("--seeds N needs N >= 2 (paired intervals need two seeds)")
        if xs[0] > MAX_SEED_COUNT:
            raise argparse.ArgumentTypeError(f"--seeds N needs N <= {MAX_SEED_COUNT}, got {xs[0]}")
        return list(range(xs[0]))
    if any(x > MAX_SEED for x in xs):
        raise argparse.ArgumentTypeError(f"seeds must be <= {MAX_SEED} (2**32 - 1), got {s!r}")
    if len(set(xs)) != len(xs):
        raise argparse.ArgumentTypeError(f"duplicate seed in {s!r}")
    if any(x < 0 for x in xs):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {s!r}")
    return xs


def _positive(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Off-policy lab: DRPO and its baselines through verl's ppo_loss on a tiny Qwen2 policy, "
        "under controlled staleness and training-inference mismatch, with paired comparisons against "
        f"{' and '.join(REFERENCES)}. Without --staleness/--mismatch the design's settings are used "
        f"(default: {'; '.join(s.name for s in DEFAULT.conditions)}).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI run: every default method, one seed, a few steps")
    mode.add_argument("--full", action="store_true", help="the wide design (see docs/lab.md for its cost)")
    mode.add_argument("--design", choices=[d for d in DESIGNS if d not in ("default", "full", "quick")], default=None,
                      help="a named design: " + "; ".join(f"{d.name}: {d.summary}" for d in DESIGNS.values()
                                                          if d.summary))
    p.add_argument("--methods", type=_methods, default=None, help=f"comma list from {', '.join(METHODS)}")
    p.add_argument("--staleness", type=_ints, default=None, help="comma list of k (optimizer steps of staleness)")
    p.add_argument("--mismatch", type=_floats, default=None, help="comma list of sigma (behaviour logit noise std)")
    p.add_argument("--seeds", type=_seeds, default=None, help="N (seeds 0..N-1) or a comma list")
    p.add_argument("--steps", type=_positive, default=None, help="RL steps (rollouts) per run")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="float environment (default float32)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--out", type=Path, default=Path("runs/lab"), help="output folder (default runs/lab)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier lab output in --out: only the files the lab wrote there (listed in its "
                        "manifest.json) are replaced; a folder that holds anything else is refused, never emptied")
    p.add_argument("--yes", action="store_true",
                   help=f"run a grid of more than {LARGE_GRID_RUNS} runs (without it the lab states the cost and stops)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _join_dash_values(argv: list[str]) -> list[str]:
    """`--seeds -1,2` -> `--seeds=-1,2`: argparse reads a value that starts with "-" and is not a plain negative
    number as the next option and says "expected one argument"; joined, the value reaches its own check."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--" \
                and not argv[i + 1].startswith("--"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def estimated_minutes(design: Design, workers: int) -> float:
    """Rough wall minutes on this project's 2-core machine: a default run (40 steps, 8 x 8 rollouts) costs about
    6 CPU s and a warm start about 10 (docs/lab.md, Cost); scaled by steps x rollout size, divided over workers."""
    cfg = design.config
    per_run = 6.0 * (cfg.steps * cfg.prompts_per_step * cfg.group_size) / (40 * 8 * 8)
    cpu = len(design.methods) * len(design.conditions) * len(design.seeds) * per_run + 10.0 * len(design.seeds)
    return cpu / max(1, workers) / 60


def check_design(design: Design, args) -> None:
    """Refusals that need the whole design: staleness beyond the run, and large grids without --yes."""
    cfg = design.config
    budget = cfg.steps * cfg.mini_batches
    for st in design.conditions:
        if st.staleness > budget:
            raise ValueError(f"--staleness {st.staleness}: more than the run's {budget} optimizer steps "
                             f"({cfg.steps} RL steps x {cfg.mini_batches} mini-batches); every rollout would come "
                             f"from the warm start")
    runs = len(design.methods) * len(design.conditions) * len(design.seeds)
    if runs > LARGE_GRID_RUNS and not getattr(args, "yes", False):
        raise ValueError(f"{runs} runs ({len(design.methods)} methods x {len(design.conditions)} settings x "
                         f"{len(design.seeds)} seeds), about {estimated_minutes(design, args.workers):,.0f} minutes "
                         f"with {args.workers} worker(s): pass --yes to run a grid of more than {LARGE_GRID_RUNS} runs")


def design_from_args(args) -> Design:
    base = DESIGNS[args.design or ("quick" if args.quick else "full" if args.full else "default")]
    cfg = replace(base.config, dtype=args.dtype)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps, eval_every=min(cfg.eval_every, args.steps))
    if args.staleness is None and args.mismatch is None:
        conditions = base.conditions
    else:
        conditions = tuple(Condition(k, s) for k in (args.staleness or [0]) for s in (args.mismatch or [0.0]))
        if len(set(conditions)) != len(conditions):
            raise ValueError("--staleness/--mismatch: duplicate setting")
    methods = tuple(args.methods) if args.methods else base.methods
    seeds = tuple(args.seeds) if args.seeds is not None else base.seeds
    return Design(base.name, cfg, methods, conditions, seeds, base.references, base.summary, base.gain_in_every_setting)


def _cpu_flags() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or None, "flags": None}
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
    flags_line = next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(flags_line.split())
    return {"model": model, "flags": [f for f in KERNEL_FLAGS if f in have]}


def fingerprint(design: Design, args) -> dict:
    """What produced the numbers: library versions, float environment, threads, CPU kernel features, commit."""
    import tokenizers
    import torch
    import transformers
    import verl

    here = Path(__file__).resolve().parent
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], capture_output=True, text=True,
                           cwd=here.parent.parent, check=False)
    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "verl": verl.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dtype": design.config.dtype, "threads_per_worker": args.threads, "workers": args.workers,
        "cpu": _cpu_flags(), "os_cpu_count": os.cpu_count(), "platform": platform.platform(),
        "git_commit": git.stdout.strip() or None, "git_dirty": bool(dirty.stdout.strip()) if git.stdout else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_join_dash_values(argv))
    from .output_folder import OutputFolder

    out = OutputFolder(args.out, force=args.force)
    try:
        design = design_from_args(args)
        if len(design.seeds) < 2 and not args.quick:
            raise ValueError("--seeds: paired intervals need at least 2 seeds")
        check_design(design, args)
        out.check()
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        return _run(design, args, argv, out)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        print(f"\n[lab] interrupted: nothing written to {args.out}", file=sys.stderr)
        return 130
    finally:
        out.discard()


def _run(design: Design, args, argv: list[str], out) -> int:
    from .outputs import write_outputs
    from .plots import plot
    from .runner import cpu_seconds, jobs, run_grid

    cfg = design.config
    n = len(jobs(design))
    print(f"[lab] {design.name} design: {n} runs = methods {','.join(design.methods)} x settings "
          f"{'; '.join(s.name for s in design.conditions)} x seeds {','.join(map(str, design.seeds))}; {cfg.steps} RL "
          f"steps each; {cfg.dtype}; {args.workers} worker(s) x {args.threads} thread(s); output {args.out}",
          flush=True)
    environment = fingerprint(design, args)  # before the grid: the checkout may change while it runs
    t0, c0 = time.perf_counter(), cpu_seconds()
    runs, info = run_grid(design, workers=args.workers, threads=args.threads, show_progress=not args.no_progress)
    meta = {
        "command": f"{PROG} " + " ".join(argv),
        "design": design.name,
        "config": json.loads(json.dumps(asdict(cfg))),
        "methods": {m: METHODS[m].describe() for m in design.methods},
        "references": [r for r in design.references if r in design.methods],
        "settings": [asdict(s) | {"name": s.name} for s in design.conditions],
        "control_setting": design.conditions[0].name,
        "gain_settings": [s.name for s in design.conditions] if design.gain_in_every_setting else None,
        "seeds": list(design.seeds),
        "warm_start_success": info["warm_start_success"],
        "mechanism_check": info["mechanism_check"],
        "environment": environment,
    }
    res = write_outputs(out.staging, runs, meta)
    from .headline import add_to_outputs

    res["headline"] = add_to_outputs(out.staging, runs, meta)
    if not args.no_plot:
        plot(out.staging / "lab.png", runs,
             title=f"verl_drpo.lab {design.name}: {cfg.steps} RL steps, seeds {list(design.seeds)}, {cfg.dtype}")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    cost = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    (out.staging / "cost.json").write_text(json.dumps(cost) + "\n")
    out.commit()
    print()
    print(res["table"])
    print()
    print(res["report"])
    print()
    ws = info["warm_start_success"]
    print(f"[lab] warm-start exact success per seed: {', '.join(f'{k}: {v:.3f}' for k, v in ws.items())}")
    tokens = sum(r["tokens_trained"] for r in runs)
    print(f"[lab] cost: wall {wall:.0f} s, CPU {cpu:.0f} s (user+sys, workers included); {tokens} response tokens "
          f"trained")
    if res.get("headline"):
        from .headline import primary_line

        print(primary_line(res["headline"]))
    print(f"[lab] wrote {args.out}/ (results.json, runs.csv, summary.csv, table.md, report.md, cost.json"
          + ("" if args.no_plot else ", lab.png") + ", manifest.json)")
    return 0


if __name__ == "__main__":
    code = main()
    if code == 130:  # interrupted: skip the interpreter's exit handlers, which would report the interrupt again
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

"""One command that checks an install on one CUDA GPU: ``bash scripts/gpu_check.sh`` (this module is its body).

    bash scripts/gpu_check.sh                 # one CUDA GPU, offline, about 5-10 minutes; exit 0 only if all holds
    bash scripts/gpu_check.sh --cpu           # the same plumbing with tiny shapes on CPU (CI; under 2 minutes)
    bash scripts/gpu_check.sh --entropy       # also the entropy sweep at the DAPO recipe's token budget (GPU, longer)
    bash scripts/gpu_check.sh --json out.json # also the table as JSON

What it runs, each a row of the summary table (check | result | figure):

- ``loss <mode> <dtype>``: every loss verl-drpo registers, called through verl's registry on the device as verl
  calls it (16 x 2048 ragged on a GPU), eager and compiled (``actor.use_torch_compile``): the loss and its gradient
  equal the readable formula of ``verl_drpo.losses`` evaluated in float64 on the same (rounded) inputs, within
  float32 / bf16 tolerances, and every path returns the same metric keys (an empty micro-batch's included);
- ``no recompilation``: the compiled ``drpo`` over ragged micro-batch shapes, both dtypes: a second pass over the
  shapes builds no new graph and the graph count stays under torch's recompile limit;
- ``bench_loss <dtype>``: ``scripts/bench_loss.py`` (fwd + bwd of the loss alone against verl's ``vanilla``);
- ``fsdp <shape>``: one real actor update of verl's FSDP2 engine, ``scripts/bench_fsdp_gpu.py``, at the
  Qwen2.5-0.5B and Qwen3-4B-Base shapes (random weights), with its peak memory;
- ``recipe <run>``: where vLLM is importable, the GSM8K recipe for 2 steps with the smoke's tiny random model and
  generated data, ``sync`` and ``colocate_async``, through ``scripts/smoke_cpu.sh`` with ``SMOKE_DEVICE=cuda``
  (the same runs and ``check_run`` checks as the CPU smoke: |pi - mu| at round-off after each sync, the lag).

Timings are figures, never pass/fail criteria. A check that raises is a failed row with its one-line cause.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


@dataclass
class Row:
    check: str
    result: str  # PASS, FAIL or SKIP
    figure: str


@dataclass
class Profile:
    """What one device runs: shapes, tolerances, the scripts' arguments."""

    device: str
    loss_shape: tuple[int, int]
    ragged_shapes: list[tuple[int, int]]
    compiled_modes: tuple[str, ...] | None  # None: every registered mode
    bench_loss_args: list[str]
    fsdp_runs: list[tuple[str, list[str]]]
    time_limit_s: float
    recipe_runs: tuple[str, ...] = ("sync", "colocate_async")
    notes: dict[str, str] = field(default_factory=dict)


_COMMON_FSDP = ["--steps", "1", "--warmup", "1"]
GPU = Profile(
    device="cuda", loss_shape=(16, 2048),
    # batch 1-17 x length 7-4096, as the first H200 run (docs/gpu.md)
    ragged_shapes=[(16, 2048), (17, 7), (3, 4096), (9, 1000), (1, 512), (12, 33), (5, 3000), (8, 129)],
    compiled_modes=None,
    bench_loss_args=["--batch", "64", "--length", "8192", "--rounds", "15"],
    fsdp_runs=[
        ("qwen2.5-0.5b", ["--model-shape", "qwen2.5-0.5b", "--batch-size", "32", "--micro-batch-size", "8",
                          "--prompt-len", "256", "--response-len", "768", "--loss-modes", "drpo", "vanilla",
                          *_COMMON_FSDP]),
        ("qwen3-4b-base", ["--model-shape", "qwen3-4b-base", "--batch-size", "8", "--group-size", "8",
                           "--micro-batch-size", "1", "--prompt-len", "512", "--response-len", "8192",
                           "--loss-modes", "drpo", *_COMMON_FSDP]),
    ],
    time_limit_s=600,
)
CPU = Profile(
    device="cpu", loss_shape=(6, 40),
    ragged_shapes=[(6, 40), (3, 17), (5, 64), (2, 9)],
    compiled_modes=("drpo",),  # inductor's C++ compile costs seconds per mode on CPU; tests/core covers the rest
    bench_loss_args=["--batch", "4", "--length", "256", "--rounds", "2"],
    fsdp_runs=[
        ("tiny", ["--model-shape", "tiny", "--batch-size", "4", "--group-size", "2", "--micro-batch-size", "2",
                  "--prompt-len", "8", "--response-len", "16", "--loss-modes", "drpo", "--steps", "1",
                  "--warmup", "0"]),
        ("tiny-qwen3", ["--model-shape", "tiny-qwen3", "--batch-size", "4", "--group-size", "2",
                        "--micro-batch-size", "2", "--prompt-len", "8", "--response-len", "16", "--loss-modes",
                        "drpo", "--steps", "1", "--warmup", "0"]),
    ],
    time_limit_s=300,
    recipe_runs=(),
    notes={"recipe": "on CPU the recipe runs are scripts/smoke_cpu.sh's (tests/cpu/test_cpu_smoke_on_cpu.py)"},
)
# The entropy sweep (issue 19 item 5): the Qwen3-4B shape at the DAPO recipe's token budget, 2 x (2048 + 8192)
# tokens per micro-batch (verl's 2 x (prompt + response) rule), entropy off / on / checkpointing.
ENTROPY_SWEEP = ["--model-shape", "qwen3-4b-base", "--batch-size", "8", "--group-size", "8", "--micro-batch-size",
                 "2", "--prompt-len", "2048", "--response-len", "8192", "--loss-modes", "drpo", "--steps", "1",
                 "--warmup", "1"]
ENTROPY_SWEEP_CPU = ["--model-shape", "tiny-qwen3", "--batch-size", "4", "--group-size", "2", "--micro-batch-size",
                     "2", "--prompt-len", "8", "--response-len", "16", "--loss-modes", "drpo", "--steps", "1",
                     "--warmup", "0"]

# relative tolerances against the float64 formula: (loss, gradient); bf16 returns its gradient in bf16
TOLERANCE = {"float32": (1e-5, 1e-4), "bfloat16": (1e-4, 2e-2)}


class Context:
    def __init__(self, root: Path, profile: Profile, workdir: Path):
        self.root, self.profile, self.workdir = root, profile, workdir
        self.deadline = time.monotonic() + profile.time_limit_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# ---- the registered losses on the device ----------------------------------------------------------------------------


def _inputs(shape, device, dtype, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    b, n = shape
    old = torch.log(torch.rand(b, n, generator=gen, dtype=torch.float64).clamp_min(1e-3))
    lp = (old + 0.3 * torch.randn(b, n, generator=gen, dtype=torch.float64)).clamp(max=0)
    adv = torch.randn(b, 1, generator=gen, dtype=torch.float64).expand(b, n).contiguous()
    lengths = torch.randint(1, n + 1, (b, 1), generator=gen)
    mask = torch.arange(n).unsqueeze(0) < lengths
    weights = torch.exp(0.5 * torch.randn(b, n, generator=gen, dtype=torch.float64))  # pi_prox / mu, drpo_prox only
    return (lp.to(device=device, dtype=dtype), old.float().to(device), adv.float().to(device), mask.to(device),
            weights.float().to(device))


def reference_token_loss(mode, p, lp, old, adv, weights):
    """The readable formula of `mode` (`verl_drpo.losses.TOKEN_LOSSES`) on verl's inputs: `old` is log mu, or for a
    decoupled mode log pi_prox, with mu = pi_prox / `weights`."""
    from verl_drpo import losses, modes

    if mode not in losses.TOKEN_LOSSES:
        raise KeyError(f"no float64 reference formula for loss mode {mode!r}: add it to verl_drpo.losses.TOKEN_LOSSES")
    if modes.uses_decoupled_inputs(mode):
        return losses.TOKEN_LOSSES[mode](p, lp, old - weights.log(), adv, old)
    return losses.TOKEN_LOSSES[mode](p, lp, old, adv)


def _call(mode, lp, old, adv, mask, config, weights):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from verl_drpo import modes

    return get_policy_loss_fn(mode)(
        old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode=config.loss_agg_mode,
        config=config, rollout_is_weights=weights if modes.uses_decoupled_inputs(mode) else None,
    )


def _rel(a, b) -> float:
    scale = float(b.abs().max())
    return float((a.double() - b.double()).abs().max()) / (scale if scale > 0 else 1.0)


def loss_rows(ctx: Context) -> list[Row]:
    import torch
    from verl.trainer.ppo.core_algos import agg_loss

    from verl_drpo import modes, plugin
    from verl_drpo.config import actor_config

    prof, rows = ctx.profile, []
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        loss_tol, grad_tol = TOLERANCE[dtype_name]
        for mode in modes.OWN_MODES:
            torch._dynamo.reset()  # one mode per process in a real run: no graphs of another mode in the cache
            lp, old, adv, mask, weights = _inputs(prof.loss_shape, prof.device, dtype, seed=len(rows))
            paths = [False] + ([True] if prof.compiled_modes is None or mode in prof.compiled_modes else [])
            problems, figures, key_lists = [], [], []
            eager_metrics = None
            for compiled in paths:
                config = actor_config(mode, use_torch_compile=compiled, rollout_n=4,
                                      loss_agg_mode="seq-mean-token-sum-norm")
                p = plugin.hyperparameters(mode, config)
                x = lp.detach().clone().requires_grad_(True)
                t0 = time.perf_counter()
                loss, metrics = _call(mode, x, old, adv, mask, config, weights)
                loss.backward()
                seconds = time.perf_counter() - t0
                x_ref = lp.detach().double().requires_grad_(True)
                ref = agg_loss(loss_mat=reference_token_loss(mode, p, x_ref, old.double(), adv.double(),
                                                             weights.double()),
                               loss_mask=mask, loss_agg_mode=config.loss_agg_mode)
                ref.backward()
                loss_err = abs(float(loss.detach()) - float(ref.detach())) / max(abs(float(ref.detach())), 1e-30)
                grad_err = _rel(x.grad, x_ref.grad)
                name = "compiled" if compiled else "eager"
                figures.append(f"{name} {loss_err:.1e}/{grad_err:.1e}" + (f" ({seconds:.1f}s)" if compiled else ""))
                if not (loss_err <= loss_tol and grad_err <= grad_tol):  # also false for NaN
                    problems.append(f"{name}: loss rel. err {loss_err:.2e} (tol {loss_tol:g}), grad {grad_err:.2e} "
                                    f"(tol {grad_tol:g})")
                _, empty = _call(mode, x.detach(), old, adv, torch.zeros_like(mask), config, weights)
                key_lists += [list(metrics), list(empty)]
                if eager_metrics is None:
                    eager_metrics = metrics
                else:
                    off = [k for k in metrics if not math.isclose(metrics[k], eager_metrics[k], rel_tol=1e-3,
                                                                  abs_tol=1e-5)]
                    if off:
                        problems.append(f"compiled metrics differ from eager: {off[:3]}")
            if any(keys != key_lists[0] for keys in key_lists):
                problems.append("metric keys differ between paths")
            if len(paths) == 1:
                figures.append("compiled: drpo only on CPU")
            figure = f"{', '.join(figures)}; {len(key_lists[0])} metric keys"
            rows.append(Row(f"loss {mode} {dtype_name}", FAIL if problems else PASS,
                            "; ".join(problems) if problems else figure))
    return rows


def recompile_rows(ctx: Context) -> list[Row]:
    import torch
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters

    from verl_drpo import fast
    from verl_drpo.config import actor_config

    prof = ctx.profile
    torch._dynamo.reset()
    counters.clear()
    limit = getattr(dynamo_config, "recompile_limit", None) or getattr(dynamo_config, "cache_size_limit", 8)
    config = actor_config("drpo", use_torch_compile=True, rollout_n=4, loss_agg_mode="seq-mean-token-sum-norm")
    graphs, calls = [], 0
    for _ in range(2):  # warm-up pass, then the same shapes again
        for dtype_name in ("float32", "bfloat16"):
            for seed, shape in enumerate(prof.ragged_shapes):
                lp, old, adv, mask, weights = _inputs(shape, prof.device, getattr(torch, dtype_name), seed)
                x = lp.requires_grad_(True)
                loss, _ = _call("drpo", x, old, adv, mask, config, weights)
                loss.backward()
                calls += 1
        graphs.append(counters["stats"]["unique_graphs"])
    failed = fast.compiled_evaluate.failed
    ok = failed is None and graphs[1] == graphs[0] and graphs[0] < limit
    figure = (f"{calls} compiled calls over {len(prof.ragged_shapes)} ragged shapes x 2 dtypes: {graphs[0]} graphs "
              f"after warm-up, {graphs[1] - graphs[0]} new on the second pass (limit {limit})")
    if failed is not None:
        figure += f"; compilation failed: {type(failed).__name__}"
    return [Row("no recompilation (drpo, ragged)", PASS if ok else FAIL, figure)]


# ---- the scripts ----------------------------------------------------------------------------------------------------


def _run(ctx: Context, cmd: list[str], cap_s: float, env: dict | None = None) -> tuple[int, str, float]:
    """(exit status, output tail, seconds); exit status 124 when it ran past the time left."""
    timeout = max(1.0, min(cap_s, ctx.remaining()))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ctx.root, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return proc.returncode, (proc.stdout + proc.stderr)[-3000:], time.monotonic() - t0
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f}s", time.monotonic() - t0


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def bench_loss_rows(ctx: Context) -> list[Row]:
    rows = []
    for dtype in ("float32", "bfloat16"):
        out = ctx.workdir / f"bench_loss_{dtype}.json"
        rc, tail, seconds = _run(ctx, [sys.executable, "scripts/bench_loss.py", "--device", ctx.profile.device,
                                       "--dtype", dtype, "--json", str(out), *ctx.profile.bench_loss_args], 300)
        name = f"bench_loss {dtype}"
        if rc != 0 or not out.exists():
            rows.append(Row(name, FAIL, f"exit {rc}: {_last_line(tail)}"))
            continue
        results = {r["loss"]: r for r in json.loads(out.read_text())["results"]}
        eager, compiled = results.get("drpo (eager)"), results.get("drpo (actor.use_torch_compile=True)")
        if not eager or not compiled or not all(math.isfinite(r["median_ms"]) for r in results.values()):
            rows.append(Row(name, FAIL, "drpo rows missing or not finite"))
            continue
        peak = f", peak {eager['peak_mb']:.1f} / {compiled['peak_mb']:.1f} MB" if eager["peak_mb"] is not None else ""
        rows.append(Row(name, PASS, f"vanilla {results['vanilla']['median_ms']:.1f} ms; drpo eager "
                                    f"{eager['relative']:.2f}x, compiled {compiled['relative']:.2f}x vanilla{peak}"))
    return rows


def _fsdp_row(ctx: Context, name: str, args: list[str], expect_entropy: bool | None = None) -> Row:
    out = ctx.workdir / f"fsdp_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"
    rc, tail, seconds = _run(ctx, [sys.executable, "scripts/bench_fsdp_gpu.py", "--device", ctx.profile.device,
                                   "--json", str(out), *args], 540)
    if rc != 0 or not out.exists():
        return Row(name, FAIL, f"exit {rc}: {_last_line(tail)}")
    data = json.loads(out.read_text())
    problems, parts = [], []
    for r in data["results"]:
        if r["grad_norm"] is None or not math.isfinite(r["grad_norm"]) or r["grad_norm"] <= 0:
            problems.append(f"{r['loss_mode']}: grad_norm {r['grad_norm']}")
        if r["loss_mode"] == "drpo" and r["drpo_weight_mean"] is None:
            problems.append("drpo: no actor/drpo/weight_mean from the update")
        if expect_entropy is not None and (r.get("entropy") is not None) != expect_entropy:
            problems.append(f"{r['loss_mode']}: entropy {'missing' if expect_entropy else 'computed'}")
        peak = f", peak {r['peak_mem_gib']:.2f} GiB" if r["peak_mem_gib"] is not None else ""
        parts.append(f"{r['loss_mode']} {r['median_s']:.2f} s{peak}")
    a = data["args"]
    shape = (f"{a['batch_size']} x ({a['prompt_len']} + {a['response_len']}), micro-batch {a['micro_batch_size']}, "
             f"entropy {a.get('entropy', 'off')}")
    return Row(name, FAIL if problems else PASS, "; ".join(problems) if problems else f"{shape}: {', '.join(parts)}")


def fsdp_rows(ctx: Context) -> list[Row]:
    rows = []
    if ctx.profile.device == "cuda":
        import torch

        total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    for name, args in ctx.profile.fsdp_runs:
        if ctx.profile.device == "cuda" and name == "qwen3-4b-base" and total_gib < 78:
            rows.append(Row(f"fsdp {name}", SKIP, f"needs ~76 GiB (H200: 75.3 GiB peak), this GPU has "
                                                  f"{total_gib:.0f} GiB"))
            continue
        rows.append(_fsdp_row(ctx, f"fsdp {name}", args))
    return rows


def entropy_rows(ctx: Context) -> list[Row]:
    args = ENTROPY_SWEEP if ctx.profile.device == "cuda" else ENTROPY_SWEEP_CPU
    return [_fsdp_row(ctx, f"fsdp entropy {mode}", [*args, "--entropy", mode], expect_entropy=(mode != "off"))
            for mode in ("off", "on", "checkpointing")]


def recipe_rows(ctx: Context) -> list[Row]:
    runs = ctx.profile.recipe_runs
    if not runs:
        return [Row("recipe (vLLM)", SKIP, ctx.profile.notes.get("recipe", "not run on this device"))]
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return [Row(f"recipe {run}", SKIP, "vLLM is not importable") for run in runs]
    rc, tail, seconds = _run(ctx, ["bash", "scripts/smoke_cpu.sh", *runs], 540,
                             env={"SMOKE_DEVICE": "cuda", "SMOKE_DIR": str(ctx.workdir / "recipe"),
                                  "PYTHON": sys.executable})
    rows = []
    for run in runs:
        found = re.search(rf"^  {re.escape(run)}: (.*)$", tail, re.M)
        status = found.group(1) if found else f"no result (exit {rc}: {_last_line(tail)})"
        ok = status.startswith("ok")
        rows.append(Row(f"recipe {run}", PASS if ok else FAIL,
                        f"2 steps, check_run passed, {status}" if ok else status))
    return rows


CHECKS = [("loss", loss_rows), ("recompile", recompile_rows), ("bench_loss", bench_loss_rows),
          ("fsdp", fsdp_rows), ("recipe", recipe_rows)]


def run_checks(ctx: Context, checks=None) -> list[Row]:
    rows = []
    for name, check in checks if checks is not None else CHECKS:
        if ctx.remaining() <= 0:
            rows.append(Row(name, FAIL, f"not started: the {ctx.profile.time_limit_s:.0f} s budget was spent"))
            continue
        try:
            rows += check(ctx)
        except Exception as exc:  # noqa: BLE001  (a check that breaks is a failed row with its cause, not a traceback)
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            rows.append(Row(name, FAIL, f"{type(exc).__name__}: {first}"))
    return rows


def format_table(rows: list[Row]) -> str:
    width = max((len(r.check) for r in rows), default=5)
    lines = [f"| {'check':<{width}} | result | figure |", f"|{'-' * (width + 2)}|--------|--------|"]
    lines += [f"| {r.check:<{width}} | {r.result:<6} | {r.figure} |" for r in rows]
    return "\n".join(lines)


def main(argv=None, checks=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="tiny shapes on CPU: the plumbing, for CI")
    ap.add_argument("--entropy", action="store_true",
                    help="also the Qwen3-4B update at the DAPO token budget with entropy off / on / checkpointing")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                    help="the project checkout (its scripts/ are run); default: this package's checkout")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not (root / "scripts" / "bench_fsdp_gpu.py").is_file():
        print(f"gpu_check: {root} is not the project checkout (no scripts/bench_fsdp_gpu.py); pass --root",
              file=sys.stderr)
        return 2
    if args.json and Path(args.json).exists():
        print(f"gpu_check: {args.json} exists; not overwriting it", file=sys.stderr)
        return 2
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    profile = CPU if args.cpu else GPU
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; `--cpu` checks the plumbing on CPU", file=sys.stderr)
            return 2
    selected = list(checks if checks is not None else CHECKS)
    if args.entropy:
        selected.append(("entropy", entropy_rows))
        profile = replace(profile, time_limit_s=profile.time_limit_s + (120 if args.cpu else 900))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        ctx = Context(root, profile, Path(workdir))
        rows = run_checks(ctx, selected)
    failed = [r for r in rows if r.result == FAIL]
    print(format_table(rows))
    print(f"gpu_check ({profile.device}): {len(rows) - len(failed)} of {len(rows)} rows pass or skip, "
          f"{len(failed)} failed, {time.monotonic() - t0:.0f} s")
    if args.json:
        from verl_drpo.files import write_text

        write_text(args.json, json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

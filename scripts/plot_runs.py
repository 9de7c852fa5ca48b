#!/usr/bin/env python3
"""Draw the training curves of several verl runs into one PNG (one panel per metric, one line per run).

    python scripts/plot_runs.py runs/verl_drpo_gsm8k/*.jsonl -o gsm8k.png
    python scripts/plot_runs.py runs/*/*.jsonl --group-seeds -o mean_over_seeds.png        # mean, min-max band
    python scripts/plot_runs.py a.jsonl b.log --metrics 'val-core/*' actor/entropy --smooth 0.6 -o x.png

Inputs, recognised by their form:
- verl's ``file`` logger (``trainer.logger=[...,"file"]``): JSON lines ``{"step": n, "data": {metric: value}}``,
  written to ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl`` (the recipes set the root to ./runs); a nested
  object is read as slash-joined names (``{"actor": {"lr": 1e-6}}`` -> ``actor/lr``), non-numbers are skipped;
- a saved console log (``trainer.logger=[console]``): lines ``step:<n> - <metric>:<value> - ...``;
- a TensorBoard event file or directory (``trainer.logger=[tensorboard]``; needs the ``tensorboard`` package).

Metrics are names or shell-style patterns (``val-core/*/reward/mean@*``); the default set is the one
docs/reproduction.md says to watch. The label of a run is its file name without extension; with ``--group-seeds``
runs whose labels differ only in ``seed<k>`` are averaged. ``-o`` names the PNG; the tool prints the path it wrote.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.files import folder_problem  # noqa: E402  (every tool's writability check)
from verl_drpo.launch import run_log  # noqa: E402
from verl_drpo.metrics import WATCH  # noqa: E402

DEFAULT_METRICS = WATCH  # verl_drpo.metrics: the set docs/reproduction.md says to watch
_CONSOLE_STEP = re.compile(r"\bstep:(\d+) - (.*)$")
_SEED = re.compile(r"[-_]?seed\d+")


class RunReadError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ readers
def read_jsonl(path: str) -> dict[str, dict[int, float]]:
    """verl's file-logger lines (``verl_drpo.launch.run_log``): a cut-off last line, which a killed or still-running
    logger leaves, is skipped with a note; every complete line is read."""
    try:
        log = run_log.read(path)
    except run_log.RunLogError as err:
        raise RunReadError(str(err)) from None
    if log.cut_off:
        print(f"plot_runs: note: {path}: the last line is cut off (a logger stopped mid-write); read "
              f"{len(log.records)} complete lines", file=sys.stderr)
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for step, data in log.records:
        for key, value in flatten(data).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                series[key][step] = float(value)
    return series


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested objects become slash-joined names, as verl names its metrics: {"a": {"b": 1}} -> {"a/b": 1}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def read_console(path: str) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, errors="replace") as fh:
        for line in fh:
            match = _CONSOLE_STEP.search(line.rstrip("\n"))
            if not match:
                continue
            step = int(match.group(1))
            for item in match.group(2).split(" - "):
                key, sep, value = item.rpartition(":")
                if not sep:
                    continue
                try:
                    series[key.strip()][step] = float(value)
                except ValueError:
                    continue
    return series


def read_tensorboard(path: str) -> dict[str, dict[int, float]]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise RunReadError(f"{path}: reading TensorBoard logs needs `pip install tensorboard`") from None
    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: float(e.value) for e in acc.Scalars(tag)} for tag in acc.Tags().get("scalars", [])}


def read_run(path: str) -> dict[str, dict[int, float]]:
    """Metric name -> {step: value} for one run, whatever form its log has."""
    if not os.path.exists(path):
        raise RunReadError(f"{path}: no such file or directory")
    name = os.path.basename(path.rstrip("/"))
    if os.path.isdir(path) or name.startswith("events.out.tfevents"):
        series = read_tensorboard(path)
    elif path.endswith(".jsonl"):
        series = read_jsonl(path)
    else:
        series = read_console(path)
    if not series:
        raise RunReadError(f"{path}: no metrics found (expected verl file-logger JSON lines, a console log with "
                           "'step:<n> - key:value' lines, or TensorBoard events)")
    return dict(series)


def run_label(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    for ext in (".jsonl", ".log", ".txt"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


# ------------------------------------------------------------------------------------------------ processing
def select_metrics(patterns, runs: dict[str, dict]) -> list[str]:
    available = sorted({key for series in runs.values() for key in series})
    chosen: list[str] = []
    for pattern in patterns:
        for key in available:
            if fnmatch.fnmatchcase(key, pattern) and key not in chosen:
                chosen.append(key)
    return chosen


def ema(values: list[float], alpha: float) -> list[float]:
    """Exponential moving average with weight ``alpha`` on the past (0 = raw), ignoring NaNs' influence."""
    if alpha <= 0:
        return list(values)
    out, acc = [], None
    for v in values:
        if not math.isnan(v):
            acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc if acc is not None else float("nan"))
    return out


def group_by_seed(runs: dict[str, dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for label, series in runs.items():
        groups[_SEED.sub("", label)].append(series)
    return dict(groups)


def plot(runs: dict[str, dict], metrics: list[str], output: str, smooth: float = 0.0, group_seeds: bool = False,
         title: str | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    groups = group_by_seed(runs) if group_seeds else {k: [v] for k, v in runs.items()}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for i, (label, members) in enumerate(sorted(groups.items())):
            curves = [m[metric] for m in members if metric in m]
            if not curves:
                continue
            steps = sorted({s for c in curves for s in c})
            stacked = [[c.get(s, float("nan")) for s in steps] for c in curves]
            stacked = [ema(v, smooth) for v in stacked]
            mean = [_nanmean(col) for col in zip(*stacked, strict=True)]
            color = colors[i % len(colors)]
            suffix = f" (n={len(curves)})" if group_seeds else ""
            ax.plot(steps, mean, label=label + suffix, color=color, lw=1.4,
                    marker="o" if len(steps) <= 30 else None, ms=3)
            if len(curves) > 1:
                lo = [_nanmin(col) for col in zip(*stacked, strict=True)]
                hi = [_nanmax(col) for col in zip(*stacked, strict=True)]
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, lab
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(labels) / 4), 1, 0.97 if title else 1))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        fig.savefig(output, dpi=120)
    finally:
        plt.close(fig)
    return output


def output_path(output: str) -> str:
    """The file ``-o`` names: ``DIR/`` or an existing directory -> DIR/runs.png; a name without extension gets
    ``.png`` (matplotlib would add it silently). Raises RunReadError if the file's folder cannot be written."""
    if output.endswith(os.sep) or os.path.isdir(output):
        output = os.path.join(output, "runs.png")
    elif not os.path.splitext(output)[1]:
        output += ".png"
    problem = folder_problem(os.path.dirname(os.path.abspath(output)))
    if problem:
        raise RunReadError(f"-o {output}: {problem}")
    return output


def _finite(col):
    return [v for v in col if v is not None and not math.isnan(v)]


def _nanmean(col):
    vals = _finite(col)
    return sum(vals) / len(vals) if vals else float("nan")


def _nanmin(col):
    vals = _finite(col)
    return min(vals) if vals else float("nan")


def _nanmax(col):
    vals = _finite(col)
    return max(vals) if vals else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run logs: .jsonl (file logger), console logs, TensorBoard dirs")
    parser.add_argument("-o", "--output", default="runs.png",
                        help="PNG to write (default runs.png); a directory gets DIR/runs.png, a name without "
                             "extension gets .png")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="metric names or shell patterns (default: the set docs/reproduction.md watches)")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: file names)")
    parser.add_argument("--smooth", type=float, default=0.0, help="EMA weight on the past, 0..1 (default 0: raw)")
    parser.add_argument("--group-seeds", action="store_true", help="average runs that differ only in seed<k>")
    parser.add_argument("--title", default=None)
    parser.add_argument("--list", action="store_true", help="print the metrics each run has, then exit")
    args = parser.parse_args(argv)

    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels has {len(args.labels)} entries for {len(args.runs)} runs")
    if not 0.0 <= args.smooth < 1.0:
        parser.error("--smooth must be in [0, 1)")
    runs: dict[str, dict] = {}
    try:
        output = None if args.list else output_path(args.output)
        for i, path in enumerate(args.runs):
            label = args.labels[i] if args.labels else run_label(path)
            if label in runs:
                label = f"{label} ({i})"
            runs[label] = read_run(path)
    except (RunReadError, OSError) as err:
        print(f"plot_runs: {err}", file=sys.stderr)
        return 1
    if args.list:
        for label, series in runs.items():
            print(f"{label}: {len(series)} metrics, steps {min(min(s) for s in series.values())}.."
                  f"{max(max(s) for s in series.values())}")
            for key in sorted(series):
                print(f"  {key}")
        return 0
    metrics = select_metrics(args.metrics, runs)
    if not metrics:
        print(f"plot_runs: none of the metrics {args.metrics} is in these runs; see --list", file=sys.stderr)
        return 1
    try:
        out = plot(runs, metrics, output, smooth=args.smooth, group_seeds=args.group_seeds, title=args.title)
    except (OSError, ValueError) as err:  # an unwritable file, or an image format matplotlib does not know
        print(f"plot_runs: cannot write -o {output}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(metrics)} metrics x {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

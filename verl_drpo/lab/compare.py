"""python -m verl_drpo.lab.compare A B: do two results folders (e.g. float32 and float64) resolve the same signs?

For every paired difference (setting, method, metric, reference) resolved in either folder, it reports whether the
other folder resolves it with the same sign, the opposite sign, or not at all. Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .aggregate import compare_environments


def _load(folder: str) -> dict:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise SystemExit(f"python -m verl_drpo.lab.compare: error: {path} not found")
    return json.loads(path.read_text())


def describe(a: dict, b: dict, name_a: str, name_b: str) -> str:
    c = compare_environments(a, b)

    def env(d):
        e = d["meta"]["environment"]
        return f"{e['dtype']}, {e['threads_per_worker']} thread(s)/worker, torch {e['torch']}"

    total = len(c["agree"]) + len(c["flipped"]) + len(c["only_first"]) + len(c["only_second"])
    lines = [f"Resolved paired differences, {name_a} ({env(a)}) against {name_b} ({env(b)}): {total} resolved in "
             f"at least one; {len(c['agree'])} resolved in both with the same sign, {len(c['flipped'])} with "
             f"opposite signs, {len(c['only_first'])} only in {name_a}, {len(c['only_second'])} only in {name_b}."]
    for key, label in (("flipped", "opposite signs"), ("only_first", f"only in {name_a}"),
                       ("only_second", f"only in {name_b}"), ("agree", "same sign in both")):
        if c[key]:
            lines.append(f"- {label}: " + "; ".join(k.replace("|", " ") for k in c[key]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m verl_drpo.lab.compare RESULTS_A RESULTS_B", file=sys.stderr)
        return 2
    print(describe(_load(argv[0]), _load(argv[1]), argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

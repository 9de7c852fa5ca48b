"""The files of a results folder: results.json (everything), runs.csv, summary.csv, table.md and report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .aggregate import RUN_COLUMNS, apply_multiplicity, apply_multiplicity_to_learning, learning_check, run_row
from .aggregate import summarize_runs
from .design import REFERENCES
from .markdown import format_tables, report_markdown


def write_outputs(folder: Path, runs: list[dict], meta: dict) -> dict:
    """results.json (everything), runs.csv (one row per run), summary.csv, table.md and report.md, into `folder`."""
    references = tuple(meta.get("references", REFERENCES))
    summary = summarize_runs(runs, references)
    if meta.get("gain_settings"):  # the control first
        learning = [learning_check(runs, s) for s in meta["gain_settings"]]
    else:
        learning = learning_check(runs, meta["control_setting"]) if meta.get("control_setting") else None
    multiplicity = {"table": apply_multiplicity(summary, references),
                    "learning": apply_multiplicity_to_learning(learning)}
    (folder / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "learning": learning, "multiplicity": multiplicity, "runs": runs},
        indent=1, allow_nan=True))
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        for r in runs:
            w.writerow(run_row(r))
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in s.items()} for s in summary]
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    table = format_tables(summary, references)
    (folder / "table.md").write_text(table + "\n")
    report = report_markdown(summary, learning, meta)
    (folder / "report.md").write_text(table + "\n\n" + report + "\n")
    return {"summary": summary, "table": table, "report": report}



"""Reading verl's ``file`` logger output (``trainer.logger=[...,"file"]``): one JSON object per line,
``{"step": n, "data": {metric: value}}``, read by ``launch.check_run`` and ``scripts/plot_runs.py``.

A killed or still-running logger leaves its last line cut off: that line is skipped and counted, every complete line
is read. Anything else that is not such a file (a folder, binary data, a corrupt line before the last) is one
``RunLogError`` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


class RunLogError(ValueError):
    """The file is not a readable verl file-logger log; the message names it (and the line)."""


@dataclass
class RunLog:
    """The records of one log, in file order: (step, data); ``cut_off`` is True when the last line was incomplete
    and skipped."""

    path: str
    records: list[tuple[int, dict]] = field(default_factory=list)
    cut_off: bool = False

    def steps(self) -> dict[int, dict]:
        """step -> its metrics (a step logged on several lines is merged, later lines winning)."""
        steps: dict[int, dict] = {}
        for step, data in self.records:
            steps.setdefault(step, {}).update(data)
        return steps


def read(path: str) -> RunLog:
    if os.path.isdir(path):
        raise RunLogError(f"{path} is a directory; give the run's .jsonl file "
                          "($VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise RunLogError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunLogError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected verl's file-logger "
                          "JSON lines") from None
    log = RunLog(path)
    lines = text.split("\n")
    complete_end = len(lines) - 1  # the part after the last newline is complete only if it parses
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, data = int(record["step"]), record["data"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if lineno == complete_end + 1:  # the last line, without a newline: a logger stopped mid-write
                log.cut_off = True
                continue
            raise RunLogError(f"{path}:{lineno}: not a verl file-logger line ({exc})") from None
        if not isinstance(data, dict):
            raise RunLogError(f"{path}:{lineno}: \"data\" is a {type(data).__name__}, expected an object of "
                              "metric: value")
        log.records.append((step, data))
    return log

"""Writing prepared data: the rows of every split as verl parquet files, all or none, and the body every
``scripts/prepare_*.py`` shares."""

from __future__ import annotations

import sys
from collections.abc import Callable

from verl_drpo import files
from verl_drpo.data.records import DataError
from verl_drpo.data.sources import check_split_sources

REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def write_parquets(tables: dict[str, list[dict]], overwrite: bool = False) -> dict[str, int]:
    """Write ``{path: rows}`` as parquet files, all or none (``verl_drpo.files.write_all_or_none``): every destination
    is checked first, and an existing file is replaced only with ``overwrite``."""
    import pandas as pd

    for path, rows in tables.items():
        if not rows:
            raise DataError(f"refusing to write {path}: no rows")
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise DataError(f"refusing to write {path}: rows lack {missing}")

    def writer(rows):
        return lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False)

    files.write_all_or_none({path: writer(rows) for path, rows in tables.items()}, overwrite=overwrite,
                            flag="--local_save_dir")
    return {path: len(rows) for path, rows in tables.items()}


def prepare(tool: str, outputs: dict[str, str], sources: dict[str, str | None], hint: str,
            rows_of: Callable[[str], list[dict]], overwrite: bool = False) -> int:
    """The body of every ``scripts/prepare_*.py``: check every output and that no one file feeds two splits
    (``check_split_sources``, ``hint`` says what to pass instead), build each split's rows with ``rows_of(split)`` in
    the order of ``outputs``, write them all or none (``write_parquets``) and print the counts. ``outputs`` and
    ``sources`` map a split to its parquet path and its local path (None: the hub). A DataError or OutputError is
    one line on stderr, exit status 1."""
    try:
        files.check_outputs(outputs.values(), overwrite=overwrite, flag="--local_save_dir")
        check_split_sources(sources, hint=hint)
        tables = {outputs[split]: rows_of(split) for split in outputs}
        counts = write_parquets(tables, overwrite=overwrite)
    except (DataError, files.OutputError) as err:
        print(f"{tool}: {err}", file=sys.stderr)
        return 1
    for path, n in counts.items():
        print(f"wrote {n} rows to {path}")
    return 0

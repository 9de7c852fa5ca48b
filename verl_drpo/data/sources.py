"""Where the problems come from: the Hugging Face hub by default, or offline from ``local_dataset_path``.

Offline sources are a directory written by ``datasets``' ``save_to_disk``, or a directory holding
``<split>.parquet`` / ``<split>.jsonl`` / ``<split>.json`` files (the hub's own layout, e.g.
``main/train-00000-of-00001.parquet``, is found too); a single file serves one split only, and
``check_split_sources`` refuses to read two splits from one file.
"""

from __future__ import annotations

import glob
import os

from verl_drpo.data.records import DataError

def _read_file(path: str) -> list[dict]:
    import pandas as pd

    try:
        if path.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif path.endswith(".jsonl"):
            frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_json(path)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return frame.to_dict(orient="records")


def load_split(hub_id: str, split: str, config: str | None = None, local_dataset_path: str | None = None,
               max_samples: int | None = None) -> list[dict]:
    """Load one split, from the hub (``datasets.load_dataset``) or from ``local_dataset_path`` (offline)."""
    check_max_samples(max_samples)
    if local_dataset_path is None:
        import datasets

        try:
            ds = datasets.load_dataset(hub_id, config, split=split)
        except Exception as exc:
            raise DataError(f"cannot load {hub_id} ({config or 'default'}) split {split!r} from the hub: "
                            f"{type(exc).__name__}: {exc}. Offline, pass --local_dataset_path.") from exc
        rows = [dict(r) for r in (ds if max_samples is None else ds.select(range(min(max_samples, len(ds)))))]
    else:
        rows = _load_local(os.path.expanduser(local_dataset_path), split)
    if max_samples is not None:
        rows = rows[:max_samples]
    if not rows:
        raise DataError(f"{local_dataset_path or hub_id}: split {split!r} is empty")
    return rows


def _load_local(path: str, split: str) -> list[dict]:
    if not os.path.exists(path):
        raise DataError(f"local dataset path {path} does not exist")
    if os.path.isfile(path):
        return _read_file(path)
    if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(
        os.path.join(path, "dataset_info.json")
    ):
        import datasets

        try:
            ds = datasets.load_from_disk(path)
        except Exception as exc:
            raise DataError(f"cannot read the saved dataset at {path}: {type(exc).__name__}: {exc}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (splits: {sorted(ds)})")
            ds = ds[split]
        return [dict(r) for r in ds]
    files = sorted(
        f for ext in ("parquet", "jsonl", "json")
        for pattern in (f"{split}.{ext}", f"{split}-*.{ext}", f"*/{split}.{ext}", f"*/{split}-*.{ext}")
        for f in glob.glob(os.path.join(path, pattern))
    )
    if not files:
        raise DataError(f"{path}: no file for split {split!r} (looked for {split}.parquet|jsonl|json, "
                        f"{split}-*.parquet, and the same one directory down)")
    rows: list[dict] = []
    for f in files:
        rows.extend(_read_file(f))
    return rows


def check_max_samples(value: int | None) -> None:
    """``--max_samples`` keeps the first N examples of every split: N must be a positive integer (or unset)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"--max_samples must be a positive integer (the number of examples kept per split), "
                        f"got {value!r}")


def positive_int(text: str) -> int:
    """argparse type of ``--max_samples``: a clear one-line error instead of a silent cut or an empty split."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"must be a positive integer (examples kept per split), got {text!r}")
    return value


def check_split_sources(sources: dict[str, str | None], hint: str, train_splits: tuple[str, ...] = ("train",)) -> None:
    """Refuse to read two splits from one file: ``{split: local path or None}``.

    A single file holds no split information, so reading it for train and for test would evaluate on the training
    data without a word, and reading it for two evaluation sets would report one set twice under two names. A
    directory is fine (each split is looked up by its own file name)."""
    seen: dict[str, str] = {}
    for split, path in sources.items():
        if path is None:
            continue
        real = os.path.realpath(os.path.expanduser(path))
        if not os.path.isfile(real):
            continue
        if real in seen:
            if train_splits and (seen[real] in train_splits or split in train_splits):
                why = "so evaluation would run on training data"
            else:
                why = "so one evaluation set would be reported twice, under two names"
            raise DataError(f"the {seen[real]} and {split} splits would both be read from the one file {path}, "
                            f"{why}: {hint}")
        seen[real] = split

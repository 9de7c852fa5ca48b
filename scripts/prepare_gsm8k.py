#!/usr/bin/env python3
"""Write GSM8K (openai/gsm8k, config "main") as verl RL parquet files: <local_save_dir>/train.parquet, test.parquet.

    python scripts/prepare_gsm8k.py --local_save_dir ~/data/gsm8k
    python scripts/prepare_gsm8k.py --local_dataset_path /path/to/gsm8k --local_save_dir ~/data/gsm8k   # offline

The ground truth is the number after "####" in each solution; data_source "openai/gsm8k" makes verl score answers
with verl.utils.reward_score.gsm8k (strict "#### <number>" format). Schema: verl_drpo/data.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.data import GSM8K_SOURCE, DataError, convert, gsm8k_record, load_split, write_parquets  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", default=None,
                        help="offline copy: a save_to_disk directory or a directory with train/test "
                             "parquet|jsonl|json files (default: load openai/gsm8k from the hub)")
    parser.add_argument("--local_save_dir", default="~/data/gsm8k", help="output directory (default ~/data/gsm8k)")
    parser.add_argument("--max_samples", type=int, default=None, help="keep only the first N examples per split")
    args = parser.parse_args(argv)

    out = os.path.expanduser(args.local_save_dir)
    try:
        tables = {}
        for split in ("train", "test"):
            examples = load_split(GSM8K_SOURCE, split, "main", args.local_dataset_path, args.max_samples)
            rows = convert(examples, lambda ex, i, s=split: gsm8k_record(ex, s, i), f"gsm8k {split}")
            tables[os.path.join(out, f"{split}.parquet")] = rows
        counts = write_parquets(tables)
    except DataError as err:
        print(f"prepare_gsm8k: {err}", file=sys.stderr)
        return 1
    for path, n in counts.items():
        print(f"wrote {n} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Write GSM8K (openai/gsm8k, config "main") as verl RL parquet files: <local_save_dir>/train.parquet, test.parquet.

    python scripts/prepare_gsm8k.py --local_save_dir ~/data/gsm8k
    python scripts/prepare_gsm8k.py --local_dataset_path /path/to/gsm8k --local_save_dir ~/data/gsm8k   # offline
    python scripts/prepare_gsm8k.py --local_dataset_path train.jsonl --local_test_dataset_path test.jsonl \
        --local_save_dir ~/data/gsm8k                                                 # offline, one file per split

A single file holds one split: --local_dataset_path FILE needs --local_test_dataset_path (the tool refuses to read
train and test from the same file). Existing outputs are replaced only with --overwrite; both files are written, or
neither.

The ground truth is the number after "####" in each solution; data_source "openai/gsm8k" makes verl score answers
with verl.utils.reward_score.gsm8k (strict "#### <number>" format). Schema: verl_drpo/data/records.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.data.records import GSM8K_SOURCE, convert, gsm8k_record  # noqa: E402
from verl_drpo.data.sources import load_split, positive_int  # noqa: E402
from verl_drpo.data.writer import prepare  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", default=None,
                        help="offline copy: a save_to_disk directory or a directory with train/test "
                             "parquet|jsonl|json files, or one file holding the train split "
                             "(default: load openai/gsm8k from the hub)")
    parser.add_argument("--local_test_dataset_path", default=None,
                        help="offline test split, a file or directory (default: the test split of "
                             "--local_dataset_path; required when that is a single file)")
    parser.add_argument("--local_save_dir", default="~/data/gsm8k", help="output directory (default ~/data/gsm8k)")
    parser.add_argument("--max_samples", type=positive_int, default=None,
                        help="keep only the first N examples per split")
    parser.add_argument("--overwrite", action="store_true", help="replace existing train/test.parquet")
    args = parser.parse_args(argv)

    out = os.path.expanduser(args.local_save_dir)
    sources = {"train": args.local_dataset_path, "test": args.local_test_dataset_path or args.local_dataset_path}
    outputs = {split: os.path.join(out, f"{split}.parquet") for split in sources}

    def rows_of(split):
        examples = load_split(GSM8K_SOURCE, split, "main", sources[split], args.max_samples)
        return convert(examples, lambda ex, i: gsm8k_record(ex, split, i), f"gsm8k {split}")

    return prepare("prepare_gsm8k", outputs, sources, hint="pass the test split with --local_test_dataset_path, or a "
                   "directory holding train.* and test.* files as --local_dataset_path", rows_of=rows_of,
                   overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())

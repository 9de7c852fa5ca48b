#!/usr/bin/env python3
"""Write MATH as verl RL parquet files: <local_save_dir>/train.parquet (DigitalLearningGmbH/MATH-lighteval, train
split) and <local_save_dir>/test.parquet (HuggingFaceH4/MATH-500, the 500-problem evaluation subset).

    python scripts/prepare_math.py --local_save_dir ~/data/math
    python scripts/prepare_math.py --local_dataset_path /copies/MATH-lighteval \\
        --local_test_dataset_path /copies/MATH-500 --local_save_dir ~/data/math             # offline

The ground truth is the content of the last \\boxed{} of the solution (MATH-500's own `answer` field when present);
both data_source values make verl score answers with verl.utils.reward_score.math_reward. Schema: verl_drpo/data/records.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.data.records import MATH_TEST_SOURCE, MATH_TRAIN_SOURCE, convert, math_record  # noqa: E402
from verl_drpo.data.sources import load_split, positive_int  # noqa: E402
from verl_drpo.data.writer import prepare  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", default=None,
                        help=f"offline copy of {MATH_TRAIN_SOURCE} (save_to_disk directory or train.parquet|jsonl)")
    parser.add_argument("--local_test_dataset_path", default=None,
                        help=f"offline copy of {MATH_TEST_SOURCE} (save_to_disk directory or test.parquet|jsonl)")
    parser.add_argument("--local_save_dir", default="~/data/math", help="output directory (default ~/data/math)")
    parser.add_argument("--max_samples", type=positive_int, default=None,
                        help="keep only the first N examples per split")
    parser.add_argument("--overwrite", action="store_true", help="replace existing train/test.parquet")
    args = parser.parse_args(argv)

    out = os.path.expanduser(args.local_save_dir)
    jobs = {  # split -> (hub id, local path)
        "train": (MATH_TRAIN_SOURCE, args.local_dataset_path),
        "test": (MATH_TEST_SOURCE, args.local_test_dataset_path),
    }

    def rows_of(split):
        source, local = jobs[split]
        examples = load_split(source, split, None, local, args.max_samples)
        return convert(examples, lambda ex, i: math_record(ex, split, i, source), f"{source} {split}")

    return prepare("prepare_math", {split: os.path.join(out, f"{split}.parquet") for split in jobs},
                   {split: local for split, (_, local) in jobs.items()},
                   hint="--local_dataset_path and --local_test_dataset_path must be different files",
                   rows_of=rows_of, overwrite=args.overwrite)

if __name__ == "__main__":
    sys.exit(main())

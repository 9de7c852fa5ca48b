#!/usr/bin/env python3
"""Write MATH as verl RL parquet files: <local_save_dir>/train.parquet (DigitalLearningGmbH/MATH-lighteval, train
split) and <local_save_dir>/test.parquet (HuggingFaceH4/MATH-500, the 500-problem evaluation subset).

    python scripts/prepare_math.py --local_save_dir ~/data/math
    python scripts/prepare_math.py --local_dataset_path /copies/MATH-lighteval \\
        --local_test_dataset_path /copies/MATH-500 --local_save_dir ~/data/math             # offline

The ground truth is the content of the last \\boxed{} of the solution (MATH-500's own `answer` field when present);
both data_source values make verl score answers with verl.utils.reward_score.math_reward. Schema: verl_drpo/data.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.data import (  # noqa: E402
    MATH_TEST_SOURCE,
    MATH_TRAIN_SOURCE,
    DataError,
    check_outputs,
    check_split_sources,
    convert,
    load_split,
    math_record,
    positive_int,
    write_parquets,
)


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
    jobs = (
        ("train", MATH_TRAIN_SOURCE, None, args.local_dataset_path),
        ("test", MATH_TEST_SOURCE, None, args.local_test_dataset_path),
    )
    try:
        check_outputs([os.path.join(out, f"{split}.parquet") for split, *_ in jobs], overwrite=args.overwrite)
        check_split_sources({split: local for split, _, _, local in jobs},
                            hint="--local_dataset_path and --local_test_dataset_path must be different files")
        tables = {}
        for split, source, config, local in jobs:
            examples = load_split(source, split, config, local, args.max_samples)
            rows = convert(examples, lambda ex, i, s=split, src=source: math_record(ex, s, i, src), f"{source} {split}")
            tables[os.path.join(out, f"{split}.parquet")] = rows
        counts = write_parquets(tables, overwrite=args.overwrite)
    except DataError as err:
        print(f"prepare_math: {err}", file=sys.stderr)
        return 1
    for path, n in counts.items():
        print(f"wrote {n} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

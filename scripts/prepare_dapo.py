#!/usr/bin/env python3
"""Write DAPO-Math-17k and AIME 2024/2025 as verl RL parquet files, for the paper's DAPO-Math/AIME recipe:
<local_save_dir>/train.parquet (BytedTsinghua-SIA/DAPO-Math-17k), aime24.parquet (HuggingFaceH4/aime_2024, 30
problems) and aime25.parquet (math-ai/aime25, 30 problems).

    python scripts/prepare_dapo.py --local_save_dir ~/data/dapo
    python scripts/prepare_dapo.py --local_dataset_path /copies/DAPO-Math-17k \\
        --local_aime24_path /copies/aime_2024 --local_aime25_path /copies/aime25 --local_save_dir ~/data/dapo  # offline

Each local path is a save_to_disk directory, a directory with <split>.parquet|jsonl|json files, or one such file.
Rows: data_source "math_dapo" (train), "aime24", "aime25" (evaluation); verl 0.9.1's default_compute_score sends all
three to verl.utils.reward_score.math_dapo, which reads the response's last "Answer: ..." line (score +1 / -1 and an
"acc" field); for verl's Math-Verify scorer instead, set reward.custom_reward_function.path=pkg://verl_drpo.data.rewards
and .name=math_verify_score. Every prompt uses DAPO-Math-17k's own template, which asks for that line. Exact
duplicate problems of the training set are dropped (the count is printed). Existing outputs are replaced only with --overwrite; the
three files are written, or none. Schema: verl_drpo/data/records.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_drpo.data.records import (  # noqa: E402
    AIME24_HUB_ID, AIME24_SOURCE, AIME24_SPLIT, AIME25_HUB_ID, AIME25_SOURCE, AIME25_SPLIT, DAPO_TRAIN_HUB_ID,
    DAPO_TRAIN_SOURCE, convert, dapo_record, drop_duplicate_problems,
)
from verl_drpo.data.sources import load_split, positive_int  # noqa: E402
from verl_drpo.data.writer import prepare  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", default=None,
                        help=f"offline copy of {DAPO_TRAIN_HUB_ID} (split 'train'; default: load it from the hub)")
    parser.add_argument("--local_aime24_path", default=None,
                        help=f"offline copy of {AIME24_HUB_ID} (split '{AIME24_SPLIT}'; default: the hub)")
    parser.add_argument("--local_aime25_path", default=None,
                        help=f"offline copy of {AIME25_HUB_ID} (split '{AIME25_SPLIT}'; default: the hub)")
    parser.add_argument("--local_save_dir", default="~/data/dapo", help="output directory (default ~/data/dapo)")
    parser.add_argument("--max_samples", type=positive_int, default=None,
                        help="keep only the first N examples of each dataset")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)

    out = os.path.expanduser(args.local_save_dir)
    jobs = {  # output name -> (hub id, split, local path, data_source)
        "train": (DAPO_TRAIN_HUB_ID, "train", args.local_dataset_path, DAPO_TRAIN_SOURCE),
        "aime24": (AIME24_HUB_ID, AIME24_SPLIT, args.local_aime24_path, AIME24_SOURCE),
        "aime25": (AIME25_HUB_ID, AIME25_SPLIT, args.local_aime25_path, AIME25_SOURCE),
    }
    dropped = 0

    def rows_of(name):
        nonlocal dropped
        hub_id, split, local, source = jobs[name]
        examples = load_split(hub_id, split, None, local, args.max_samples)
        rows = convert(examples, lambda ex, i: dapo_record(ex, name, i, source), f"{hub_id} {split}")
        if name == "train":
            rows, dropped = drop_duplicate_problems(rows)
        return rows

    status = prepare("prepare_dapo", {name: os.path.join(out, f"{name}.parquet") for name in jobs},
                     {name: local for name, (_, _, local, _) in jobs.items()},
                     hint="--local_dataset_path, --local_aime24_path and --local_aime25_path must be different files",
                     rows_of=rows_of, overwrite=args.overwrite)
    if status == 0 and dropped:
        print(f"dropped {dropped} exact duplicate training problems")
    return status

if __name__ == "__main__":
    sys.exit(main())

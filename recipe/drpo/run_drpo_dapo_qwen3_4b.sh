#!/usr/bin/env bash
# DRPO (arXiv 2606.09821) as the paper trains it: Qwen3-4B-Base on DAPO-Math-17k, AIME24/25 validated avg@16, the
# authors' released configuration (64 prompts x 8 responses, 4 mini-batch steps, lr 1e-6, 8,192-token responses,
# temperature 1.0, top-p 1.0, seq-mean-token-sum-norm over 8,192, no KL) ported to verl 0.9.1. Sources and hardware:
# docs/reproduction.md.
#
#   bash recipe/drpo/run_drpo_dapo_qwen3_4b.sh                         # DRPO, 1 node x 8 GPUs
#   LOSS_MODE=dppo_tv bash recipe/drpo/run_drpo_dapo_qwen3_4b.sh       # a baseline of the paper
#   DRY_RUN=1 bash recipe/drpo/run_drpo_dapo_qwen3_4b.sh               # compose + validate, no GPU
# Data: python scripts/prepare_dapo.py --local_save_dir ~/data/dapo. Hydra overrides last win. docs/recipes.md
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default), the shared run
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && { drpo_help "${BASH_SOURCE[0]}"; exit 0; }; done

# ---------------------------------------------------------------- dataset and model: the block the recipes differ in
drpo_one_model "the DAPO recipe (Qwen3-4B-Base)"
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-4B-Base}         # hub id or local directory
MODEL_TAG=${MODEL_TAG:-qwen3-4b-base}                # the experiment name's prefix
DATA_DIR=${DATA_DIR:-$HOME/data/dapo}                # written by scripts/prepare_dapo.py
TRAIN_FILES=${TRAIN_FILES:-${DATA_DIR}/train.parquet}  # DAPO-Math-17k, data_source math_dapo -> verl's math_dapo
VAL_FILES=${VAL_FILES:-[${DATA_DIR}/aime24.parquet,${DATA_DIR}/aime25.parquet]}  # data_source aime24, aime25
PROJECT_NAME=${PROJECT_NAME:-verl_drpo_dapo}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}         # as verl's DAPO recipe
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}     # the authors' 8,192; also the loss horizon (loss_scale_factor)
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-2}  # used only with USE_DYNAMIC_BSZ=False
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-4}
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-800}    # the authors' port: 800 rollouts (about 3 epochs)
USE_DYNAMIC_BSZ=${USE_DYNAMIC_BSZ:-True}             # token-budget micro-batches (verl's 2x / 3x budgets, common.sh)
ROLLOUT_TP=${ROLLOUT_TP:-2}                          # vLLM tensor parallel size, as the authors' verl run
VAL_N=${VAL_N:-16}                                   # AIME avg@16: 16 sampled answers per problem
REWARD=${REWARD:-math_verify}                        # the paper's grader, Math-Verify 1/0 (REWARD=default: math_dapo, +1/-1)
VAL_DO_SAMPLE=${VAL_DO_SAMPLE:-True}
VAL_TEMPERATURE=${VAL_TEMPERATURE:-1.0}

# ---------------------------------------------------------------- the run every recipe shares: recipe/drpo/common.sh
drpo_compose "$@"; set -- "${USER_OVERRIDES[@]}"  # shared variables, checks -> DATA ALGORITHM ACTOR ROLLOUT TRAINER
drpo_before_launch "$@"                           # doctor; DRY_RUN=1 stops here; drpo_prox preflight; metrics file
set -x  # ENTRY: verl.trainer.main_ppo (fully_async: its own); the command line's overrides come last and win
"$PYTHON" -m "$ENTRY" "${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}" "$@"

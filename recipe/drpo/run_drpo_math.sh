#!/usr/bin/env bash
# DRPO (arXiv 2606.09821) on MATH with a Qwen2.5-Math-1.5B-class base model: run_drpo_gsm8k.sh's run (verl V1 trainer,
# FSDP2 actor, vLLM rollout, group advantages without std normalisation, anchor = rollout log-probs), trained on MATH
# (DigitalLearningGmbH/MATH-lighteval, 7,500 problems) and validated on MATH-500.
#
#   bash recipe/drpo/run_drpo_math.sh
#   LOSS_MODE=dppo_tv SEED=2 bash recipe/drpo/run_drpo_math.sh
#   DRY_RUN=1 bash recipe/drpo/run_drpo_math.sh                # compose + validate only, no GPU
# Data: python scripts/prepare_math.py --local_save_dir ~/data/math. Hydra overrides last win. docs/recipes.md
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default), the shared run
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && { drpo_help "${BASH_SOURCE[0]}"; exit 0; }; done

# ---------------------------------------------------------------- dataset and model: the block the recipes differ in
drpo_one_model "the MATH recipe (Qwen2.5-Math-1.5B)"
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B}     # hub id or local directory; a 4,096-token context
MODEL_TAG=${MODEL_TAG:-$(basename "$MODEL_PATH")}    # the experiment name's prefix
DATA_DIR=${DATA_DIR:-$HOME/data/math}                # written by scripts/prepare_math.py
TRAIN_FILES=${TRAIN_FILES:-${DATA_DIR}/train.parquet}  # data_source DigitalLearningGmbH/MATH-lighteval -> math_reward
VAL_FILES=${VAL_FILES:-${DATA_DIR}/test.parquet}     # MATH-500 (HuggingFaceH4/MATH-500), \boxed{} answers
PROJECT_NAME=${PROJECT_NAME:-verl_drpo_math}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}         # prompt + response must fit the model's 4,096 tokens
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3072}     # also the loss horizon (loss_scale_factor)
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-4}
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-8}
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-350}    # about 3 epochs of MATH's 7,500 training problems

# ---------------------------------------------------------------- the run every recipe shares: recipe/drpo/common.sh
drpo_compose "$@"; set -- "${USER_OVERRIDES[@]}"  # shared variables, checks -> DATA ALGORITHM ACTOR ROLLOUT TRAINER
drpo_before_launch "$@"                           # doctor; DRY_RUN=1 stops here; drpo_prox preflight; metrics file
set -x  # ENTRY: verl.trainer.main_ppo (fully_async: its own); the command line's overrides come last and win
"$PYTHON" -m "$ENTRY" "${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}" "$@"

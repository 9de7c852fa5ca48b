#!/usr/bin/env bash
# DRPO (arXiv 2606.09821) on GSM8K with Qwen2.5-{0.5B,1.5B,3B}-Instruct: verl's V1 trainer, FSDP2 actor, vLLM rollout,
# GRPO group advantages without std normalisation, the loss anchored on the rollout log-probs mu.
#
#   bash recipe/drpo/run_drpo_gsm8k.sh                                   # DRPO, 0.5B, 8 GPUs
#   MODEL_SIZE=1.5B LOSS_MODE=dppo_tv bash recipe/drpo/run_drpo_gsm8k.sh  # a baseline, a bigger model
#   TRAINER_MODE=colocate_async STALENESS=2 bash recipe/drpo/run_drpo_gsm8k.sh
#   DRY_RUN=1 bash recipe/drpo/run_drpo_gsm8k.sh trainer.total_training_steps=5   # compose + validate, no GPU
# Data: python scripts/prepare_gsm8k.py --local_save_dir ~/data/gsm8k. Hydra overrides last win. docs/recipes.md
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default), the shared run
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && { drpo_help "${BASH_SOURCE[0]}"; exit 0; }; done

# ---------------------------------------------------------------- dataset and model: the block the recipes differ in
MODEL_SIZE=${MODEL_SIZE:-0.5B}                       # 0.5B | 1.5B | 3B | 7B -> Qwen/Qwen2.5-<size>-Instruct
drpo_require_choice MODEL_SIZE 0.5B 1.5B 3B 7B
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-${MODEL_SIZE}-Instruct}  # hub id or local directory
MODEL_TAG=${MODEL_TAG:-qwen2.5-${MODEL_SIZE}}        # the experiment name's prefix
DATA_DIR=${DATA_DIR:-$HOME/data/gsm8k}               # written by scripts/prepare_gsm8k.py
TRAIN_FILES=${TRAIN_FILES:-${DATA_DIR}/train.parquet}  # data_source openai/gsm8k -> verl's gsm8k scorer
VAL_FILES=${VAL_FILES:-${DATA_DIR}/test.parquet}
PROJECT_NAME=${PROJECT_NAME:-verl_drpo_gsm8k}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-512}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-1024}     # also the loss horizon (loss_scale_factor)
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-8}
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-16}
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-350}    # about 3 epochs of GSM8K's 7,473 training problems

# ---------------------------------------------------------------- the run every recipe shares: recipe/drpo/common.sh
drpo_compose "$@"; set -- "${USER_OVERRIDES[@]}"  # shared variables, checks -> DATA ALGORITHM ACTOR ROLLOUT TRAINER
drpo_before_launch "$@"                           # doctor; DRY_RUN=1 stops here; drpo_prox preflight; metrics file
set -x  # ENTRY: verl.trainer.main_ppo (fully_async: its own); the command line's overrides come last and win
"$PYTHON" -m "$ENTRY" "${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}" "$@"

#!/usr/bin/env bash
# DRPO on MATH with a Qwen2.5-Math-1.5B-class base model: the structure of run_drpo_gsm8k.sh (verl V1 trainer, FSDP2
# actor, vLLM rollout in the hybrid engine, group advantages without std normalisation, anchor = rollout log-probs),
# trained on MATH (DigitalLearningGmbH/MATH-lighteval, 7500 problems) and validated on MATH-500.
#
#   bash recipe/drpo/run_drpo_math.sh
#   LOSS_MODE=dppo_tv SEED=2 bash recipe/drpo/run_drpo_math.sh
#   DRY_RUN=1 bash recipe/drpo/run_drpo_math.sh                # compose + validate only, no GPU
#
# Data: python scripts/prepare_math.py --local_save_dir ~/data/math (writes train.parquet and test.parquet = MATH-500).
# Qwen2.5-Math-1.5B has a 4096-token context: MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH must stay within it.
set -xeuo pipefail
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "${RECIPE_DIR}/common.sh"

PYTHON=${PYTHON:-python3}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B}
MODEL_TAG=${MODEL_TAG:-$(basename "$MODEL_PATH")}
DATA_DIR=${DATA_DIR:-$HOME/data/math}
TRAIN_FILES=${TRAIN_FILES:-${DATA_DIR}/train.parquet}
VAL_FILES=${VAL_FILES:-${DATA_DIR}/test.parquet}

LOSS_MODE=${LOSS_MODE:-drpo}                         # drpo mask_drpo spo pg_is dppo_tv dppo_kl vanilla
DRPO_DELTA=${DRPO_DELTA:-12.5}                       # paper Sec. 4; < 1 makes the TV boundary reachable
TRAINER_MODE=${TRAINER_MODE:-sync}                   # sync colocate_async separate_async fully_async
STALENESS=${STALENESS:-}                             # per-mode meaning: recipe/drpo/common.sh, docs/recipes.md

N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NNODES=${NNODES:-1}
ROLLOUT_TP=${ROLLOUT_TP:-1}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
# 64 prompts x 8 samples per rollout and 4 optimizer steps per rollout, as in the DRPO paper's setup
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-16}
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-4}
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-8}
ROLLOUT_N=${ROLLOUT_N:-8}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3072}
LR=${LR:-1e-6}
TEMPERATURE=${TEMPERATURE:-1.0}                      # mu must be the sampling distribution: keep 1.0
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-350}    # about 3 epochs of MATH's 7500 training problems
TOTAL_EPOCHS=${TOTAL_EPOCHS:-100}                    # an upper bound; TOTAL_TRAINING_STEPS stops the run
TEST_FREQ=${TEST_FREQ:-10}
SAVE_FREQ=${SAVE_FREQ:--1}
SEED=${SEED:-1}
PROJECT_NAME=${PROJECT_NAME:-verl_drpo_math}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODEL_TAG}-${LOSS_MODE}-${TRAINER_MODE}-seed${SEED}}
LOGGER=${LOGGER:-'["console","file"]'}
# verl's file logger writes $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl (read by scripts/plot_runs.py)
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}
DRY_RUN=${DRY_RUN:-0}
USE_RUNTIME_ENV_PLUGIN=${USE_RUNTIME_ENV_PLUGIN:-0}  # 1: also import the plugin through Ray's runtime_env

drpo_loss_overrides "$LOSS_MODE"
drpo_mode_overrides "$TRAINER_MODE"

OVERRIDES=(
  # data: verl's parquet schema; data_source DigitalLearningGmbH/MATH-lighteval (train) and HuggingFaceH4/MATH-500
  # (validation) -> verl.utils.reward_score.math_reward (answer in \boxed{})
  "data.train_files=${TRAIN_FILES}"
  "data.val_files=${VAL_FILES}"
  "data.train_batch_size=${TRAIN_BATCH_SIZE}"
  "data.max_prompt_length=${MAX_PROMPT_LENGTH}"
  "data.max_response_length=${MAX_RESPONSE_LENGTH}"
  data.filter_overlong_prompts=True
  data.truncation=error
  "data.seed=${SEED}"                                 # prompt order; the rollout seed below drives sampling
  # advantages: GRPO group-centred, NOT divided by the group std (the DRPO paper's setting)
  algorithm.adv_estimator=grpo
  algorithm.norm_adv_by_std_in_grpo=False
  algorithm.use_kl_in_reward=False
  # the anchor: old_log_prob := the rollout engine's log-probs mu (no trainer recompute, no IS weights)
  algorithm.rollout_correction.bypass_mode=True
  actor_rollout_ref.rollout.calculate_log_probs=True
  # model and actor (FSDP2): several mini-batch updates per rollout, all against the same mu
  "actor_rollout_ref.model.path=${MODEL_PATH}"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.strategy=fsdp2
  "actor_rollout_ref.actor.optim.lr=${LR}"
  actor_rollout_ref.actor.optim.clip_grad=1.0
  "actor_rollout_ref.actor.ppo_mini_batch_size=${PPO_MINI_BATCH_SIZE}"
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=${PPO_MICRO_BATCH_SIZE_PER_GPU}"
  actor_rollout_ref.actor.ppo_epochs=1
  actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  # entropy is logged, not optimised: in bypass mode verl skips the old-log-prob pass that logs actor/entropy, so
  # the update computes it and reports it as actor/entropy_loss (times entropy_coeff = 0 in the loss)
  actor_rollout_ref.actor.calculate_entropy=True
  "${LOSS_OVERRIDES[@]}"
  # rollout: vLLM, async agent loop (verl's only rollout mode), full untruncated sampling distribution
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.mode=async
  "actor_rollout_ref.rollout.n=${ROLLOUT_N}"
  "actor_rollout_ref.rollout.temperature=${TEMPERATURE}"
  actor_rollout_ref.rollout.top_p=1.0
  actor_rollout_ref.rollout.top_k=-1
  "actor_rollout_ref.rollout.tensor_model_parallel_size=${ROLLOUT_TP}"
  "actor_rollout_ref.rollout.gpu_memory_utilization=${GPU_MEMORY_UTILIZATION}"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU}"
  "actor_rollout_ref.rollout.seed=${SEED}"
  actor_rollout_ref.rollout.val_kwargs.do_sample=False
  # trainer
  "trainer.logger=${LOGGER}"
  "trainer.project_name=${PROJECT_NAME}"
  "trainer.experiment_name=${EXPERIMENT_NAME}"
  "trainer.n_gpus_per_node=${N_GPUS_PER_NODE}"
  "trainer.nnodes=${NNODES}"
  "trainer.total_training_steps=${TOTAL_TRAINING_STEPS}"
  "trainer.total_epochs=${TOTAL_EPOCHS}"
  "trainer.test_freq=${TEST_FREQ}"
  "trainer.save_freq=${SAVE_FREQ}"
  trainer.val_before_train=True
  "${MODE_OVERRIDES[@]}"
)
if [[ "$USE_RUNTIME_ENV_PLUGIN" == 1 ]]; then
  # multi-node fallback when the verl.plugins entry point is not seen by every node's interpreter
  OVERRIDES+=("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin")
fi

drpo_launch "$@"

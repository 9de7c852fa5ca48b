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
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default) and the helpers
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

# ---------------------------------------------------------------- method, batch, cluster (the same in every recipe)
LOSS_MODE=${LOSS_MODE:-drpo}                         # the table verl_drpo/modes.py; see --help
DRPO_DELTA=${DRPO_DELTA:-}                           # empty: the paper's 12.5; < 1 makes the TV boundary reachable
TRAINER_MODE=${TRAINER_MODE:-sync}                   # sync colocate_async separate_async fully_async
STALENESS=${STALENESS:-}                             # V1 async: int k (empty: 1); fully_async: s >= 0 (empty: 0.5)
STALENESS_STRATEGY=${STALENESS_STRATEGY:-wait}       # V1 async: wait for stale groups (dropless), or drop
ROLLOUT_GPUS_PER_NODE=${ROLLOUT_GPUS_PER_NODE:-}     # separate/fully async rollout pool (empty: N_GPUS_PER_NODE/2)
CHECKPOINT_BACKEND=${CHECKPOINT_BACKEND:-nccl}       # separate/fully async weight sync
PARTIAL_ROLLOUT=${PARTIAL_ROLLOUT:-True}             # fully_async: resume interrupted samples after a sync
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NNODES=${NNODES:-1}
ROLLOUT_TP=${ROLLOUT_TP:-1}                          # vLLM tensor parallel size
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}  # vLLM's share of each GPU
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}             # prompts per rollout (x ROLLOUT_N samples), the paper's 64 x 8
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-16}       # prompts per optimizer step: 4 steps per rollout, as the paper
ROLLOUT_N=${ROLLOUT_N:-8}
USE_DYNAMIC_BSZ=${USE_DYNAMIC_BSZ:-False}            # True: token-budget micro-batches instead of *_MICRO_BATCH_*
PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-}  # token budget (empty: 2 x (prompt + response))
LOG_PROB_MAX_TOKEN_LEN_PER_GPU=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU:-}  # (empty: PPO_MAX_TOKEN_LEN_PER_GPU)
LR=${LR:-1e-6}
TEMPERATURE=${TEMPERATURE:-1.0}                      # mu must be the sampling distribution: keep 1.0
REWARD=${REWARD:-default}                            # default: verl's scorer of the data_source; math_verify
VAL_N=${VAL_N:-1}                                    # validation samples per prompt
VAL_DO_SAMPLE=${VAL_DO_SAMPLE:-False}                # False: greedy validation
VAL_TEMPERATURE=${VAL_TEMPERATURE:-}                 # empty: TEMPERATURE if VAL_DO_SAMPLE=True, else 0 (greedy)
TOTAL_EPOCHS=${TOTAL_EPOCHS:-100}                    # an upper bound; TOTAL_TRAINING_STEPS stops the run
TEST_FREQ=${TEST_FREQ:-10}
SAVE_FREQ=${SAVE_FREQ:-50}                           # checkpoint every 50 steps and at the last; -1: none
MAX_CKPT_TO_KEEP=${MAX_CKPT_TO_KEEP:-2}              # the newest checkpoints kept (older ones deleted)
SEED=${SEED:-1}                                      # data order and rollout sampling
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODEL_TAG}-${LOSS_MODE}-${TRAINER_MODE}-seed${SEED}}
LOGGER=${LOGGER:-'["console","file"]'}               # + "tensorboard" or "wandb" (WANDB_MODE=offline works offline)
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}  # metrics: <root>/<project>/<experiment>.jsonl
DRY_RUN=${DRY_RUN:-0}                                # 1: compose + validate against the installed verl, no GPU
DRY_RUN_JSON=${DRY_RUN_JSON:-}                       # dry run: also write the resolved settings here
SKIP_DOCTOR=${SKIP_DOCTOR:-0}                        # 1: skip the plugin check
USE_RUNTIME_ENV_PLUGIN=${USE_RUNTIME_ENV_PLUGIN:-0}  # 1: also load the plugin through Ray's runtime_env

drpo_check_variables   # one clear line per bad value, before anything runs
drpo_loss_overrides    # LOSS_MODE -> LOSS_OVERRIDES, from the table
drpo_trainer_mode      # TRAINER_MODE, STALENESS -> MODE_OVERRIDES, ENTRY

OVERRIDES=(
  # data: verl's parquet schema
  "data.train_files=${TRAIN_FILES}"
  "data.val_files=${VAL_FILES}"
  "data.train_batch_size=${TRAIN_BATCH_SIZE}"
  "data.max_prompt_length=${MAX_PROMPT_LENGTH}"
  "data.max_response_length=${MAX_RESPONSE_LENGTH}"
  data.filter_overlong_prompts=True
  data.truncation=error
  "data.seed=${SEED}"
  # advantages: GRPO group-centred, NOT divided by the group std (the DRPO paper's setting)
  algorithm.adv_estimator=grpo
  algorithm.norm_adv_by_std_in_grpo=False
  algorithm.use_kl_in_reward=False
  # the anchor: old_log_prob := the rollout engine's log-probs mu (no trainer recompute, no IS weights);
  # LOSS_MODE=drpo_prox replaces these with verl's decoupled mode (its LOSS_OVERRIDES, below, come later and win)
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
  # token sum per sequence divided by a constant horizon, the maximum response length (unset, verl divides by each
  # micro-batch's own longest response, so a sequence's weight would depend on its neighbours)
  actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm
  "actor_rollout_ref.actor.loss_scale_factor=\${data.max_response_length}"  # one value: follows any override
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  # entropy logged, not optimised: bypass mode skips the pass that logs actor/entropy; the update reports it as
  # actor/entropy_loss (times entropy_coeff = 0 in the loss)
  actor_rollout_ref.actor.calculate_entropy=True
  "${LOSS_OVERRIDES[@]}"
  # token-budget batching (verl's use_dynamic_bsz), for the update and the log-prob passes
  "actor_rollout_ref.actor.use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
  "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${PPO_MAX_TOKEN_LEN_PER_GPU}"
  "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
  "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU}"
  "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
  "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU}"
  # rollout: vLLM, async agent loop (verl's only rollout mode), the full untruncated sampling distribution
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
  "actor_rollout_ref.rollout.val_kwargs.n=${VAL_N}"
  "actor_rollout_ref.rollout.val_kwargs.do_sample=${VAL_DO_SAMPLE}"
  "actor_rollout_ref.rollout.val_kwargs.temperature=${VAL_TEMPERATURE}"
  actor_rollout_ref.rollout.val_kwargs.top_p=1.0
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
  "trainer.max_actor_ckpt_to_keep=${MAX_CKPT_TO_KEEP}"
  trainer.val_before_train=True
  "${MODE_OVERRIDES[@]}"
)
if [[ $REWARD == math_verify ]]; then  # the paper's grader, 1/0 (pip install math-verify)
  OVERRIDES+=(reward.custom_reward_function.path=pkg://verl_drpo.data.rewards
              reward.custom_reward_function.name=math_verify_score)
fi
if [[ $USE_RUNTIME_ENV_PLUGIN == 1 ]]; then  # when a node's interpreter does not see the verl.plugins entry point
  OVERRIDES+=("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin")
fi
drpo_user_overrides "$@"; set -- "${USER_OVERRIDES[@]}"   # a `+key=v` for a key added above becomes `++key=v`

drpo_doctor
if [[ $DRY_RUN == 1 ]]; then
  set -x
  exec "$PYTHON" -m verl_drpo.dry_run --entry "$DRY_RUN_ENTRY" ${DRY_RUN_JSON:+--json "$DRY_RUN_JSON"} -- \
    "${OVERRIDES[@]}" "$@"
fi
drpo_preflight "$@"     # drpo_prox: refuse a config from which mu cannot be recovered, before anything starts
drpo_metrics_file      # never truncate an earlier run's metrics
set -x
"$PYTHON" -m "$ENTRY" "${OVERRIDES[@]}" "$@"          # ENTRY: verl.trainer.main_ppo (fully_async: its own)

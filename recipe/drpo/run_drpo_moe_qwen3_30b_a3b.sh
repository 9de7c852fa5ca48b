#!/usr/bin/env bash
# DRPO (arXiv 2606.09821) on a mixture-of-experts model, in the shape of verl's DPPO example
# (examples/dppo_trainer/run_qwen3_30b_a3b_megatron.sh): Qwen3-30B-A3B-Base on DAPO-Math-17k, AIME 2024 validation,
# Megatron actor (TP 2, EP 8, offloaded), vLLM rollout (TP 4), 256 prompts x 16 samples, 8 mini-batch steps.
# DRPO and the DPPO baselines are one variable apart (LOSS_MODE); ROUTER_REPLAY=R3 trains on the rollout's experts.
#
#   bash recipe/drpo/run_drpo_moe_qwen3_30b_a3b.sh                     # DRPO, 1 node x 8 GPUs
#   LOSS_MODE=dppo_tv bash recipe/drpo/run_drpo_moe_qwen3_30b_a3b.sh   # verl's DPPO example, the same run otherwise
#   ROUTER_REPLAY=R3 DRY_RUN=1 bash recipe/drpo/run_drpo_moe_qwen3_30b_a3b.sh   # compose + validate, no GPU
# Data: python scripts/prepare_dapo.py --local_save_dir ~/data/dapo. Hydra overrides last win. docs/recipes.md
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default), the shared run
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && { drpo_help "${BASH_SOURCE[0]}"; exit 0; }; done

# ---------------------------------------------------------------- dataset and model: the block the recipes differ in
drpo_one_model "the MoE recipe (Qwen3-30B-A3B-Base)"
if [[ ${ENGINE:-megatron} != megatron ]]; then  # the Megatron settings below would be ignored: refuse them instead
  for name in ACTOR_TP ACTOR_PP ACTOR_EP ACTOR_ETP; do
    [[ -z ${!name:-} ]] || drpo_fail "${name}=${!name}: a Megatron parallel size; set it with ENGINE=megatron only"
  done
  [[ ${ROUTER_REPLAY:-disabled} == disabled ]] || drpo_fail "ROUTER_REPLAY=${ROUTER_REPLAY}: verl replays routes" \
    "in its Megatron engine only; use ENGINE=megatron"
fi
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-30B-A3B-Base}    # hub id or local directory; 128 experts, 8 active per token
MODEL_TAG=${MODEL_TAG:-qwen3-30b-a3b-base}           # the experiment name's prefix
DATA_DIR=${DATA_DIR:-$HOME/data/dapo}                # scripts/prepare_dapo.py writes it (the DAPO recipe's data)
TRAIN_FILES=${TRAIN_FILES:-${DATA_DIR}/train.parquet}  # DAPO-Math-17k, as the DPPO example
VAL_FILES=${VAL_FILES:-${DATA_DIR}/aime24.parquet}   # AIME 2024, as the DPPO example (data_source aime24)
PROJECT_NAME=${PROJECT_NAME:-verl_drpo_moe}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}         # the DPPO example's lengths
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}     # also the loss horizon (loss_scale_factor)
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-256}            # prompts per rollout, as the DPPO example
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-32}       # 8 optimizer steps per rollout, all against the same mu
ROLLOUT_N=${ROLLOUT_N:-16}
USE_DYNAMIC_BSZ=${USE_DYNAMIC_BSZ:-True}             # token-budget micro-batches, as the DPPO example
PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-30720}  # the example's budget: 3 x (prompt + response)
LOG_PROB_MAX_TOKEN_LEN_PER_GPU=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU:-30720}  # the example uses one budget for all passes
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-1}  # used only with USE_DYNAMIC_BSZ=False
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-2}
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-660}    # about the example's 10 epochs of ~17k problems at 256 a step
TOTAL_EPOCHS=${TOTAL_EPOCHS:-10}                     # the example's; TOTAL_TRAINING_STEPS stops the run
ROLLOUT_TP=${ROLLOUT_TP:-4}                          # vLLM tensor parallel size, as the DPPO example
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.8}  # vLLM's share (the actor is offloaded while it generates)
ENGINE=${ENGINE:-megatron}                           # megatron (this recipe's engine) | fsdp2
ACTOR_TP=${ACTOR_TP:-2}                              # Megatron tensor parallel size
ACTOR_PP=${ACTOR_PP:-1}                              # Megatron pipeline parallel size
ACTOR_EP=${ACTOR_EP:-8}                              # Megatron expert parallel size: the experts spread over 8 GPUs
ACTOR_ETP=${ACTOR_ETP:-1}                            # Megatron expert tensor parallel size
ROUTER_REPLAY=${ROUTER_REPLAY:-disabled}             # disabled | R3: the update routes through the rollout's experts
for name in ACTOR_TP ACTOR_PP ACTOR_EP ACTOR_ETP; do drpo_require_int "$name" 1; done
[[ $ROUTER_REPLAY != R2 ]] || drpo_fail "ROUTER_REPLAY=R2: verl 0.9.1 refuses router_replay.mode=R2 with" \
  "algorithm.rollout_correction.bypass_mode=True, the recipes' anchor on mu (R2 records routes in the old-log-prob" \
  "pass that bypass mode skips); use R3, which replays the rollout's own routes"
drpo_require_choice ROUTER_REPLAY disabled R3
if [[ $ENGINE == megatron ]]; then  # the DPPO example's Megatron settings (verl 0.9.1 keys; docs/recipes.md)
  RECIPE_ACTOR_OVERRIDES=(
    "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=${ACTOR_TP}"
    "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=${ACTOR_PP}"
    "actor_rollout_ref.actor.megatron.expert_model_parallel_size=${ACTOR_EP}"
    "actor_rollout_ref.actor.megatron.expert_tensor_parallel_size=${ACTOR_ETP}"
    actor_rollout_ref.actor.megatron.param_offload=True  # in 0.9.1 this also frees the gradient buffers (no grad_offload)
    actor_rollout_ref.actor.megatron.optimizer_offload=True
    actor_rollout_ref.actor.megatron.use_mbridge=True
    +actor_rollout_ref.actor.megatron.override_transformer_config.moe_router_dtype=fp32  # routing logits in fp32
    +actor_rollout_ref.actor.megatron.override_transformer_config.moe_permute_fusion=True
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_method=uniform  # full recompute, 1 layer
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity=full
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_num_layers=1
    "actor_rollout_ref.actor.megatron.router_replay.mode=${ROUTER_REPLAY}"
  )
fi
# R3: vLLM (>= 0.22) or SGLang returns each token's experts, and the Megatron update replays them
[[ $ROUTER_REPLAY != R3 ]] || RECIPE_ROLLOUT_OVERRIDES=(actor_rollout_ref.rollout.enable_rollout_routing_replay=True)

# ---------------------------------------------------------------- the run every recipe shares: recipe/drpo/common.sh
drpo_compose "$@"; set -- "${USER_OVERRIDES[@]}"  # shared variables, checks -> DATA ALGORITHM ACTOR ROLLOUT TRAINER
drpo_before_launch "$@"                           # doctor; DRY_RUN=1 stops here; drpo_prox preflight; metrics file
set -x  # ENTRY: verl.trainer.main_ppo (fully_async: its own); the command line's overrides come last and win
"$PYTHON" -m "$ENTRY" "${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}" "$@"

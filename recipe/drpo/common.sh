#!/usr/bin/env bash
# The run every DRPO recipe shares, sourced by run_drpo_*.sh (not run on its own). A recipe keeps in plain sight its
# dataset-and-model block and its final `python -m verl.trainer.main_ppo <override groups> "$@"`; this file holds the
# rest, once:
#   drpo_shared_variables     the method, batch and cluster variables and their defaults (a recipe's block wins)
#   drpo_override_groups      the Hydra overrides, grouped as verl's examples do: DATA ALGORITHM ACTOR ROLLOUT TRAINER
#   drpo_compose              shared variables, checks, loss and trainer modes, override groups, USER_OVERRIDES
#   drpo_before_launch        the doctor; DRY_RUN=1 stops here; LOGGER, the drpo_prox preflight, metrics file
#   drpo_help RECIPE          --help: the recipe's usage lines and variables, then the shared ones
#   drpo_require_*            one clear line (variable, value, what is allowed) for every bad value, exit 2
#   drpo_check_variables      the checks of the variables every recipe has
#   drpo_loss_overrides       LOSS_MODE -> LOSS_OVERRIDES, from the one table of loss modes (verl_drpo/modes.py)
#   drpo_backend_overrides    ENGINE, ROLLOUT, PRECISION -> ENGINE_OVERRIDES, ROLLOUT_OVERRIDES (verl's own keys)
#   drpo_trainer_mode         TRAINER_MODE + STALENESS -> MODE_OVERRIDES, ENTRY, DRY_RUN_ENTRY
#   drpo_log_prob_passes      the settings of verl's log-prob passes, only where one runs -> LOG_PROB_OVERRIDES
#   drpo_user_overrides       the command line's overrides -> USER_OVERRIDES (see there)
#   drpo_preflight            before a real launch of a decoupled-input mode (drpo_prox): the dry run's checks
#   drpo_doctor               the plugin check before anything starts
#   drpo_metrics_file         never let verl's file logger truncate the metrics of an earlier run
# The recipes' variables and their meaning: docs/recipes.md.

DRPO_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The project's interpreter by default (scripts/setup_env.sh creates it); an explicit PYTHON wins.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${DRPO_REPO_ROOT}/.venv/bin/python" ]]; then PYTHON=${DRPO_REPO_ROOT}/.venv/bin/python; else PYTHON=python3; fi
fi
TRAINER_MODES="sync colocate_async separate_async fully_async"
# A recipe's own engine and rollout settings (the MoE recipe's Megatron parallelism and router replay), which its
# dataset-and-model block may set; empty here, so nothing from the caller's environment can slip in.
RECIPE_ACTOR_OVERRIDES=()
RECIPE_ROLLOUT_OVERRIDES=()

drpo_fail() { echo "$(basename "$0"): $*" >&2; exit 2; }

# drpo_one_model RECIPE_DESCRIPTION: a recipe with one model refuses MODEL_SIZE instead of ignoring it.
drpo_one_model() {
  [[ -z ${MODEL_SIZE:-} ]] || drpo_fail "MODEL_SIZE=${MODEL_SIZE}: $1 has one model and takes no MODEL_SIZE" \
    "(run_drpo_gsm8k.sh does); set MODEL_PATH to train another model"
}

# The lines of drpo_shared_variables' body (for --help; tests/recipes read them the same way).
drpo_shared_variable_lines() {
  sed -n '/^drpo_shared_variables() {$/,/^}$/p' "${DRPO_REPO_ROOT}/recipe/drpo/common.sh"
}

drpo_help() {
  local recipe=$1
  # the header comment (usage), then every `NAME=${NAME:-default}  # comment` line of the recipe, then of
  # drpo_shared_variables (first occurrence of a name: the recipe's default wins, as in a run)
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$recipe"
  echo "Variables (default, meaning):"
  local line name value comment
  local -A seen=()
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}  # the shared variables are indented in their function
    [[ $line =~ ^(export )?([A-Z][A-Z0-9_]*)=\$\{([A-Z][A-Z0-9_]*):-(.*)$ ]] || continue
    name=${BASH_REMATCH[2]} value=${BASH_REMATCH[4]} comment=""
    [[ $name == "${BASH_REMATCH[3]}" && -z ${seen[$name]:-} ]] || continue
    seen[$name]=1
    if [[ $value =~ ^(.*[^[:space:]])[[:space:]]+#[[:space:]]+(.*)$ ]]; then
      value=${BASH_REMATCH[1]} comment=${BASH_REMATCH[2]}
    fi
    printf '  %-34s %-24s %s\n' "$name" "${value%\}}" "$comment"
  done < <(cat "$recipe"; if grep -q '^drpo_compose ' "$recipe"; then drpo_shared_variable_lines; fi)
  echo "TRAINER_MODE: sync | colocate_async | separate_async | fully_async (STALENESS per mode: docs/recipes.md)"
  "$PYTHON" - <<'PY' 2>/dev/null || echo "LOSS_MODE: see verl_drpo/modes.py (verl_drpo is not importable by PYTHON=$PYTHON)"
from verl_drpo.modes import MODES
print("LOSS_MODE: " + " | ".join(MODES))
print("  its hyper-parameters (empty = the paper's value):",
      " ".join(sorted({s.env for m in MODES.values() for s in m.settings})))
PY
  echo "verl's own Hydra help: $PYTHON -m verl.trainer.main_ppo --help"
}

# drpo_require_int NAME MIN: an integer >= MIN (no leading zeros, which bash would read as octal).
drpo_require_int() {
  local name=$1 min=$2 value=${!1-}
  [[ $value =~ ^-?(0|[1-9][0-9]{0,17})$ ]] && (( value >= min )) && return 0
  drpo_fail "${name}=${value}: must be an integer >= ${min}"
}

# drpo_require_number NAME MIN_EXCLUSIVE [MAX_INCLUSIVE]: a decimal number (1e-6 style allowed) in (MIN, MAX].
drpo_require_number() {
  local name=$1 low=$2 high=${3:-} value=${!1-}
  if [[ $value =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$|^[0-9]+\.([eE][-+]?[0-9]+)?$ ]] &&
     awk -v v="$value" -v lo="$low" -v hi="$high" 'BEGIN { exit !(v + 0 > lo + 0 && (hi == "" || v + 0 <= hi + 0)) }'; then
    return 0
  fi
  drpo_fail "${name}=${value}: must be a number > ${low}${high:+ and <= ${high}}"
}

# drpo_require_choice NAME CHOICE...: one of the listed words.
drpo_require_choice() {
  local name=$1 value=${!1-} choice; shift
  for choice in "$@"; do [[ $value == "$choice" ]] && return 0; done
  drpo_fail "${name}=${value}: must be one of: $*"
}

# The variables every recipe has, checked before anything runs.
drpo_check_variables() {
  local name
  for name in TRAIN_BATCH_SIZE PPO_MINI_BATCH_SIZE PPO_MICRO_BATCH_SIZE_PER_GPU LOG_PROB_MICRO_BATCH_SIZE_PER_GPU \
              ROLLOUT_N MAX_PROMPT_LENGTH MAX_RESPONSE_LENGTH TOTAL_TRAINING_STEPS TOTAL_EPOCHS N_GPUS_PER_NODE \
              NNODES ROLLOUT_TP VAL_N; do
    drpo_require_int "$name" 1
  done
  drpo_require_int SEED 0
  drpo_require_int TEST_FREQ -1
  drpo_require_int SAVE_FREQ -1
  [[ $SAVE_FREQ != 0 ]] || drpo_fail "SAVE_FREQ=0: say -1 for no checkpoints, or a period in steps"
  drpo_require_int MAX_CKPT_TO_KEEP 1
  drpo_require_number LR 0
  drpo_require_number TEMPERATURE 0
  for name in USE_DYNAMIC_BSZ VAL_DO_SAMPLE; do drpo_require_choice "$name" True False; done
  # verl's agent loop samples validation at val_kwargs.temperature whatever do_sample says: greedy needs 0
  [[ -n $VAL_TEMPERATURE ]] || { [[ $VAL_DO_SAMPLE == True ]] && VAL_TEMPERATURE=$TEMPERATURE || VAL_TEMPERATURE=0; }
  [[ $VAL_TEMPERATURE == 0 ]] || drpo_require_number VAL_TEMPERATURE 0
  # vLLM's share of a rollout GPU, by default per trainer mode (arithmetic: docs/reproduction.md, "GPU memory"): in
  # sync and colocate_async vLLM wakes beside the actor's resident FSDP state on every GPU; in separate_async and
  # fully_async its GPUs hold nothing else (0.8, as verl's own fully-async DAPO example)
  if [[ -z $GPU_MEMORY_UTILIZATION ]]; then
    case $TRAINER_MODE in separate_async | fully_async) GPU_MEMORY_UTILIZATION=0.8 ;; *) GPU_MEMORY_UTILIZATION=0.6 ;; esac
  fi
  drpo_require_number GPU_MEMORY_UTILIZATION 0 1
  for name in DRY_RUN SKIP_DOCTOR USE_RUNTIME_ENV_PLUGIN; do drpo_require_choice "$name" 0 1; done
  drpo_require_choice REWARD default math_verify
  if [[ $REWARD == math_verify ]]; then  # verl's math-verify scorer would score every answer 0 without the package
    "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("math_verify") is None)' ||
      drpo_fail "REWARD=math_verify (the paper's Math-Verify grader): PYTHON=${PYTHON} cannot import math_verify; pip install 'verl-drpo[core]' or math-verify (on every node), or REWARD=default for verl's scorer"
    "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("verl_drpo.data.rewards") is None)' ||
      drpo_fail "REWARD=math_verify: PYTHON=${PYTHON} has no verl_drpo.data.rewards (the reward function); update verl-drpo"
  fi
  # shellcheck disable=SC2086  # the list is one word per mode
  drpo_require_choice TRAINER_MODE $TRAINER_MODES
  # the async modes' variables are checked whatever the mode, so a typo fails now, not on the first async run
  drpo_require_choice STALENESS_STRATEGY wait drop
  drpo_require_choice PARTIAL_ROLLOUT True False
  [[ -z $ROLLOUT_GPUS_PER_NODE ]] || drpo_require_int ROLLOUT_GPUS_PER_NODE 1
  [[ $CHECKPOINT_BACKEND =~ ^[A-Za-z][A-Za-z0-9_]*$ ]] || drpo_fail "CHECKPOINT_BACKEND=${CHECKPOINT_BACKEND}: must" \
    "name one of verl's checkpoint engines (nccl, naive, nixl, ...)"
  drpo_require_choice ENGINE fsdp2 megatron
  drpo_require_choice ROLLOUT vllm sglang
  drpo_require_choice PRECISION bf16 fp16 fp8-rollout
  [[ $LOGGER =~ ^\[.*\]$ ]] || drpo_fail "LOGGER=${LOGGER}: must be a list such as '[\"console\",\"file\"]'"
  (( TRAIN_BATCH_SIZE % PPO_MINI_BATCH_SIZE == 0 )) ||
    drpo_fail "TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE}: must be a multiple of PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE}"
  # token budgets (verl's use_dynamic_bsz), verl's rule when empty: twice the longest sequence for the update, three
  # times for the log-prob passes (no gradient, no optimizer state); one whole sequence must fit
  local seq=$(( MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH ))
  PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-$(( 2 * seq ))}
  LOG_PROB_MAX_TOKEN_LEN_PER_GPU=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU:-$(( 3 * seq ))}
  for name in PPO_MAX_TOKEN_LEN_PER_GPU LOG_PROB_MAX_TOKEN_LEN_PER_GPU; do
    drpo_require_int "$name" 1
    [[ $USE_DYNAMIC_BSZ == False ]] || (( ${!name} >= seq )) ||
      drpo_fail "${name}=${!name}: must be >= MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH = ${seq} with USE_DYNAMIC_BSZ=True"
  done
}

# ------------------------------------------------------------------------- what every recipe shares (one copy)
# The method, batch and cluster variables, with their defaults. The recipe's dataset-and-model block runs first, so a
# default set there (the DAPO recipe's ROLLOUT_TP=2, say) wins over the one here. --help lists the recipe's variables,
# then these; docs/recipes.md documents each.
drpo_shared_variables() {
  LOSS_MODE=${LOSS_MODE:-drpo}                         # the table verl_drpo/modes.py; see --help
  DRPO_DELTA=${DRPO_DELTA:-}                           # empty: the paper's 12.5; < 1 makes the TV boundary reachable
  TRAINER_MODE=${TRAINER_MODE:-sync}                   # sync colocate_async separate_async fully_async
  ENGINE=${ENGINE:-fsdp2}                              # training engine: fsdp2 | megatron (verl's model_engine)
  ROLLOUT=${ROLLOUT:-vllm}                             # rollout engine: vllm | sglang
  PRECISION=${PRECISION:-bf16}                         # bf16 | fp16 (training and rollout) | fp8-rollout (bf16 train)
  STALENESS=${STALENESS:-}                             # V1 async: int k (empty: 1); fully_async: s >= 0 (empty: 0.5)
  STALENESS_STRATEGY=${STALENESS_STRATEGY:-wait}       # V1 async: wait for stale groups (dropless), or drop
  ROLLOUT_GPUS_PER_NODE=${ROLLOUT_GPUS_PER_NODE:-}     # separate/fully async rollout pool (empty: N_GPUS_PER_NODE/2)
  CHECKPOINT_BACKEND=${CHECKPOINT_BACKEND:-nccl}       # separate/fully async weight sync
  PARTIAL_ROLLOUT=${PARTIAL_ROLLOUT:-True}             # fully_async: resume interrupted samples after a sync
  N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
  NNODES=${NNODES:-1}
  ROLLOUT_TP=${ROLLOUT_TP:-1}                          # vLLM tensor parallel size
  GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-}  # vLLM's share of a GPU (empty: 0.6 shared, 0.8 rollout-only)
  TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}             # prompts per rollout (x ROLLOUT_N samples), the paper's 64 x 8
  PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-16}       # prompts per optimizer step: 4 steps per rollout, as the paper
  ROLLOUT_N=${ROLLOUT_N:-8}
  USE_DYNAMIC_BSZ=${USE_DYNAMIC_BSZ:-False}            # True: token-budget micro-batches instead of *_MICRO_BATCH_*
  PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-}  # token budget (empty: 2 x (prompt + response))
  LOG_PROB_MAX_TOKEN_LEN_PER_GPU=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU:-}  # (empty: 3 x (prompt + response))
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
}

# The run's Hydra overrides, grouped as verl's examples group them; the recipe's last line passes the groups in this
# order and the command line's overrides after them (the last value of a key wins). OVERRIDES is all of them, in the
# same order, for the dry run, the preflight and drpo_user_overrides.
drpo_override_groups() {
  DATA=(  # verl's parquet schema
    "data.train_files=${TRAIN_FILES}"
    "data.val_files=${VAL_FILES}"
    "data.train_batch_size=${TRAIN_BATCH_SIZE}"
    "data.max_prompt_length=${MAX_PROMPT_LENGTH}"
    "data.max_response_length=${MAX_RESPONSE_LENGTH}"
    data.filter_overlong_prompts=True
    data.truncation=error
    "data.seed=${SEED}"
  )
  ALGORITHM=(
    # advantages: GRPO group-centred, NOT divided by the group std (the DRPO paper's setting)
    algorithm.adv_estimator=grpo
    algorithm.norm_adv_by_std_in_grpo=False
    algorithm.use_kl_in_reward=False
    # the anchor: old_log_prob := the rollout engine's log-probs mu (no trainer recompute, no IS weights);
    # LOSS_MODE=drpo_prox replaces these with verl's decoupled mode (its LOSS_OVERRIDES, in ACTOR, come later and win)
    algorithm.rollout_correction.bypass_mode=True
    actor_rollout_ref.rollout.calculate_log_probs=True
  )
  if [[ $REWARD == math_verify ]]; then  # the paper's grader, 1/0 (pip install math-verify)
    ALGORITHM+=(reward.custom_reward_function.path=pkg://verl_drpo.data.rewards
                reward.custom_reward_function.name=math_verify_score)
  fi
  ACTOR=(  # model and actor (ENGINE): several mini-batch updates per rollout, all against the same mu
    "actor_rollout_ref.model.path=${MODEL_PATH}"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    "${ENGINE_OVERRIDES[@]}"  # ENGINE and its training PRECISION (drpo_backend_overrides)
    "${RECIPE_ACTOR_OVERRIDES[@]}"  # the recipe's own engine settings, if any (run_drpo_moe_qwen3_30b_a3b.sh)
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
    "${LOSS_OVERRIDES[@]}"  # LOSS_MODE's own settings, from the table
    # token-budget batching (verl's use_dynamic_bsz) for the update; verl's actor worker asserts that the rollout
    # log-prob switch equals the actor's, so it is passed whether or not a log-prob pass runs
    "actor_rollout_ref.actor.use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${PPO_MAX_TOKEN_LEN_PER_GPU}"
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
    "${LOG_PROB_OVERRIDES[@]}"  # the log-prob passes' budgets, only where such a pass runs (drpo_log_prob_passes)
  )
  ROLLOUT=(  # vLLM or SGLang, async agent loop (verl's only rollout mode), the full untruncated sampling distribution
    "${ROLLOUT_OVERRIDES[@]}"  # ROLLOUT and its PRECISION (drpo_backend_overrides)
    "${RECIPE_ROLLOUT_OVERRIDES[@]}"  # the recipe's own rollout settings, if any
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
  )
  TRAINER=(
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
    "${MODE_OVERRIDES[@]}"  # TRAINER_MODE's own settings (they replace some of the above: GPUs, batch, hybrid engine)
  )
  if [[ $USE_RUNTIME_ENV_PLUGIN == 1 ]]; then  # when a node's interpreter does not see the verl.plugins entry point
    TRAINER+=("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin")
  fi
  OVERRIDES=("${DATA[@]}" "${ALGORITHM[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}")
}

# Everything between a recipe's dataset-and-model block and its launch: the shared variables, their checks, the loss
# and trainer modes' overrides, the override groups, and the command line's overrides -> USER_OVERRIDES (the recipe
# then does `set -- "${USER_OVERRIDES[@]}"`).
drpo_compose() {
  drpo_shared_variables
  drpo_check_variables   # one clear line per bad value, before anything runs
  drpo_loss_overrides    # LOSS_MODE -> LOSS_OVERRIDES, from the table
  drpo_backend_overrides # ENGINE, ROLLOUT, PRECISION -> ENGINE_OVERRIDES, ROLLOUT_OVERRIDES
  drpo_trainer_mode      # TRAINER_MODE, STALENESS -> MODE_OVERRIDES, ENTRY
  drpo_log_prob_passes "$@"  # the loss mode and the command line -> LOG_PROB_OVERRIDES
  drpo_override_groups   # -> DATA ALGORITHM ACTOR ROLLOUT TRAINER, and OVERRIDES
  drpo_user_overrides "$@"
}

# Before the launch: the doctor; DRY_RUN=1 composes and validates the exact command line against the installed verl
# and exits here; a real launch of drpo_prox runs the dry run's checks first; the metrics file is never truncated.
drpo_before_launch() {
  drpo_doctor
  if [[ $DRY_RUN == 1 ]]; then
    set -x
    exec "$PYTHON" -m verl_drpo.dry_run --entry "$DRY_RUN_ENTRY" ${DRY_RUN_JSON:+--json "$DRY_RUN_JSON"} -- \
      "${OVERRIDES[@]}" "$@"
  fi
  drpo_check_logger
  drpo_preflight "$@"
  drpo_metrics_file
}

# verl's Tracking asserts on a backend it does not know only once the trainer has started: a real launch checks LOGGER
# first, with the function the dry run uses on trainer.logger (preflight.unknown_logger_backends, about 5 s).
drpo_check_logger() {
  local verdict
  verdict=$("$PYTHON" - "$LOGGER" <<'PY'
import sys
from verl_drpo.launch.preflight import unknown_logger_backends
names = [n.strip().strip("'\"") for n in sys.argv[1].strip().strip("[]").split(",") if n.strip()]
unknown, supported = unknown_logger_backends(names)
print(" ".join(unknown) + "|" + " ".join(supported))
PY
  ) || drpo_fail "LOGGER=${LOGGER}: PYTHON=${PYTHON} cannot import verl's Tracking to check it"
  [[ -z ${verdict%%|*} ]] || drpo_fail "LOGGER=${LOGGER}: verl's Tracking does not know ${verdict%%|*};" \
    "choose from ${verdict#*|}"
}

# LOSS_MODE -> LOSS_OVERRIDES: the mode's Hydra overrides from the one table (verl_drpo/modes.py), which reads each
# hyper-parameter's recipe variable (DRPO_DELTA, SPO_EPSILON, DPPO_TV_DELTA, ...) from the environment the user ran
# the recipe with (such variables are exported there; no hand list of them is kept here).
drpo_loss_overrides() {
  local errors; errors=$(mktemp)
  mapfile -t LOSS_OVERRIDES < <("$PYTHON" -m verl_drpo overrides "$LOSS_MODE" 2> "$errors")
  if ! wait $!; then  # the table's own one-line error (LOSS_MODE=...: unknown loss mode ...), named like ours
    sed "s/^/$(basename "$0"): /" "$errors" >&2; rm -f "$errors"; exit 2
  fi
  cat "$errors" >&2; rm -f "$errors"
  (( ${#LOSS_OVERRIDES[@]} )) || drpo_fail "LOSS_MODE=${LOSS_MODE}: '$PYTHON -m verl_drpo overrides' printed nothing"
}

# ENGINE, ROLLOUT and PRECISION -> ENGINE_OVERRIDES (in ACTOR) and ROLLOUT_OVERRIDES (in ROLLOUT), each from verl
# 0.9.1's own keys (docs/recipes.md, "Engines and precision"):
#   ENGINE=fsdp2     actor.strategy=fsdp2; megatron: verl's model_engine=megatron (its McoreActorConfig, whose
#                    megatron.* keys, e.g. tensor/expert parallel sizes, are then Hydra overrides of their own)
#   ROLLOUT          rollout.name; both return the sampled tokens' log-probs with calculate_log_probs=True (mu)
#   PRECISION=bf16   verl's defaults (FSDP param_dtype bf16 / Megatron dtype bfloat16; rollout dtype bfloat16)
#            fp16    FSDP mixed_precision param_dtype=fp16 (verl adds its loss scaler) or Megatron dtype=float16,
#                    and rollout dtype=float16: the paper's FP16 setting
#            fp8-rollout  bf16 training, rollout.quantization=fp8 (vLLM; SGLang >= 0.5.5): the largest mismatch
drpo_backend_overrides() {
  case $ENGINE in
    fsdp2) ENGINE_OVERRIDES=(actor_rollout_ref.actor.strategy=fsdp2)
           [[ $PRECISION != fp16 ]] ||
             ENGINE_OVERRIDES+=(+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp16) ;;
    megatron) ENGINE_OVERRIDES=(model_engine=megatron)
              [[ $PRECISION != fp16 ]] || ENGINE_OVERRIDES+=(actor_rollout_ref.actor.megatron.dtype=float16) ;;
  esac
  ROLLOUT_OVERRIDES=("actor_rollout_ref.rollout.name=${ROLLOUT}")
  case $PRECISION in
    fp16) ROLLOUT_OVERRIDES+=(actor_rollout_ref.rollout.dtype=float16) ;;
    fp8-rollout) ROLLOUT_OVERRIDES+=(actor_rollout_ref.rollout.quantization=fp8) ;;
  esac
}

# TRAINER_MODE and STALENESS -> MODE_OVERRIDES, ENTRY (the module a real run starts), DRY_RUN_ENTRY. A policy version
# is the weights between two weight syncs (verl's global_steps).
#   sync            on-policy rollouts, TRAIN_BATCH_SIZE/PPO_MINI_BATCH_SIZE optimizer steps per rollout, all against
#                   the same mu. A STALENESS is refused (sync would ignore it).
#   colocate_async  verl V1, rollout and training share the GPUs (hybrid engine).
#   separate_async  verl V1, a standalone rollout pool of ROLLOUT_GPUS_PER_NODE GPUs per node, hybrid_engine=False
#                   (verl's setting for rollout served by that pool alone); weights pushed once per step.
#     In both V1 async modes STALENESS=k (an integer >= 0, default 1 = verl's default) sets the prefetch depth,
#     trainer.v1.<mode>.num_warmup_batches=k, and the drop cap, trainer.v1.sampler.max_off_policy_threshold=k+1:
#     verl drops a finished group once (step - submission step + 1) > k+1, so no trained trajectory's oldest token is
#     more than k policy versions behind the policy that trains on it (verl's
#     training/off_policy/trajectory_staleness_worst/max <= k), and without drops the queue holds k batches ahead.
#   fully_async     verl.experimental.fully_async_policy. STALENESS=s (a number >= 0, default 0.5) ->
#                   async_training.staleness_threshold: the rollouter holds at most
#                   ppo_mini_batch_size x trigger_parameter_sync_step x (1 + s) prompts queued or in flight.
drpo_trainer_mode() {
  ENTRY=verl.trainer.main_ppo
  DRY_RUN_ENTRY=main_ppo
  MODE_OVERRIDES=()
  local sync_step=$(( TRAIN_BATCH_SIZE / PPO_MINI_BATCH_SIZE ))
  local rollout_gpus=${ROLLOUT_GPUS_PER_NODE:-$(( N_GPUS_PER_NODE / 2 ))}
  if [[ $TRAINER_MODE == separate_async || $TRAINER_MODE == fully_async ]]; then
    ROLLOUT_GPUS_PER_NODE=$rollout_gpus
    drpo_require_int ROLLOUT_GPUS_PER_NODE 1
    rollout_gpus=$ROLLOUT_GPUS_PER_NODE
    (( rollout_gpus < N_GPUS_PER_NODE )) || drpo_fail "ROLLOUT_GPUS_PER_NODE=${rollout_gpus}: must be less than" \
      "N_GPUS_PER_NODE=${N_GPUS_PER_NODE} (${TRAINER_MODE} keeps the other GPUs for training)"
    # verl builds rollout_gpus / ROLLOUT_TP replicas per node, rounded down: a remainder is GPUs left idle all run
    (( rollout_gpus % ROLLOUT_TP == 0 )) || drpo_fail "ROLLOUT_GPUS_PER_NODE=${rollout_gpus} with ROLLOUT_TP=${ROLLOUT_TP}:" \
      "verl builds $(( rollout_gpus / ROLLOUT_TP )) replica(s) of ${ROLLOUT_TP} GPUs and leaves" \
      "$(( rollout_gpus % ROLLOUT_TP )) GPU(s) idle; use a multiple of ROLLOUT_TP"
  fi
  case "$TRAINER_MODE" in
    sync)  # on-policy: a STALENESS here would be silently ignored, so it is refused
      [[ -z $STALENESS ]] || drpo_fail "STALENESS=${STALENESS}: TRAINER_MODE=sync trains on-policy and takes no" \
        "STALENESS; unset it, or choose TRAINER_MODE=colocate_async, separate_async or fully_async"
      MODE_OVERRIDES+=(trainer.v1.trainer_mode=sync) ;;
    colocate_async | separate_async)
      STALENESS=${STALENESS:-1}
      drpo_require_int STALENESS 0
      MODE_OVERRIDES+=("trainer.v1.trainer_mode=${TRAINER_MODE}"
                       "trainer.v1.${TRAINER_MODE}.num_warmup_batches=${STALENESS}"
                       "trainer.v1.sampler.max_off_policy_threshold=$(( STALENESS + 1 ))"
                       "trainer.v1.sampler.max_off_policy_strategy=${STALENESS_STRATEGY}")
      if [[ $TRAINER_MODE == separate_async ]]; then
        MODE_OVERRIDES+=("trainer.v1.separate_async.parameter_sync_step=${sync_step}"
                         actor_rollout_ref.hybrid_engine=False
                         "trainer.n_gpus_per_node=$(( N_GPUS_PER_NODE - rollout_gpus ))"
                         "actor_rollout_ref.rollout.nnodes=${NNODES}"
                         "actor_rollout_ref.rollout.n_gpus_per_node=${rollout_gpus}"
                         "actor_rollout_ref.rollout.checkpoint_engine.backend=${CHECKPOINT_BACKEND:-nccl}")
        # verl 0.9.1's trainer_separate_async.py (_setup, hybrid_engine=False) calls logger.info(..., flush=True),
        # a TypeError at start whenever verl logs at INFO (its default): run its workers at WARN. Remove once verl
        # drops that flush=True (tests/cpu/test_cpu_checkpoint_engine_on_cpu.py pins the line).
        VERL_LOGGING_LEVEL=${VERL_LOGGING_LEVEL:-WARN}
        [[ ${VERL_LOGGING_LEVEL^^} == INFO || ${VERL_LOGGING_LEVEL^^} == DEBUG ]] &&
          drpo_fail "VERL_LOGGING_LEVEL=${VERL_LOGGING_LEVEL}: verl 0.9.1's separate_async trainer fails at start" \
            "when it logs at INFO (logger.info(..., flush=True) in trainer_separate_async.py); use WARN"
        export VERL_LOGGING_LEVEL
        MODE_OVERRIDES+=("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_LOGGING_LEVEL=${VERL_LOGGING_LEVEL}")
      fi
      local fate="dropped"; [[ $STALENESS_STRATEGY == wait ]] && fate="waited for (dropless), never dropped"
      echo "[recipe] ${TRAINER_MODE} STALENESS=${STALENESS}: ${STALENESS} batch(es) prefetched, groups older than" \
           "$(( STALENESS + 1 )) steps ${fate}: trained data at most ${STALENESS} policy version(s) behind" >&2 ;;
    fully_async)
      STALENESS=${STALENESS:-0.5}
      [[ $STALENESS =~ ^0*\.?0*$ && $STALENESS =~ 0 ]] || ( drpo_require_number STALENESS 0 ) 2>/dev/null ||
        drpo_fail "STALENESS=${STALENESS}: must be a number >= 0 with TRAINER_MODE=fully_async (its staleness_threshold)"
      # fully_async is moving out of verl into verl-recipe: say so instead of an ImportError deep in a traceback.
      "$PYTHON" -c 'import importlib.util as u, os, sys; s = u.find_spec("verl")
sys.exit(0 if s and os.path.isdir(os.path.join(list(s.submodule_search_locations)[0], "experimental", "fully_async_policy")) else 1)' ||
        drpo_fail "TRAINER_MODE=fully_async: this verl has no verl.experimental.fully_async_policy (it is moving from" \
          "verl into verl-recipe); install a verl that has it (verl 0.9.1 does) or use colocate_async / separate_async"
      ENTRY=verl.experimental.fully_async_policy.fully_async_main
      DRY_RUN_ENTRY=fully_async
      MODE_OVERRIDES+=(data.train_batch_size=0 data.gen_batch_size=1
                       actor_rollout_ref.hybrid_engine=False
                       "async_training.staleness_threshold=${STALENESS}"
                       "async_training.trigger_parameter_sync_step=${sync_step}"
                       async_training.require_batches=1
                       "async_training.partial_rollout=${PARTIAL_ROLLOUT}"
                       "trainer.n_gpus_per_node=$(( N_GPUS_PER_NODE - rollout_gpus ))"
                       "rollout.nnodes=${NNODES}"
                       "rollout.n_gpus_per_node=${rollout_gpus}"
                       "rollout.total_rollout_steps=$(( TOTAL_TRAINING_STEPS * TRAIN_BATCH_SIZE ))"
                       "actor_rollout_ref.rollout.checkpoint_engine.backend=${CHECKPOINT_BACKEND:-nccl}") ;;
  esac
}

# drpo_last_value KEY ARG...: the value of the last `KEY=value` (also `+KEY=`, `++KEY=`) among the ARGs, else empty.
drpo_last_value() {
  local key=$1 arg value=""; shift
  for arg in "$@"; do
    arg=${arg#+}; arg=${arg#+}
    [[ $arg == "${key}="* ]] && value=${arg#*=}
  done
  printf '%s' "$value"
}

# The loss mode's and the command line's overrides -> LOG_PROB_OVERRIDES, the settings of verl's log-prob passes,
# passed only where such a pass runs (elsewhere they would be settings that do nothing). verl 0.9.1's trainers
# recompute old log-probs only outside bypass mode (_compute_old_log_prob: drpo_prox, or a bypass_mode=False
# override) and build a reference worker only when need_reference_policy (a KL loss or KL in the reward); in the
# recipes' default bypass mode neither runs. rollout.log_prob_micro_batch_size_per_gpu (validate_config requires it)
# and rollout.log_prob_use_dynamic_bsz (the actor worker asserts it equals actor.use_dynamic_bsz) stay in every run.
drpo_log_prob_passes() {
  local bypass kl_loss kl_reward old_log_prob_pass=0 reference_policy=0
  local anchor=algorithm.rollout_correction.bypass_mode kl=actor_rollout_ref.actor.use_kl_loss
  # the recipe's own values first (ALGORITHM, ACTOR), then the loss mode's, then the command line's: the last wins
  bypass=$(drpo_last_value "$anchor" "${anchor}=True" "${LOSS_OVERRIDES[@]}" "$@")
  kl_loss=$(drpo_last_value "$kl" "${kl}=False" "${LOSS_OVERRIDES[@]}" "$@")
  kl_reward=$(drpo_last_value algorithm.use_kl_in_reward algorithm.use_kl_in_reward=False "${LOSS_OVERRIDES[@]}" "$@")
  LOG_PROB_OVERRIDES=()
  [[ ${bypass,,} == false ]] && old_log_prob_pass=1
  [[ ${kl_loss,,} == true || ${kl_reward,,} == true ]] && reference_policy=1
  if (( old_log_prob_pass || reference_policy )); then  # the actor's own log-prob pass (also the LoRA reference's)
    LOG_PROB_OVERRIDES+=("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU}")
  fi
  if (( reference_policy )); then  # the reference worker's pass, batched like the actor's
    LOG_PROB_OVERRIDES+=("actor_rollout_ref.ref.log_prob_use_dynamic_bsz=${USE_DYNAMIC_BSZ}"
                         "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU}"
                         "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU}")
  fi
}

# The command line's Hydra overrides -> USER_OVERRIDES, unchanged except for one case. The recipe adds the config
# hook's fields (keys verl's YAML lacks) with '+'. A later plain `key=v` or `++key=v` for such a key simply wins, but
# Hydra's `+key=v` refuses a key that already exists ("Could not append to config"), so a `+key=v` whose key the
# recipe already added is passed as `++key=v` (add or override): every form Hydra accepts works, the last one wins.
drpo_user_overrides() {
  USER_OVERRIDES=()
  local added=" " ov key arg
  for ov in "${OVERRIDES[@]}"; do
    [[ $ov == +* ]] && { key=${ov#+}; key=${key#+}; added+="${key%%=*} "; }
  done
  for arg in "$@"; do
    if [[ $arg == +[!+]* ]]; then
      key=${arg#+}; key=${key%%=*}
      [[ $added == *" ${key} "* ]] && arg="+${arg}"
    fi
    USER_OVERRIDES+=("$arg")
  done
}

# Fails fast, with the doctor's own message, if the loss modes would not be registered in Ray workers.
drpo_doctor() {
  [[ $SKIP_DOCTOR == 1 ]] && return 0
  "$PYTHON" -m verl_drpo doctor --quick ||
    drpo_fail "the verl-drpo doctor failed (see above): the plugin is not loadable by PYTHON=${PYTHON}; fix that" \
      "(scripts/setup_env.sh) or set SKIP_DOCTOR=1"
}

# A mode with decoupled inputs (drpo_prox) recovers mu from verl's importance weights, which a user override such as
# rollout_is_threshold=2.0 would silently truncate; the loss cannot see that config, so a real launch of such a mode
# first runs the dry run's checks on the exact command line (about 10 s) and stops on any problem.
drpo_preflight() {
  [[ " ${LOSS_OVERRIDES[*]} " == *" algorithm.rollout_correction.bypass_mode=False "* ]] || return 0
  "$PYTHON" -m verl_drpo.dry_run --quiet --entry "$DRY_RUN_ENTRY" -- "${OVERRIDES[@]}" "$@" >&2 ||
    drpo_fail "LOSS_MODE=${LOSS_MODE}: the composed config is rejected (above); nothing was started"
}

# verl's file logger opens <root>/<project>/<experiment>.jsonl with "wb", truncating the metrics of an earlier run of
# the same name (a re-run, or a resume). Give this run the first free <experiment>.run<N>.jsonl instead, through
# verl's own VERL_FILE_LOGGER_PATH (an explicit VERL_FILE_LOGGER_PATH wins).
drpo_metrics_file() {
  [[ $LOGGER == *'"file"'* || $LOGGER == *"'file'"* || $LOGGER =~ [\[,][[:space:]]*file[[:space:]]*[],] ]] || return 0
  [[ -n "${VERL_FILE_LOGGER_PATH:-}" ]] && return 0
  local base="${VERL_FILE_LOGGER_ROOT}/${PROJECT_NAME}/${EXPERIMENT_NAME}" n=2
  [[ -e "${base}.jsonl" ]] || return 0
  while [[ -e "${base}.run${n}.jsonl" ]]; do n=$(( n + 1 )); done
  export VERL_FILE_LOGGER_PATH="${base}.run${n}.jsonl"
  echo "[recipe] ${base}.jsonl exists (an earlier run): this run's metrics go to ${VERL_FILE_LOGGER_PATH}" >&2
}

#!/usr/bin/env bash
# Shared logic of the DRPO recipes, sourced by run_drpo_*.sh (not run on its own). The recipes keep their variables,
# their whole override list and the final `python -m verl.trainer.main_ppo ... "$@"` in plain sight; this file holds
# only what would otherwise be repeated in each:
#   drpo_help RECIPE          --help: the recipe's usage lines and variables, read from its own text
#   drpo_require_*            one clear line (variable, value, what is allowed) for every bad value, exit 2
#   drpo_check_variables      the checks of the variables every recipe has
#   drpo_loss_overrides       LOSS_MODE -> LOSS_OVERRIDES, from the one table of loss modes (verl_drpo/modes.py)
#   drpo_trainer_mode         TRAINER_MODE + STALENESS -> MODE_OVERRIDES, ENTRY, DRY_RUN_ENTRY
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

drpo_fail() { echo "$(basename "$0"): $*" >&2; exit 2; }

# drpo_one_model RECIPE_DESCRIPTION: a recipe with one model refuses MODEL_SIZE instead of ignoring it.
drpo_one_model() {
  [[ -z ${MODEL_SIZE:-} ]] || drpo_fail "MODEL_SIZE=${MODEL_SIZE}: $1 has one model and takes no MODEL_SIZE" \
    "(run_drpo_gsm8k.sh does); set MODEL_PATH to train another model"
}

drpo_help() {
  local recipe=$1
  # the header comment (usage), then every `NAME=${NAME:-default}  # comment` line (first occurrence of a name)
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$recipe"
  echo "Variables (default, meaning):"
  local line name value comment
  local -A seen=()
  while IFS= read -r line; do
    [[ $line =~ ^(export )?([A-Z][A-Z0-9_]*)=\$\{([A-Z][A-Z0-9_]*):-(.*)$ ]] || continue
    name=${BASH_REMATCH[2]} value=${BASH_REMATCH[4]} comment=""
    [[ $name == "${BASH_REMATCH[3]}" && -z ${seen[$name]:-} ]] || continue
    seen[$name]=1
    if [[ $value =~ ^(.*[^[:space:]])[[:space:]]+#[[:space:]]+(.*)$ ]]; then
      value=${BASH_REMATCH[1]} comment=${BASH_REMATCH[2]}
    fi
    printf '  %-34s %-24s %s\n' "$name" "${value%\}}" "$comment"
  done < "$recipe"
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
  drpo_require_number GPU_MEMORY_UTILIZATION 0 1
  for name in DRY_RUN SKIP_DOCTOR USE_RUNTIME_ENV_PLUGIN; do drpo_require_choice "$name" 0 1; done
  drpo_require_choice REWARD default math_verify
  if [[ $REWARD == math_verify ]]; then  # verl's math-verify scorer would score every answer 0 without the package
    "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("math_verify") is None)' ||
      drpo_fail "REWARD=math_verify: PYTHON=${PYTHON} cannot import math_verify; pip install math-verify (on every node)"
    "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("verl_drpo.data.rewards") is None)' ||
      drpo_fail "REWARD=math_verify: PYTHON=${PYTHON} has no verl_drpo.data.rewards (the reward function); update verl-drpo"
  fi
  # shellcheck disable=SC2086  # the list is one word per mode
  drpo_require_choice TRAINER_MODE $TRAINER_MODES
  [[ $LOGGER =~ ^\[.*\]$ ]] || drpo_fail "LOGGER=${LOGGER}: must be a list such as '[\"console\",\"file\"]'"
  (( TRAIN_BATCH_SIZE % PPO_MINI_BATCH_SIZE == 0 )) ||
    drpo_fail "TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE}: must be a multiple of PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE}"
  # token budgets (verl's use_dynamic_bsz): empty means twice the longest sequence; one whole sequence must fit
  local seq=$(( MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH ))
  PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-$(( 2 * seq ))}
  LOG_PROB_MAX_TOKEN_LEN_PER_GPU=${LOG_PROB_MAX_TOKEN_LEN_PER_GPU:-$PPO_MAX_TOKEN_LEN_PER_GPU}
  for name in PPO_MAX_TOKEN_LEN_PER_GPU LOG_PROB_MAX_TOKEN_LEN_PER_GPU; do
    drpo_require_int "$name" 1
    [[ $USE_DYNAMIC_BSZ == False ]] || (( ${!name} >= seq )) ||
      drpo_fail "${name}=${!name}: must be >= MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH = ${seq} with USE_DYNAMIC_BSZ=True"
  done
}

# LOSS_MODE -> LOSS_OVERRIDES: the mode's Hydra overrides from the one table (verl_drpo/modes.py), which reads each
# hyper-parameter's recipe variable (DRPO_DELTA, SPO_EPSILON, DPPO_TV_DELTA, ...) from the environment.
drpo_loss_overrides() {
  export DRPO_DELTA SPO_EPSILON MASK_DRPO_TV_DELTA DPPO_TV_DELTA DPPO_KL_DELTA DPPO_CLIP_RATIO_C \
         CLIP_RATIO_LOW CLIP_RATIO_HIGH CLIP_RATIO_C
  local errors; errors=$(mktemp)
  mapfile -t LOSS_OVERRIDES < <("$PYTHON" -m verl_drpo overrides "$LOSS_MODE" 2> "$errors")
  if ! wait $!; then  # the table's own one-line error (LOSS_MODE=...: unknown loss mode ...), named like ours
    sed "s/^/$(basename "$0"): /" "$errors" >&2; rm -f "$errors"; exit 2
  fi
  cat "$errors" >&2; rm -f "$errors"
  (( ${#LOSS_OVERRIDES[@]} )) || drpo_fail "LOSS_MODE=${LOSS_MODE}: '$PYTHON -m verl_drpo overrides' printed nothing"
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
      STALENESS_STRATEGY=${STALENESS_STRATEGY:-wait}
      drpo_require_choice STALENESS_STRATEGY wait drop
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
      drpo_require_choice PARTIAL_ROLLOUT True False
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

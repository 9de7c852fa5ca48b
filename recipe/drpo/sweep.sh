#!/usr/bin/env bash
# Run one recipe for every (loss mode, seed) pair, one after another, each with its own experiment name and log.
#
#   LOSS_MODES="drpo dppo_tv vanilla" SEEDS="1 2 3" bash recipe/drpo/sweep.sh
#   RECIPE=math LOSS_MODES="drpo spo pg_is" SEEDS=1 bash recipe/drpo/sweep.sh trainer.total_training_steps=200
#   DRY_RUN=1 LOSS_MODES="drpo dppo_tv dppo_kl vanilla spo pg_is" bash recipe/drpo/sweep.sh   # validate them all
#
# Every other variable (MODEL_SIZE, TRAINER_MODE, STALENESS, N_GPUS_PER_NODE, ...) passes through to the recipe;
# command-line Hydra overrides go to every run. Real runs append their output to $LOG_DIR/<experiment>.log (a dry run
# writes no log); metrics: verl's file logger ($VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl), read by
# scripts/plot_runs.py. KEEP_GOING=1 goes on after a failed run (the sweep still exits non-zero at the end).
# Experiment names: <recipe>-<loss>-<trainer mode>-seed<k>$EXPERIMENT_SUFFIX (e.g. -delta0.2 with DRPO_DELTA=0.2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # PYTHON (the project's .venv by default) and the helpers
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && { drpo_help "${BASH_SOURCE[0]}"; exit 0; }; done

RECIPE=${RECIPE:-gsm8k}                              # gsm8k | math | dapo_qwen3_4b | moe_qwen3_30b_a3b
LOSS_MODES=${LOSS_MODES:-drpo dppo_tv vanilla}
SEEDS=${SEEDS:-1 2 3}
KEEP_GOING=${KEEP_GOING:-0}                          # 1: go on after a failed run
DRY_RUN=${DRY_RUN:-0}                                # 1: validate every run, write nothing
SKIP_DOCTOR=${SKIP_DOCTOR:-0}
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}
LOG_DIR=${LOG_DIR:-${VERL_FILE_LOGGER_ROOT}/logs}    # one appended log per experiment
drpo_require_choice RECIPE gsm8k math dapo_qwen3_4b moe_qwen3_30b_a3b
drpo_require_choice KEEP_GOING 0 1
drpo_require_choice DRY_RUN 0 1
drpo_require_choice SKIP_DOCTOR 0 1
[[ -n ${SEEDS//[[:space:]]/} ]] || drpo_fail "SEEDS is empty: name at least one seed (a sweep of zero runs checks nothing)"
for SEED in $SEEDS; do drpo_require_int SEED 0; done
[[ -n ${LOSS_MODES//[[:space:]]/} ]] || drpo_fail "LOSS_MODES is empty: name at least one loss mode"
SCRIPT="$(dirname "${BASH_SOURCE[0]}")/run_drpo_${RECIPE}.sh"

drpo_doctor                                          # once for the whole sweep instead of once per run
export PYTHON DRY_RUN SKIP_DOCTOR=1
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOG_DIR"

if [[ $DRY_RUN != 1 ]]; then  # every run's configuration checked before the first starts, not hours into the sweep
  for loss_mode in $LOSS_MODES; do
    echo "=== sweep: checking ${loss_mode} before any run starts"
    check_log=$(mktemp)
    if ! env LOSS_MODE="$loss_mode" SEED="${SEEDS%% *}" DRY_RUN=1 DRY_RUN_JSON= bash "$SCRIPT" "$@" \
         > /dev/null 2> "$check_log"; then
      grep -v '^+' "$check_log" >&2; rm -f "$check_log"
      drpo_fail "LOSS_MODE=${loss_mode}: its dry run failed (above); no run of the sweep was started"
    fi
    rm -f "$check_log"
  done
fi

failed=()
for loss_mode in $LOSS_MODES; do
  for seed in $SEEDS; do
    name="${RECIPE}-${loss_mode}-${TRAINER_MODE:-sync}-seed${seed}${EXPERIMENT_SUFFIX:-}"
    echo "=== sweep: ${name}"
    run=(env LOSS_MODE="$loss_mode" SEED="$seed" EXPERIMENT_NAME="$name" bash "$SCRIPT" "$@")
    if [[ $DRY_RUN == 1 ]]; then
      "${run[@]}" && rc=0 || rc=$?
    else  # append: an earlier run's log of the same name is kept
      { echo "=== sweep run ${name}, started $(date -u '+%Y-%m-%dT%H:%M:%SZ')"; "${run[@]}"; } 2>&1 |
        tee -a "${LOG_DIR}/${name}.log" && rc=0 || rc=$?
    fi
    if (( rc != 0 )); then
      failed+=("$name")
      [[ $DRY_RUN == 1 ]] && where="" || where=" (log: ${LOG_DIR}/${name}.log)"
      [[ $KEEP_GOING == 1 ]] || { echo "sweep: ${name} failed${where}" >&2; exit 1; }
    fi
  done
done
if (( ${#failed[@]} )); then
  echo "sweep: ${#failed[@]} run(s) failed: ${failed[*]}" >&2
  exit 1
fi
if [[ $DRY_RUN == 1 ]]; then
  echo "sweep: every run's configuration validated (dry run: nothing trained, no log written)"
else
  echo "sweep: all runs finished; plot with: $PYTHON scripts/plot_runs.py ${VERL_FILE_LOGGER_ROOT}/*/*.jsonl -o sweep.png"
fi

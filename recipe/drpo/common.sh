#!/usr/bin/env bash
# Shared pieces of the DRPO recipes, sourced by run_drpo_gsm8k.sh and run_drpo_math.sh (not run on its own).
#
# Three functions, each writing one bash array the recipe splices into its overrides:
#   drpo_loss_overrides     LOSS_MODE    -> LOSS_OVERRIDES  (the method and its paper hyper-parameters)
#   drpo_mode_overrides     TRAINER_MODE -> MODE_OVERRIDES  (sync / asynchronous off-policy), ENTRY, DRY_RUN_ENTRY
#   drpo_launch             doctor check, then DRY_RUN (compose + validate only) or the real verl run
# Every knob is an environment variable with a default; see docs/recipes.md for the full table.

# The config hook: a PolicyLossConfig subclass. Selecting it by _target_ also imports verl_drpo (and so registers
# the losses) wherever verl builds the actor config: on the driver and in every worker.
POLICY_LOSS_TARGET=${POLICY_LOSS_TARGET:-verl_drpo.config.DRPOPolicyLossConfig}

drpo_loss_overrides() {
  local mode=$1
  local pl=actor_rollout_ref.actor.policy_loss
  local actor=actor_rollout_ref.actor
  LOSS_OVERRIDES=("${pl}._target_=${POLICY_LOSS_TARGET}" "${pl}.loss_mode=${mode}")
  case "$mode" in
    drpo)       # DRPO, arXiv 2606.09821 Eq. 8; delta = 12.5 (paper Sec. 4)
      LOSS_OVERRIDES+=("+${pl}.drpo_delta=${DRPO_DELTA:-12.5}") ;;
    mask_drpo)  # DRPO's penalty only on tokens outside DPPO's Binary-TV region (paper ablation)
      LOSS_OVERRIDES+=("+${pl}.drpo_delta=${DRPO_DELTA:-12.5}"
                       "+${pl}.mask_drpo_tv_delta=${MASK_DRPO_TV_DELTA:-0.15}") ;;
    spo)        # SPO, arXiv 2401.16025, epsilon = 12.5 as in the DRPO paper's comparison
      LOSS_OVERRIDES+=("+${pl}.spo_epsilon=${SPO_EPSILON:-12.5}") ;;
    pg_is)      # untruncated importance-sampled policy gradient (the paper's unregularized ablation)
      ;;
    dppo_tv)    # DPPO Binary-TV, arXiv 2602.04879: delta_TV = 0.15 carried by clip_ratio_low/high in verl;
                # the ratio truncation clip_ratio_c is lifted (verl's default 3.0 would truncate the IS ratio)
      LOSS_OVERRIDES+=("${actor}.clip_ratio_low=${DPPO_TV_DELTA:-0.15}" "${actor}.clip_ratio_high=${DPPO_TV_DELTA:-0.15}"
                       "${actor}.clip_ratio_c=${DPPO_CLIP_RATIO_C:-10000.0}") ;;
    dppo_kl)    # DPPO Binary-KL: delta_KL = 0.05
      LOSS_OVERRIDES+=("${actor}.clip_ratio_low=${DPPO_KL_DELTA:-0.05}" "${actor}.clip_ratio_high=${DPPO_KL_DELTA:-0.05}"
                       "${actor}.clip_ratio_c=${DPPO_CLIP_RATIO_C:-10000.0}") ;;
    vanilla)    # GRPO with clip-higher (DAPO): eps_low 0.2, eps_high 0.28; verl's dual-clip c = 3.0 kept
      LOSS_OVERRIDES+=("${actor}.clip_ratio_low=${CLIP_RATIO_LOW:-0.2}" "${actor}.clip_ratio_high=${CLIP_RATIO_HIGH:-0.28}"
                       "${actor}.clip_ratio_c=${CLIP_RATIO_C:-3.0}") ;;
    *)
      echo "LOSS_MODE=${mode} is not one of: drpo mask_drpo spo pg_is dppo_tv dppo_kl vanilla" >&2
      return 1 ;;
  esac
}

# TRAINER_MODE, and what STALENESS means in each (in policy versions; one version = one weight sync):
#   sync            on-policy rollouts; several optimizer steps per rollout (TRAIN_BATCH_SIZE/PPO_MINI_BATCH_SIZE)
#                   all anchored on the same mu. STALENESS is ignored.
#   colocate_async  verl V1, rollout and training share the GPUs; generation of the next batch overlaps training.
#                   STALENESS -> trainer.v1.sampler.max_off_policy_threshold: a trajectory whose generation started
#                   at step s may be trained at steps s .. s+STALENESS-1; older ones are dropped (strategy drop).
#   separate_async  verl V1, a standalone rollout pool (ROLLOUT_GPUS_PER_NODE) besides the trainer's GPUs; weights
#                   are pushed every parameter_sync_step = TRAIN_BATCH_SIZE/PPO_MINI_BATCH_SIZE mini-batch updates
#                   (one step); STALENESS bounds trajectories as above.
#   fully_async     verl.experimental.fully_async_policy: trainer and rollouter decoupled, partial rollout.
#                   STALENESS -> async_training.staleness_threshold (a fraction): the rollouter may run ahead by
#                   STALENESS x one sync period of samples before it pauses; 0 = at most one version behind.
drpo_mode_overrides() {
  local mode=$1
  ENTRY=verl.trainer.main_ppo
  DRY_RUN_ENTRY=main_ppo
  MODE_OVERRIDES=()
  if (( PPO_MINI_BATCH_SIZE <= 0 || TRAIN_BATCH_SIZE % PPO_MINI_BATCH_SIZE )); then
    echo "TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE} must be a multiple of PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE}" >&2
    return 1
  fi
  local sync_step=$(( TRAIN_BATCH_SIZE / PPO_MINI_BATCH_SIZE ))
  local rollout_gpus=${ROLLOUT_GPUS_PER_NODE:-$(( N_GPUS_PER_NODE / 2 ))}
  case "$mode" in
    sync)
      MODE_OVERRIDES+=(trainer.v1.trainer_mode=sync) ;;
    colocate_async)
      MODE_OVERRIDES+=(trainer.v1.trainer_mode=colocate_async
                       "trainer.v1.sampler.max_off_policy_threshold=${STALENESS:-2}"
                       "trainer.v1.sampler.max_off_policy_strategy=${STALENESS_STRATEGY:-drop}") ;;
    separate_async)
      MODE_OVERRIDES+=(trainer.v1.trainer_mode=separate_async
                       "trainer.v1.separate_async.parameter_sync_step=${sync_step}"
                       "trainer.v1.sampler.max_off_policy_threshold=${STALENESS:-2}"
                       "trainer.v1.sampler.max_off_policy_strategy=${STALENESS_STRATEGY:-drop}"
                       "trainer.n_gpus_per_node=$(( N_GPUS_PER_NODE - rollout_gpus ))"
                       "actor_rollout_ref.rollout.nnodes=${NNODES}"
                       "actor_rollout_ref.rollout.n_gpus_per_node=${rollout_gpus}"
                       "actor_rollout_ref.rollout.checkpoint_engine.backend=${CHECKPOINT_BACKEND:-nccl}") ;;
    fully_async)
      ENTRY=verl.experimental.fully_async_policy.fully_async_main
      DRY_RUN_ENTRY=fully_async
      MODE_OVERRIDES+=(data.train_batch_size=0 data.gen_batch_size=1
                       actor_rollout_ref.hybrid_engine=False
                       "async_training.staleness_threshold=${STALENESS:-0.5}"
                       "async_training.trigger_parameter_sync_step=${sync_step}"
                       async_training.require_batches=1
                       "async_training.partial_rollout=${PARTIAL_ROLLOUT:-True}"
                       "trainer.n_gpus_per_node=$(( N_GPUS_PER_NODE - rollout_gpus ))"
                       "rollout.nnodes=${NNODES}"
                       "rollout.n_gpus_per_node=${rollout_gpus}"
                       "rollout.total_rollout_steps=$(( TOTAL_TRAINING_STEPS * TRAIN_BATCH_SIZE ))"
                       "actor_rollout_ref.rollout.checkpoint_engine.backend=${CHECKPOINT_BACKEND:-nccl}") ;;
    *)
      echo "TRAINER_MODE=${mode} is not one of: sync colocate_async separate_async fully_async" >&2
      return 1 ;;
  esac
}

# drpo_launch "$@" : the doctor check, then a dry run or the real run of OVERRIDES (the recipe's array) followed by
# the command-line overrides, which come last and so win. A recipe key added with '+' (a key verl's YAML lacks) is
# dropped when the command line sets the same key, because Hydra refuses to '+'-add a key twice.
drpo_launch() {
  local xtrace=0; [[ $- == *x* ]] && xtrace=1; { set +x; } 2>/dev/null   # keep the trace to the commands
  local -a final=()
  local ov key arg user_keys=" "
  for arg in "$@"; do
    key=${arg%%=*}; key=${key#"${key%%[!+~]*}"}
    user_keys+="${key} "
  done
  for ov in "${OVERRIDES[@]}"; do
    if [[ $ov == +* ]]; then
      key=${ov%%=*}; key=${key#"${key%%[!+]*}"}
      [[ $user_keys == *" ${key} "* ]] && continue
    fi
    final+=("$ov")
  done
  (( xtrace )) && set -x
  if [[ "${SKIP_DOCTOR:-0}" != 1 ]]; then
    # Fails fast, with the doctor's own message, if the loss modes would not be registered in Ray workers.
    "$PYTHON" -m verl_drpo doctor --quick || {
      echo "verl-drpo doctor failed (see above): the plugin is not loadable; fix that or set SKIP_DOCTOR=1" >&2
      return 1
    }
  fi
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    "$PYTHON" -m verl_drpo.dry_run --entry "$DRY_RUN_ENTRY" ${DRY_RUN_JSON:+--json "$DRY_RUN_JSON"} -- "${final[@]}" "$@"
  else
    "$PYTHON" -m "$ENTRY" "${final[@]}" "$@"
  fi
}

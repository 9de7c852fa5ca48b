"""The settings that decide what a run computes, read off a composed trainer config: what the dry run prints and
writes with ``--json``, and the policy lag a ``fully_async`` configuration implies."""

from __future__ import annotations

import math
from typing import Any

from verl_drpo import modes
from verl_drpo.launch.preflight import select as get

A, R, RC = "actor_rollout_ref.actor.", "actor_rollout_ref.rollout.", "algorithm.rollout_correction."

# (name shown, dotted key of the trainer config), in the order shown. The policy-loss config class and the table's
# hyper-parameters (modes.POLICY_LOSS_FIELDS, read off the dataclass the workers build) follow COMMON.
COMMON: tuple[tuple[str, str], ...] = (
    ("model", "actor_rollout_ref.model.path"),
    ("train_files", "data.train_files"),
    ("val_files", "data.val_files"),
    ("loss_mode", A + "policy_loss.loss_mode"),
)
TRAINING: tuple[tuple[str, str], ...] = (
    ("clip_ratio_low", A + "clip_ratio_low"), ("clip_ratio_high", A + "clip_ratio_high"),
    ("clip_ratio_c", A + "clip_ratio_c"), ("loss_agg_mode", A + "loss_agg_mode"),
    ("loss_scale_factor", A + "loss_scale_factor"), ("use_kl_loss", A + "use_kl_loss"),
    ("entropy_coeff", A + "entropy_coeff"), ("calculate_entropy", A + "calculate_entropy"),
    ("lr", A + "optim.lr"), ("grad_clip", A + "optim.clip_grad"), ("actor_strategy", A + "strategy"),
    ("ppo_epochs", A + "ppo_epochs"), ("train_batch_size", "data.train_batch_size"),
    ("ppo_mini_batch_size", A + "ppo_mini_batch_size"),
    ("ppo_micro_batch_size_per_gpu", A + "ppo_micro_batch_size_per_gpu"),
    ("adv_estimator", "algorithm.adv_estimator"), ("norm_adv_by_std_in_grpo", "algorithm.norm_adv_by_std_in_grpo"),
    ("use_kl_in_reward", "algorithm.use_kl_in_reward"), ("bypass_mode", RC + "bypass_mode"),
    ("rollout_is", RC + "rollout_is"), ("rollout_is_threshold", RC + "rollout_is_threshold"),
    ("rollout_is_batch_normalize", RC + "rollout_is_batch_normalize"),
    ("rollout_name", R + "name"), ("rollout_mode", R + "mode"), ("rollout_n", R + "n"),
    ("rollout_tp", R + "tensor_model_parallel_size"), ("gpu_memory_utilization", R + "gpu_memory_utilization"),
    # precision (the recipes' PRECISION): the training engine's and the rollout engine's own keys
    ("fsdp_mixed_precision", A + "fsdp_config.mixed_precision"), ("megatron_dtype", A + "megatron.dtype"),
    ("rollout_dtype", R + "dtype"), ("rollout_quantization", R + "quantization"),
    ("calculate_log_probs", R + "calculate_log_probs"), ("logprobs_mode", R + "logprobs_mode"),
    ("temperature", R + "temperature"), ("top_p", R + "top_p"), ("top_k", R + "top_k"),
    ("max_prompt_length", "data.max_prompt_length"), ("max_response_length", "data.max_response_length"),
    ("n_gpus_per_node", "trainer.n_gpus_per_node"), ("nnodes", "trainer.nnodes"),
    ("total_training_steps", "trainer.total_training_steps"), ("project_name", "trainer.project_name"),
    ("experiment_name", "trainer.experiment_name"), ("logger", "trainer.logger"),
    ("save_freq", "trainer.save_freq"), ("max_actor_ckpt_to_keep", "trainer.max_actor_ckpt_to_keep"),
    ("checkpoint_dir", "trainer.default_local_dir"), ("resume_mode", "trainer.resume_mode"),
    ("external_modules_env", "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"),
)
# verl's own settings that the table's baselines read and TRAINING does not already show (SAPO's temperatures,
# DRO's beta), so that the dry run shows every value a LOSS_MODE sets.
_SHOWN = {name for name, _ in TRAINING}
TABLE_SETTINGS: tuple[tuple[str, str], ...] = tuple(
    {s.field: s.key for m in modes.MODES.values() for s in m.actor if s.field not in _SHOWN}.items())
FULLY_ASYNC: tuple[tuple[str, str], ...] = (
    ("staleness_threshold", "async_training.staleness_threshold"),
    ("trigger_parameter_sync_step", "async_training.trigger_parameter_sync_step"),
    ("require_batches", "async_training.require_batches"), ("partial_rollout", "async_training.partial_rollout"),
)
V1_ASYNC: tuple[tuple[str, str], ...] = (
    ("max_off_policy_threshold", "trainer.v1.sampler.max_off_policy_threshold"),
    ("max_off_policy_strategy", "trainer.v1.sampler.max_off_policy_strategy"),
)


def _read(cfg, pairs) -> dict[str, Any]:
    return {name: get(cfg, key) for name, key in pairs}


def fully_async_lag_bound(cfg) -> dict[str, Any]:
    """How verl 0.9.1's fully_async sizes its queue from async_training.staleness_threshold, and the policy lag that
    implies (verl/experimental/fully_async_policy/fully_async_rollouter.py, set_max_required_samples and
    _should_pause_generation).

    The trainer takes R = ppo_mini_batch_size * require_batches samples per optimizer step and syncs the weights
    every K = trigger_parameter_sync_step steps, so it consumes R*K samples per parameter version. The rollouter
    caps the samples it has queued or in flight (counted again at every sync) at (s + 1) * R * K, s the
    staleness_threshold, and the trainer takes them oldest first. A sample started under version v therefore waits
    behind at most (s + 1) * R * K - 1 others and is trained on at version v + ceil(s) or earlier: a lag of at most
    ceil(s) parameter versions, ceil(s) * K optimizer steps. With partial_rollout=True an interrupted sample is
    resumed with the new weights, so its later tokens are fresher than its first ones.
    """
    s = float(get(cfg, "async_training.staleness_threshold"))
    per_step = int(get(cfg, A + "ppo_mini_batch_size")) * int(get(cfg, "async_training.require_batches"))
    sync = int(get(cfg, "async_training.trigger_parameter_sync_step"))
    versions = math.ceil(s)
    return {
        "max_queued_samples": int(per_step * (s + 1) * sync),
        "policy_lag_bound": f"<= {versions} parameter versions = {versions * sync} optimizer steps "
                            f"(staleness_threshold={s:g}, trigger_parameter_sync_step={sync})",
    }


def resolved_settings(cfg, policy_loss, entry: str, entry_module: str) -> dict[str, Any]:
    """The settings that decide what a run computes, resolved, as a flat dict. ``cfg`` has passed verl's
    validate_config; ``policy_loss`` is its policy-loss section as the workers will build it (the dataclass, with
    its defaults); ``entry`` is main_ppo or fully_async, ``entry_module`` the module a real run starts."""
    settings: dict[str, Any] = {"entry": entry_module, **_read(cfg, COMMON)}
    settings["policy_loss_config"] = f"{type(policy_loss).__module__}.{type(policy_loss).__qualname__}"
    settings.update({name: getattr(policy_loss, name) for name in modes.POLICY_LOSS_FIELDS
                     if hasattr(policy_loss, name)})
    settings.update(_read(cfg, TRAINING))
    settings.update(_read(cfg, TABLE_SETTINGS))
    if entry == "fully_async":
        settings.update(trainer_mode="fully_async", **_read(cfg, FULLY_ASYNC),
                        rollout_pool=f"{get(cfg, 'rollout.nnodes')}x{get(cfg, 'rollout.n_gpus_per_node')}",
                        total_rollout_steps=get(cfg, "rollout.total_rollout_steps"), **fully_async_lag_bound(cfg))
        return settings
    mode = settings["trainer_mode"] = get(cfg, "trainer.v1.trainer_mode")
    if mode != "sync":
        settings.update(_read(cfg, V1_ASYNC))
    if mode == "separate_async":
        settings["parameter_sync_step"] = get(cfg, "trainer.v1.separate_async.parameter_sync_step")
        settings["rollout_pool"] = f"{get(cfg, R + 'nnodes')}x{get(cfg, R + 'n_gpus_per_node')}"
    train_bs, mini_bs = settings["train_batch_size"], settings["ppo_mini_batch_size"]
    if isinstance(train_bs, int) and isinstance(mini_bs, int) and mini_bs:
        settings["optimizer_steps_per_rollout"] = train_bs // mini_bs * int(settings["ppo_epochs"])
    return settings

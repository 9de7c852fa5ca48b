"""One preflight for a full verl trainer config: what the doctor, the dry run and the config hook check.

- `missing_modes`: which of the table's names a registry lacks (the doctor, on a fresh process's registry).
- `trainer_config_warnings`: what verl accepts but a DRPO-style run should not do: the anchor, the sampling
  temperature and truncation, the `seq-mean-token-sum-norm` horizon (`loss_scale_factor`), verl's plain
  PolicyLossConfig.
- `trainer_start_problems`: the assertions verl's trainers make in their constructors, i.e. only once Ray and the
  workers are up. verl has no public function for them, so each is mirrored here once, with the verl file and the
  source line it mirrors (`MIRRORED_CHECKS`); a test fails if that line changes in the installed verl.
  Also the Megatron actor's parallel sizes against its GPUs (`megatron_parallel_problems`: megatron-core's rule).

Configs are OmegaConf DictConfigs of verl's `ppo_trainer` (or `fully_async_ppo_trainer`) as Hydra composes them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from verl_drpo import modes

ANCHOR_OVERRIDES = "algorithm.rollout_correction.bypass_mode=True actor_rollout_ref.rollout.calculate_log_probs=True"


def missing_modes(registered) -> list[str]:
    """The names verl-drpo registers (`modes.REGISTERED_NAMES`) that are not in `registered`."""
    return [name for name in modes.REGISTERED_NAMES if name not in set(registered)]


def select(cfg, key: str, default=None):
    """The resolved value at the dotted ``key`` of a trainer config (a plain list or dict for containers), or
    ``default`` when it is missing or null."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    if value is None:
        return default
    if not isinstance(value, str | int | float | bool):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def trainer_config_warnings(cfg: Any) -> list[str]:
    """Warnings about a full trainer config for the loss modes of `verl_drpo.modes`; [] for a clean config."""
    loss_mode = select(cfg, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla")
    found = []
    if modes.anchored_on_mu(loss_mode) and not modes.uses_decoupled_inputs(loss_mode):  # decoupled inputs: decoupled_input_problems
        bypass = bool(select(cfg, "algorithm.rollout_correction.bypass_mode", False))
        log_probs = bool(select(cfg, "actor_rollout_ref.rollout.calculate_log_probs", False))
        if not (bypass and log_probs):
            found.append(
                f"loss_mode={loss_mode} runs without the rollout anchor (bypass_mode={bypass}, "
                f"calculate_log_probs={log_probs}): r = pi/mu is then measured against the trainer's recomputed "
                f"old log-probs, not the rollout engine's mu. DPPO §5.2 reports collapse when anchored that way. Set "
                f"{ANCHOR_OVERRIDES}."
            )
        # No warning for trainer.use_v1=False (or fully_async) with bypass_mode: their apply_bypass_mode rewrites
        # loss_mode to 'bypass_mode' only in the driver's config, during fit(), after the workers have bound
        # ppo_loss to their own copy; nothing on the driver reads loss_mode afterwards (docs/algorithm.md, Anchor;
        # tests/core/test_config_on_cpu.py::test_legacy_trainer_bypass_rewrite_does_not_reach_the_workers_loss).
    if modes.anchored_on_mu(loss_mode):
        temperature = select(cfg, "actor_rollout_ref.rollout.temperature", 1.0)
        if float(temperature) != 1.0:
            found.append(
                f"rollout.temperature={temperature}: DRPO needs mu to be the probability the token was sampled "
                "with and pi to be computed at the same temperature; check that the rollout engine returns "
                "log-probs of the tempered distribution (docs/recipes.md). The paper samples at temperature 1.0."
            )
    agg_mode = select(cfg, "actor_rollout_ref.actor.loss_agg_mode", "token-mean")
    if agg_mode == "seq-mean-token-sum-norm" and select(cfg, "actor_rollout_ref.actor.loss_scale_factor") is None:
        horizon = select(cfg, "data.max_response_length", "the maximum response length")
        found.append(
            "loss_agg_mode=seq-mean-token-sum-norm without actor_rollout_ref.actor.loss_scale_factor: verl's agg_loss "
            "then divides each micro-batch by its own padded length (its longest response), so a sequence's weight "
            "depends on which siblings share its micro-batch. Set "
            f"actor_rollout_ref.actor.loss_scale_factor={horizon} (the paper divides by the maximum response length)."
        )
    rollout = select(cfg, "actor_rollout_ref.rollout", None)
    if rollout is not None:
        top_p, top_k = rollout.get("top_p", 1.0), rollout.get("top_k", -1)
        if (top_p is not None and float(top_p) < 1.0) or (top_k is not None and int(top_k) > 0):
            found.append(
                f"rollout top_p={top_p} top_k={top_k} truncates the sampling distribution: vLLM's "
                f"logprobs_mode={rollout.get('logprobs_mode')} returns log-probs of the truncated distribution, "
                "which the actor does not reproduce, so r = pi/mu is biased below 1 even with identical weights"
            )
    if loss_mode in modes.REGISTERED_NAMES:
        if select(cfg, "actor_rollout_ref.actor.policy_loss._target_", "") != modes.POLICY_LOSS_TARGET:
            defaults = {name: modes.POLICY_LOSS_FIELDS[name].default for name in modes.get(loss_mode).reads}
            found.append(
                f"loss_mode={loss_mode} with verl's plain PolicyLossConfig: the defaults {defaults} apply. Select "
                f"actor_rollout_ref.actor.policy_loss._target_={modes.POLICY_LOSS_TARGET} to set and validate them."
            )
    return found


# ---- decoupled inputs: mu must be recoverable from verl's importance weights ----------------------------------------


def decoupled_input_problems(cfg: Any) -> list[str]:
    """For a mode with decoupled inputs (`modes.LossMode.verl_inputs`), what keeps mu from being recovered exactly
    from verl's `rollout_is_weights` = pi_prox / mu; [] for other modes or a config that passes. verl computes the
    weights in `rollout_corr_helper.compute_rollout_correction_weights`: per token only for rollout_is=token, clamped
    at rollout_is_threshold (or zeroed outside a 'lower_upper' IcePop range), optionally divided by their batch mean."""
    loss_mode = select(cfg, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla")
    if not modes.uses_decoupled_inputs(loss_mode):
        return []
    rc = "algorithm.rollout_correction."
    found = []
    if bool(select(cfg, rc + "bypass_mode", False)):
        found.append(f"{rc}bypass_mode=True: old_log_prob is then mu itself and pi_prox is never computed")
    if not bool(select(cfg, "actor_rollout_ref.rollout.calculate_log_probs", False)):
        found.append("actor_rollout_ref.rollout.calculate_log_probs=False: verl then has no mu to weight with")
    level = select(cfg, rc + "rollout_is", None)
    if level != "token":
        found.append(f"{rc}rollout_is={level}: only token-level weights give each token's mu "
                     "(sequence-level weights are one product per sequence; null gives none)")
    threshold = select(cfg, rc + "rollout_is_threshold", 2.0)
    try:
        upper = float(threshold) if not isinstance(threshold, bool) else math.nan
    except (TypeError, ValueError):  # 'lower_upper': IcePop zeroes the weights outside the range
        upper = math.nan
    if not upper >= math.exp(modes.LOG_RATIO_CLAMP):
        found.append(f"{rc}rollout_is_threshold={threshold}: weights above it are truncated (or, for 'lower_upper', "
                     f"zeroed), so their mu is lost; use a single number >= e^20 "
                     f"(e.g. {modes.UNTRUNCATED_IS_THRESHOLD:g})")
    if bool(select(cfg, rc + "rollout_is_batch_normalize", False)):
        found.append(f"{rc}rollout_is_batch_normalize=True: dividing the weights by their batch mean loses mu's scale")
    if found:
        fix = " ".join(modes.DECOUPLED_OVERRIDES)
        return [f"loss_mode={loss_mode} recovers mu from verl's decoupled-mode weights pi_prox/mu, which this config "
                f"does not allow: {'; '.join(found)}. Set {fix}."]
    return []


# ---- verl's trainer-constructor assertions, mirrored once each ------------------------------------------------------


@dataclass(frozen=True)
class MirroredCheck:
    """One assertion a verl trainer makes at start-up. `verl_file` (relative to the verl package) must contain
    `verl_source` verbatim; `applies(entry, trainer_mode)` says when it runs; `problem(cfg)` is None when the config
    passes, else the message."""

    verl_file: str
    verl_source: str
    applies: Callable[[str, str], bool]
    problem: Callable[[Any], str | None]


def _fully_async(entry, mode):
    return entry == "fully_async"


def _separate_async(entry, mode):
    return entry == "main_ppo" and mode == "separate_async"


def _v1_async(entry, mode):
    return entry == "main_ppo" and mode in ("colocate_async", "separate_async")


def _threshold_problem(cfg):
    threshold = cfg.trainer.v1.sampler.max_off_policy_threshold
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0):
        return f"trainer.v1.sampler.max_off_policy_threshold must be a positive int or null (got {threshold!r})"
    return None


def _sync_step_problem(cfg):
    sync_step = cfg.trainer.v1.separate_async.parameter_sync_step
    mini = cfg.actor_rollout_ref.actor.ppo_mini_batch_size
    if cfg.data.train_batch_size != sync_step * mini:
        return (f"data.train_batch_size ({cfg.data.train_batch_size}) must equal "
                f"trainer.v1.separate_async.parameter_sync_step ({sync_step}) * "
                f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini})")
    return None


def _always(entry, mode):
    return True


def unknown_logger_backends(backends) -> tuple[list[str], list[str]]:
    """(the names verl's Tracking does not know, its own list of backends): the one check of trainer.logger, used by
    the dry run and by a recipe's real launch (common.sh's drpo_check_logger)."""
    from verl.utils.tracking import Tracking

    backends = [backends] if isinstance(backends, str) else list(backends)
    supported = list(Tracking.supported_backend)
    return [b for b in backends if b not in supported and b != "tracking"], supported


def _logger_problem(cfg):
    unknown, supported = unknown_logger_backends(select(cfg, "trainer.logger", []))
    if unknown:
        return f"trainer.logger names {unknown}, which verl's Tracking does not know; choose from {', '.join(supported)}"
    return None


_ROLLOUTER = "experimental/fully_async_policy/fully_async_rollouter.py"
_SEPARATE = "trainer/ppo/v1/trainer_separate_async.py"

MIRRORED_CHECKS: tuple[MirroredCheck, ...] = (
    MirroredCheck("utils/tracking.py", 'assert backend in self.supported_backend, f"{backend} is not supported"',
                  _always, _logger_problem),
    MirroredCheck(_ROLLOUTER, "assert not self.hybrid_engine", _fully_async,
                  lambda c: "actor_rollout_ref.hybrid_engine must be False (trainer and rollouter are separate)"
                  if c.actor_rollout_ref.hybrid_engine else None),
    MirroredCheck(_ROLLOUTER, 'assert self.config.data.train_batch_size == 0, "train_batch_size must be zero"',
                  _fully_async,
                  lambda c: f"data.train_batch_size must be 0 (got {c.data.train_batch_size}); the trainer consumes "
                  "ppo_mini_batch_size * async_training.require_batches samples per step"
                  if c.data.train_batch_size != 0 else None),
    MirroredCheck(_ROLLOUTER, 'assert self.config.data.gen_batch_size == 1, "gen_batch_size must be one"',
                  _fully_async,
                  lambda c: f"data.gen_batch_size must be 1 (got {c.data.gen_batch_size})"
                  if c.data.gen_batch_size != 1 else None),
    MirroredCheck(_ROLLOUTER, "assert self.config.async_training.staleness_threshold >= 0", _fully_async,
                  lambda c: "async_training.staleness_threshold must be >= 0"
                  if c.async_training.staleness_threshold < 0 else None),
    MirroredCheck(_ROLLOUTER, "assert self.config.async_training.trigger_parameter_sync_step >= 1", _fully_async,
                  lambda c: "async_training.trigger_parameter_sync_step must be >= 1"
                  if c.async_training.trigger_parameter_sync_step < 1 else None),
    MirroredCheck(_SEPARATE, "assert train_batch_size == parameter_sync_step * ppo_mini_batch_size",
                  _separate_async, _sync_step_problem),
    MirroredCheck(_SEPARATE, 'assert config.actor_rollout_ref.rollout.nnodes > 0, "nnodes must be > 0', _separate_async,
                  lambda c: None if (c.actor_rollout_ref.rollout.nnodes > 0
                                     and c.actor_rollout_ref.rollout.n_gpus_per_node > 0)
                  else "actor_rollout_ref.rollout.nnodes and .n_gpus_per_node must be > 0 (the standalone "
                  "rollout pool)"),
    MirroredCheck(_SEPARATE, 'assert config.actor_rollout_ref.rollout.checkpoint_engine.backend != "naive"',
                  _separate_async,
                  lambda c: "actor_rollout_ref.rollout.checkpoint_engine.backend must not be 'naive' (use nccl, "
                  "nixl, ...)"
                  if c.actor_rollout_ref.rollout.checkpoint_engine.backend == "naive" else None),
    MirroredCheck("trainer/ppo/v1/replay_buffer.py",
                  "assert isinstance(self.max_off_policy_threshold, int) and self.max_off_policy_threshold > 0",
                  _v1_async, _threshold_problem),
)


def megatron_parallel_problems(cfg: Any) -> list[str]:
    """The Megatron actor's parallel sizes against the trainer's GPUs. megatron-core's initialize_model_parallel
    (megatron/core/parallel_state.py, not part of verl) raises once the workers start unless the world size is a
    multiple of both TP x PP x CP (the dense layers) and ETP x EP x PP (the experts; ETP defaults to TP)."""
    if select(cfg, "actor_rollout_ref.actor.strategy") != "megatron":
        return []
    mc = cfg.actor_rollout_ref.actor.megatron
    world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    tp, pp, cp, ep = (mc.tensor_model_parallel_size, mc.pipeline_model_parallel_size, mc.context_parallel_size,
                      mc.expert_model_parallel_size)
    etp = mc.expert_tensor_parallel_size if mc.expert_tensor_parallel_size is not None else tp
    problems = []
    for what, size in ((f"TP x PP x CP = {tp} x {pp} x {cp}", tp * pp * cp),
                       (f"ETP x EP x PP = {etp} x {ep} x {pp}", etp * ep * pp)):
        if world % size:
            problems.append(f"actor_rollout_ref.actor.megatron: the trainer's {world} GPU(s) (trainer.n_gpus_per_node"
                            f" x trainer.nnodes) are not a multiple of {what} = {size}; megatron-core refuses this at"
                            " start-up")
    return problems


def trainer_start_problems(cfg: Any, entry: str = "main_ppo") -> list[str]:
    """What verl's trainer for `entry` (and, for main_ppo, `trainer.v1.trainer_mode`) would reject at start-up, and
    the configurations a loss mode refuses (`decoupled_input_problems`)."""
    problems = decoupled_input_problems(cfg)
    mode = "fully_async" if entry == "fully_async" else select(cfg, "trainer.v1.trainer_mode", "sync")
    if entry == "main_ppo":
        from verl.trainer.ppo.v1 import get_trainer_cls

        try:  # verl's own lookup
            get_trainer_cls(mode)
        except Exception as exc:  # noqa: BLE001  (verl raises ValueError or KeyError depending on the path)
            problems.append(f"trainer.v1.trainer_mode={mode!r} is not a registered V1 trainer: {exc}")
    try:  # verl's own validation of the rollout section (RolloutConfig.__post_init__: mode must be 'async', ...)
        from verl.utils.config import omega_conf_to_dataclass

        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    except Exception as exc:  # noqa: BLE001  (verl raises ValueError/AssertionError; Hydra may wrap them)
        cause = exc.__cause__ or exc
        problems.append(f"actor_rollout_ref.rollout: {type(cause).__name__}: {cause}")
    problems += megatron_parallel_problems(cfg)
    for check in MIRRORED_CHECKS:
        if check.applies(entry, mode):
            problem = check.problem(cfg)
            if problem is not None:
                problems.append(problem)
    return problems


# ---- paths this machine can check ------------------------------------------------------------------------------------


REMOTE_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # hdfs://, s3://, gs://, https://, ...
HF_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name: verl downloads it


def missing_local_paths(cfg) -> list[str]:
    """Warnings for the local data files and model directory the config names that do not exist here (a cluster
    would find out only after Ray starts). Remote paths, and a model path shaped like a Hugging Face id, pass."""
    found = []
    for key in ("data.train_files", "data.val_files"):
        value = select(cfg, key)
        for path in [value] if isinstance(value, str) else (value or []):
            if isinstance(path, str) and not REMOTE_PATH.match(path) and not os.path.exists(os.path.expanduser(path)):
                found.append(f"{key}: {path} does not exist on this machine (fine if the cluster's nodes have it)")
    model = select(cfg, "actor_rollout_ref.model.path")
    if (isinstance(model, str) and not REMOTE_PATH.match(model) and not os.path.exists(os.path.expanduser(model))
            and not HF_MODEL_ID.match(model)):
        found.append(f"actor_rollout_ref.model.path: {model} does not exist on this machine and is not a Hugging Face "
                     "id (org/name)")
    return found

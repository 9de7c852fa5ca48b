"""verl glue: registers DRPO and the baselines verl lacks with verl's policy-loss registry.

verl imports this module on every `import verl` (entry point `verl_drpo` in the `verl.plugins` group), in the
driver and in every Ray worker. Cluster fallback: `VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin`.

Each registered function has verl's exact keyword signature, aggregates with verl's `agg_loss(...,
**config.global_batch_info)` (so micro-batch and data-parallel splits sum to the global loss in every
`loss_agg_mode`), multiplies by `rollout_is_weights` when verl passes them, and adds no entropy or KL term (verl's
`ppo_loss` adds those itself). The mathematics is in `verl_drpo.losses`; metric names are documented in
docs/metrics.md.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch

from verl_drpo import LOSS_MODES, losses
from verl_drpo._compat import check_verl_version

check_verl_version()  # an unsupported verl fails here; `python -m verl_drpo doctor` shows why

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss  # noqa: E402

from verl_drpo.config import HYPERPARAMETER_DEFAULTS, validate_positive  # noqa: E402

METRIC_PREFIX = "actor/drpo/"
# Loss modes whose trust region is measured against mu: they need the rollout log-probs as their anchor.
ANCHORED_LOSS_MODES = frozenset({"drpo", "mask_drpo", "spo", "pg_is", "dppo_tv", "dppo_kl"})


def require_registered(loss_mode: str) -> None:
    """Raise a clear error if `loss_mode` is not in verl's policy-loss registry of this process."""
    if loss_mode not in POLICY_LOSS_REGISTRY:
        hint = ""
        if loss_mode.lower() in POLICY_LOSS_REGISTRY:
            hint = f" Loss modes are case-sensitive: did you mean {loss_mode.lower()!r}?"
        raise ValueError(
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r} is not a registered policy loss.{hint} "
            f"Registered: {sorted(POLICY_LOSS_REGISTRY)}. If a verl-drpo mode is missing, run "
            f"`python -m verl_drpo doctor`."
        )


def _hyperparameter(config: Any, name: str) -> float:
    policy_loss = config.get("policy_loss", None) if hasattr(config, "get") else None
    value = policy_loss.get(name, None) if policy_loss is not None else None
    if value is None:  # verl's plain PolicyLossConfig: the package defaults apply
        value = HYPERPARAMETER_DEFAULTS[name]
    return validate_positive(f"policy_loss.{name}", value)


def _check_inputs(loss_mode, old_log_prob, log_prob, advantages, response_mask, rollout_is_weights):
    named = {"old_log_prob": old_log_prob, "log_prob": log_prob, "advantages": advantages}
    if rollout_is_weights is not None:
        named["rollout_is_weights"] = rollout_is_weights
    for name, tensor in named.items():
        if tensor.shape != response_mask.shape:
            shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in named.items())
            raise ValueError(
                f"{loss_mode}: {name} has shape {tuple(tensor.shape)} but response_mask has "
                f"{tuple(response_mask.shape)}; all must be (batch_size, response_length). Got {shapes}."
            )
        if not tensor.is_floating_point():
            raise TypeError(f"{loss_mode}: {name} must be a floating-point tensor, got {tensor.dtype}")


def _diagnose_non_finite(loss_mode, mask, named: dict[str, torch.Tensor]) -> str:
    """Slow path, taken only when a loss or metric came out non-finite: say which input is to blame and where."""
    parts = []
    for name, tensor in named.items():
        bad = ~torch.isfinite(tensor)
        if bad.any():
            n_valid, n_pad = int((bad & mask).sum()), int((bad & ~mask).sum())
            parts.append(f"{name}: {n_valid} non-finite at valid tokens, {n_pad} at padded positions")
    detail = "; ".join(parts) if parts else "inputs are finite; the loss overflowed (check the log-prob scale)"
    return f"{loss_mode}: non-finite values in the policy-loss inputs ({detail})."


_warned_anchor = False


def _warn_decoupled_anchor(loss_mode: str) -> None:
    global _warned_anchor
    if not _warned_anchor:  # once per process, not once per micro-batch
        _warned_anchor = True
        warnings.warn(
            f"loss_mode={loss_mode} received rollout_is_weights: verl is in decoupled mode, so r is anchored on the "
            "trainer's recomputed old log-probs and mu enters only through the IS weights. DRPO's trust region is "
            "meant to be anchored on the rollout log-probs: set algorithm.rollout_correction.bypass_mode=True and "
            "actor_rollout_ref.rollout.calculate_log_probs=True.",
            stacklevel=4,
        )


def _evaluate(
    spec, old_log_prob, log_prob, advantages, mask, loss_agg_mode, global_batch_info, rollout_is_weights, compiled
):
    """(loss, metrics), or None when the loss or a statistic is not finite."""
    if compiled:  # fused kernels: the boundary counts cost nothing extra, so always take them
        values, grad_coef, stats = losses.compiled_evaluate(spec, log_prob, old_log_prob, advantages, mask, "always")
    else:
        values, grad_coef, stats = losses.evaluate(spec, log_prob, old_log_prob, advantages, mask, "when_reached")
    loss_mat = losses.attach_gradient(log_prob, values, grad_coef)
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights.detach()
    pg_loss = agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **global_batch_info)

    # One device sync reads the loss and every statistic.
    readback = torch.stack([mask.sum().float(), pg_loss.detach().float(), *(v.float() for v in stats.values())])
    n_valid, *checked = readback.tolist()
    if n_valid == 0:
        return _empty_mask_result(log_prob, mask)
    if not all(math.isfinite(v) for v in checked):
        return None
    return pg_loss, _metrics(dict(zip(stats, checked[1:])))


def _empty_mask_result(log_prob: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """No valid token (verl pads a batch that does not divide with all-masked samples): a zero loss that still has
    a graph (verl calls backward on it), and the same metric keys as every other call, all 0.0. verl gathers
    metrics per micro-batch across data-parallel ranks and requires the same keys everywhere."""
    zero = torch.where(mask, log_prob, 0.0).sum() * 0.0
    return zero, _metrics(dict.fromkeys(losses.STATISTIC_NAMES, 0.0))


def _metrics(metrics: dict[str, float]) -> dict[str, float]:
    """verl's metric names for the statistics of `losses.evaluate` (docs/metrics.md)."""
    out = {METRIC_PREFIX + k: v for k, v in metrics.items() if k not in ("neg_log_ratio_mean", "signed_shift_max")}
    # verl's dashboard conventions: clipfrac = share of tokens past the boundary (where DPPO would mask),
    # clipfrac_lower = the negative-advantage part of it, ppo_kl = mean(log mu - log pi).
    out["actor/pg_clipfrac"] = metrics["beyond_boundary_pos_frac"] + metrics["beyond_boundary_neg_frac"]
    out["actor/pg_clipfrac_lower"] = metrics["beyond_boundary_neg_frac"]
    out["actor/ppo_kl"] = metrics["neg_log_ratio_mean"]
    return out


def _policy_loss(
    spec: losses.PolicyLoss,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    _check_inputs(spec.name, old_log_prob, log_prob, advantages, response_mask, rollout_is_weights)
    if rollout_is_weights is not None:
        _warn_decoupled_anchor(spec.name)
    mask = response_mask.bool()
    if mask.numel() == 0:  # batch 0 or length 0: nothing to reduce over, as an empty mask
        return _empty_mask_result(log_prob, mask)
    batch_info = config.get("global_batch_info", None) or {}
    # Follow verl's own switch: the loss is compiled exactly when verl may compile the actor.
    compiled = bool(config.get("use_torch_compile", False))
    args = (old_log_prob, log_prob, advantages, mask, loss_agg_mode, batch_info, rollout_is_weights)
    result = _evaluate(spec, *args, compiled)
    if result is not None:
        return result

    # Slow path, only after a non-finite loss or statistic: blame the input if a valid token is non-finite.
    named = {"log_prob": log_prob, "old_log_prob": old_log_prob, "advantages": advantages}
    if rollout_is_weights is not None:
        named["rollout_is_weights"] = rollout_is_weights
    if any((~torch.isfinite(t) & mask).any() for t in named.values()):
        raise FloatingPointError(_diagnose_non_finite(spec.name, mask, named))
    # Otherwise the culprits sit at padded positions, which masked sums multiply by 0 (NaN * 0 = NaN): zero them
    # (their gradient is zero either way) and evaluate again.
    clean = {k: torch.where(mask, t, 0.0) for k, t in named.items()}
    result = _evaluate(
        spec, clean["old_log_prob"], clean["log_prob"], clean["advantages"], mask, loss_agg_mode, batch_info,
        clean.get("rollout_is_weights"), compiled,
    )
    if result is None:
        raise FloatingPointError(_diagnose_non_finite(spec.name, mask, named))
    return result


def _spec_from_config(loss_mode: str, config: Any) -> losses.PolicyLoss:
    return _spec(loss_mode, **{name: _hyperparameter(config, name) for name in HYPERPARAMETER_DEFAULTS})


@functools.lru_cache(maxsize=64)  # one object per setting, so a compiled evaluation is reused, not re-traced
def _spec(loss_mode: str, drpo_delta: float, spo_epsilon: float, mask_drpo_tv_delta: float) -> losses.PolicyLoss:
    if loss_mode == "drpo":
        return losses.drpo(drpo_delta)
    if loss_mode == "spo":
        return losses.spo(spo_epsilon, mask_drpo_tv_delta)
    if loss_mode == "pg_is":
        return losses.pg_is(mask_drpo_tv_delta)
    if loss_mode == "mask_drpo":
        return losses.mask_drpo(drpo_delta, mask_drpo_tv_delta)
    raise ValueError(f"verl-drpo has no loss mode {loss_mode!r}; it registers {LOSS_MODES}")


def _register(loss_mode: str):
    def policy_loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if config is None:
            raise ValueError(f"loss_mode={loss_mode!r} needs the actor config (verl passes config=ActorConfig)")
        spec = _spec_from_config(loss_mode, config)
        return _policy_loss(
            spec, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
        )

    policy_loss_fn.__name__ = policy_loss_fn.__qualname__ = f"compute_policy_loss_{loss_mode}"
    policy_loss_fn.__doc__ = (
        f"verl policy loss `{loss_mode}` (verl-drpo); see verl_drpo.losses.{loss_mode}. Args and returns as verl's "
        "registered losses: tensors (batch_size, response_length); returns (scalar loss, metrics dict)."
    )
    return register_policy_loss(loss_mode)(policy_loss_fn)


compute_policy_loss_drpo = _register("drpo")
compute_policy_loss_spo = _register("spo")
compute_policy_loss_pg_is = _register("pg_is")
compute_policy_loss_mask_drpo = _register("mask_drpo")


def check_trainer_config(cfg: Any) -> list[str]:
    """Warnings about a full verl trainer config (an OmegaConf DictConfig of `ppo_trainer`) for DRPO-style runs.

    Used by the recipes' dry run and the doctor; the actor config hook itself only sees `policy_loss`, so the
    rollout anchor can only be checked here.
    """
    from omegaconf import OmegaConf

    def select(key, default=None):
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    loss_mode = select("actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla")
    found = []
    if loss_mode in ANCHORED_LOSS_MODES:
        bypass = bool(select("algorithm.rollout_correction.bypass_mode", False))
        log_probs = bool(select("actor_rollout_ref.rollout.calculate_log_probs", False))
        if not (bypass and log_probs):
            found.append(
                f"loss_mode={loss_mode} runs without the rollout anchor (bypass_mode={bypass}, "
                f"calculate_log_probs={log_probs}): r = pi/mu is then measured against the trainer's recomputed "
                "old log-probs, not the rollout engine's mu. DPPO §5.2 reports collapse when anchored that way. Set "
                "algorithm.rollout_correction.bypass_mode=True actor_rollout_ref.rollout.calculate_log_probs=True."
            )
        if bypass and select("trainer.use_v1", True) is False:
            found.append(
                f"trainer.use_v1=False with bypass_mode=True: verl's legacy trainer (ray_trainer.apply_bypass_mode) "
                f"rewrites policy_loss.loss_mode to 'bypass_mode', replacing {loss_mode}. Use the default V1 trainer."
            )
        temperature = select("actor_rollout_ref.rollout.temperature", 1.0)
        if float(temperature) != 1.0:
            found.append(
                f"rollout.temperature={temperature}: DRPO needs mu to be the probability the token was sampled "
                "with and pi to be computed at the same temperature; check that the rollout engine returns "
                "log-probs of the tempered distribution (docs/recipes.md). The paper samples at temperature 1.0."
            )
    if loss_mode in LOSS_MODES:
        if select("actor_rollout_ref.actor.policy_loss._target_", "") != "verl_drpo.config.DRPOPolicyLossConfig":
            found.append(
                f"loss_mode={loss_mode} with verl's plain PolicyLossConfig: the defaults {HYPERPARAMETER_DEFAULTS} "
                "apply. Select actor_rollout_ref.actor.policy_loss._target_=verl_drpo.config.DRPOPolicyLossConfig "
                "to set and validate them."
            )
    return found

"""verl glue: registers every verl-drpo loss mode of `verl_drpo.modes` with verl's policy-loss registry.

verl imports this module on every `import verl` (entry point `verl_drpo` in the `verl.plugins` group), in the
driver and in every Ray worker. Cluster fallback: `VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin`.

verl's call reaches `compute_policy_loss`, one function from verl's arguments to `(loss, metrics)`, as a loss in
verl's `core_algos.py`. It aggregates with verl's `agg_loss(..., **config.global_batch_info)`, so micro-batch and
data-parallel splits sum to the global loss in every `loss_agg_mode`, provided `seq-mean-token-sum-norm` runs with
`actor.loss_scale_factor` set (without it verl divides by each micro-batch's own padded length; see
docs/algorithm.md). It multiplies by `rollout_is_weights` when verl passes them and adds no entropy or KL term
(verl's `ppo_loss` adds those itself). The mathematics is in `verl_drpo.losses` (evaluated by `verl_drpo.fast`);
metric names are documented in docs/metrics.md.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch

from verl_drpo import fast, losses, modes
from verl_drpo._compat import check_verl_version

check_verl_version()  # an unsupported verl fails here; `python -m verl_drpo doctor` shows why

from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss  # noqa: E402

METRIC_PREFIX = "actor/drpo/"


def compute_policy_loss(
    loss_mode: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy loss `loss_mode` of `verl_drpo.modes`, aggregated as verl aggregates, and its metrics.

    Args:
        old_log_prob, log_prob, advantages, response_mask, rollout_is_weights: (batch_size, response_length);
            `old_log_prob` is the anchor (the rollout log-probs mu in verl's bypass mode).
        loss_agg_mode, config: as verl passes them (`config` is the ActorConfig).
    Returns:
        (scalar loss with a graph to `log_prob`, metrics: name -> float, the same keys on every call).
    """
    _check_inputs(loss_mode, old_log_prob, log_prob, advantages, response_mask, rollout_is_weights)
    loss = policy_loss_of(loss_mode, config)
    decoupled = modes.uses_decoupled_inputs(loss_mode)
    if decoupled and rollout_is_weights is None:
        raise ValueError(_no_weights_message(loss_mode))
    if rollout_is_weights is not None and not decoupled:
        _warn_decoupled_anchor(loss_mode)
    mask = response_mask.bool()
    if mask.numel() == 0:  # batch 0 or length 0: nothing to reduce over, as an empty mask
        return _empty_mask_result(log_prob, mask)

    if decoupled:  # old_log_prob is log pi_prox; mu comes back from the weights pi_prox / mu
        anchor, recoverable = rollout_log_prob_from_decoupled(old_log_prob, rollout_is_weights, mask)
        centre, unrecoverable = old_log_prob, (mask & ~recoverable).sum().float()
    else:
        anchor, centre, unrecoverable = old_log_prob, None, torch.zeros((), device=mask.device)
    if config.get("use_torch_compile", False):  # follow verl's switch: compiled exactly when verl compiles the actor
        values, grad_coef, stats = fast.compiled_evaluate(loss, log_prob, anchor, advantages, mask, centre)
    else:
        values, grad_coef, stats = fast.evaluate(loss, log_prob, anchor, advantages, mask, "when_reached", centre)
    loss_mat = fast.attach_gradient(log_prob, values, grad_coef)
    if rollout_is_weights is not None and not decoupled:  # decoupled: the ratio is already on mu
        loss_mat = loss_mat * torch.where(mask, rollout_is_weights.detach(), 0.0)
    batch_info = config.get("global_batch_info", None) or {}
    pg_loss = agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **batch_info)

    # One device sync reads the loss and every statistic.
    n_valid, n_unrecoverable, loss_value, *values_read = torch.stack(
        [mask.sum().float(), unrecoverable, pg_loss.detach().float(), *(v.float() for v in stats.values())]
    ).tolist()
    if n_valid == 0:
        return _empty_mask_result(log_prob, mask)
    if n_unrecoverable:
        raise ValueError(_unrecoverable_message(loss_mode, int(n_unrecoverable), int(n_valid)))
    if not all(math.isfinite(v) for v in (loss_value, *values_read)):
        raise FloatingPointError(_non_finite_message(loss_mode, mask, old_log_prob, log_prob, advantages,
                                                     rollout_is_weights))
    return pg_loss, _metrics(dict(zip(stats, values_read)))


def _metrics(stats: dict[str, float]) -> dict[str, float]:
    """verl's metric names for the statistics of `fast.evaluate` (docs/metrics.md)."""
    out = {METRIC_PREFIX + k: v for k, v in stats.items() if k not in ("neg_log_ratio_mean", "signed_shift_max")}
    # verl's dashboard conventions: clipfrac = share of tokens past the boundary (where DPPO would mask),
    # clipfrac_lower = the negative-advantage part of it, ppo_kl = mean(log mu - log pi).
    out["actor/pg_clipfrac"] = stats["beyond_boundary_pos_frac"] + stats["beyond_boundary_neg_frac"]
    out["actor/pg_clipfrac_lower"] = stats["beyond_boundary_neg_frac"]
    out["actor/ppo_kl"] = stats["neg_log_ratio_mean"]
    return out


def _empty_mask_result(log_prob: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """No valid token (verl pads a batch that does not divide with all-masked samples): a zero loss that still has
    a graph (verl calls backward on it), and the same metric keys as every other call, all 0.0. verl gathers
    metrics per micro-batch across data-parallel ranks and requires the same keys everywhere."""
    zero = torch.where(mask, log_prob, 0.0).sum() * 0.0
    return zero, _metrics(dict.fromkeys(fast.STATISTIC_NAMES, 0.0))


# ---- decoupled inputs: mu from pi_prox and the importance weights --------------------------------------------------


# verl computes the weights as exp(clamp(log pi_prox - log mu, -20, 20)) (rollout_corr_helper.SAFETY_BOUND): a weight
# at either end of that range may have been clamped, so mu cannot be recovered from it.
_IS_LOG_BOUND = 20.0
_IS_BOUND_TOLERANCE = 1e-4  # relative; float32 rounding of exp(+-20) is ~1e-7


def recoverable_weights(rollout_is_weights: torch.Tensor) -> torch.Tensor:
    """True where a weight pi_prox / mu is finite and strictly inside verl's safety range (e^-20, e^20), so that mu
    follows from it exactly (up to float rounding); False at zero (IcePop), clamped, NaN or inf weights."""
    w = rollout_is_weights.detach().to(losses.compute_dtype(rollout_is_weights))
    upper = math.exp(_IS_LOG_BOUND) * (1.0 - _IS_BOUND_TOLERANCE)
    lower = math.exp(-_IS_LOG_BOUND) * (1.0 + _IS_BOUND_TOLERANCE)
    return torch.isfinite(w) & (w > lower) & (w < upper)


def rollout_log_prob_from_decoupled(old_log_prob: torch.Tensor, rollout_is_weights: torch.Tensor,
                                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log mu, recoverable): log mu = log pi_prox - log(pi_prox / mu) at valid tokens with recoverable weights, 0
    elsewhere; `recoverable_weights` of the weights (the caller refuses a batch with an unrecoverable valid token)."""
    dtype = losses.compute_dtype(old_log_prob)
    w = rollout_is_weights.detach().to(dtype)
    recoverable = recoverable_weights(rollout_is_weights)
    ok = mask & recoverable
    return torch.where(ok, old_log_prob.detach().to(dtype) - torch.log(torch.where(ok, w, 1.0)), 0.0), recoverable


def _no_weights_message(loss_mode: str) -> str:
    return (
        f"loss_mode={loss_mode} centres its regularizer on pi_prox and anchors its ratio on mu, so it needs verl's "
        "decoupled mode: old_log_prob = the recomputed pi_prox and rollout_is_weights = pi_prox/mu, token-level and "
        "untruncated. verl passed no rollout_is_weights (bypass mode, or rollout_is=null). Set "
        + " ".join(modes.DECOUPLED_OVERRIDES) + " (python -m verl_drpo overrides " + loss_mode + " prints them)."
    )


def _unrecoverable_message(loss_mode: str, n_bad: int, n_valid: int) -> str:
    return (
        f"loss_mode={loss_mode}: {n_bad} of {n_valid} valid tokens have a rollout_is_weight from which mu cannot be "
        "recovered (zero, non-finite, or at verl's e^+-20 clamp: an IcePop threshold, or pi_prox/mu beyond "
        "e^+-20). Use token-level weights that are never truncated: " + " ".join(modes.DECOUPLED_OVERRIDES[2:]) + "."
    )


# ---- from verl's config to a losses.PolicyLoss --------------------------------------------------------------------


def policy_loss_of(loss_mode: str, config: Any) -> losses.PolicyLoss:
    """The `losses.PolicyLoss` of `loss_mode` with the hyper-parameters in `config.policy_loss` (the fields of
    `DRPOPolicyLossConfig`; the table's defaults where verl's plain PolicyLossConfig lacks them)."""
    if config is None:
        raise ValueError(f"loss_mode={loss_mode!r} needs the actor config (verl passes config=ActorConfig)")
    mode = modes.get(loss_mode)
    policy_loss = config.get("policy_loss", None) if hasattr(config, "get") else None
    if policy_loss is None:
        _warn_defaults_used(loss_mode, type(config).__name__)
    values = []
    for name in mode.reads:
        value = policy_loss.get(name, None) if policy_loss is not None else None
        if value is None:
            value = modes.POLICY_LOSS_FIELDS[name].default
        values.append(modes.validate_positive(f"policy_loss.{name}", value))
    return _policy_loss(mode.formula, tuple(values))


@functools.lru_cache(maxsize=64)  # one object per setting, so a compiled evaluation is reused, not re-traced
def _policy_loss(formula: str, values: tuple[float, ...]) -> losses.PolicyLoss:
    return getattr(losses, formula)(*values)


@functools.cache  # once per mode and process, not once per micro-batch
def _warn_defaults_used(loss_mode: str, config_type: str) -> None:
    mode = modes.get(loss_mode)
    defaults = ", ".join(f"{name}={modes.POLICY_LOSS_FIELDS[name].default}" for name in mode.reads)
    warnings.warn(
        f"loss_mode={loss_mode} was called with a {config_type} that has no policy_loss section (verl's "
        f"distillation path does this): using the defaults {defaults}.",
        UserWarning,
        stacklevel=4,
    )


@functools.cache  # once per mode and process, not once per micro-batch
def _warn_decoupled_anchor(loss_mode: str) -> None:
    warnings.warn(
        f"loss_mode={loss_mode} received rollout_is_weights: verl is in decoupled mode, so r is anchored on the "
        "trainer's recomputed old log-probs and mu enters only through the IS weights. DRPO's trust region is "
        "meant to be anchored on the rollout log-probs: set algorithm.rollout_correction.bypass_mode=True and "
        "actor_rollout_ref.rollout.calculate_log_probs=True.",
        UserWarning,
        stacklevel=4,
    )


# ---- bad input ------------------------------------------------------------------------------------------------------


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


def _non_finite_message(loss_mode, mask, old_log_prob, log_prob, advantages, rollout_is_weights) -> str:
    """Slow path, taken only when the loss or a statistic came out non-finite: say which input is to blame and
    where. (Padded positions cannot cause it: `fast.token_terms` zeroes them.)"""
    named = {"log_prob": log_prob, "old_log_prob": old_log_prob, "advantages": advantages}
    if rollout_is_weights is not None:
        named["rollout_is_weights"] = rollout_is_weights
    parts = []
    for name, tensor in named.items():
        bad = ~torch.isfinite(tensor)
        if bad.any():
            n_valid, n_pad = int((bad & mask).sum()), int((bad & ~mask).sum())
            parts.append(f"{name}: {n_valid} non-finite at valid tokens, {n_pad} at padded positions")
    detail = "; ".join(parts) if parts else "inputs are finite; the loss overflowed (check the log-prob scale)"
    return f"{loss_mode}: non-finite values in the policy-loss inputs ({detail})."


# ---- registration: one verl loss per name in the table (aliases included) ----------------------------------------


def _registered(loss_mode: str):
    def policy_loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return compute_policy_loss(
            loss_mode, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
        )

    policy_loss_fn.__name__ = policy_loss_fn.__qualname__ = f"compute_policy_loss_{loss_mode}"
    policy_loss_fn.__doc__ = f"verl policy loss `{loss_mode}` (verl-drpo): `compute_policy_loss('{loss_mode}', ...)`."
    return register_policy_loss(loss_mode)(policy_loss_fn)


REGISTERED: dict[str, Any] = {name: _registered(name) for name in modes.REGISTERED_NAMES}
compute_policy_loss_drpo = REGISTERED["drpo"]

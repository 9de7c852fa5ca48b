"""verl glue: registers every verl-drpo loss mode of `verl_drpo.modes` with verl's policy-loss registry.

verl imports this module on every `import verl` (entry point `verl_drpo` in the `verl.plugins` group), in the
driver and in every Ray worker. Cluster fallback: `VERL_USE_EXTERNAL_MODULES=verl_drpo.plugin`.

Each mode is one `@verl_loss("<name>")` function near the end of this module that returns its formula from
`verl_drpo.losses` (`drpo` -> `losses.drpo(delta)`): from a name in verl's registry to its mathematics is one step.
verl's call then reaches `compute_policy_loss`, one function from verl's arguments to `(loss, metrics)`, as a loss
in verl's `core_algos.py`. It aggregates with verl's `agg_loss(..., **config.global_batch_info)`, so micro-batch and
data-parallel splits sum to the global loss in every `loss_agg_mode`, provided `seq-mean-token-sum-norm` runs with
`actor.loss_scale_factor` set (without it verl divides by each micro-batch's own padded length; see
docs/algorithm.md). It multiplies by `rollout_is_weights` when verl passes them and adds no entropy or KL term
(verl's `ppo_loss` adds those itself). The mathematics is in `verl_drpo.losses` (evaluated by `verl_drpo.fast`);
metric names are in `verl_drpo.metrics` and docs/metrics.md.

Errors: what every rank meets alike (shapes, dtypes, a missing config, drpo_prox without weights) raises. What one
rank's data holds (a non-finite log-prob, advantage or weight at a valid token) does not: a raise there would leave
the other ranks waiting in their next collective until the NCCL timeout. Those tokens are left out of the loss and
counted (`actor/drpo/nonfinite_frac`) unless `policy_loss.nonfinite_tokens=raise` (`modes.NONFINITE_FIELD`).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from verl_drpo import fast, losses, metrics, modes
from verl_drpo._compat import check_verl

check_verl()  # a verl without an API used here fails now, naming it; `python -m verl_drpo doctor` shows why

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss  # noqa: E402


def compute_policy_loss(
    loss_mode: str,
    formula: Callable[[SimpleNamespace], losses.PolicyLoss],
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
        loss_mode, formula: the mode's name and its `@verl_loss` function (hyper-parameters -> `losses.PolicyLoss`).
        old_log_prob, log_prob, advantages, response_mask, rollout_is_weights: (batch_size, response_length);
            `old_log_prob` is the anchor (the rollout log-probs mu in verl's bypass mode).
        loss_agg_mode, config: as verl passes them (`config` is the ActorConfig).
    Returns:
        (scalar loss with a graph to `log_prob`, metrics: name -> float, the same keys on every call).
    """
    _check_inputs(loss_mode, old_log_prob, log_prob, advantages, response_mask, rollout_is_weights)
    loss = policy_loss_of(loss_mode, formula, config)
    strict = nonfinite_policy(config) == "raise"
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
        centre = old_log_prob
    else:
        anchor, centre, recoverable = old_log_prob, None, None
    batch = _MicroBatch(loss, mask, log_prob, anchor, advantages, centre,
                        None if decoupled else rollout_is_weights,  # decoupled: the ratio is already on mu
                        loss_agg_mode, config)
    # The common case costs nothing extra: one evaluation over the valid tokens. A non-finite input at a valid token
    # always shows in the statistics read by its one sync (log pi or mu: the unclamped |log r|; A or a weight: the
    # loss), and an unrecoverable drpo_prox weight in its count; only then is the micro-batch looked at token by token.
    unrecoverable = (mask & ~recoverable).sum() if decoupled else None
    result = _loss_on(batch, mask, also_read=unrecoverable)
    n_valid = result.n_valid
    if n_valid == 0:
        return _empty_mask_result(log_prob, mask)
    n_unrecoverable = result.also_read
    if result.finite and not n_unrecoverable:
        return result.pg_loss, _metrics(result.stats, nonfinite_frac=0.0)
    if strict:  # rank-local: the other ranks wait in their next collective until the NCCL timeout
        if n_unrecoverable:
            raise ValueError(_unrecoverable_message(loss_mode, int(n_unrecoverable), int(n_valid)))
        raise FloatingPointError(_non_finite_message(loss_mode, mask, old_log_prob, log_prob, advantages,
                                                     rollout_is_weights))
    # Data errors are rank-local (one rank's micro-batch holds the -inf, the others do not), so the tokens they touch
    # are left out and counted, and the step goes on.
    kept = _usable_tokens(batch, recoverable)
    result = _loss_on(batch, kept)
    if not result.finite and result.n_kept:  # finite inputs whose terms overflowed: leave those tokens out too
        result = _loss_on(batch, kept & torch.isfinite(result.values) & torch.isfinite(result.grad_coef))
    n_kept = result.n_kept if result.finite else 0  # not finite: a sum overflowed, none of the micro-batch is usable
    nonfinite_frac = (n_valid - n_kept) / n_valid
    _nonfinite_report.add(loss_mode, int(n_valid - n_kept), int(n_valid))
    if n_kept == 0:
        return _empty_mask_result(log_prob, mask, nonfinite_frac)
    return result.pg_loss, _metrics(result.stats, nonfinite_frac)


@dataclass(frozen=True)
class _MicroBatch:
    """What one evaluation of the loss reads: the formula, the valid tokens, the log-probs it is anchored and centred
    on (`centre`: log pi_prox for drpo_prox, else None), the importance weights that multiply the token loss (bypass
    inputs only; None otherwise), and verl's aggregation."""

    loss: losses.PolicyLoss
    mask: torch.Tensor
    log_prob: torch.Tensor
    anchor: torch.Tensor
    advantages: torch.Tensor
    centre: torch.Tensor | None
    token_weights: torch.Tensor | None
    loss_agg_mode: str
    config: Any


@dataclass(frozen=True)
class _Evaluation:
    """One evaluation over some tokens: the aggregated loss and what its one device sync read."""

    pg_loss: torch.Tensor
    n_valid: float  # valid tokens of the micro-batch
    n_kept: float  # the tokens evaluated
    finite: bool  # the loss and every statistic are finite
    stats: dict[str, float]
    also_read: float | None  # the value of `also_read`, read in the same sync
    values: torch.Tensor  # per-token loss values and gradient coefficients (to find tokens that overflowed)
    grad_coef: torch.Tensor


def _loss_on(batch: _MicroBatch, kept: torch.Tensor, also_read: torch.Tensor | None = None) -> _Evaluation:
    """The loss aggregated over the tokens `kept` (a sub-mask of `batch.mask`) and its statistics, read in one device
    sync together with the 0-dim tensor `also_read`, if given."""
    b = batch
    if b.config.get("use_torch_compile", False):  # follow verl's switch: compiled exactly when verl compiles the actor
        values, grad_coef, stats = fast.compiled_evaluate(b.loss, b.log_prob, b.anchor, b.advantages, kept, b.centre)
    else:
        values, grad_coef, stats = fast.evaluate(b.loss, b.log_prob, b.anchor, b.advantages, kept, "when_reached",
                                                 b.centre)
    loss_mat = fast.attach_gradient(b.log_prob, values, grad_coef)
    if b.token_weights is not None:
        loss_mat = loss_mat * torch.where(kept, b.token_weights.detach(), 0.0)
    batch_info = b.config.get("global_batch_info", None) or {}
    pg_loss = agg_loss(loss_mat=loss_mat, loss_mask=kept, loss_agg_mode=b.loss_agg_mode, **batch_info)

    extra = [] if also_read is None else [also_read.float()]
    n_valid = b.mask.sum().float()
    n_valid, n_kept, loss_value, *values_read = torch.stack(
        [n_valid, n_valid if kept is b.mask else kept.sum().float(), pg_loss.detach().float(),
         *(v.float() for v in stats.values()), *extra]
    ).tolist()
    stats_read = dict(zip(stats, values_read))  # zip stops at the statistics: `also_read` is the extra last value
    finite = all(math.isfinite(v) for v in (loss_value, *stats_read.values()))
    return _Evaluation(pg_loss, n_valid, n_kept, finite, stats_read, values_read[-1] if extra else None, values,
                       grad_coef)


def _usable_tokens(batch: _MicroBatch, recoverable: torch.Tensor | None) -> torch.Tensor:
    """The valid tokens whose every input is finite (and, decoupled, whose mu is recoverable from its weight)."""
    b = batch
    usable = b.mask & torch.isfinite(b.log_prob.detach()) & torch.isfinite(b.anchor) & torch.isfinite(b.advantages)
    if b.centre is not None:
        usable &= torch.isfinite(b.centre.detach())
    if recoverable is not None:
        usable &= recoverable
    if b.token_weights is not None:
        usable &= torch.isfinite(b.token_weights.detach())
    return usable


def nonfinite_policy(config: Any) -> str:
    """`modes.NONFINITE_FIELD` of `config.policy_loss` ("mask" or "raise"); the default where the config lacks it."""
    policy_loss = config.get("policy_loss", None) if config is not None and hasattr(config, "get") else None
    value = policy_loss.get(modes.NONFINITE_FIELD, None) if policy_loss is not None else None
    if value is None:
        return modes.NONFINITE_DEFAULT
    problem = modes.nonfinite_problem(value)
    if problem:
        raise ValueError(f"policy_loss.{modes.NONFINITE_FIELD} {problem}")
    return value


class _NonFiniteReport:
    """One warning per rank at most every `interval_s` seconds (a training step takes longer), with the counts of
    every micro-batch since the previous warning: a burst of bad tokens does not flood the log."""

    def __init__(self, interval_s: float = 60.0):
        self.interval_s = interval_s
        self.last_warned = -math.inf
        self.dropped = self.valid = self.micro_batches = 0

    def add(self, loss_mode: str, dropped: int, valid: int) -> None:
        self.dropped, self.valid, self.micro_batches = self.dropped + dropped, self.valid + valid, \
            self.micro_batches + 1
        now = time.monotonic()
        if now - self.last_warned < self.interval_s:
            return
        warnings.warn(
            f"loss_mode={loss_mode}: left {self.dropped} of {self.valid} valid tokens out of the loss in "
            f"{self.micro_batches} micro-batch(es) since the last such warning, because a log-prob (pi, mu), "
            f"advantage or importance weight there is not finite ({metrics.NONFINITE_FRAC} counts them per step). "
            f"Override +{modes.POLICY_LOSS_KEY}.{modes.NONFINITE_FIELD}=raise to stop instead (rank-local: other "
            "ranks then hang until the NCCL timeout).",
            RuntimeWarning,
            stacklevel=5,
        )
        self.last_warned, self.dropped, self.valid, self.micro_batches = now, 0, 0, 0


_nonfinite_report = _NonFiniteReport()


def _metrics(stats: dict[str, float], nonfinite_frac: float) -> dict[str, float]:
    """The logged names (``verl_drpo.metrics``, docs/metrics.md) of the statistics of `fast.evaluate`, and the share
    of valid tokens left out for non-finite inputs."""
    out = {metrics.logged_name(k): v for k, v in stats.items() if k not in metrics.INTERNAL}
    out[metrics.NONFINITE_FRAC] = nonfinite_frac
    out[metrics.EMPTY_MICROBATCH_FRAC] = 0.0
    # verl's dashboard conventions: clipfrac = share of tokens past the boundary (where DPPO would mask),
    # clipfrac_lower = the negative-advantage part of it, ppo_kl = mean(log mu - log pi).
    out[metrics.PG_CLIPFRAC] = stats["beyond_boundary_pos_frac"] + stats["beyond_boundary_neg_frac"]
    out[metrics.PG_CLIPFRAC_LOWER] = stats["beyond_boundary_neg_frac"]
    out[metrics.PPO_KL] = stats["neg_log_ratio_mean"]
    return out


def _empty_mask_result(log_prob: torch.Tensor, mask: torch.Tensor,
                       nonfinite_frac: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """No valid token (verl pads a batch that does not divide with all-masked samples), or none with finite inputs:
    a zero loss that still has a graph (verl calls backward on it), and the same metric keys as every other call,
    all 0.0 but `nonfinite_frac` and `empty_microbatch_frac` (1.0). verl gathers metrics per micro-batch across data-parallel ranks and requires the
    same keys everywhere."""
    zero = torch.where(torch.zeros_like(mask), log_prob, 0.0).sum() * 0.0  # selects no log_prob: no NaN
    out = _metrics(dict.fromkeys(fast.STATISTIC_NAMES, 0.0), nonfinite_frac)
    out[metrics.EMPTY_MICROBATCH_FRAC] = 1.0
    return zero, out


# ---- decoupled inputs: mu from pi_prox and the importance weights --------------------------------------------------


# verl computes the weights as exp(clamp(log pi_prox - log mu, -20, 20)) (modes.LOG_RATIO_CLAMP): a weight at either
# end of that range may have been clamped, so mu cannot be recovered from it.
_IS_BOUND_TOLERANCE = 1e-4  # relative; float32 rounding of exp(+-20) is ~1e-7


def recoverable_weights(rollout_is_weights: torch.Tensor) -> torch.Tensor:
    """True where a weight pi_prox / mu is finite and strictly inside verl's safety range (e^-20, e^20), so that mu
    follows from it exactly (up to float rounding); False at zero (IcePop), clamped, NaN or inf weights."""
    w = rollout_is_weights.detach().to(losses.compute_dtype(rollout_is_weights))
    upper = math.exp(modes.LOG_RATIO_CLAMP) * (1.0 - _IS_BOUND_TOLERANCE)
    lower = math.exp(-modes.LOG_RATIO_CLAMP) * (1.0 + _IS_BOUND_TOLERANCE)
    return torch.isfinite(w) & (w > lower) & (w < upper)


def rollout_log_prob_from_decoupled(old_log_prob: torch.Tensor, rollout_is_weights: torch.Tensor,
                                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log mu, recoverable): log mu = log pi_prox - log(pi_prox / mu) at valid tokens with recoverable weights, 0
    elsewhere; `recoverable_weights` of the weights (the caller leaves a valid token with an unrecoverable weight out
    of the loss, or refuses it in strict mode)."""
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


def hyperparameters(loss_mode: str, config: Any) -> SimpleNamespace:
    """The hyper-parameters `loss_mode` reads (`modes.LossMode.reads`) from `config.policy_loss` (the fields of
    `DRPOPolicyLossConfig`; the table's defaults where verl's plain PolicyLossConfig lacks them), validated."""
    if config is None:
        raise ValueError(f"loss_mode={loss_mode!r} needs the actor config (verl passes config=ActorConfig)")
    policy_loss = config.get("policy_loss", None) if hasattr(config, "get") else None
    if policy_loss is None:
        _warn_defaults_used(loss_mode, type(config).__name__)
    values = {}
    for name in modes.get(loss_mode).reads:
        value = policy_loss.get(name, None) if policy_loss is not None else None
        if value is None:
            value = modes.POLICY_LOSS_FIELDS[name].default
        values[name] = modes.POLICY_LOSS_FIELDS[name].validate(value, f"policy_loss.{name}")
    return SimpleNamespace(**values)


def policy_loss_of(loss_mode: str, formula, config: Any) -> losses.PolicyLoss:
    """`formula` (a mode's `@verl_loss` function) applied to the hyper-parameters in `config`."""
    return _built(formula, tuple(sorted(vars(hyperparameters(loss_mode, config)).items())))


@functools.lru_cache(maxsize=64)  # one object per setting, so a compiled evaluation is reused, not re-traced
def _built(formula, values: tuple[tuple[str, float], ...]) -> losses.PolicyLoss:
    return formula(SimpleNamespace(**dict(values)))


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


# ---- the modes: each registered name leads to its formula in one step ------------------------------------------------

REGISTERED: dict[str, Callable[..., tuple[torch.Tensor, dict[str, float]]]] = {}


def verl_loss(loss_mode: str):
    """Register the decorated function (the mode's hyper-parameters -> its `losses.PolicyLoss`) with verl as policy
    loss `loss_mode`, and under the table's aliases of it; verl calls it with its usual keywords."""
    mode = modes.get(loss_mode)

    def register(formula):
        def policy_loss_fn(
            old_log_prob: torch.Tensor,
            log_prob: torch.Tensor,
            advantages: torch.Tensor,
            response_mask: torch.Tensor,
            loss_agg_mode: str = "token-mean",
            config: Any = None,
            rollout_is_weights: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, dict[str, float]]:
            return compute_policy_loss(loss_mode, formula, old_log_prob, log_prob, advantages, response_mask,
                                       loss_agg_mode, config, rollout_is_weights)

        policy_loss_fn.__name__ = policy_loss_fn.__qualname__ = f"compute_policy_loss_{loss_mode}"
        policy_loss_fn.__doc__ = formula.__doc__
        policy_loss_fn.__wrapped__ = formula
        for name in (loss_mode, *mode.aliases):
            REGISTERED[name] = register_policy_loss(name)(policy_loss_fn)
        return formula

    return register


@verl_loss("drpo")
def drpo(p) -> losses.PolicyLoss:
    """DRPO, arXiv 2606.09821: Eq. 8, gradient weight Eq. 9 (alias `spo_adaptive_eps`, the authors' verl name)."""
    return losses.drpo(p.drpo_delta)


@verl_loss("mask_drpo")
def mask_drpo(p) -> losses.PolicyLoss:
    """Mask-DRPO (the paper's ablation): DRPO's penalty only outside DPPO's Binary-TV region."""
    return losses.mask_drpo(p.drpo_delta, p.mask_drpo_tv_delta)


@verl_loss("spo")
def spo(p) -> losses.PolicyLoss:
    """SPO (arXiv 2401.16025): the quadratic in ratio space."""
    return losses.spo(p.spo_epsilon, p.mask_drpo_tv_delta)


@verl_loss("pg_is")
def pg_is(p) -> losses.PolicyLoss:
    """PG-IS (the paper's ablation): the unregularized importance-sampled surrogate."""
    return losses.pg_is(p.mask_drpo_tv_delta)


@verl_loss("drpo_prox")
def drpo_prox(p) -> losses.PolicyLoss:
    """DRPO-prox (beyond the paper): DRPO's regularizer centred on pi_prox, in verl's decoupled mode."""
    return losses.drpo_prox(p.drpo_delta)


compute_policy_loss_drpo = REGISTERED["drpo"]


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

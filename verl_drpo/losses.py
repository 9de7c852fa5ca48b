"""DRPO's mathematics, and that of the baselines verl lacks. Pure torch: this module never imports verl.

Paper: Yao et al., "Rethinking the Divergence Regularization in LLM RL", arXiv 2606.09821 (DRPO).

Notation, per response token t of a sequence sampled from the rollout engine:
    mu_t = mu(y_t | s_t)       probability of the sampled token under the behaviour (rollout-engine) policy
    pi_t = pi_theta(y_t | s_t) probability under the policy being trained
    r_t  = pi_t / mu_t         importance ratio, computed as exp(clamp(log pi_t - log mu_t, -20, 20))
    A_t                        advantage (group-centred, not divided by the group std, as in the paper)
    D_t  = |pi_t - mu_t|       Binary-TV divergence of the sampled token (DPPO, arXiv 2602.04879)

DRPO objective, Eq. 8, written as the per-token loss to MINIMISE:

    l_t = -A_t r_t + |A_t| mu_t (r_t - 1)^2 / (2 delta)          [ = -A_t r_t + |A_t| (pi_t - mu_t)^2 / (2 delta mu_t) ]

A_t and mu_t are constants; r_t is differentiable, with no stop-gradient, truncation or mask. Its gradient, Eq. 9:

    grad l_t = -w_t A_t r_t grad log pi_t,      w_t = 1 - sign(A_t) (pi_t - mu_t) / delta          (Table 1)

w_t lies in [1 - 1/delta, 1 + 1/delta] for every token (D_t <= 1). For an update that moves the token away from mu
(sign(A_t (r_t - 1)) > 0), w_t falls linearly from 1 at D_t = 0 to 0 at the Binary-TV boundary D_t = delta and turns
negative beyond it, pulling the token back: the per-token optimum is pi* = mu + sign(A) delta, DPPO's boundary.

Baselines and ablations named by the paper that verl 0.9.1 lacks (verl has `vanilla`, `dppo_tv`, `dppo_kl`):
    SPO (arXiv 2401.16025):  l_t = -A_t r_t + |A_t| (r_t - 1)^2 / (2 eps),    w_t = 1 - sign(A_t) (r_t - 1) / eps
    PG-IS (unregularized):   l_t = -A_t r_t,                                  w_t = 1
    Mask-DRPO:               DRPO's penalty only on tokens outside DPPO's Binary-TV region
                             (A_t > 0 and pi_t - mu_t > delta_tv, or A_t < 0 and mu_t - pi_t > delta_tv).

The delta scale (an open point, stated plainly): the paper sets delta = 12.5 (its §4). With D_t <= 1 the weight
then stays within [0.92, 1.08], so the boundary is never reached and DRPO behaves as an untruncated importance-
sampled policy gradient with a +-8 % linear pull toward mu. A delta below 1 (DPPO uses 0.15-0.2) makes the
boundary and the corrective regime (w_t < 0) reachable. See docs/algorithm.md.

All per-token functions take tensors of shape (batch_size, response_length) and return the same shape; the
aggregation over tokens (verl's `loss_agg_mode`) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# verl clamps every log-ratio to this range before exp(); we do the same so ratios agree with verl's losses.
LOG_RATIO_CLAMP = 20.0


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    # bf16/fp16 log-probs are upcast: r - 1 and pi - mu lose all precision in 8-bit mantissas.
    return torch.promote_types(tensor.dtype, torch.float32)


def importance_ratio(log_prob: torch.Tensor, anchor_log_prob: torch.Tensor) -> torch.Tensor:
    """r = exp(clamp(log pi - log mu, -20, 20)), differentiable in log_prob only."""
    dtype = _compute_dtype(log_prob)
    log_ratio = log_prob.to(dtype) - anchor_log_prob.detach().to(dtype)
    return torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


# ---- penalties and losses (Eq. 8 and the baselines) -------------------------------------------------------------


def drpo_penalty(ratio: torch.Tensor, mu: torch.Tensor, advantages: torch.Tensor, delta: float) -> torch.Tensor:
    """|A| mu (r - 1)^2 / (2 delta): the advantage-weighted squared probability shift, divided by 2 delta mu."""
    return advantages.abs() * mu * (ratio - 1.0).square() / (2.0 * delta)


def drpo_token_loss(
    log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, advantages: torch.Tensor, delta: float
) -> torch.Tensor:
    """Eq. 8: l = -A r + |A| mu (r - 1)^2 / (2 delta). Shapes (bs, response_length)."""
    ratio = importance_ratio(log_prob, rollout_log_prob)
    adv = advantages.detach().to(ratio.dtype)
    mu = torch.exp(rollout_log_prob.detach().to(ratio.dtype))
    return -adv * ratio + drpo_penalty(ratio, mu, adv, delta)


def spo_penalty(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    """|A| (r - 1)^2 / (2 eps): the same quadratic in ratio space, without DRPO's mu weight."""
    return advantages.abs() * (ratio - 1.0).square() / (2.0 * epsilon)


def spo_token_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """SPO: l = -A r + |A| (r - 1)^2 / (2 eps)."""
    ratio = importance_ratio(log_prob, old_log_prob)
    adv = advantages.detach().to(ratio.dtype)
    return -adv * ratio + spo_penalty(ratio, adv, epsilon)


def pg_is_token_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """PG-IS, the unregularized surrogate: l = -A r (no clip, no truncation)."""
    ratio = importance_ratio(log_prob, old_log_prob)
    return -advantages.detach().to(ratio.dtype) * ratio


def outside_tv_region(prob_diff: torch.Tensor, advantages: torch.Tensor, delta_tv: float) -> torch.Tensor:
    """DPPO's Binary-TV mask, inverted: True where the token has moved beyond the trust region in the direction
    its advantage pushes it (A > 0 and pi - mu > delta_tv, or A < 0 and mu - pi > delta_tv). prob_diff = pi - mu."""
    return torch.sign(advantages) * prob_diff > delta_tv


def mask_drpo_token_loss(
    log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    delta: float,
    delta_tv: float,
) -> torch.Tensor:
    """Mask-DRPO ablation: -A r everywhere, DRPO's penalty only where `outside_tv_region` holds."""
    ratio = importance_ratio(log_prob, rollout_log_prob)
    adv = advantages.detach().to(ratio.dtype)
    mu = torch.exp(rollout_log_prob.detach().to(ratio.dtype))
    outside = outside_tv_region(mu * (ratio.detach() - 1.0), adv, delta_tv)
    return -adv * ratio + outside * drpo_penalty(ratio, mu, adv, delta)


# ---- gradient weights (Eq. 9, Table 1): grad l = -w A r grad log pi ---------------------------------------------


def drpo_gradient_weight(prob_diff: torch.Tensor, advantages: torch.Tensor, delta: float) -> torch.Tensor:
    """w = 1 - sign(A) (pi - mu) / delta, within [1 - 1/delta, 1 + 1/delta]. prob_diff = pi - mu."""
    return torch.sign(advantages).mul_(prob_diff).mul_(-1.0 / delta).add_(1.0)  # in place: one temporary


def spo_gradient_weight(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    """w = 1 - sign(A (r - 1)) |r - 1| / eps = 1 - sign(A) (r - 1) / eps; unbounded as mu -> 0."""
    return torch.sign(advantages).mul_(ratio - 1.0).mul_(-1.0 / epsilon).add_(1.0)


def mask_drpo_gradient_weight(
    prob_diff: torch.Tensor, advantages: torch.Tensor, delta: float, delta_tv: float
) -> torch.Tensor:
    """DRPO's weight outside the Binary-TV region, 1 inside it."""
    outside = outside_tv_region(prob_diff, advantages, delta_tv)
    return torch.where(outside, drpo_gradient_weight(prob_diff, advantages, delta), 1.0)


# ---- one description per loss; the fast path that verl calls -------------------------------------------------------
#
# Every loss here is l = -A r + penalty with grad l = -w A r grad log pi. The functions above are the readable
# reference (plain autograd). `policy_loss_terms` computes the same values in one no-grad pass and attaches the
# gradient of Eq. 9 directly, which is ~3x cheaper than autograd through the formula and leaves the per-token
# quantities in hand for the diagnostics. Tests check it against the reference, value and gradient.


@dataclass(frozen=True)
class TokenTerms:
    """Detached per-token quantities, shape (batch_size, response_length), computed in float32 or wider."""

    log_ratio: torch.Tensor  # log pi - log mu, NOT clamped (the training-inference mismatch)
    clamped_log_ratio: torch.Tensor  # clamp(log_ratio, -20, 20): what the loss sees
    ratio: torch.Tensor  # r = exp(clamped_log_ratio)
    mu: torch.Tensor  # the anchor's probability
    prob_diff: torch.Tensor  # pi - mu = mu (r - 1), exact wherever the log-ratio is not clamped
    advantages: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_log_probs(
        cls, log_prob: torch.Tensor, anchor_log_prob: torch.Tensor, advantages: torch.Tensor
    ) -> "TokenTerms":
        dtype = _compute_dtype(log_prob)
        anchor = anchor_log_prob.detach().to(dtype)
        log_ratio = log_prob.detach().to(dtype) - anchor
        clamped = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ratio = torch.exp(clamped)
        mu = torch.exp(anchor)
        return cls(log_ratio, clamped, ratio, mu, torch.sub(ratio, 1.0).mul_(mu), advantages.detach().to(dtype))


@dataclass(frozen=True)
class PolicyLoss:
    """A loss of the family l = -A r + penalty, grad l = -w A r grad log pi.

    `boundary` is the Binary-TV threshold that the beyond-boundary diagnostics refer to.
    """

    name: str
    penalty: Callable[[TokenTerms], torch.Tensor]
    gradient_weight: Callable[[TokenTerms], torch.Tensor]
    boundary: float


def drpo(delta: float) -> PolicyLoss:
    return PolicyLoss(
        name="drpo",
        penalty=lambda t: drpo_penalty(t.ratio, t.mu, t.advantages, delta),
        gradient_weight=lambda t: drpo_gradient_weight(t.prob_diff, t.advantages, delta),
        boundary=delta,
    )


def spo(epsilon: float, delta_tv: float) -> PolicyLoss:
    return PolicyLoss(
        name="spo",
        penalty=lambda t: spo_penalty(t.ratio, t.advantages, epsilon),
        gradient_weight=lambda t: spo_gradient_weight(t.ratio, t.advantages, epsilon),
        boundary=delta_tv,
    )


def pg_is(delta_tv: float) -> PolicyLoss:
    return PolicyLoss(
        name="pg_is",
        penalty=lambda t: torch.zeros_like(t.ratio),
        gradient_weight=lambda t: torch.ones_like(t.ratio),
        boundary=delta_tv,
    )


def mask_drpo(delta: float, delta_tv: float) -> PolicyLoss:
    return PolicyLoss(
        name="mask_drpo",
        penalty=lambda t: outside_tv_region(t.prob_diff, t.advantages, delta_tv)
        * drpo_penalty(t.ratio, t.mu, t.advantages, delta),
        gradient_weight=lambda t: mask_drpo_gradient_weight(t.prob_diff, t.advantages, delta, delta_tv),
        boundary=delta_tv,
    )


class _ValueWithGradient(torch.autograd.Function):
    """Returns precomputed per-token loss values whose gradient w.r.t. log pi is the precomputed coefficient."""

    @staticmethod
    def forward(ctx, log_prob, values, grad_coef):
        ctx.save_for_backward(grad_coef)
        return values

    @staticmethod
    def backward(ctx, grad_output):
        (grad_coef,) = ctx.saved_tensors
        return grad_output * grad_coef, None, None


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor  # per-token loss, differentiable w.r.t. log_prob
    terms: TokenTerms
    weight: torch.Tensor  # w (detached)
    penalty: torch.Tensor  # penalty (detached)


@torch.no_grad()
def _values_and_gradient(loss: PolicyLoss, log_prob, anchor_log_prob, advantages):
    terms = TokenTerms.from_log_probs(log_prob, anchor_log_prob, advantages)
    penalty = loss.penalty(terms)
    values = torch.addcmul(penalty, terms.advantages, terms.ratio, value=-1.0)
    weight = loss.gradient_weight(terms)
    # d l / d log pi = -w A r, and zero where the clamp is active (as autograd through the clamp gives)
    grad_coef = torch.mul(weight, terms.advantages).mul_(terms.ratio).neg_()
    grad_coef.masked_fill_(terms.log_ratio != terms.clamped_log_ratio, 0.0)
    return LossTerms(values, terms, weight, penalty), grad_coef.to(log_prob.dtype)


def policy_loss_terms(
    loss: PolicyLoss, log_prob: torch.Tensor, anchor_log_prob: torch.Tensor, advantages: torch.Tensor
) -> LossTerms:
    """Per-token loss l = -A r + penalty with grad l = -w A r grad log pi, plus the quantities the diagnostics
    need."""
    parts, grad_coef = _values_and_gradient(loss, log_prob, anchor_log_prob, advantages)
    return LossTerms(_ValueWithGradient.apply(log_prob, parts.loss, grad_coef), parts.terms, parts.weight, parts.penalty)


# ---- diagnostics -----------------------------------------------------------------------------------------------
#
# Statistics over the valid tokens (mask True), as 0-dim tensors so a caller reads them all with one device sync.
# Masked sums are dot products with the float mask; masked extrema fill padding with -inf/+inf. The caller handles
# an empty mask.


def _masked_reducers(mask: torch.Tensor, dtype: torch.dtype):
    flat_bool = mask.reshape(-1)
    flat_mask = flat_bool.to(dtype)
    n = flat_mask.sum()

    def mean(x):
        return torch.dot(x.reshape(-1), flat_mask) / n

    def masked_max(x):
        return torch.where(flat_bool, x.reshape(-1), -torch.inf).amax()

    def masked_min(x):
        return torch.where(flat_bool, x.reshape(-1), torch.inf).amin()

    return mean, masked_max, masked_min


@torch.no_grad()
def summary_statistics(parts: LossTerms, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Divergence, ratio, weight and penalty statistics; `signed_shift_max` tells whether any token has moved past
    the Binary-TV boundary (> boundary) and `weight_min` whether any weight is negative: only then does
    `boundary_statistics` have anything non-zero to count."""
    t = parts.terms
    mean, masked_max, masked_min = _masked_reducers(mask, t.ratio.dtype)
    ratio_mean = mean(t.ratio)
    clamped_mean = mean(t.clamped_log_ratio)
    abs_diff = t.prob_diff.abs()
    return {
        "abs_prob_diff_mean": mean(abs_diff),
        "abs_prob_diff_max": masked_max(abs_diff),
        "weight_min": masked_min(parts.weight),
        "weight_mean": mean(parts.weight),
        "weight_max": masked_max(parts.weight),
        "penalty_mean": mean(parts.penalty),
        "ratio_mean": ratio_mean,
        "ratio_max": masked_max(t.ratio),
        "k3_kl": ratio_mean - 1.0 - clamped_mean,  # k3 estimator of KL(mu || pi) = E[r - 1 - log r] >= 0
        "abs_log_ratio_mean": mean(t.log_ratio.abs()),  # training-inference mismatch; unclamped on purpose
        "neg_log_ratio_mean": -clamped_mean,  # verl's `ppo_kl`
        "signed_shift_max": masked_max(torch.sign(t.advantages) * t.prob_diff),  # > 0: moved the way A pushes
    }


@torch.no_grad()
def boundary_statistics(loss: PolicyLoss, parts: LossTerms, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fractions of valid tokens past the Binary-TV boundary (split by the sign of A) and with a negative weight
    (the corrective regime, where the gradient pulls the token back toward mu)."""
    t = parts.terms
    n = mask.sum()
    beyond = outside_tv_region(t.prob_diff, t.advantages, loss.boundary) & mask
    return {
        "beyond_boundary_pos_frac": (beyond & (t.advantages > 0)).sum() / n,
        "beyond_boundary_neg_frac": (beyond & (t.advantages < 0)).sum() / n,
        "negative_weight_frac": ((parts.weight < 0) & mask).sum() / n,
    }


# The names of the statistics `evaluate` returns, in its order (the glue returns the same metric keys on every
# path, an empty micro-batch included).
STATISTIC_NAMES: tuple[str, ...] = (
    "abs_prob_diff_mean", "abs_prob_diff_max", "weight_min", "weight_mean", "weight_max", "penalty_mean",
    "ratio_mean", "ratio_max", "k3_kl", "abs_log_ratio_mean", "neg_log_ratio_mean", "signed_shift_max",
    "beyond_boundary_pos_frac", "beyond_boundary_neg_frac", "negative_weight_frac",
)


# ---- the whole per-micro-batch evaluation, for the verl glue -----------------------------------------------------


@torch.no_grad()
def evaluate(
    loss: PolicyLoss,
    log_prob: torch.Tensor,
    anchor_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    boundary_counts: str = "always",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss values, d loss / d log pi, statistics incl. `boundary_statistics`), all detached.

    boundary_counts="always" counts unconditionally: a pure function of tensors that torch.compile fuses into a few
    kernels. "when_reached" (eager) first reads two scalars and counts only if a token is past the boundary or has
    a negative weight (never at the paper's delta = 12.5); otherwise the counts are zero without a pass.
    """
    parts, grad_coef = _values_and_gradient(loss, log_prob, anchor_log_prob, advantages)
    stats = summary_statistics(parts, mask)
    if boundary_counts == "always":
        stats.update(boundary_statistics(loss, parts, mask))
    elif boundary_counts == "when_reached":
        if bool((stats["signed_shift_max"] > loss.boundary) | (stats["weight_min"] < 0)):
            stats.update(boundary_statistics(loss, parts, mask))
        else:
            zero = torch.zeros((), dtype=parts.loss.dtype, device=parts.loss.device)
            stats.update(beyond_boundary_pos_frac=zero, beyond_boundary_neg_frac=zero, negative_weight_frac=zero)
    else:
        raise ValueError(f"boundary_counts must be 'always' or 'when_reached', got {boundary_counts!r}")
    return parts.loss, grad_coef, stats


_compiled_evaluate = None


def compiled_evaluate(*args, **kwargs):
    """`evaluate` through torch.compile (built on first use; shapes are marked dynamic after the first change)."""
    global _compiled_evaluate
    if _compiled_evaluate is None:
        _compiled_evaluate = torch.compile(evaluate)
    return _compiled_evaluate(*args, **kwargs)


def attach_gradient(log_prob: torch.Tensor, values: torch.Tensor, grad_coef: torch.Tensor) -> torch.Tensor:
    """`values`, made differentiable w.r.t. `log_prob` with d values / d log_prob = grad_coef (elementwise)."""
    return _ValueWithGradient.apply(log_prob, values, grad_coef)

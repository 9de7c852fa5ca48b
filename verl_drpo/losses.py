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

Beyond the paper: DRPO-prox, the regularizer centred on the proximal policy (verl-drpo, not in the paper). With
pi_prox_t the probability of the sampled token under the policy at the start of the update (verl's recomputed old
log-probs, the same for every mini-batch of a rollout) and r_prox_t = pi_prox_t / mu_t:

    l_t = -A_t r_t + |A_t| mu_t (r_t - r_prox_t)^2 / (2 delta)   [ = -A_t r_t + |A_t| (pi_t - pi_prox_t)^2 / (2 delta mu_t) ]
    grad l_t = -w_t A_t r_t grad log pi_t,      w_t = 1 - sign(A_t) (pi_t - pi_prox_t) / delta

The ratio stays on mu (the importance weight that makes the estimate unbiased for data sampled from mu), but the
penalty and the weight are centred on pi_prox, so the per-token optimum is pi* = pi_prox + sign(A) delta: the trust
region moves with the policy instead of pulling every token back toward a mu that may be several versions old. With
pi_prox = mu it is DRPO. In expectation over a ~ mu the penalty is sum_a |A(a)| (pi(a) - pi_prox(a))^2 / (2 delta).

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

from verl_drpo.modes import LOG_RATIO_CLAMP  # verl's +-20 bound on every log-ratio, written once


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    # bf16/fp16 log-probs are upcast: r - 1 and pi - mu lose all precision in 8-bit mantissas.
    return torch.promote_types(tensor.dtype, torch.float32)


def importance_ratio(log_prob: torch.Tensor, anchor_log_prob: torch.Tensor) -> torch.Tensor:
    """r = exp(clamp(log pi - log mu, -20, 20)), differentiable in log_prob only."""
    dtype = compute_dtype(log_prob)
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


def drpo_prox_penalty(ratio: torch.Tensor, prox_ratio: torch.Tensor, mu: torch.Tensor, advantages: torch.Tensor,
                      delta: float) -> torch.Tensor:
    """|A| mu (r - r_prox)^2 / (2 delta) = |A| (pi - pi_prox)^2 / (2 delta mu): DRPO's penalty centred on pi_prox."""
    return advantages.abs() * mu * (ratio - prox_ratio).square() / (2.0 * delta)


def drpo_prox_token_loss(
    log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    prox_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    delta: float,
) -> torch.Tensor:
    """DRPO-prox: l = -A r + |A| mu (r - r_prox)^2 / (2 delta), r = pi / mu, r_prox = pi_prox / mu."""
    ratio = importance_ratio(log_prob, rollout_log_prob)
    prox_ratio = importance_ratio(prox_log_prob.detach(), rollout_log_prob)
    adv = advantages.detach().to(ratio.dtype)
    mu = torch.exp(rollout_log_prob.detach().to(ratio.dtype))
    return -adv * ratio + drpo_prox_penalty(ratio, prox_ratio, mu, adv, delta)


# Each verl-drpo mode's readable token loss, from the hyper-parameters `p` the mode reads (its `modes.LossMode.reads`,
# by name: `plugin.hyperparameters` builds them) and log pi, log mu, A and, for drpo_prox only, log pi_prox. The fast
# path (`PolicyLoss` below, what verl's call runs) is checked against these: tests/core and scripts/gpu_check.sh.
TOKEN_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "drpo": lambda p, lp, mu_lp, adv, prox_lp=None: drpo_token_loss(lp, mu_lp, adv, p.drpo_delta),
    "mask_drpo": lambda p, lp, mu_lp, adv, prox_lp=None: mask_drpo_token_loss(lp, mu_lp, adv, p.drpo_delta,
                                                                              p.mask_drpo_tv_delta),
    "spo": lambda p, lp, mu_lp, adv, prox_lp=None: spo_token_loss(lp, mu_lp, adv, p.spo_epsilon),
    "pg_is": lambda p, lp, mu_lp, adv, prox_lp=None: pg_is_token_loss(lp, mu_lp, adv),
    "drpo_prox": lambda p, lp, mu_lp, adv, prox_lp: drpo_prox_token_loss(lp, mu_lp, prox_lp, adv, p.drpo_delta),
}

# ---- gradient weights (Eq. 9, Table 1): grad l = -w A r grad log pi ---------------------------------------------


def drpo_gradient_weight(prob_diff: torch.Tensor, advantages: torch.Tensor, delta: float) -> torch.Tensor:
    """w = 1 - sign(A) (pi - mu) / delta, within [1 - 1/delta, 1 + 1/delta]. prob_diff = pi - mu (for DRPO-prox:
    pi - pi_prox, the same weight centred on pi_prox)."""
    # the first product promotes (float32 advantages, float64 shifts -> float64); the rest is in place
    return (torch.sign(advantages) * prob_diff).mul_(-1.0 / delta).add_(1.0)


def spo_gradient_weight(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    """w = 1 - sign(A (r - 1)) |r - 1| / eps = 1 - sign(A) (r - 1) / eps; unbounded as mu -> 0."""
    return (torch.sign(advantages) * (ratio - 1.0)).mul_(-1.0 / epsilon).add_(1.0)


def mask_drpo_gradient_weight(
    prob_diff: torch.Tensor, advantages: torch.Tensor, delta: float, delta_tv: float
) -> torch.Tensor:
    """DRPO's weight outside the Binary-TV region, 1 inside it."""
    outside = outside_tv_region(prob_diff, advantages, delta_tv)
    return torch.where(outside, drpo_gradient_weight(prob_diff, advantages, delta), 1.0)


# ---- each loss as (penalty, gradient weight): the form the fast path evaluates ------------------------------------
#
# Every loss above is l = -A r + penalty with grad l = -w A r grad log pi. A `PolicyLoss` names its penalty and its
# weight as functions of the per-token quantities in `TokenTerms`; `verl_drpo.fast` evaluates them in one no-grad
# pass and attaches the gradient of Eq. 9 directly (tests check it against the token losses above, value and
# gradient). The table of modes (`verl_drpo.modes`) names the constructor of each mode.


@dataclass(frozen=True)
class TokenTerms:
    """Detached per-token quantities, shape (batch_size, response_length), computed in float32 or wider."""

    log_ratio: torch.Tensor  # log pi - log mu, NOT clamped (the training-inference mismatch)
    clamped_log_ratio: torch.Tensor  # clamp(log_ratio, -20, 20): what the loss sees
    ratio: torch.Tensor  # r = exp(clamped_log_ratio)
    mu: torch.Tensor  # the anchor's probability
    prob_diff: torch.Tensor  # pi - mu = mu (r - 1), exact wherever the log-ratio is not clamped
    advantages: torch.Tensor
    # The centre of the regularizer. For every mode but drpo_prox it is mu: centre_ratio is then 1 and centre_diff
    # is prob_diff (the same tensor). For drpo_prox it is pi_prox: centre_ratio = pi_prox / mu (clamped as r is),
    # centre_diff = pi - pi_prox = mu (r - centre_ratio).
    centre_ratio: torch.Tensor
    centre_diff: torch.Tensor


@dataclass(frozen=True)
class PolicyLoss:
    """A loss of the family l = -A r + penalty, grad l = -w A r grad log pi.

    `boundary` is the Binary-TV threshold that the beyond-boundary diagnostics refer to (measured from the centre,
    `TokenTerms.centre_diff`). `centre` is "mu" or "prox": what the regularizer is centred on, so what the caller
    must pass as the centre's log-probs (`verl_drpo.fast.evaluate`'s `centre_log_prob`).
    """

    name: str
    penalty: Callable[[TokenTerms], torch.Tensor]
    gradient_weight: Callable[[TokenTerms], torch.Tensor]
    boundary: float
    centre: str = "mu"


def drpo(delta: float) -> PolicyLoss:
    """Eq. 8 / Eq. 9."""
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


def drpo_prox(delta: float) -> PolicyLoss:
    """DRPO-prox (beyond the paper): Eq. 8 / Eq. 9 with the penalty and the weight centred on pi_prox."""
    return PolicyLoss(
        name="drpo_prox",
        penalty=lambda t: drpo_prox_penalty(t.ratio, t.centre_ratio, t.mu, t.advantages, delta),
        gradient_weight=lambda t: drpo_gradient_weight(t.centre_diff, t.advantages, delta),
        boundary=delta,
        centre="prox",
    )

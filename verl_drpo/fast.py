"""The fast path: one no-grad pass that evaluates a `losses.PolicyLoss` on a micro-batch (values, the gradient of
Eq. 9, and the diagnostics), eager or through torch.compile. Pure torch: this module never imports verl.

Why it exists: autograd through the readable formulas in `verl_drpo.losses` keeps several full-size tensors for
backward and recomputes what the diagnostics need. Here every per-token quantity is computed once, the loss values
get their gradient d l / d log pi = -w A r attached directly (`attach_gradient`), and the statistics are reduced in
the same pass; `tests/core/test_fast_on_cpu.py` checks values, gradients and statistics against `verl_drpo.losses`.

Padding: every input is replaced by a finite value at masked positions (mask False: padding, and the tokens the
plugin leaves out because an input is not finite) before any arithmetic, so non-finite values there (NaN * 0 = NaN
in a masked sum) cannot reach the loss, its gradient or a statistic.

Compilation (verl's `actor.use_torch_compile`, on by default): `CompiledEvaluate` compiles with dynamic shapes, so
one graph serves micro-batches of every batch size and length; torch still specialises sizes 0 and 1, so a
micro-batch of one sequence or one token is evaluated eagerly instead of building graphs for it. New graphs are
built per input dtype combination (bf16 or fp32 log-probs) and per loss setting; tests/core/test_fast_on_cpu.py
counts them over a realistic sequence of shapes. If compilation fails, it warns once and evaluates eagerly from
then on.
"""

from __future__ import annotations

import warnings

import torch

from verl_drpo.losses import LOG_RATIO_CLAMP, PolicyLoss, TokenTerms, compute_dtype, outside_tv_region
from verl_drpo.metrics import STATISTICS as STATISTIC_NAMES  # the names `evaluate` returns, in its order


@torch.no_grad()
def token_terms(
    log_prob: torch.Tensor,
    anchor_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    centre_log_prob: torch.Tensor | None = None,
) -> TokenTerms:
    """The per-token quantities of `losses.TokenTerms`; at padded positions log_ratio = 0, mu = 1 and A = 0.
    `centre_log_prob` (log pi_prox, for a loss with centre "prox") defaults to the anchor."""
    dtype = compute_dtype(log_prob)
    # Every input is replaced by a finite value at masked positions before any arithmetic on it.
    anchor = torch.where(mask, anchor_log_prob.detach().to(dtype), 0.0)
    log_ratio = torch.where(mask, log_prob.detach().to(dtype), 0.0).sub_(anchor)
    clamped = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(clamped)
    mu = torch.exp(anchor)
    adv = torch.where(mask, advantages.detach().to(dtype), 0.0)
    prob_diff = torch.sub(ratio, 1.0).mul_(mu)
    if centre_log_prob is None:
        centre_ratio, centre_diff = torch.ones((), dtype=dtype, device=ratio.device), prob_diff
    else:
        centre_log_ratio = torch.where(mask, centre_log_prob.detach().to(dtype), 0.0).sub_(anchor)
        centre_ratio = torch.exp(centre_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        centre_diff = torch.sub(ratio, centre_ratio).mul_(mu)
    return TokenTerms(log_ratio, clamped, ratio, mu, prob_diff, adv, centre_ratio, centre_diff)


def _masked_reducers(mask: torch.Tensor, dtype: torch.dtype):
    # Sums are dot products with the float mask (inputs are finite at padded positions, see token_terms); extrema
    # fill padding with -inf/+inf. The caller handles an empty mask.
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
def summary_statistics(terms: TokenTerms, weight, penalty, mask) -> dict[str, torch.Tensor]:
    """Divergence, ratio, weight and penalty statistics over the valid tokens, as 0-dim tensors (one device sync
    reads them all). `signed_shift_max` > boundary tells whether any token has moved past the Binary-TV boundary and
    `weight_min` < 0 whether any weight is negative: only then can `boundary_statistics` be non-zero."""
    t = terms
    mean, masked_max, masked_min = _masked_reducers(mask, t.ratio.dtype)
    ratio_mean = mean(t.ratio)
    clamped_mean = mean(t.clamped_log_ratio)
    abs_diff = t.prob_diff.abs()
    return {
        "abs_prob_diff_mean": mean(abs_diff),
        "abs_prob_diff_max": masked_max(abs_diff),
        "weight_min": masked_min(weight),
        "weight_mean": mean(weight),
        "weight_max": masked_max(weight),
        "penalty_mean": mean(penalty),
        "ratio_mean": ratio_mean,
        "ratio_max": masked_max(t.ratio),
        "k3_kl": ratio_mean - 1.0 - clamped_mean,  # k3 estimator of KL(mu || pi) = E[r - 1 - log r] >= 0
        "abs_log_ratio_mean": mean(t.log_ratio.abs()),  # training-inference mismatch; unclamped on purpose
        "neg_log_ratio_mean": -clamped_mean,  # verl's `ppo_kl`
        # > 0: moved the way A pushes, measured from the regularizer's centre (mu; pi_prox for drpo_prox)
        "signed_shift_max": masked_max(torch.sign(t.advantages) * t.centre_diff),
    }


@torch.no_grad()
def boundary_statistics(loss: PolicyLoss, terms: TokenTerms, weight, mask) -> dict[str, torch.Tensor]:
    """Fractions of valid tokens past the Binary-TV boundary (split by the sign of A) and with a negative weight
    (the corrective regime, where the gradient pulls the token back toward the centre: mu, or pi_prox)."""
    n = mask.sum()
    beyond = outside_tv_region(terms.centre_diff, terms.advantages, loss.boundary) & mask
    return {
        "beyond_boundary_pos_frac": (beyond & (terms.advantages > 0)).sum() / n,
        "beyond_boundary_neg_frac": (beyond & (terms.advantages < 0)).sum() / n,
        "negative_weight_frac": ((weight < 0) & mask).sum() / n,
    }


@torch.no_grad()
def evaluate(
    loss: PolicyLoss,
    log_prob: torch.Tensor,
    anchor_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    boundary_counts: str = "always",
    centre_log_prob: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(per-token loss values, d loss / d log pi, statistics named as STATISTIC_NAMES), all detached; zero at
    padded positions. Shapes (batch_size, response_length); `mask` is bool. `centre_log_prob` is log pi_prox for a
    loss centred on it (`loss.centre == "prox"`, required there) and must be None otherwise.

    boundary_counts="always" counts unconditionally: a pure function of tensors that torch.compile fuses into a few
    kernels. "when_reached" (eager) first reads two scalars and counts only if a token is past the boundary or has
    a negative weight (never at the paper's delta = 12.5); otherwise the counts are zero without a pass.
    """
    if (loss.centre == "prox") != (centre_log_prob is not None):
        raise ValueError(f"{loss.name}: centre_log_prob must be given exactly when the loss is centred on pi_prox")
    terms = token_terms(log_prob, anchor_log_prob, advantages, mask, centre_log_prob)
    penalty = loss.penalty(terms)
    values = torch.addcmul(penalty, terms.advantages, terms.ratio, value=-1.0)
    weight = loss.gradient_weight(terms)
    # d l / d log pi = -w A r, and zero where the clamp is active (as autograd through the clamp gives)
    grad_coef = torch.mul(weight, terms.advantages).mul_(terms.ratio).neg_()
    grad_coef.masked_fill_(terms.log_ratio != terms.clamped_log_ratio, 0.0)

    stats = summary_statistics(terms, weight, penalty, mask)
    if boundary_counts == "always":
        stats.update(boundary_statistics(loss, terms, weight, mask))
    elif boundary_counts == "when_reached":
        if bool((stats["signed_shift_max"] > loss.boundary) | (stats["weight_min"] < 0)):
            stats.update(boundary_statistics(loss, terms, weight, mask))
        else:
            zero = torch.zeros((), dtype=values.dtype, device=values.device)
            stats.update(beyond_boundary_pos_frac=zero, beyond_boundary_neg_frac=zero, negative_weight_frac=zero)
    else:
        raise ValueError(f"boundary_counts must be 'always' or 'when_reached', got {boundary_counts!r}")
    return values, grad_coef.to(log_prob.dtype), stats


class CompiledEvaluate:
    """`evaluate` through torch.compile with dynamic shapes (built on first use); eager for a batch or length below
    2, and from then on, with one warning, if compilation fails."""

    def __init__(self, backend: str = "inductor"):
        self.backend = backend
        self._compiled = None
        self.failed: Exception | None = None

    def __call__(self, loss: PolicyLoss, log_prob, anchor_log_prob, advantages, mask, centre_log_prob=None):
        if self.failed is not None or min(mask.shape) < 2:  # torch specialises sizes 0 and 1: not worth a graph
            return evaluate(loss, log_prob, anchor_log_prob, advantages, mask, "when_reached", centre_log_prob)
        if self._compiled is None:
            self._compiled = torch.compile(evaluate, dynamic=True, backend=self.backend)
        try:
            return self._compiled(loss, log_prob, anchor_log_prob, advantages, mask, "always", centre_log_prob)
        except Exception as exc:  # noqa: BLE001  (any compiler failure: the eager path computes the same numbers)
            self.failed = exc
            cause = getattr(exc, "inner_exception", None) or exc.__cause__ or exc  # dynamo wraps the compiler's error
            first_line = (str(cause).strip().splitlines() or [""])[0]
            warnings.warn(
                f"verl-drpo: torch.compile of the policy-loss evaluation failed ({type(cause).__name__}: "
                f"{first_line}); "
                "evaluating eagerly from now on (same numbers, slower).",
                RuntimeWarning,
                stacklevel=2,
            )
            return evaluate(loss, log_prob, anchor_log_prob, advantages, mask, "when_reached", centre_log_prob)


compiled_evaluate = CompiledEvaluate()


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


def attach_gradient(log_prob: torch.Tensor, values: torch.Tensor, grad_coef: torch.Tensor) -> torch.Tensor:
    """`values`, made differentiable w.r.t. `log_prob` with d values / d log_prob = grad_coef (elementwise)."""
    return _ValueWithGradient.apply(log_prob, values, grad_coef)

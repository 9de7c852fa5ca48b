"""The one table of loss modes. Everything that is true of a mode is written in its entry here, once.

Registration (``verl_drpo.plugin``), config validation (``verl_drpo.config``), the preflight
(``verl_drpo.preflight``: the dry run and the doctor use it), ``check_run``, the lab's method list, the recipes'
``LOSS_MODE`` settings (``python -m verl_drpo overrides MODE``) and the tests all read this table. Adding a variant is
one entry here, its formula in ``verl_drpo.losses``, its ``@verl_loss`` line in ``verl_drpo.plugin`` and its tests;
adding a hyper-parameter is one ``Setting`` line in ``POLICY_LOSS_FIELDS`` (the config field, the recipe variable,
``--help`` and the docs rows follow from it) and its use in the formula.

This module imports neither torch nor verl, so that bash recipes can ask it for their overrides cheaply.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

POLICY_LOSS_TARGET = "verl_drpo.config.DRPOPolicyLossConfig"

# verl clamps every log-ratio to +-this before exp() (its policy losses, and rollout_corr_helper.SAFETY_BOUND for the
# importance weights); the losses here do the same, so ratios agree with verl's and mu stays recoverable inside it.
LOG_RATIO_CLAMP = 20.0
POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
ACTOR_KEY = "actor_rollout_ref.actor"


# The smallest threshold a mode accepts: below it the trust region is narrower than float32's resolution of
# pi - mu and r - 1 (about 1.2e-7 relative), so what it bounds is round-off, and the quadratic penalties
# |A| mu (r - 1)^2 / (2 delta) come within reach of float32's overflow inside verl's log-ratio clamp.
SMALLEST_THRESHOLD = 1e-6
_TOO_SMALL = "a smaller threshold bounds float32 round-off, not the policy, and its penalty can overflow"


@dataclass(frozen=True)
class Setting:
    """One hyper-parameter of a mode, with its default, the recipe variable that sets it and where the value comes
    from. ``field`` is a field of ``DRPOPolicyLossConfig`` (``where="policy_loss"``) or of verl's ``ActorConfig``
    (``where="actor"``, verl's own modes read their thresholds from there). Valid values are finite numbers
    >= ``minimum`` (> ``minimum`` when not ``inclusive``); ``why_minimum`` says why."""

    field: str
    default: float
    env: str
    help: str
    where: str = "policy_loss"
    minimum: float = SMALLEST_THRESHOLD
    inclusive: bool = True
    why_minimum: str = _TOO_SMALL

    @property
    def key(self) -> str:
        return f"{POLICY_LOSS_KEY if self.where == 'policy_loss' else ACTOR_KEY}.{self.field}"

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this setting (the start of a sentence after the name), or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r} ({type(value).__name__})"
        bound = f">= {self.minimum:g}" if self.inclusive else f"> {self.minimum:g}"
        ok = value >= self.minimum if self.inclusive else value > self.minimum
        if not math.isfinite(value) or not ok:
            return f"must be a finite number {bound} ({self.why_minimum}), got {value:g}"
        return None

    def validate(self, value, name: str | None = None) -> float:
        """``value`` as a float; TypeError/ValueError naming the setting (or ``name``) otherwise."""
        problem = self.problem(value)
        if problem:
            error = TypeError if problem.startswith("must be a number") else ValueError
            raise error(f"{name or self.key} {problem}")
        return float(value)

    def value(self, environ=None) -> str:
        """The value as the recipes pass it: the recipe variable if set and non-empty, else the default. A bad value
        raises a ValueError naming the variable (before Hydra or verl sees it)."""
        raw = (os.environ if environ is None else environ).get(self.env, "").strip()
        if not raw:
            return repr(float(self.default))
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        problem = self.problem(number)
        if problem:
            raise ValueError(f"{self.env}={raw}: {problem.split(', got')[0]} (it sets {self.key})")
        return raw


# The fields DRPOPolicyLossConfig adds to verl's PolicyLossConfig (validated there as finite numbers > 0).
POLICY_LOSS_FIELDS: dict[str, Setting] = {
    s.field: s
    for s in (
        Setting("drpo_delta", 12.5, "DRPO_DELTA",
                "DRPO's regularization threshold delta (Eq. 8). 12.5 is the paper's §4 value (an ablation at 2.5 "
                "changes little). |pi - mu| <= 1, so at 12.5 the gradient weight stays within [0.92, 1.08]: the "
                "Binary-TV boundary and the corrective regime are reached only for delta < 1 (DPPO uses 0.15-0.2)."),
        Setting("spo_epsilon", 12.5, "SPO_EPSILON",
                "SPO's ratio-space threshold eps; 12.5 as in the DRPO paper's comparison."),
        Setting("mask_drpo_tv_delta", 0.15, "MASK_DRPO_TV_DELTA",
                "Binary-TV threshold of mask_drpo (its penalty applies only beyond it), and the boundary the "
                "beyond-boundary metrics of spo, pg_is and mask_drpo refer to. 0.15 is DPPO's delta_TV."),
    )
}


# What a verl-drpo loss does with a valid token whose inputs are not finite: pi's, mu's or pi_prox's log-prob, the
# advantage or the importance weight (a -inf rollout log-prob, a NaN from the engine), or, for a decoupled mode, a
# weight from which mu cannot be recovered. These are data: one rank sees them, the others do not. "mask" (the
# default) leaves such tokens out of the loss, counts them (metrics.NONFINITE_FRAC) and warns; the step goes on.
# "raise" stops on the rank that saw them, which is rank-local: the other ranks wait in their next collective until
# the NCCL timeout. A policy_loss config field of its own (a choice, not a number: no recipe variable, no sweep).
NONFINITE_FIELD = "nonfinite_tokens"
NONFINITE_CHOICES: tuple[str, ...] = ("mask", "raise")
NONFINITE_DEFAULT = "mask"
NONFINITE_HELP = (
    "what the loss does with a valid token whose log-prob (pi, mu, pi_prox), advantage or importance weight is not "
    "finite: 'mask' leaves it out of the loss and counts it in actor/drpo/nonfinite_frac (the step goes on); "
    "'raise' stops with an error on the rank that saw it, so in a multi-GPU run the other ranks hang in their next "
    "collective until the NCCL timeout (a debugging switch for one process)."
)


def nonfinite_problem(value) -> str | None:
    """Why ``value`` is not a valid ``NONFINITE_FIELD`` (a sentence after the name), or None."""
    if value not in NONFINITE_CHOICES:
        return f"must be one of {', '.join(repr(c) for c in NONFINITE_CHOICES)}, got {value!r}"
    return None


@dataclass(frozen=True)
class LossMode:
    """A policy loss the project runs.

    name: verl's ``policy_loss.loss_mode``.
    summary, source: one line each for docs and help.
    registered_by: "verl-drpo" (this package registers it: its formula is the ``@verl_loss("<name>")`` function in
        ``verl_drpo.plugin``, which builds the mode's ``verl_drpo.losses.PolicyLoss``) or "verl" (a verl built-in,
        run with paper settings).
    reads: the ``POLICY_LOSS_FIELDS`` this mode reads (its formula receives them by name).
    anchored_on_mu: its ratio is measured against the rollout probability mu (the rollout log-probs as
        ``old_log_prob``, verl's bypass mode, unless ``verl_inputs`` says otherwise).
    verl_inputs: how verl must hand the loss its probabilities. "bypass": ``old_log_prob`` is log mu (verl's bypass
        mode). "decoupled": ``old_log_prob`` is log pi_prox (verl's recomputed old log-probs) and
        ``rollout_is_weights`` is pi_prox / mu, token-level and untruncated, from which the loss recovers mu
        (``DECOUPLED_OVERRIDES`` make verl do that; the preflight refuses any other decoupled configuration).
    actor: the settings a verl built-in reads from verl's own config: ActorConfig fields (clip ratios, DPPO's
        delta, SAPO's temperatures) or, with ``where="policy_loss"``, fields of verl's own PolicyLossConfig
        (``dro_beta``), which verl's YAML already has (so they are overridden without Hydra's ``+``).
    aliases: other names registered for the same loss (configs written for other code bases).
    """

    name: str
    summary: str
    source: str
    registered_by: str
    anchored_on_mu: bool
    reads: tuple[str, ...] = ()
    actor: tuple[Setting, ...] = ()
    aliases: tuple[str, ...] = ()
    verl_inputs: str = "bypass"

    def __post_init__(self):
        if self.verl_inputs not in ("bypass", "decoupled"):
            raise ValueError(f"mode {self.name!r}: verl_inputs must be 'bypass' or 'decoupled'")

    @property
    def settings(self) -> tuple[Setting, ...]:
        return tuple(POLICY_LOSS_FIELDS[f] for f in self.reads) + self.actor


# verl's decoupled mode with token-level importance weights pi_prox / mu that are never truncated: verl clamps the
# log-ratio to +-LOG_RATIO_CLAMP before exp(), so any threshold above e^20 ~ 4.85e8 never binds.
UNTRUNCATED_IS_THRESHOLD = 1.0e10
assert UNTRUNCATED_IS_THRESHOLD > math.exp(LOG_RATIO_CLAMP)
DECOUPLED_OVERRIDES: tuple[str, ...] = (
    "algorithm.rollout_correction.bypass_mode=False",
    "actor_rollout_ref.rollout.calculate_log_probs=True",
    "algorithm.rollout_correction.rollout_is=token",
    f"algorithm.rollout_correction.rollout_is_threshold={UNTRUNCATED_IS_THRESHOLD:g}",
    "algorithm.rollout_correction.rollout_is_batch_normalize=False",
)

_DUAL_CLIP = dict(minimum=1.0, inclusive=False, why_minimum="verl asserts clip_ratio_c > 1.0")
_DPPO_C = Setting("clip_ratio_c", 10000.0, "DPPO_CLIP_RATIO_C",
                  "ratio truncation lifted (verl's default 3.0 would truncate the IS ratio), as verl's DPPO example",
                  where="actor", **_DUAL_CLIP)

MODES: dict[str, LossMode] = {
    m.name: m
    for m in (
        LossMode("drpo", "DRPO: -A r + |A| mu (r-1)^2 / (2 delta)", "arXiv 2606.09821, Eq. 8", "verl-drpo", True,
                 reads=("drpo_delta",), aliases=("spo_adaptive_eps",)),
        LossMode("mask_drpo", "DRPO's penalty only outside DPPO's Binary-TV region (ablation)",
                 "arXiv 2606.09821, ablations", "verl-drpo", True, reads=("drpo_delta", "mask_drpo_tv_delta")),
        LossMode("spo", "Simple Policy Optimization: the quadratic in ratio space, -A r + |A| (r-1)^2 / (2 eps)",
                 "arXiv 2401.16025", "verl-drpo", True, reads=("spo_epsilon", "mask_drpo_tv_delta")),
        LossMode("pg_is", "unregularized importance-sampled surrogate -A r (ablation)",
                 "arXiv 2606.09821, ablations", "verl-drpo", True, reads=("mask_drpo_tv_delta",)),
        LossMode("drpo_prox", "DRPO-prox (beyond the paper): ratio on mu, penalty centred on pi_prox, "
                 "-A r + |A| (pi - pi_prox)^2 / (2 delta mu)", "verl-drpo (docs/algorithm.md, DRPO-prox)",
                 "verl-drpo", True, reads=("drpo_delta",), verl_inputs="decoupled"),
        LossMode("dppo_tv", "DPPO, Binary-TV hard mask (verl's loss)", "arXiv 2602.04879", "verl", True,
                 actor=(Setting("clip_ratio_low", 0.15, "DPPO_TV_DELTA", "DPPO's delta_TV", where="actor"),
                        Setting("clip_ratio_high", 0.15, "DPPO_TV_DELTA", "DPPO's delta_TV", where="actor"),
                        _DPPO_C)),
        LossMode("dppo_kl", "DPPO, Binary-KL hard mask (verl's loss)", "arXiv 2602.04879", "verl", True,
                 actor=(Setting("clip_ratio_low", 0.05, "DPPO_KL_DELTA", "DPPO's delta_KL", where="actor"),
                        Setting("clip_ratio_high", 0.05, "DPPO_KL_DELTA", "DPPO's delta_KL", where="actor"),
                        _DPPO_C)),
        LossMode("vanilla", "PPO/GRPO ratio clip with clip-higher (verl's loss)", "DAPO, arXiv 2503.14476", "verl",
                 False,
                 actor=(Setting("clip_ratio_low", 0.2, "CLIP_RATIO_LOW", "eps_low", where="actor"),
                        Setting("clip_ratio_high", 0.28, "CLIP_RATIO_HIGH", "eps_high (clip-higher)", where="actor"),
                        Setting("clip_ratio_c", 3.0, "CLIP_RATIO_C", "verl's dual-clip c", where="actor",
                                **_DUAL_CLIP))),
        # The baselines verl ships that a reader of the DRPO paper compares against, each with the settings of its
        # own paper or verl's example; all run on the recipes' one aggregation (loss_agg_mode) and anchor, so that
        # a comparison is one LOSS_MODE apart (sapo aggregates seq-mean-token-mean whatever loss_agg_mode says).
        LossMode("cispo", "CISPO: -sg(clip(r, 1 - eps_low, 1 + eps_high)) A log pi, every token keeps a gradient "
                 "(verl's loss)", "MiniMax-M1, arXiv 2506.13585; DPPO's no-trust-region baseline", "verl", True,
                 actor=(Setting("clip_ratio_low", 10.0, "CISPO_CLIP_RATIO_LOW",
                                "CISPO's eps_low: 10 leaves the weight unbounded below (1 - 10 < 0), as verl's "
                                "example run_cispo_qwen2_5_0_5b_gsm8k.sh", where="actor"),
                        Setting("clip_ratio_high", 0.2, "CISPO_CLIP_RATIO_HIGH",
                                "CISPO's eps_high: the IS weight is truncated at 1 + eps_high (verl's example)",
                                where="actor"))),
        LossMode("gspo", "GSPO: PPO's clip on the sequence-level ratio (geometric mean of token ratios) "
                 "(verl's loss)", "arXiv 2507.18071, Sec. 5.1", "verl", False,
                 actor=(Setting("clip_ratio_low", 3e-4, "GSPO_CLIP_RATIO_LOW",
                                "GSPO's eps_low on the sequence ratio (paper Sec. 5.1, verl's gspo examples)",
                                where="actor"),
                        Setting("clip_ratio_high", 4e-4, "GSPO_CLIP_RATIO_HIGH",
                                "GSPO's eps_high on the sequence ratio (paper Sec. 5.1, verl's gspo examples)",
                                where="actor"))),
        LossMode("sapo", "SAPO: a sigmoid gate (4/tau) sigma(tau (r - 1)) in place of the hard clip (verl's loss)",
                 "arXiv 2511.20347", "verl", False,
                 actor=(Setting("tau_pos", 1.0, "SAPO_TAU_POS",
                                "SAPO's gate temperature for A > 0 (the paper's and verl's example value)",
                                where="actor"),
                        Setting("tau_neg", 1.05, "SAPO_TAU_NEG",
                                "SAPO's gate temperature for A <= 0, above tau_pos (the paper's and verl's example "
                                "value)", where="actor"))),
        LossMode("dro", "DRO: -(A log pi - beta/2 (log pi - log mu)^2), a quadratic in log-ratio space (verl's loss)",
                 "verl PR #7245 (verl 0.9.1 core_algos.compute_policy_loss_dro)", "verl", True,
                 actor=(Setting("dro_beta", 0.05, "DRO_BETA",
                                "DRO's penalty weight beta on (log pi - log mu)^2; verl has no default and "
                                "refuses none or <= 0. 0.05 is the value of verl's usage example (PR #7245)",
                                minimum=0.0, inclusive=False, why_minimum="verl requires dro_beta > 0"),)),
    )
}

# verl-drpo's own modes, and every name registered for them (aliases included).
OWN_MODES: tuple[str, ...] = tuple(n for n, m in MODES.items() if m.registered_by == "verl-drpo")
ALIASES: dict[str, str] = {a: m.name for m in MODES.values() for a in m.aliases}
REGISTERED_NAMES: tuple[str, ...] = OWN_MODES + tuple(ALIASES)


def get(name: str) -> LossMode:
    """The entry for a mode or one of its aliases; ValueError listing the choices otherwise."""
    name = ALIASES.get(name, name)
    if name not in MODES:
        raise ValueError(f"unknown loss mode {name!r}; choose one of: {' '.join(MODES)}")
    return MODES[name]


def recipe_overrides(name: str, environ=None) -> list[str]:
    """The Hydra overrides that select ``name`` with its paper settings, each value taken from its recipe variable
    when set. Keys that verl's YAML lacks (the config hook's fields) are added with ``+``. A mode with decoupled
    inputs ends with ``DECOUPLED_OVERRIDES`` (they replace a recipe's bypass-mode settings given before them)."""
    mode = get(name)
    out = [f"{POLICY_LOSS_KEY}._target_={POLICY_LOSS_TARGET}", f"{POLICY_LOSS_KEY}.loss_mode={name}"]
    for s in mode.settings:
        if s.where == "policy_loss":
            plus = "+" if s.field in POLICY_LOSS_FIELDS else ""  # the config hook's fields are not in verl's YAML
            out.append(f"{plus}{POLICY_LOSS_KEY}.{s.field}={s.value(environ)}")
        else:
            out.append(f"{ACTOR_KEY}.{s.field}={s.value(environ)}")
    if mode.verl_inputs == "decoupled":
        out.extend(DECOUPLED_OVERRIDES)
    return out


def anchored_on_mu(name: str) -> bool:
    """Whether ``name`` (a mode or alias) measures its trust region against mu; False for names not in the table
    (other verl losses)."""
    name = ALIASES.get(name, name)
    return name in MODES and MODES[name].anchored_on_mu


def uses_decoupled_inputs(name: str) -> bool:
    """Whether ``name`` (a mode or alias) takes verl's decoupled-mode inputs (``LossMode.verl_inputs``); False for
    names not in the table (other verl losses)."""
    name = ALIASES.get(name, name)
    return name in MODES and MODES[name].verl_inputs == "decoupled"

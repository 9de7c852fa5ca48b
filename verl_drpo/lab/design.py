"""The lab's design in one place: the run configuration, the methods, the off-policy conditions, and the grids.

Everything a lab number depends on is here: ``LabConfig`` (task, model, warm start, RL schedule, evaluation), the
methods (each a loss mode of ``verl_drpo.modes`` plus optional overrides), the off-policy conditions (``Condition``:
one staleness x mismatch x rounding cell of a grid; the docs and the results files call them "settings"), and the
designs ``DEFAULT``, ``FULL``, ``QUICK`` and the pre-registered ones. docs/lab.md describes the same design in
words; change both together.

This module imports neither torch nor verl, so the command line can validate its arguments in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from verl_drpo import modes

DTYPES = ("float32", "float64")
# behaviour weights rounded ("bfloat16", "float16") or the behaviour's logits rounded ("bfloat16_logits")
BEHAVIOUR_ROUNDINGS = ("bfloat16", "float16", "bfloat16_logits")
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TaskSpec:
    """The task: reverse a list of ``min_len``..``max_len`` symbols from a Zipf(``zipf_a``) vocabulary."""

    num_symbols: int = 40
    zipf_a: float = 1.2
    min_len: int = 2
    max_len: int = 5

    def __post_init__(self):
        if not (1 <= self.min_len <= self.max_len):
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self.num_symbols < 2 or not (self.zipf_a >= 0):
            raise ValueError(f"need num_symbols >= 2 and zipf_a >= 0, got {self.num_symbols}, {self.zipf_a}")

    @property
    def max_response_len(self) -> int:
        return self.max_len + 1  # symbols + <eos>

    @property
    def max_prompt_len(self) -> int:
        return self.max_len + 3  # <bos> rev ... =


@dataclass(frozen=True)
class ModelSpec:
    """Size of the tiny Qwen2-architecture policy (built offline from a config, random init)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


@dataclass(frozen=True)
class LabConfig:
    """Everything that defines a lab run except method, setting and seed."""

    task: TaskSpec = field(default_factory=TaskSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    dtype: str = "float32"  # the float environment of every tensor (float64: the cross-environment check)
    sft_steps: int = 300  # supervised warm start, shared by all methods and settings of a seed
    sft_batch: int = 64
    sft_lr: float = 3e-3
    sft_label_smoothing: float = 0.15
    steps: int = 40  # RL steps (rollouts) per run
    prompts_per_step: int = 8
    group_size: int = 8
    mini_batches: int = 2  # optimizer steps per rollout
    lr: float = 5e-4
    lr_warmup: int = 10  # optimizer steps of linear learning-rate warm-up at the start of RL
    clip_grad: float = 1.0
    eval_every: int = 5
    eval_prompts: int = 512  # fixed held-out set; exact expected success from one teacher-forced pass
    sampled_eval: bool = False  # also report one temperature-1 sample per held-out prompt (slow: generation)

    def __post_init__(self):
        for name in ("sft_batch", "steps", "prompts_per_step", "group_size", "mini_batches", "eval_every",
                     "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sft_steps < 0:
            raise ValueError(f"sft_steps must be >= 0, got {self.sft_steps}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for group-centred advantages, got {self.group_size}")
        if self.prompts_per_step % self.mini_batches:
            raise ValueError(
                f"prompts_per_step ({self.prompts_per_step}) must be divisible by mini_batches ({self.mini_batches})"
                " so that every mini-batch holds whole groups"
            )
        for name in ("lr", "sft_lr", "clip_grad"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")
        if not (0 <= self.sft_label_smoothing < 1):
            raise ValueError(f"sft_label_smoothing must be in [0, 1), got {self.sft_label_smoothing}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass(frozen=True)
class Method:
    """A lab method: a loss mode of ``verl_drpo.modes`` plus optional overrides of its hyper-parameters.

    ``params`` overrides the mode's settings by field name (``drpo_delta``, ``clip_ratio_low``, ...): the rest come
    from the mode's entry in the table. ``optimizer`` and ``clip_grad`` (None: the LabConfig's; 0: no clipping)
    define training arms that differ from the lab's AdamW + clipping.
    """

    name: str
    mode: str
    params: tuple[tuple[str, float], ...] = ()
    optimizer: str = "adamw"
    clip_grad: float | None = None
    lr: float | None = None

    def __post_init__(self):
        mode = modes.get(self.mode)
        known = {s.field for s in mode.settings}
        bad = [k for k, _ in self.params if k not in known]
        if bad:
            raise ValueError(f"method {self.name!r}: mode {self.mode!r} has no setting {bad}; it has {sorted(known)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"method {self.name!r}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    @property
    def settings(self) -> dict[str, float]:
        """Every hyper-parameter of the mode: the table's default unless overridden here."""
        values = {s.field: float(s.default) for s in modes.get(self.mode).settings}
        values.update(dict(self.params))
        return values

    @property
    def actor_fields(self) -> dict[str, float]:
        where = {s.field: s.where for s in modes.get(self.mode).settings}
        return {k: v for k, v in self.settings.items() if where[k] == "actor"}

    @property
    def policy_loss_fields(self) -> dict[str, float]:
        where = {s.field: s.where for s in modes.get(self.mode).settings}
        return {k: v for k, v in self.settings.items() if where[k] == "policy_loss"}

    def describe(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.settings.items()]
        if self.optimizer != "adamw":
            parts.append(f"optimizer={self.optimizer}")
        if self.clip_grad is not None:
            parts.append("no grad clipping" if self.clip_grad == 0 else f"clip_grad={self.clip_grad:g}")
        if self.lr is not None:
            parts.append(f"lr={self.lr:g}")
        return f"{self.mode}" + (f" ({', '.join(parts)})" if parts else "")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("pg_is", "pg_is"),
        Method("drpo", "drpo"),  # the paper's delta = 12.5
        Method("drpo_d1", "drpo", (("drpo_delta", 1.0),)),
        Method("drpo_d0.2", "drpo", (("drpo_delta", 0.2),)),
        Method("dppo_tv", "dppo_tv"),
        Method("dppo_kl", "dppo_kl"),
        Method("vanilla", "vanilla"),
        Method("spo", "spo"),
        Method("dro", "dro"),  # verl's log-space quadratic, dro_beta from the table
        Method("cispo", "cispo"),  # the DPPO paper's no-trust-region baseline (verl)
        Method("mask_drpo", "mask_drpo", (("drpo_delta", 0.2),)),
        # beyond the paper (issue 10, docs/lab.md "DRPO-prox"): the ratio on mu, the regularizer centred on pi_prox
        Method("drpo_prox_d0.2", "drpo_prox", (("drpo_delta", 0.2),)),
        # arms without gradient clipping: Adam plus clipping bounds every step, which hides ratio blow-ups
        Method("pg_is_noclip", "pg_is", clip_grad=0.0),
        Method("drpo_d0.2_noclip", "drpo", (("drpo_delta", 0.2),), clip_grad=0.0),
        Method("dppo_tv_noclip", "dppo_tv", clip_grad=0.0),
    )
}
REFERENCES = ("pg_is", "dppo_tv")  # every method is compared with these, paired by seed


@dataclass(frozen=True)
class Condition:
    """One off-policy condition of a grid: the knobs of the behaviour policy that samples the rollouts (named
    ``Condition``, not "setting", because a setting in ``verl_drpo.modes`` is a loss hyper-parameter; its ``name``,
    e.g. ``k=16,sigma=0``, is what the results files and docs call a setting).

    staleness: optimizer steps between behaviour and trained weights (0 = fresh weights at each rollout; the later
    mini-batches of a rollout are still 1..mini_batches-1 steps off). mismatch: std of i.i.d. Gaussian noise on the
    behaviour logits. rounding: the behaviour weights rounded to a low-precision format, or ("bfloat16_logits") the
    behaviour's logits rounded to bfloat16 before sampling (both deterministic, engine-like biases of mu), or None.
    """

    staleness: int = 0
    mismatch: float = 0.0
    rounding: str | None = None

    def __post_init__(self):
        if self.staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {self.staleness}")
        if not (math.isfinite(self.mismatch) and self.mismatch >= 0):
            raise ValueError(f"mismatch must be finite and >= 0, got {self.mismatch}")
        if self.rounding is not None and self.rounding not in BEHAVIOUR_ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(BEHAVIOUR_ROUNDINGS)} or None, got {self.rounding}")

    @property
    def name(self) -> str:
        return f"k={self.staleness},sigma={self.mismatch:g}" + (f",{self.rounding}" if self.rounding else "")


@dataclass(frozen=True)
class Design:
    """A grid: methods x conditions x seeds, run with ``config``; every method is compared with each of
    ``references`` (paired by seed). The first condition is the control of the learning check."""

    name: str
    config: LabConfig
    methods: tuple[str, ...]
    conditions: tuple[Condition, ...]
    seeds: tuple[int, ...]
    references: tuple[str, ...] = REFERENCES
    summary: str = ""
    gain_in_every_setting: bool = False  # report final - start per method in every condition, not only the control


_ONE_AXIS_AT_A_TIME = (Condition(0, 0.0), Condition(16, 0.0), Condition(0, 1.0))
DEFAULT = Design(
    "default",
    LabConfig(),
    methods=("pg_is", "drpo", "drpo_d0.2", "dppo_tv", "vanilla", "spo"),
    conditions=_ONE_AXIS_AT_A_TIME,
    seeds=tuple(range(5)),
)
FULL = Design(
    "full",
    LabConfig(sampled_eval=True),
    methods=("pg_is", "drpo", "drpo_d1", "drpo_d0.2", "dppo_tv", "dppo_kl", "vanilla", "spo", "mask_drpo", "dro",
             "cispo", "pg_is_noclip", "drpo_d0.2_noclip", "dppo_tv_noclip"),
    conditions=(Condition(0, 0.0), Condition(4, 0.0), Condition(16, 0.0), Condition(32, 0.0), Condition(0, 0.5),
              Condition(0, 1.0), Condition(0, 0.0, "bfloat16"), Condition(0, 0.0, "float16")),
    seeds=tuple(range(10)),
)
# CI: the default warm start (so that groups have mixed rewards), every default method once, one stale and noisy
# setting, a short schedule
QUICK = Design(
    "quick",
    LabConfig(steps=4, prompts_per_step=4, group_size=8, eval_every=2, eval_prompts=64),
    methods=DEFAULT.methods,
    conditions=(Condition(4, 0.5),),
    seeds=(0,),
)

# The pre-registered test of DRPO-prox (docs/lab.md, "DRPO-prox: the pre-registered test"): the variant against
# mu-anchored DRPO at the same delta, PG-IS and DPPO-TV, at staleness k in {0, 16, 32} with and without logit noise,
# in a learning regime (the default schedule) and a degrading one (a learning rate at which PG-IS loses success).
_PROX_METHODS = ("pg_is", "dppo_tv", "drpo_d0.2", "drpo_prox_d0.2")
_PROX_REFERENCES = ("drpo_d0.2", "pg_is", "dppo_tv")
_PROX_CONDITIONS = tuple(Condition(k, sigma) for sigma in (0.0, 1.0) for k in (0, 16, 32))
PROX_DEGRADING_LR = 1e-3
PROX_LEARNING = Design("prox_learning", LabConfig(), _PROX_METHODS, _PROX_CONDITIONS, tuple(range(10)),
                       _PROX_REFERENCES, "DRPO-prox test, learning regime (the default schedule)", True)
PROX_DEGRADING = Design("prox_degrading", LabConfig(lr=PROX_DEGRADING_LR), _PROX_METHODS, _PROX_CONDITIONS,
                        tuple(range(10)), _PROX_REFERENCES,
                        f"DRPO-prox test, degrading regime (lr {PROX_DEGRADING_LR:g})", True)
# The headline test (docs/lab/headline-preregistration.md, committed before any run of it): the degrading regime of
# the DRPO-prox test (lr 1e-3, where PG-IS lost 0.080 AUC to DPPO-TV at k=32 in the pilot), staleness k in {0, 32}
# at sigma 0 plus bf16-rounded behaviour logits at k=0, the paper's delta, and 20 seeds never used before (100-119).
HEADLINE_SEEDS = tuple(range(100, 120))
HEADLINE = Design(
    "headline", LabConfig(lr=PROX_DEGRADING_LR),
    methods=("pg_is", "drpo", "drpo_d0.2", "dppo_tv", "vanilla"),
    conditions=(Condition(0, 0.0), Condition(32, 0.0), Condition(0, 0.0, "bfloat16_logits")),
    seeds=HEADLINE_SEEDS, references=("dppo_tv", "pg_is"),
    summary="the pre-registered headline test: DRPO (delta 12.5) against DPPO-TV at k=32 (docs/lab.md)",
    gain_in_every_setting=True,
)
DESIGNS = {d.name: d for d in (DEFAULT, FULL, QUICK, PROX_LEARNING, PROX_DEGRADING, HEADLINE)}

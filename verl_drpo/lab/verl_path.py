"""The lab's only route to a loss: verl's own ``verl.workers.utils.losses.ppo_loss`` with a real ``ActorConfig``.

verl's FSDP engine calls ``ppo_loss(config, model_output, data)`` once per micro-batch, with
- ``model_output["log_probs"]``: a jagged nested tensor (bs, prompt_len_i + response_len_i) of log pi, position t
  holding log pi(token t+1) (the engine rolls the labels);
- ``data``: a TensorDict whose ``prompts``/``responses``/``response_mask``/``old_log_probs``/``advantages`` are jagged
  nested tensors over the real (unpadded) tokens, plus the non-tensor entries ``dp_size``, ``batch_num_tokens``
  (valid response tokens of the whole mini-batch) and ``global_batch_size`` (sequences of the mini-batch).
``to_verl_inputs`` builds exactly that from a padded lab batch; ``ppo_loss`` then pads back with
``no_padding_2_padding``, looks the loss mode up in verl's registry and aggregates with ``agg_loss``.

The anchor is the rollout: ``old_log_probs`` are the behaviour policy's log mu (verl's bypass mode,
``algorithm.rollout_correction.bypass_mode=True``), as DPPO and DRPO require. A mode with decoupled inputs
(``drpo_prox``) gets what verl's decoupled mode hands it instead (``decoupled_is_weights``): ``old_log_probs`` = log
pi_prox, the policy before the rollout's first update, and ``rollout_is_weights`` = pi_prox / mu from verl's own
``compute_rollout_correction_weights`` with token-level, untruncated weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .design import METHODS, Method


def make_actor_config(method: Method | str, mini_batch_size: int, rollout_n: int, loss_scale_factor: int):
    """A real verl ActorConfig for `method` (``verl_drpo.config.actor_config``: the mode's settings from the table,
    with the method's overrides), plus the lab's fixed choices (aggregation, no KL, no entropy, eager)."""
    from verl_drpo.config import actor_config

    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"unknown lab method {method!r}; choose from {', '.join(METHODS)}")
        method = METHODS[method]
    return actor_config(
        method.mode,
        ppo_mini_batch_size=mini_batch_size,
        ppo_micro_batch_size_per_gpu=mini_batch_size,
        rollout_n=rollout_n,
        loss_agg_mode="seq-mean-token-sum-norm",
        loss_scale_factor=loss_scale_factor,
        use_torch_compile=False,
        entropy_coeff=0.0,
        use_kl_loss=False,
        **method.settings,
    )


@dataclass
class MiniBatch:
    """Padded lab tensors of one mini-batch: prompts (bs, P) left-padded, responses (bs, R) right-padded."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_log_probs: torch.Tensor  # what verl passes as old_log_probs: log mu (bypass) or log pi_prox (decoupled)
    advantages: torch.Tensor
    rollout_is_weights: torch.Tensor | None = None  # decoupled mode only: pi_prox / mu


def decoupled_is_weights(prox_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, response_mask: torch.Tensor):
    """rollout_is_weights = pi_prox / mu as verl's decoupled mode builds them (trainer_base._compute_advantage ->
    rollout_corr_helper): verl's own token-level weights with the table's untruncated threshold
    (``verl_drpo.modes.DECOUPLED_OVERRIDES``). verl's old_log_probs are then log pi_prox itself."""
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights

    from verl_drpo.modes import UNTRUNCATED_IS_THRESHOLD

    mask = response_mask.to(prox_log_probs.dtype)
    weights, _ = compute_rollout_correction_weights(
        log_ratio=(prox_log_probs - rollout_log_probs.to(prox_log_probs.dtype)) * mask, response_mask=mask,
        rollout_is="token", rollout_is_threshold=UNTRUNCATED_IS_THRESHOLD,
    )
    return weights


def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def to_verl_inputs(seq_log_probs: torch.Tensor, mb: MiniBatch, dp_size: int = 1):
    """Build (model_output, data) as verl's engine hands them to ppo_loss.

    Args:
        seq_log_probs: (bs, P + R) log pi of the next token at each position (differentiable).
        mb: the mini-batch.
    Returns:
        (model_output, data): model_output["log_probs"] jagged nested over the real tokens; data a TensorDict.
    """
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    attn = torch.cat([mb.prompt_mask, mb.response_mask], dim=1).bool()
    bs = attn.shape[0]
    if not bool(mb.prompt_mask.bool().any(-1).all()):
        raise ValueError("every sequence needs at least one prompt token")
    lens = attn.sum(-1)
    offsets = torch.cat([lens.new_zeros(1), lens.cumsum(0)])
    log_probs = torch.nested.nested_tensor_from_jagged(seq_log_probs[attn], offsets=offsets)

    rmask = mb.response_mask.bool()
    pmask = mb.prompt_mask.bool()
    data = TensorDict(
        {
            "prompts": _nested([mb.prompt_ids[i][pmask[i]] for i in range(bs)]),
            "responses": _nested([mb.response_ids[i][rmask[i]] for i in range(bs)]),
            "response_mask": _nested([mb.response_mask[i][rmask[i]] for i in range(bs)]),
            "old_log_probs": _nested([mb.old_log_probs[i][rmask[i]] for i in range(bs)]),
            "advantages": _nested([mb.advantages[i][rmask[i]] for i in range(bs)]),
        },
        batch_size=[bs],
    )
    if mb.rollout_is_weights is not None:
        data["rollout_is_weights"] = _nested([mb.rollout_is_weights[i][rmask[i]] for i in range(bs)])
    tu.assign_non_tensor(
        data, dp_size=dp_size, batch_num_tokens=int(rmask.sum().item()), global_batch_size=bs
    )
    return {"log_probs": log_probs}, data


def verl_policy_loss(config, seq_log_probs: torch.Tensor, mb: MiniBatch):
    """verl's ppo_loss on one mini-batch: returns (scalar loss, {metric: float})."""
    from verl.workers.utils.losses import ppo_loss

    model_output, data = to_verl_inputs(seq_log_probs, mb)
    loss, metrics = ppo_loss(config, model_output, data)
    return loss, {k: _to_float(v) for k, v in metrics.items()}


def _to_float(v) -> float:
    if hasattr(v, "aggregate"):  # verl.utils.metric.Metric
        v = v.aggregate()
    if isinstance(v, torch.Tensor):
        v = v.detach().float().mean().item()
    return float(v)

"""Token-budget batching (`use_dynamic_bsz=True`) gives DRPO the same gradients as fixed micro-batches (issue 13.5).

verl's FSDP engine (forward_backward_batch) sets batch_num_tokens, dp_size and global_batch_size on the whole
mini-batch, splits it with verl.workers.engine.utils.prepare_micro_batches (by token budget through
rearrange_micro_batches, or in fixed chunks), calls ppo_loss once per micro-batch and back-propagates each loss
without rescaling. Every loss is normalised by the mini-batch's totals, so the summed gradient must not depend on the
split, provided the horizon is fixed: with seq-mean-token-sum-norm and actor.loss_scale_factor=null verl divides by
each micro-batch's own padded length instead, and the split leaks into the gradient."""

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.engine.utils import prepare_micro_batches
from verl.workers.utils.losses import ppo_loss

from verl_drpo.lab import verl_path

PROMPT_LENS = [3, 2, 4, 2, 3, 1, 2, 4]
RESPONSE_LENS = [8, 3, 5, 2, 7, 1, 6, 4]
HORIZON = max(RESPONSE_LENS)


def _nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _mini_batch(theta, seed=0):
    """The mini-batch as the engine holds it: jagged tensors over real tokens, and the parameter-free inputs."""
    gen = torch.Generator().manual_seed(seed)
    rows = range(len(PROMPT_LENS))
    old = [torch.log(torch.rand(r, generator=gen, dtype=torch.float64).clamp_min(0.05)) for r in RESPONSE_LENS]
    adv = torch.randn(len(PROMPT_LENS), generator=gen, dtype=torch.float64)
    data = TensorDict({
        "input_ids": _nested([torch.arange(p + r) for p, r in zip(PROMPT_LENS, RESPONSE_LENS, strict=True)]),
        "prompts": _nested([torch.arange(p) for p in PROMPT_LENS]),
        "responses": _nested([torch.arange(r) for r in RESPONSE_LENS]),
        "response_mask": _nested([torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]),
        "loss_mask": _nested([torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]),
        "old_log_probs": _nested(old),
        "advantages": _nested([adv[i].expand(r).clone() for i, r in zip(rows, RESPONSE_LENS, strict=True)]),
        "row": torch.arange(len(PROMPT_LENS)),
    }, batch_size=[len(PROMPT_LENS)])
    # as forward_backward_batch does, before splitting: totals of the whole mini-batch (one data-parallel rank)
    tu.assign_non_tensor(data, batch_num_tokens=sum(RESPONSE_LENS), dp_size=1, global_batch_size=len(PROMPT_LENS))
    return data


def _log_probs(theta, rows):
    """log pi over prompt+response tokens of `rows`, jagged, from the per-token parameters theta (differentiable)."""
    return _nested([torch.nn.functional.logsigmoid(theta[i][: PROMPT_LENS[i] + RESPONSE_LENS[i]]) for i in rows])


def _gradient(split, loss_scale_factor):
    theta = torch.linspace(-2.0, 3.0, len(PROMPT_LENS) * 12, dtype=torch.float64).reshape(len(PROMPT_LENS), 12)
    theta = (theta + 0.7 * torch.sin(7 * theta)).requires_grad_()
    data = _mini_batch(theta)
    if split == "dynamic":  # verl's token budget: at most 12 prompt+response tokens per micro-batch
        tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=12)
    else:
        tu.assign_non_tensor(data, use_dynamic_bsz=False, micro_batch_size_per_gpu=split)
    micro_batches, _ = prepare_micro_batches(data, dp_group=None)
    config = verl_path.make_actor_config("drpo", mini_batch_size=len(PROMPT_LENS), rollout_n=1,
                                         loss_scale_factor=loss_scale_factor)
    total, sizes = 0.0, []
    for mb in micro_batches:
        assert tu.get_non_tensor_data(mb, "batch_num_tokens", None) == sum(RESPONSE_LENS)  # totals survive the split
        rows = mb["row"].tolist()
        loss, _ = ppo_loss(config, {"log_probs": _log_probs(theta, rows)}, mb)
        loss.backward()  # the engine back-propagates each micro-batch's loss as it is
        total += loss.item()
        sizes.append(len(rows))
    return theta.grad.clone(), total, sizes


def test_token_budget_batching_gives_the_fixed_micro_batch_gradient_with_a_fixed_horizon():
    whole, loss_whole, _ = _gradient(len(PROMPT_LENS), HORIZON)
    fixed, loss_fixed, fixed_sizes = _gradient(2, HORIZON)
    dynamic, loss_dynamic, dynamic_sizes = _gradient("dynamic", HORIZON)
    assert fixed_sizes == [2, 2, 2, 2]
    assert len(set(dynamic_sizes)) > 1 and sum(dynamic_sizes) == len(PROMPT_LENS)  # unequal sequence counts
    assert whole.abs().sum() > 0
    torch.testing.assert_close(fixed, whole, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dynamic, whole, rtol=1e-12, atol=1e-14)
    assert loss_dynamic == pytest.approx(loss_whole, rel=1e-12) and loss_fixed == pytest.approx(loss_whole, rel=1e-12)


def test_without_a_fixed_horizon_the_split_leaks_into_the_gradient():
    whole, _, _ = _gradient(len(PROMPT_LENS), None)
    dynamic, _, _ = _gradient("dynamic", None)
    assert not torch.allclose(dynamic, whole, rtol=1e-6, atol=1e-9)

"""Two data-parallel ranks (torch.distributed over gloo, one process each), driven through verl's own functions:
`ppo_loss` per micro-batch, the gradient all-reduce, and verl's metric path (`append_to_dict` per micro-batch,
`allgather_dict_into_dict` across ranks, `Metric.aggregate_dp`, the trainer's `reduce_metrics`).

- A -inf rollout log-prob at a valid token on one rank: both ranks finish forward, backward and the all-reduce
  (default), where strict mode (`nonfinite_tokens=raise`) stops that rank alone and the other never completes.
- One empty micro-batch: the logged values are what docs/metrics.md says they are.
"""

import json
import math
import traceback
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import verl  # noqa: F401  (registers the plugin through its entry point)
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl.utils import tensordict_utils as tu
from verl.utils.metric import reduce_metrics
from verl.utils.metric.utils import AggregationType, Metric
from verl.utils.py_functional import append_to_dict
from verl.utils.torch_functional import allgather_dict_into_dict
from verl.workers.config import PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from verl_drpo import metrics as M
from verl_drpo.config import DRPOPolicyLossConfig

from helpers import actor_config, batch, call, ppo_loss_data

BAD_TOKEN = (0, 0)  # micro-batch "C" of rank 1: a valid token (every sequence of batch() has one)


def micro_batches():
    """rank -> its two micro-batches (log pi, log mu, A, mask): rank 0 holds A and B, rank 1 holds C (with a -inf
    rollout log-prob at a valid token) and D, which is empty."""
    lp, old, adv, mask = batch(bs=8, length=6, dtype=torch.float32, seed=3)
    old = old.clone()
    c_old = old[4:6].clone()
    c_old[BAD_TOKEN] = -math.inf
    empty = torch.zeros_like(mask[6:8])
    return {0: [(lp[0:2], old[0:2], adv[0:2], mask[0:2]), (lp[2:4], old[2:4], adv[2:4], mask[2:4])],
            1: [(lp[4:6], c_old, adv[4:6], mask[4:6]), (lp[6:8], old[6:8], adv[6:8], empty)]}


def strict_or_not(strict):
    policy_loss = DRPOPolicyLossConfig(loss_mode="drpo", drpo_delta=0.3, nonfinite_tokens="raise" if strict else "mask")
    return actor_config("drpo", policy_loss=policy_loss, use_kl_loss=False, entropy_coeff=0.0)


def rank_main(rank, init_file, out_dir, strict):
    """One data-parallel rank: two micro-batches through verl's ppo_loss with a one-parameter 'model'
    (log pi = (1 + theta) * log pi_0), the gradient all-reduce, then verl's metric path. Writes what happened."""
    result = {"rank": rank, "all_reduced": False}
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                timeout=timedelta(seconds=20))
        parts = micro_batches()
        total_tokens = sum(int(m.sum()) for r in parts.values() for (_, _, _, m) in r)
        theta = torch.zeros(1, requires_grad=True)
        per_micro_batch = {}
        for lp, old, adv, mask in parts[rank]:
            flat_lp0, data = ppo_loss_data(lp, old, adv, mask)
            tu.assign_non_tensor(data, dp_size=2, batch_num_tokens=total_tokens, global_batch_size=8)
            loss, metrics = ppo_loss(strict_or_not(strict), {"log_probs": flat_lp0.detach() * (1 + theta)}, data)
            loss.backward()
            append_to_dict(per_micro_batch, metrics)
        result["finished_backward"] = True
        grad = theta.grad.clone()
        dist.all_reduce(grad)  # what FSDP does with every gradient
        result.update(all_reduced=True, grad=grad.item(), own_grad=theta.grad.item())
        gathered = allgather_dict_into_dict(per_micro_batch)  # verl's _postprocess_output
        step = {}
        for key, lists in gathered.items():  # verl's update_actor, one mini-batch
            append_to_dict(step, {key: [Metric.aggregate_dp(lists)]})
        result["logged"] = {k: float(v) for k, v in reduce_metrics(step).items()}  # the trainer
    except Exception as exc:  # noqa: BLE001  (record what stopped this rank; the test reads it)
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


def run_two_ranks(tmp_path, strict):
    mp.spawn(rank_main, args=(tmp_path / "init", tmp_path, strict), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_a_minus_inf_rollout_log_prob_on_one_rank_does_not_stop_either_rank(tmp_path):
    ranks = run_two_ranks(tmp_path, strict=False)
    for r in ranks:
        assert "error" not in r, r.get("traceback")
        assert r["all_reduced"] and math.isfinite(r["grad"]) and math.isfinite(r["own_grad"])
    assert ranks[0]["grad"] == ranks[1]["grad"]
    # the bad token is left out: the same gradient as with it removed from the mask, the rest unchanged
    parts = micro_batches()
    c_lp, c_old, c_adv, c_mask = parts[1][0]
    without = c_mask.clone()
    without[BAD_TOKEN] = False
    x = c_lp.clone().requires_grad_(True)
    config = strict_or_not(False)
    loss, _ = call("drpo", x, torch.where(without, c_old, 0.0), c_adv, without, config)
    loss.backward()
    # d/dtheta of (1 + theta) log pi_0 at theta = 0 is log pi_0; verl's global token count keeps the bad token
    n_total = sum(int(m.sum()) for r in parts.values() for (_, _, _, m) in r)
    expected_c = (x.grad * c_lp).sum().item() * int(without.sum()) / n_total * 2  # dp_size 2, global tokens
    assert ranks[1]["own_grad"] == pytest.approx(expected_c, rel=1e-4)
    logged = ranks[0]["logged"]
    assert logged[M.NONFINITE_FRAC] == pytest.approx((1 / int(c_mask.sum())) / 4)  # mean over 2 ranks x 2 mbs
    assert ranks[1]["logged"] == logged


@pytest.mark.slow
def test_strict_mode_stops_the_rank_that_saw_it_and_the_other_never_completes_its_all_reduce(tmp_path):
    ranks = run_two_ranks(tmp_path, strict=True)
    assert "FloatingPointError: drpo: non-finite values" in ranks[1]["error"] and not ranks[1]["all_reduced"]
    assert ranks[0].get("finished_backward") and not ranks[0]["all_reduced"]  # NCCL would wait until its timeout


@pytest.mark.slow
def test_with_an_empty_micro_batch_the_logged_values_are_what_their_names_say(tmp_path):
    """After verl's own aggregation: means are unweighted over micro-batches and ranks with the empty micro-batch as
    0 (so 3/4 of the mean over the three with tokens), `*_microbatch_max_mean` / `_min_mean` the mean of the
    micro-batch extremes, and empty_microbatch_frac the share of empty micro-batches."""
    logged = run_two_ranks(tmp_path, strict=False)[0]["logged"]
    own = {}
    parts = micro_batches()
    for lp, old, adv, mask in (*parts[0], parts[1][0]):
        _, m = call("drpo", lp, old, adv, mask, strict_or_not(False))
        append_to_dict(own, {k: [v] for k, v in m.items()})
    assert logged[M.EMPTY_MICROBATCH_FRAC] == 0.25
    for stat in ("ratio_mean", "weight_mean", "ratio_max", "weight_min", "weight_max", "abs_prob_diff_max"):
        name = M.logged_name(stat)
        mean_of_three = float(np.mean(own[name]))
        assert logged[name] == pytest.approx(0.75 * mean_of_three, rel=1e-6), name
        assert logged[name] / (1 - logged[M.EMPTY_MICROBATCH_FRAC]) == pytest.approx(mean_of_three, rel=1e-6)
    # a "max" is the mean of micro-batch maxima, below the max over all tokens whenever the maxima differ
    assert logged[M.logged_name("ratio_max")] < max(own[M.logged_name("ratio_max")])


def test_a_loss_cannot_return_a_max_metric_through_verls_ppo_loss(monkeypatch):
    """Why the extremes are renamed instead of aggregated as MAX/MIN: verl 0.9.1's ppo_loss wraps a loss's metrics
    in Metric(MEAN), and a Metric with MAX inside makes that raise. If this test fails, verl honours a loss's own
    aggregation: return the extremes as Metric(MAX/MIN) and name them plainly again (verl_drpo/metrics.py)."""
    lp, old, adv, mask = batch(bs=2, length=4, dtype=torch.float32)

    def loss_with_a_max_metric(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                               rollout_is_weights=None):
        return (log_prob * response_mask).sum() * 0.0, {"test/ratio_max": Metric(AggregationType.MAX, 1.0)}

    monkeypatch.setitem(POLICY_LOSS_REGISTRY, "test_max_metric", loss_with_a_max_metric)
    config = actor_config("drpo", policy_loss=PolicyLossConfig(loss_mode="test_max_metric"), use_kl_loss=False,
                          entropy_coeff=0.0)
    flat_lp, data = ppo_loss_data(lp, old, adv, mask)
    with pytest.raises(ValueError, match="Aggregation type mismatch"):
        ppo_loss(config, {"log_probs": flat_lp}, data)

"""Unit tests of the lab's machinery: task, staleness, mismatch, advantages, and the verl loss path."""

import math

import pytest
import torch

from verl_drpo.lab.policy import ModelSpec, SnapshotQueue, build_model, generate, response_log_probs
from verl_drpo.lab.task import Task, TaskSpec
from verl_drpo.lab.train import LabConfig, Setting, group_advantages, mean_abs_prob_diff, run_rl
from verl_drpo.lab.verl_path import METHODS, MiniBatch, make_actor_config, to_verl_inputs, verl_policy_loss

TINY = ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1)


@pytest.fixture(scope="module")
def task():
    return Task(TaskSpec())


@pytest.fixture(scope="module")
def model(task):
    return build_model(task.vocab_size, TINY, seed=0)


def _rollout(task, model, n=6, sigma=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    symbols = task.sample_symbols(n, gen)
    return symbols, generate(model, task.encode_prompts(symbols), task.spec.max_response_len, task.eos_id,
                             task.pad_id, gen, logit_noise_std=sigma)


def test_task_verifier_and_tokenizer(task):
    symbols = [3, 0, 17]
    ids = task.encode_answers([symbols])[0]
    assert task.tokenizer.decode(ids).split() == ["s17", "s0", "s3", "<eos>"]
    assert task.reward(symbols, ids) == 1.0
    assert task.reward(symbols, ids + [task.pad_id, 7]) == 1.0  # anything after <eos> is ignored
    assert task.reward(symbols, ids[:-1]) == 0.0  # no <eos>: truncated, not an answer
    assert task.reward(symbols, list(reversed(ids[:-1])) + [task.eos_id]) == 0.0
    # long tail: the rarest symbol is far rarer than the most frequent one
    assert task.probs[0] / task.probs[-1] > 50
    with pytest.raises(ValueError, match="min_len"):
        Task(TaskSpec(min_len=4, max_len=3))


def test_group_advantages_closed_form():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    a = group_advantages(r, 4)
    assert torch.allclose(a, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]))
    with pytest.raises(ValueError, match="groups"):
        group_advantages(r, 3)


def test_without_mismatch_mu_is_pi(task, model):
    _, ro = _rollout(task, model, sigma=0.0)
    pi = response_log_probs(model, ro)
    m = ro.response_mask.bool()
    assert torch.allclose(pi[m], ro.rollout_log_probs[m], atol=1e-5)
    assert mean_abs_prob_diff(pi, ro.rollout_log_probs, ro.response_mask) < 1e-6


def test_mismatch_mu_is_the_noisy_sampler_and_abs_diff_matches_direct(task, model):
    sigma = 1.0
    symbols, ro = _rollout(task, model, sigma=sigma, seed=3)
    # the first sampled token: recompute the noisy distribution with the same generator stream
    gen = torch.Generator().manual_seed(3)
    task.sample_symbols(len(symbols), gen)  # advance the stream as _rollout did
    logits = model(input_ids=ro.prompt_ids, attention_mask=ro.prompt_mask,
                   position_ids=(ro.prompt_mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1].float()
    noisy = torch.log_softmax(logits + sigma * torch.randn(logits.shape, generator=gen), -1)
    mu0 = noisy.gather(-1, ro.response_ids[:, :1]).squeeze(-1)
    assert torch.allclose(mu0, ro.rollout_log_probs[:, 0], atol=1e-5)
    # the reported mean |pi - mu| is the direct mean over the valid response tokens
    pi = response_log_probs(model, ro).detach()
    direct = [abs(math.exp(pi[i, t]) - math.exp(ro.rollout_log_probs[i, t]))
              for i in range(pi.shape[0]) for t in range(pi.shape[1]) if ro.response_mask[i, t]]
    assert mean_abs_prob_diff(pi, ro.rollout_log_probs, ro.response_mask) == pytest.approx(
        sum(direct) / len(direct), rel=1e-5)
    assert sum(direct) / len(direct) > 1e-3
    with pytest.raises(ValueError, match="logit_noise_std"):
        generate(model, [[1, 2]], 2, task.eos_id, task.pad_id, None, logit_noise_std=float("nan"))


def test_snapshot_queue_returns_weights_k_steps_old(task):
    m = build_model(task.vocab_size, TINY, seed=1)
    q = SnapshotQueue(k=2)
    history = []
    for step in range(5):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (step + 1))
        q.push(step, m)
        history.append({k: v.clone() for k, v in m.state_dict().items()})
        b_step, state = q.behaviour_state()
        assert b_step == max(0, step - 2)
        for k, v in state.items():
            assert torch.equal(v, history[b_step][k])
    with pytest.raises(ValueError):
        SnapshotQueue(-1)
    with pytest.raises(RuntimeError, match="empty"):
        SnapshotQueue(0).behaviour_state()


def test_run_rl_behaviour_really_is_k_steps_old(task):
    cfg = LabConfig(model=TINY, sft_steps=0, steps=4, prompts_per_step=4, group_size=2, mini_batches=2,
                    eval_every=2, eval_prompts=8)
    init = build_model(task.vocab_size, TINY, max_positions=cfg.task.max_prompt_len + cfg.task.max_response_len,
                       seed=0).state_dict()
    for k in (0, 3):
        r = run_rl("pg_is", Setting(staleness=k), 0, cfg, init)
        # before rollout s, 2*(s-1) optimizer steps were taken; the behaviour is min(k, that) steps old
        assert r["per_step"]["behaviour_age"] == [min(k, 2 * s) for s in range(4)]
    # fresh weights and no noise: the first rollout has pi == mu exactly
    assert r["per_step"]["abs_prob_diff"][0] < 1e-6


def test_verl_inputs_round_trip_and_pg_is_closed_form(task, model):
    from verl.workers.utils.padding import no_padding_2_padding

    _, ro = _rollout(task, model, n=5)
    adv = torch.tensor([1.0, -0.5, 0.25, 0.0, -1.0])[:, None] * ro.response_mask
    mu = ro.rollout_log_probs - 0.1 * ro.response_mask  # a known ratio r = exp(0.1) on every token
    mb = MiniBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, mu, adv)
    from verl_drpo.lab.policy import sequence_log_probs

    seq_lp = sequence_log_probs(model, ro.input_ids, ro.attention_mask)
    out, data = to_verl_inputs(seq_lp, mb)
    padded = no_padding_2_padding(out["log_probs"], data)
    m = ro.response_mask.bool()
    assert torch.allclose(padded[m], response_log_probs(model, ro)[m])
    assert data["batch_num_tokens"] == int(m.sum()) and data["global_batch_size"] == 5 and data["dp_size"] == 1

    cfg = make_actor_config("pg_is", mini_batch_size=5, rollout_n=1, loss_scale_factor=task.spec.max_response_len)
    loss, metrics = verl_policy_loss(cfg, seq_lp, mb)
    r = (padded - mu).exp()
    # seq-mean-token-sum-norm: sum over tokens, mean over sequences, divided by the constant horizon
    expected = (-(adv * r) * ro.response_mask).sum() / 5 / task.spec.max_response_len
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "actor/pg_loss" in metrics
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_drpo_through_verl_matches_eq8(task, model):
    _, ro = _rollout(task, model, n=4, seed=5)
    adv = torch.tensor([0.75, -0.25, -0.25, -0.25])[:, None] * ro.response_mask
    mu = ro.rollout_log_probs + 0.3 * ro.response_mask
    mb = MiniBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, mu, adv)
    from verl_drpo.lab.policy import sequence_log_probs

    with torch.no_grad():
        seq_lp = sequence_log_probs(model, ro.input_ids, ro.attention_mask)
        lp = response_log_probs(model, ro)
    delta = METHODS["drpo_d0.2"]["policy_loss"]["drpo_delta"]
    cfg = make_actor_config("drpo_d0.2", 4, 4, task.spec.max_response_len)
    loss, _ = verl_policy_loss(cfg, seq_lp, mb)
    r = (lp - mu).exp()
    tok = -adv * r + adv.abs() * mu.exp() * (r - 1) ** 2 / (2 * delta)
    expected = (tok * ro.response_mask).sum() / 4 / task.spec.max_response_len
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_every_method_builds_a_real_actor_config():
    from verl.workers.config import ActorConfig

    for name, spec in METHODS.items():
        cfg = make_actor_config(name, 8, 8, 6)
        assert isinstance(cfg, ActorConfig)
        assert cfg.policy_loss.loss_mode == spec["loss_mode"]
        assert cfg.loss_agg_mode == "seq-mean-token-sum-norm"
    assert make_actor_config("vanilla", 8, 8, 6).clip_ratio_high == 0.28
    assert make_actor_config("drpo", 8, 8, 6).policy_loss.drpo_delta == 12.5
    with pytest.raises(ValueError, match="unknown lab method"):
        make_actor_config("drpoo", 8, 8, 6)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="staleness"):
        Setting(staleness=-1)
    with pytest.raises(ValueError, match="mismatch"):
        Setting(mismatch=float("inf"))
    with pytest.raises(ValueError, match="divisible"):
        LabConfig(prompts_per_step=6, mini_batches=4)
    with pytest.raises(ValueError, match="group_size"):
        LabConfig(group_size=1)

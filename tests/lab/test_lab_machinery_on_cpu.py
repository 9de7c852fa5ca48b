"""Unit tests of the lab's machinery: task, staleness, mismatch, advantages, and the verl loss path."""

import math

import pytest
import torch

from verl_drpo import modes
from verl_drpo.lab.design import METHODS, Condition, LabConfig, Method, ModelSpec, TaskSpec
from verl_drpo.lab.policy import SnapshotQueue, build_model, generate, response_log_probs, round_weights
from verl_drpo.lab.policy import sequence_log_probs
from verl_drpo.lab.task import Task
from verl_drpo.lab.evaluate import eval_set, exact_success_per_prompt, teacher_batch
from verl_drpo.lab.rollout import group_advantages
from verl_drpo.lab.train import effective_weights, mean_abs_prob_diff, run_rl
from verl_drpo.lab.warm_start import smoothed_nll
from verl_drpo.lab.verl_path import MiniBatch, make_actor_config, to_verl_inputs, verl_policy_loss

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
        TaskSpec(min_len=4, max_len=3)


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
        r = run_rl("pg_is", Condition(staleness=k), 0, cfg, init)
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
    with torch.no_grad():
        seq_lp = sequence_log_probs(model, ro.input_ids, ro.attention_mask)
        lp = response_log_probs(model, ro)
    delta = METHODS["drpo_d0.2"].settings["drpo_delta"]
    cfg = make_actor_config("drpo_d0.2", 4, 4, task.spec.max_response_len)
    loss, _ = verl_policy_loss(cfg, seq_lp, mb)
    r = (lp - mu).exp()
    tok = -adv * r + adv.abs() * mu.exp() * (r - 1) ** 2 / (2 * delta)
    expected = (tok * ro.response_mask).sum() / 4 / task.spec.max_response_len
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_every_method_builds_a_real_actor_config():
    from verl.workers.config import ActorConfig

    for name, method in METHODS.items():
        cfg = make_actor_config(name, 8, 8, 6)
        assert isinstance(cfg, ActorConfig)
        assert cfg.policy_loss.loss_mode == method.mode
        assert cfg.loss_agg_mode == "seq-mean-token-sum-norm"
        # every setting of the mode reaches the config: the table's default unless the method overrides it
        for s in modes.get(method.mode).settings:
            where = cfg.policy_loss if s.where == "policy_loss" else cfg
            assert getattr(where, s.field) == method.settings[s.field], (name, s.field)
    assert make_actor_config("vanilla", 8, 8, 6).clip_ratio_high == modes.MODES["vanilla"].actor[1].default == 0.28
    assert make_actor_config("drpo", 8, 8, 6).policy_loss.drpo_delta == modes.POLICY_LOSS_FIELDS["drpo_delta"].default
    assert make_actor_config("drpo_d0.2", 8, 8, 6).policy_loss.drpo_delta == 0.2
    assert make_actor_config("dppo_tv", 8, 8, 6).clip_ratio_c == 10000.0
    with pytest.raises(ValueError, match="has no setting"):
        Method("bad", "dppo_tv", (("drpo_delta", 1.0),))
    with pytest.raises(ValueError, match="unknown loss mode"):
        Method("bad", "ppo2")
    with pytest.raises(ValueError, match="unknown lab method"):
        make_actor_config("drpoo", 8, 8, 6)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="staleness"):
        Condition(staleness=-1)
    with pytest.raises(ValueError, match="mismatch"):
        Condition(mismatch=float("inf"))
    with pytest.raises(ValueError, match="divisible"):
        LabConfig(prompts_per_step=6, mini_batches=4)
    with pytest.raises(ValueError, match="group_size"):
        LabConfig(group_size=1)


def _enumerate_success(model, task, symbols):
    """Brute force: sum over every response the sampler can produce (stopping at <eos> or at the length limit) of
    P(response) * reward(response), with P from one forward pass per prefix."""
    prompt = task.encode_prompts([symbols])[0]
    vocab = task.vocab_size

    def walk(prefix, prob):
        if len(prefix) == task.spec.max_response_len or (prefix and prefix[-1] == task.eos_id):
            return prob * task.reward(symbols, prefix)
        ids = torch.tensor([prompt + prefix])
        with torch.no_grad():
            p_next = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        return sum(walk(prefix + [v], prob * p_next[v].item()) for v in range(vocab))

    return walk([], 1.0)


def test_exact_success_equals_brute_force_enumeration():
    task = Task(TaskSpec(num_symbols=3, min_len=1, max_len=2))  # 8 tokens, responses of up to 3 tokens
    model = build_model(task.vocab_size, TINY, seed=4, dtype="float64")
    symbol_lists = [[0], [2], [1, 0], [2, 2]]
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    # a little supervised training (float64, left-padded prompts of two lengths: before the attention-bias fix in
    # policy.py this made every weight NaN), so that the exact success is far from 0
    for _ in range(15):
        opt.zero_grad()
        smoothed_nll(model, teacher_batch(task, symbol_lists), 0.0).backward()
        opt.step()
    exact = exact_success_per_prompt(model, teacher_batch(task, symbol_lists))
    brute = torch.tensor([_enumerate_success(model, task, s) for s in symbol_lists], dtype=torch.float64)
    assert brute.min() > 1e-3 and brute.max() > 0.2
    # The model is float64, but transformers' eager attention takes its softmax in float32, and the two paths run it
    # on different sequence lengths (so different reduction orders and, per CPU, different vector kernels): measured
    # relative difference 0 with AVX-512 or ATEN_CPU_CAPABILITY=default, 3.6e-8 with =avx2. Bound: each response
    # token's probability carries about (attention positions) float32 roundings, and a success multiplies up to
    # max_response_len tokens; a factor 4 of headroom. Any real error (a missed <eos>, a shifted position) is >= 1e-3.
    positions = task.spec.max_prompt_len + task.spec.max_response_len
    rtol = 4 * task.spec.max_response_len * positions * torch.finfo(torch.float32).eps
    assert rtol < 1e-4
    assert torch.allclose(exact, brute, rtol=rtol, atol=0), ((exact - brute).abs() / brute).max().item()


def test_eval_set_is_fixed_and_large():
    task = Task(TaskSpec())
    a, b = eval_set(task, LabConfig().eval_prompts), eval_set(task, LabConfig().eval_prompts)
    assert a.symbols == b.symbols and len(a.symbols) >= 512


def _weights(task, model, method, ro, adv, mu):
    mb = MiniBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, mu, adv)
    seq_lp = sequence_log_probs(model, ro.input_ids, ro.attention_mask).detach().requires_grad_(True)
    loss, metrics = verl_policy_loss(make_actor_config(method, ro.response_ids.shape[0], 1, 6), seq_lp, mb)
    loss.backward()
    p = ro.prompt_ids.shape[1]
    w = effective_weights(seq_lp.grad[:, p - 1 : -1], seq_lp.detach()[:, p - 1 : -1], mb, 6, mu)
    return w, seq_lp.detach()[:, p - 1 : -1], metrics


def test_effective_weights_are_each_methods_table1_weight(task, model):
    _, ro = _rollout(task, model, n=6, seed=7)
    m = ro.response_mask
    adv = torch.tensor([1.0, -0.5, 0.5, -1.0, 0.25, 0.0])[:, None] * m
    shift = torch.linspace(-0.6, 0.6, m.numel()).view(m.shape)  # a spread of ratios on both sides of 1
    far = (torch.arange(m.numel()).view(m.shape) % 2).bool()  # every other token: mu = 0.5, far from pi (~1/45)
    mu = torch.where(far, torch.tensor(0.5).log(), ro.rollout_log_probs + shift) * m
    sel = m.bool() & (adv != 0)
    w, lp, _ = _weights(task, model, "pg_is", ro, adv, mu)
    assert torch.allclose(w, torch.ones_like(w), atol=1e-5)
    w, lp, _ = _weights(task, model, "drpo_d0.2", ro, adv, mu)
    expected = 1 - torch.sign(adv[sel]) * (lp[sel].exp() - mu[sel].exp()) / 0.2
    assert torch.allclose(w, expected, atol=1e-4)
    # dppo_tv: verl's mask sets the weight of every masked token to 0 and leaves the others at 1
    w, lp, metrics = _weights(task, model, "dppo_tv", ro, adv, mu)
    assert set(torch.round(w, decimals=4).tolist()) <= {0.0, 1.0}
    assert (w == 0).any() and (w == 1).any()
    # verl's pg_clipfrac is over all response tokens (A = 0 included), so it is at least the masked share here
    assert metrics["actor/pg_clipfrac"] >= (w == 0).float().sum().item() / m.sum().item() - 1e-6


def test_rounded_behaviour_weights_are_a_deterministic_mismatch(task):
    m = build_model(task.vocab_size, TINY, seed=2)
    b1 = build_model(task.vocab_size, TINY, seed=2)
    b2 = build_model(task.vocab_size, TINY, seed=2)
    round_weights(b1, "bfloat16")
    round_weights(b2, "bfloat16")
    assert all(torch.equal(x, y) for x, y in zip(b1.parameters(), b2.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(b1.parameters(), m.parameters()))
    _, ro = _rollout(task, b1, n=8, seed=1)
    mask = ro.response_mask.bool()
    gap = (response_log_probs(m, ro).detach() - ro.rollout_log_probs)[mask].abs().max()
    _, same = _rollout(task, m, n=8, seed=1)  # the unrounded behaviour: only float round-off
    gap_same = (response_log_probs(m, same).detach() - same.rollout_log_probs)[same.response_mask.bool()].abs().max()
    assert gap > 1e-4 and gap_same < 1e-5


def test_run_rl_in_float64_and_with_rounding():
    # the --full paths: float64, rounded behaviour weights, an arm without clipping, the sampled-success column
    cfg = LabConfig(model=TINY, dtype="float64", sft_steps=0, steps=2, prompts_per_step=2, group_size=2,
                    mini_batches=1, eval_every=1, eval_prompts=8, sampled_eval=True)
    task = Task(cfg.task)
    init = build_model(task.vocab_size, TINY, max_positions=cfg.task.max_prompt_len + cfg.task.max_response_len,
                       seed=0, dtype="float64").state_dict()
    assert all(v.dtype == torch.float64 for v in init.values() if v.is_floating_point())
    r = run_rl("drpo_d0.2_noclip", Condition(0, 0.0, "bfloat16"), 0, cfg, init)
    assert r["abs_prob_diff_mean"] > 0  # rounded behaviour weights: pi != mu from the first rollout
    assert len(r["curve"]["success"]) == 3 and len(r["curve"]["sampled_success"]) == 3
    assert all(s in (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0) for s in r["curve"]["sampled_success"])


def test_bf16_rounded_logits_are_a_deterministic_biased_mismatch(task, model):
    from verl_drpo.lab.rollout import logit_rounding

    assert logit_rounding(Condition(0, 0.0, "bfloat16_logits")) == "bfloat16" and logit_rounding(Condition()) is None
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    prompts = task.encode_prompts(task.sample_symbols(8, torch.Generator().manual_seed(5)))
    a = generate(model, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen(), logit_rounding="bfloat16")
    b = generate(model, prompts, task.spec.max_response_len, task.eos_id, task.pad_id, gen(), logit_rounding="bfloat16")
    assert torch.equal(a.rollout_log_probs, b.rollout_log_probs)  # deterministic
    pi = response_log_probs(model, a).detach()
    gap = (pi - a.rollout_log_probs)[a.response_mask.bool()].abs()
    # bfloat16 keeps 8 significant bits: logits of size ~1 move by up to 2^-8, so mu differs from pi by that order,
    # far above float32 round-off (1e-6) and far below a real policy change
    assert 1e-4 < gap.max().item() < 0.1


def test_the_shared_rollout_builder_scores_groups_and_rounds_only_weight_conditions(task, model):
    """rollout.sample_rollout (used by the RL loop and the mechanism check): groups of `group_size` consecutive
    sequences of the same prompt, rewards from the verifier, advantages centred per group and zero on padding; the
    same seed's generators give the same batch; load_behaviour rounds the weights only for a weight rounding."""
    from verl_drpo.lab.rollout import load_behaviour, rollout_generators, sample_rollout

    cfg = LabConfig(model=TINY, prompts_per_step=3, group_size=4, mini_batches=1)
    cond = Condition(0, 0.5)
    a = sample_rollout(model, task, cfg, cond, *rollout_generators(7))
    b = sample_rollout(model, task, cfg, cond, *rollout_generators(7))
    ro = a.rollout
    assert ro.response_ids.shape[0] == 12 and torch.equal(ro.response_ids, b.rollout.response_ids)
    prompts = ro.prompt_ids.view(3, 4, -1)
    assert torch.equal(prompts, prompts[:, :1].expand_as(prompts))  # each group answers one prompt
    assert set(a.rewards.tolist()) <= {0.0, 1.0}
    assert a.sequence_advantages.view(3, 4).sum(1).abs().max().item() < 1e-6
    assert torch.equal(a.token_advantages[ro.response_mask == 0], torch.zeros(int((ro.response_mask == 0).sum())))
    state = model.state_dict()
    behaviour = build_model(task.vocab_size, TINY, seed=1)
    load_behaviour(behaviour, state, Condition(0, 0.0, "bfloat16_logits"))
    assert all(torch.equal(behaviour.state_dict()[k], v) for k, v in state.items())  # logits rounded at sampling
    load_behaviour(behaviour, state, Condition(0, 0.0, "bfloat16"))
    w = next(v for k, v in behaviour.state_dict().items() if v.is_floating_point() and v.numel() > 100)
    assert torch.equal(w, w.to(torch.bfloat16).to(w.dtype))  # every weight representable in bfloat16
    assert not all(torch.equal(behaviour.state_dict()[k], v) for k, v in state.items())

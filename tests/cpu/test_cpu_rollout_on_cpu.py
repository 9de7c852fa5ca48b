"""The hf_cpu rollout server: sampling distribution and log-probs, stops, max_tokens, batching, abort, weights."""

import asyncio
import types

import pytest
import torch

from verl.utils.torch_functional import logprobs_from_logits
from verl_drpo.cpu.rollout import HFRolloutServer, sampling_log_probs


# ---- the sampling distribution ----------------------------------------------------------------------------------------


def test_sampling_log_probs_closed_forms():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    torch.testing.assert_close(sampling_log_probs(logits, 0.5), torch.log_softmax(logits / 0.5, -1))
    torch.testing.assert_close(sampling_log_probs(logits, 0.0), torch.log_softmax(logits, -1))
    k2 = sampling_log_probs(logits, 1.0, top_k=2)
    torch.testing.assert_close(k2[:2], torch.log_softmax(logits[:2], -1))
    assert torch.isinf(k2[2:]).all()
    p = torch.softmax(logits, -1)  # [0.644, 0.237, 0.087, 0.032]
    tp = sampling_log_probs(logits, 1.0, top_p=0.85)  # 0.644 < 0.85, 0.881 >= 0.85 -> two tokens kept
    torch.testing.assert_close(tp[:2], torch.log(p[:2] / p[:2].sum()))
    assert torch.isinf(tp[2:]).all()
    assert torch.isfinite(sampling_log_probs(logits, 1.0, top_p=0.5)).sum() == 1  # the top token is always kept
    with pytest.raises(ValueError):
        sampling_log_probs(logits, -1.0)
    with pytest.raises(ValueError):
        sampling_log_probs(logits, 1.0, top_p=0.0)


# ---- the server --------------------------------------------------------------------------------------------------------


def _config(**kw):
    base = dict(response_length=16, prompt_length=64, max_model_len=None, max_num_seqs=64, seed=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.fixture(scope="module")
def server_and_tok(tiny_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_paths["model"])
    return HFRolloutServer(_config(), tiny_paths["model"]), tok


def _prompts(tok, n):
    out = []
    for i in range(n):  # different lengths, so a batch mixes left padding
        text = tok.apply_chat_template([{"role": "user", "content": "What is 1 plus 2?" + " ok" * (i % 4)}],
                                       add_generation_prompt=True, tokenize=False)
        out.append(tok.encode(text, add_special_tokens=False))
    return out


def _actor_log_probs(model, prompt, response, temperature):
    """What verl's actor recomputes: log_softmax(logits / T) of the sampled tokens, one unpadded forward."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return logprobs_from_logits(logits / temperature, torch.tensor(response))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_log_probs_are_the_sampling_distribution_in_batches(server_and_tok, temperature):
    srv, tok = server_and_tok
    prompts = _prompts(tok, 12)

    async def go():
        sp = dict(temperature=temperature, top_p=1.0, top_k=-1, logprobs=True, max_tokens=10, ignore_eos=True)
        return await asyncio.gather(*[srv.generate(str(i), p, dict(sp)) for i, p in enumerate(prompts)])

    n_batches = len(srv.batch_sizes)
    outs = asyncio.run(go())
    assert max(srv.batch_sizes[n_batches:]) > 1, "concurrent requests were not batched"
    for p, o in zip(prompts, outs):
        assert len(o.token_ids) == 10 and len(o.log_probs) == 10 and o.stop_reason == "completed"
        expected = _actor_log_probs(srv.model, p, o.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(o.log_probs), expected, atol=2e-5, rtol=0)


def test_sample_frequencies_match_returned_probabilities(server_and_tok):
    srv, tok = server_and_tok
    prompt = _prompts(tok, 1)[0]
    n = 1500

    async def go():
        sp = dict(temperature=1.3, logprobs=True, max_tokens=1)
        return await asyncio.gather(*[srv.generate(str(i), prompt, dict(sp)) for i in range(n)])

    outs = asyncio.run(go())
    with torch.no_grad():
        last = srv.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    dist = sampling_log_probs(last, 1.3).exp()
    counts = torch.zeros_like(dist)
    for o in outs:
        counts[o.token_ids[0]] += 1
        assert abs(o.log_probs[0] - dist[o.token_ids[0]].log().item()) < 1e-5
    freq = counts / n
    # each token's frequency is within 4.5 binomial standard deviations of its probability
    sd = (dist * (1 - dist) / n).sqrt()
    worst = ((freq - dist).abs() / (sd + 1e-12)).max().item()
    assert worst < 4.5, f"a token's sampling frequency is {worst:.1f} standard deviations off its probability"


def test_stop_tokens_max_tokens_and_logprobs_flag(server_and_tok):
    srv, tok = server_and_tok
    prompt = _prompts(tok, 1)[0]

    async def go():
        free = await srv.generate("a", prompt, dict(temperature=1.0, max_tokens=12, ignore_eos=True, logprobs=True))
        greedy = await srv.generate("c", prompt, dict(temperature=0.0, max_tokens=12, ignore_eos=True))
        stop_at = greedy.token_ids[3]
        stopped = await srv.generate("b", prompt, dict(temperature=0.0, max_tokens=12, ignore_eos=True,
                                                       stop_token_ids=[stop_at]))
        no_lp = await srv.generate("d", prompt, dict(temperature=1.0, max_tokens=3, logprobs=False))
        default_len = await srv.generate("e", prompt, dict(temperature=1.0, ignore_eos=True))
        return free, stop_at, stopped, greedy, no_lp, default_len

    free, stop_at, stopped, greedy, no_lp, default_len = asyncio.run(go())
    assert len(free.token_ids) == 12 and len(greedy.token_ids) == 12
    # greedy with a stop token: ends at its first occurrence, stop token included
    cut = greedy.token_ids.index(stop_at) + 1
    assert cut <= 4 and stopped.token_ids == greedy.token_ids[:cut] and stopped.stop_reason == "completed"
    assert no_lp.log_probs is None and len(no_lp.token_ids) <= 3
    assert len(default_len.token_ids) == 16  # response_length caps an unbounded request
    assert free.extra_fields["global_steps"] is None


def test_eos_ends_a_response(server_and_tok):
    srv, tok = server_and_tok
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert eos in srv.eos_ids
    prompt = _prompts(tok, 1)[0]

    async def go():
        return await asyncio.gather(*[srv.generate(str(i), prompt, dict(temperature=1.0, max_tokens=16))
                                      for i in range(32)])

    for o in asyncio.run(go()):
        assert eos not in o.token_ids[:-1]
        assert o.token_ids[-1] == eos or len(o.token_ids) == 16


def test_abort_returns_partial_outputs_and_blocks_until_resume(tiny_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_paths["model"])
    srv = HFRolloutServer(_config(response_length=4000, prompt_length=64, max_model_len=8192), tiny_paths["model"])
    prompt = _prompts(tok, 1)[0]

    async def go():
        sp = dict(temperature=1.0, max_tokens=4000, ignore_eos=True, logprobs=True)
        running = [asyncio.create_task(srv.generate(str(i), prompt, dict(sp))) for i in range(3)]
        while not srv.batch_sizes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await srv.abort_all_requests()
        partial = await asyncio.gather(*running)
        late = asyncio.create_task(srv.generate("late", prompt, dict(sp, max_tokens=2)))
        await asyncio.sleep(0.3)
        blocked = not late.done()
        await srv.resume_generation()
        return partial, blocked, await late

    partial, blocked, late = asyncio.run(go())
    for o in partial:
        assert o.stop_reason == "aborted" and 0 < len(o.token_ids) < 4000
        assert len(o.log_probs) == len(o.token_ids)
    assert blocked, "a request sent while generation is paused must wait for resume_generation"
    assert late.stop_reason == "completed" and len(late.token_ids) == 2


def test_update_weights(tiny_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_paths["model"])
    srv = HFRolloutServer(_config(), tiny_paths["model"])
    prompt = _prompts(tok, 1)[0]
    state = {k: v.clone() for k, v in srv.model.state_dict().items() if k != "lm_head.weight"}  # tied to embeddings
    torch.manual_seed(0)
    state = {k: v + 0.5 * torch.randn_like(v) for k, v in state.items()}

    async def go():
        info = await srv.update_weights(state, global_steps=7)
        out = await srv.generate("x", prompt, dict(temperature=1.0, max_tokens=4, ignore_eos=True, logprobs=True))
        return info, out

    info, out = asyncio.run(go())
    assert info["weight_version"] == 1 and out.extra_fields["global_steps"] == 7
    for k, v in state.items():
        torch.testing.assert_close(srv.model.state_dict()[k], v)
    torch.testing.assert_close(torch.tensor(out.log_probs), _actor_log_probs(srv.model, prompt, out.token_ids, 1.0),
                               atol=2e-5, rtol=0)
    with pytest.raises(KeyError, match="does not have"):
        asyncio.run(srv.update_weights({**state, "bogus.weight": torch.zeros(1)}))
    with pytest.raises(KeyError, match="not sent"):
        asyncio.run(srv.update_weights({k: v for k, v in list(state.items())[1:]}))
    name = next(iter(state))
    with pytest.raises(ValueError, match="shape"):
        asyncio.run(srv.update_weights({**state, name: torch.zeros(3)}))


def test_bad_requests_fail_clearly(server_and_tok):
    srv, tok = server_and_tok
    prompt = _prompts(tok, 1)[0]
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        asyncio.run(srv.generate("r", prompt, dict(temperature=1.0, repetition_penalty=1.2)))
    with pytest.raises(ValueError, match="empty prompt"):
        asyncio.run(srv.generate("e", [], dict(temperature=1.0)))
    with pytest.raises(NotImplementedError, match="text-only"):
        asyncio.run(srv.generate("i", prompt, dict(temperature=1.0), image_data=[object()]))
    with pytest.raises(ValueError, match="no room"):
        asyncio.run(srv.generate("l", list(range(1, 90)), dict(temperature=1.0)))


# ---- the worker-side adapter -------------------------------------------------------------------------------------------


class _FakeRemote:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def remote(self, *args):
        async def call():
            self.log.append((self.name, args))

        return call()


class _FakeServer:
    def __init__(self):
        self.calls = []
        for name in ("update_weights", "wake_up", "sleep"):
            setattr(self, name, _FakeRemote(self.calls, name))


@pytest.mark.parametrize("rank,tp,leader,replica", [(0, 1, True, 0), (1, 1, True, 1), (1, 2, False, 0)])
def test_adapter_sends_weights_from_the_replica_leader_only(monkeypatch, rank, tp, leader, replica):
    from verl.workers.config import RolloutConfig

    from verl_drpo.cpu.rollout import HFServerAdapter

    monkeypatch.setenv("RANK", str(rank))
    adapter = HFServerAdapter(RolloutConfig(name="hf_cpu", mode="async", tensor_model_parallel_size=tp),
                              model_config=None, device_mesh=None)
    assert (adapter.is_leader, adapter.replica_rank) == (leader, replica)
    fake = _FakeServer()
    adapter._server = fake
    consumed = []

    def weights():
        for name in ("a", "b"):
            consumed.append(name)  # every rank must drain the generator (gathering shards is a collective)
            yield name, torch.full((2,), 1.0, dtype=torch.bfloat16)

    asyncio.run(adapter.update_weights(weights(), global_steps=3))
    asyncio.run(adapter.resume(["weights"]))
    asyncio.run(adapter.release())
    assert consumed == ["a", "b"]
    if leader:
        (name, (state, steps)), wake, sleep = fake.calls
        assert name == "update_weights" and steps == 3 and set(state) == {"a", "b"}
        assert state["a"].dtype == torch.float32
        assert wake[0] == "wake_up" and sleep[0] == "sleep"
    else:
        assert fake.calls == []
    with pytest.raises(NotImplementedError):
        asyncio.run(adapter.update_weights(iter([]), wire_format="delta_flush"))
    with pytest.raises(NotImplementedError, match="LoRA"):
        asyncio.run(adapter.update_weights(iter([]), peft_config={"r": 8}))

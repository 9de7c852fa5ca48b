"""The tiny policy, its log-probabilities, and the behaviour policy that samples rollouts.

The behaviour policy is what a rollout engine is in a real run: it samples the responses and reports mu, the
probability of each sampled token. Two knobs make it differ from the trained policy pi:

- staleness ``k``: the behaviour weights are the trained weights as they were ``k`` optimizer steps ago
  (``SnapshotQueue``), as in verl's one-step-off / fully-async modes where rollouts come from an older copy;
- mismatch ``sigma``: the behaviour logits are the policy's logits plus independent Gaussian noise of standard
  deviation ``sigma`` (in logit units, fresh per token and vocabulary entry), a stand-in for a rollout engine that
  computes the same policy differently (FP8 / BF16 kernels, other reduction orders). mu is the probability under
  these perturbed logits, so it is exactly what the sampler used;
- rounding: the behaviour weights rounded to bfloat16 or float16 (``round_weights``), a deterministic mismatch that
  biases mu systematically, as a low-precision engine does.

The training-inference mismatch a user can compare with a real run is the reported mean |pi - mu| over sampled
response tokens (verl logs the same quantity as ``training/rollout_probs_diff_mean``).

Sequences are stored as ``[left-padded prompt | right-padded response]``; ``attention_mask`` marks real tokens and
``position_ids`` count real tokens only, so padding never changes a log-probability.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass

import torch

from .design import LabConfig, ModelSpec


def build_model(vocab_size: int, spec: ModelSpec = ModelSpec(), max_positions: int = 32, seed: int = 0,
                dtype: str = "float32"):
    """A transformers Qwen2ForCausalLM with the given size, initialised from `seed` (in float32, so that both
    float environments start from the same numbers), then cast to `dtype`, on CPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        use_cache=False,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).float()
    return model.to(getattr(torch, dtype))


def max_positions(cfg: LabConfig) -> int:
    return cfg.task.max_prompt_len + cfg.task.max_response_len


def new_model(cfg: LabConfig, task, seed: int):
    """The lab's policy for ``cfg`` over ``task``'s vocabulary (a ``task.Task``), initialised from ``seed``."""
    return build_model(task.vocab_size, cfg.model, max_positions=max_positions(cfg), seed=seed, dtype=cfg.dtype)


@torch.no_grad()
def round_weights(model, fmt: str) -> None:
    """Round every parameter to `fmt` ("bfloat16" or "float16") and back, in place."""
    low = getattr(torch, fmt)
    for p in model.parameters():
        p.copy_(p.to(low).to(p.dtype))


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(bs, 1, L, L) additive attention mask: causal, padding keys masked, and every position allowed to see itself.

    The diagonal matters only for padding positions, whose outputs are never used: without it a left-padding query
    sees no key at all, and in float64 transformers' own mask then yields NaN there, which backpropagates NaN into
    every weight. Real positions get exactly the mask transformers builds (bit-identical logits in float32)."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (causal[None] & attention_mask.bool()[:, None, :]) | torch.eye(length, dtype=torch.bool)[None]
    zero, blocked = torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, zero, blocked)[:, None]


def next_token_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits (bs, seq_len, vocab) in the model's float type (at least float32); position t predicts token t + 1."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_bias(attention_mask, model.dtype),
        position_ids=position_ids_from_mask(attention_mask),
    )
    return out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))


def sequence_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(bs, seq_len) log pi(input[t+1] | input[<=t]) at position t; the last column is 0 (nothing follows)."""
    logits = next_token_logits(model, input_ids, attention_mask)
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.cat([logp, logp.new_zeros(logp.shape[0], 1)], dim=1)


def response_log_probs(model, batch: "Rollout") -> torch.Tensor:
    """(bs, response_len) log pi of each response token (zeros where response_mask is 0 do not matter)."""
    p = batch.prompt_ids.shape[1]
    logp = sequence_log_probs(model, batch.input_ids, batch.attention_mask)
    return logp[:, p - 1 : -1]


@dataclass
class Rollout:
    """One batch of sampled sequences, all tensors on CPU.

    prompt_ids (bs, P) left-padded; response_ids (bs, R) right-padded; response_mask (bs, R) 1 up to and including
    the first <eos>; rollout_log_probs (bs, R) log mu of each sampled token (0 where masked).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    rollout_log_probs: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, idx: torch.Tensor) -> "Rollout":
        return Rollout(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    gen: torch.Generator | None,
    logit_noise_std: float = 0.0,
    logit_rounding: str | None = None,
) -> Rollout:
    """Sample at temperature 1; return the rollout with log mu of every sampled token.

    With ``logit_noise_std > 0`` the sampler uses logits + N(0, std^2) noise drawn from ``gen`` (the mismatch knob);
    mu is then the probability under the noisy logits, the distribution that actually sampled the token. The noise
    is drawn in float32 whatever the model's float type, so both float environments consume the same random stream.
    With ``logit_rounding`` ("bfloat16" or "float16") the sampler's logits are rounded to that format first, as an
    inference engine that computes its logits in low precision would: a deterministic, biased mismatch of mu.
    """
    rounding_dtype = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}[logit_rounding]
    if logit_noise_std < 0 or not torch.isfinite(torch.tensor(logit_noise_std)):
        raise ValueError(f"logit_noise_std must be finite and >= 0, got {logit_noise_std}")
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    bs = prompt_ids.shape[0]
    ids, mask = prompt_ids, prompt_mask
    done = torch.zeros(bs, dtype=torch.bool)
    out_ids, out_mask, out_logp = [], [], []
    for _ in range(max_new_tokens):
        logits = next_token_logits(model, ids, mask)[:, -1]
        if rounding_dtype is not None:
            logits = logits.to(rounding_dtype).to(logits.dtype)
        if logit_noise_std > 0:
            logits = logits + logit_noise_std * torch.randn(logits.shape, generator=gen).to(logits.dtype)
        logp_all = torch.log_softmax(logits, dim=-1)
        tok = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(-1)
        alive = ~done
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        out_ids.append(tok)
        out_mask.append(alive.long())
        out_logp.append(torch.where(alive, logp_all.gather(-1, tok[:, None]).squeeze(-1), logp_all.new_zeros(bs)))
        done = done | (tok == eos_id)
        ids = torch.cat([ids, tok[:, None]], dim=1)
        mask = torch.cat([mask, alive.long()[:, None]], dim=1)
        if bool(done.all()):
            break
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=torch.stack(out_ids, 1),
        response_mask=torch.stack(out_mask, 1),
        rollout_log_probs=torch.stack(out_logp, 1),
    )


class SnapshotQueue:
    """The staleness knob: remembers the weights after each of the last ``k + 1`` optimizer steps.

    ``behaviour_state()`` returns the weights as they were ``k`` optimizer steps before the latest push (or the
    oldest kept state while fewer than ``k`` steps have been taken, i.e. the start of RL) and the optimizer step
    count they belong to.
    """

    def __init__(self, k: int):
        if k < 0:
            raise ValueError(f"staleness k must be >= 0, got {k}")
        self.k = k
        self._states: collections.deque = collections.deque(maxlen=k + 1)

    def push(self, step: int, model) -> None:
        self._states.append((step, copy.deepcopy({n: t.detach().clone() for n, t in model.state_dict().items()})))

    def behaviour_state(self) -> tuple[int, dict]:
        if not self._states:
            raise RuntimeError("SnapshotQueue is empty: push the initial weights first")
        return self._states[0]

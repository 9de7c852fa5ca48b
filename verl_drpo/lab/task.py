"""The lab's task: reverse a short list of symbols drawn from a long-tailed (Zipf) vocabulary.

A prompt reads ``rev s7 s0 s31 =`` and the only rewarded response is ``s31 s0 s7 <eos>`` (reward 1, else 0: a
verifiable, exact-match reward). Symbols are drawn with probability proportional to ``1 / (rank + 1) ** zipf_a``, so
a few symbols are frequent and most are rare. The model sees rare symbols seldom, samples them with small
probability mu and therefore meets the large per-token ratios pi/mu that motivate DPPO and DRPO. Responses are
multi-token (length ``min_len`` .. ``max_len`` plus ``<eos>``).

The tokenizer is built here (a word-level ``tokenizers`` model wrapped as a ``transformers`` fast tokenizer), so
nothing is downloaded.
"""

from __future__ import annotations

import torch

from .design import TaskSpec

PAD, BOS, EOS, REV, EQ = "<pad>", "<bos>", "<eos>", "rev", "="
SPECIALS = (PAD, BOS, EOS, REV, EQ)


def build_tokenizer(spec: TaskSpec):
    """A word-level fast tokenizer over the task's vocabulary (specials first, then s0..s{n-1})."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for s in range(spec.num_symbols):
        vocab[f"s{s}"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS)
    return tok


def symbol_probs(spec: TaskSpec) -> torch.Tensor:
    """Zipf probabilities of s0 (most frequent) .. s{n-1} (rarest), float64."""
    ranks = torch.arange(1, spec.num_symbols + 1, dtype=torch.float64)
    w = ranks ** (-spec.zipf_a)
    return w / w.sum()


class Task:
    """Prompt sampling, encoding and the exact-match verifier."""

    def __init__(self, spec: TaskSpec = TaskSpec()):
        self.spec = spec
        self.tokenizer = build_tokenizer(spec)
        self.vocab_size = len(self.tokenizer.get_vocab())
        self.pad_id = self.tokenizer.pad_token_id
        self.bos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.probs = symbol_probs(spec)

    def sample_symbols(self, n: int, gen: torch.Generator) -> list[list[int]]:
        """n lists of symbol indices (not token ids), lengths uniform in [min_len, max_len]."""
        lens = torch.randint(self.spec.min_len, self.spec.max_len + 1, (n,), generator=gen).tolist()
        out = []
        for length in lens:
            out.append(torch.multinomial(self.probs, length, replacement=True, generator=gen).tolist())
        return out

    def prompt_text(self, symbols: list[int]) -> str:
        return " ".join([BOS, REV] + [f"s{s}" for s in symbols] + [EQ])

    def answer_text(self, symbols: list[int]) -> str:
        return " ".join([f"s{s}" for s in reversed(symbols)] + [EOS])

    def encode_prompts(self, symbol_lists: list[list[int]]) -> list[list[int]]:
        return [self.tokenizer.encode(self.prompt_text(s), add_special_tokens=False) for s in symbol_lists]

    def encode_answers(self, symbol_lists: list[list[int]]) -> list[list[int]]:
        return [self.tokenizer.encode(self.answer_text(s), add_special_tokens=False) for s in symbol_lists]

    def reward(self, symbols: list[int], response_ids: list[int]) -> float:
        """1.0 iff the decoded response (up to and including the first <eos>) is the reversed list, else 0.0."""
        if self.eos_id in response_ids:
            response_ids = response_ids[: response_ids.index(self.eos_id) + 1]
        text = self.tokenizer.decode(response_ids, skip_special_tokens=False)
        return 1.0 if text.split() == self.answer_text(symbols).split() else 0.0

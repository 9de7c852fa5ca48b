"""A tiny offline Qwen2 model, its tokenizer and a synthetic GSM8K-format dataset, for CPU smoke runs.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on the synthetic corpus (with a Qwen-style chat
template); the model is a ~0.1M-parameter ``Qwen2ForCausalLM`` given a few seconds of supervised warm-up on the answer
FORMAT with random answers: after it, sampled responses usually read ``#### <digit>`` after 0-2 filler words (so
response lengths vary, as on a GPU) and are right about one time in five. So verl's own GSM8K scorer
(``data_source=openai/gsm8k``, strict ``#### <answer>``) gives mixed 0/1 rewards inside a group, the group-centred
advantages are non-zero, and a policy loss has a real gradient to follow. Its head size is 32 (2 heads on a hidden
size of 64): vLLM's CPU attention serves no smaller one (``verl_drpo.cpu.vllm_cpu``, W2).

Usage::

    python -m verl_drpo.cpu.tiny --out /tmp/drpo_cpu   # writes model/ train.parquet val.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
DATA_SOURCE = "openai/gsm8k"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MAX_ANSWER = 4  # answers are 0..MAX_ANSWER: a format-only model guesses right ~1/(MAX_ANSWER+1) of the time
# Questions come in phrasings of different lengths, so that a batch's prompt lengths tell which prompts it holds (the
# smoke's resume check compares them with the uninterrupted run's).
PHRASINGS = ("What is {a} plus {b}?", "Add {a} and {b}.", "Please tell me: what is the sum of {a} and {b}?",
             "{a} plus {b} is what?")
# Responses start with 0-2 filler words, so that sampled response lengths vary (ragged micro-batches, as on GPU).
FILLERS = ("", "so ", "so so ")
# --long-tail: one warm-up response in LONG_TAIL_EVERY starts with LONG_TAIL_FILLERS "so " words instead, so that the
# sampled lengths get a long tail (most responses a few tokens, a few up to the response limit), as reasoning
# responses have on a GPU: the shape under which verl's asynchronous modes drop or wait for late groups.
LONG_TAIL_EVERY = 8
LONG_TAIL_FILLERS = (16, 160)


def make_problems(n: int, seed: int) -> list[dict]:
    """``n`` problems "What is a plus b?" with a + b <= MAX_ANSWER, in verl's GSM8K row format."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.randint(0, MAX_ANSWER)
        b = rng.randint(0, MAX_ANSWER - a)
        question = f"{rng.choice(PHRASINGS).format(a=a, b=b)} {INSTRUCTION}"
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": question}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"index": i, "answer": f"{a} + {b} = {a + b}\n#### {a + b}", "question": question},
            }
        )
    return rows


def build_tokenizer(out_dir: Path, corpus: list[str]):
    """Train a byte-level BPE on ``corpus`` and save it as a Hugging Face fast tokenizer in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    return hf


def build_model(out_dir: Path, rows: list[dict], seed: int = 0, steps: int = 300, log=print, long_tail: bool = False):
    """Create the tiny Qwen2, warm it up on the answer format (random answers), save model + tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(seed)
    torch.manual_seed(seed)
    corpus = []
    for r in rows:
        prompt = r["prompt"][0]["content"]
        for d in range(MAX_ANSWER + 1):
            for filler in FILLERS:
                corpus.append(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{filler}#### {d}<|im_end|>\n")
    tokenizer = build_tokenizer(out_dir, corpus)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        # head_dim 64 / 2 = 32: vLLM's CPU attention serves head sizes >= 32 (verl_drpo.cpu.vllm_cpu, W2)
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos, pad_token_id=pad, torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)

    # warm-up: prompt -> "#### <random digit><|im_end|>", loss on the response tokens only
    examples = []
    for r in rows:
        text = tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
        examples.append(tokenizer.encode(text, add_special_tokens=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = [rng.choice(examples) for _ in range(32)]
        seqs, masks = [], []
        for p_ids in batch:
            filler = rng.choice(FILLERS)
            if long_tail and rng.randrange(LONG_TAIL_EVERY) == 0:
                filler = "so " * rng.randint(*LONG_TAIL_FILLERS)
            response = f"{filler}#### {rng.randint(0, MAX_ANSWER)}"
            r_ids = tokenizer.encode(response, add_special_tokens=False) + [eos]
            seqs.append(p_ids + r_ids)
            masks.append([0] * len(p_ids) + [1] * len(r_ids))
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad)
        lm = torch.zeros((len(seqs), width))
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            ids[i, : len(s)] = torch.tensor(s)
            lm[i, : len(m)] = torch.tensor(m, dtype=torch.float)
            att[i, : len(s)] = 1
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                                                reduction="none").view(len(seqs), -1)
        loss = (nll * lm[:, 1:]).sum() / lm[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"[tiny] warm-up step {step}: response nll {loss.item():.3f}")
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model, tokenizer


def build_all(out: str | os.PathLike, n_train: int = 64, n_val: int = 16, seed: int = 0, steps: int = 300,
              log=print, long_tail: bool = False) -> dict:
    """Write ``out/model``, ``out/train.parquet`` and ``out/val.parquet``; return their paths. Idempotent: an
    existing complete directory (same arguments) is reused."""
    import pandas as pd

    out = Path(out)
    manifest = {"n_train": n_train, "n_val": n_val, "seed": seed, "steps": steps, "version": 3}
    if long_tail:
        manifest["long_tail"] = [LONG_TAIL_EVERY, *LONG_TAIL_FILLERS]
    paths = {"model": str(out / "model"), "train": str(out / "train.parquet"), "val": str(out / "val.parquet")}
    stamp = out / "manifest.json"
    if stamp.exists() and json.loads(stamp.read_text()) == manifest and all(Path(p).exists() for p in paths.values()):
        log(f"[tiny] reusing {out}")
        return paths
    (out / "model").mkdir(parents=True, exist_ok=True)
    train = make_problems(n_train, seed)
    val = make_problems(n_val, seed + 1)
    build_model(out / "model", train, seed=seed, steps=steps, log=log, long_tail=long_tail)
    pd.DataFrame(train).to_parquet(paths["train"])
    pd.DataFrame(val).to_parquet(paths["val"])
    stamp.write_text(json.dumps(manifest))
    log(f"[tiny] wrote {paths}")
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--long-tail", action="store_true", help="long-tailed response lengths (see LONG_TAIL_EVERY)")
    args = ap.parse_args(argv)
    build_all(args.out, args.n_train, args.n_val, args.seed, args.warmup_steps, long_tail=args.long_tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

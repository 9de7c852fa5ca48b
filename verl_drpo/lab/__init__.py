"""The off-policy lab: DRPO and its baselines on a tiny Qwen2 policy, on any CPU, in minutes.

``python -m verl_drpo.lab`` (or ``bash scripts/lab.sh``) warm-starts a tiny policy on a synthetic reversal task with a
long-tailed vocabulary, then trains it by RL with every method's loss computed by verl's own
``verl.workers.utils.losses.ppo_loss`` (and so verl's policy-loss registry) under controlled staleness and
training-inference mismatch. Design, results and limits: docs/lab.md.

Modules: ``task`` (task, tokenizer, verifier), ``policy`` (model, sampler, behaviour policy knobs), ``verl_path``
(methods -> ActorConfig, tensors -> ppo_loss), ``train`` (one run), ``runner`` (the grid), ``report`` (table, files,
figure).
"""

# The default comparison (fixed before comparing methods; see docs/lab.md). Settings are (staleness k, mismatch sigma).
DEFAULT_SETTINGS = ((0, 0.0), (8, 1.0))
DEFAULT_SEEDS = 3

# --quick (CI): every method once, one off-policy setting, a few steps of a small batch.
QUICK = {
    "config": dict(
        sft_steps=150, sft_batch=32, steps=4, prompts_per_step=4, group_size=4, eval_every=2, eval_prompts=32
    ),
    "settings": ((2, 0.5),),
}

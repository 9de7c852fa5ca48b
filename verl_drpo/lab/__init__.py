"""The off-policy lab: DRPO and its baselines on a tiny Qwen2 policy, on any CPU, in minutes.

``python -m verl_drpo.lab`` (or ``bash scripts/lab.sh``) warm-starts a tiny policy on a synthetic reversal task with a
long-tailed vocabulary, then trains it by RL with every method's loss computed by verl's own
``verl.workers.utils.losses.ppo_loss`` (and so verl's policy-loss registry), one off-policy axis at a time
(staleness, logit noise, low-precision behaviour weights). Success is measured exactly (expected success from one
teacher-forced pass), and methods are compared paired by seed against PG-IS and DPPO-TV. Design, results and
limits: docs/lab.md.

Modules: ``design`` (the configuration, methods, settings and the DEFAULT / FULL / QUICK grids), ``task`` (task,
tokenizer, verifier), ``policy`` (model, sampler, behaviour-policy knobs), ``verl_path`` (methods -> ActorConfig,
tensors -> ppo_loss), ``train`` (one run, exact evaluation), ``runner`` (the grid), ``report`` (paired statistics,
generated conclusions with Holm/BH, atomic output, figure), ``headline`` (the pre-registered headline test's
analysis: PRIMARY verdict, Holm secondaries, TOST), ``compare`` (two results folders, e.g. two float environments).
"""

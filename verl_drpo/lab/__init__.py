"""The off-policy lab: DRPO and its baselines on a tiny Qwen2 policy, on any CPU, in minutes.

``python -m verl_drpo.lab`` (or ``bash scripts/lab.sh``) warm-starts a tiny policy on a synthetic reversal task with a
long-tailed vocabulary, then trains it by RL with every method's loss computed by verl's own
``verl.workers.utils.losses.ppo_loss`` (and so verl's policy-loss registry), one off-policy axis at a time
(staleness, logit noise, low-precision behaviour weights). Success is measured exactly (expected success from one
teacher-forced pass), and methods are compared paired by seed against PG-IS and DPPO-TV. Design, results and
limits: docs/lab.md.

Modules: ``design`` (the configuration, methods, off-policy conditions and the grids), ``task`` (task, tokenizer,
verifier), ``policy`` (model, sampler, behaviour-policy knobs), ``verl_path`` (methods -> ActorConfig, tensors ->
ppo_loss), ``rollout`` (the one rollout builder: sample, reward, group advantages), ``evaluate`` (exact success on
the held-out set), ``warm_start`` (the supervised start of a seed), ``train`` (one RL run), ``run_summary`` (a run's
record -> its numbers), ``mechanism_check`` (DRPO(12.5) against PG-IS on one rollout), ``runner`` (the grid in
worker processes), ``stats`` (paired t intervals, p-values, Holm, BH), ``aggregate`` (over seeds: paired
differences, multiplicity families, learning checks), ``markdown`` (tables and generated conclusions), ``outputs``
(the results files), ``output_folder`` (validated, atomic output folder), ``plots`` (the figure), ``headline`` (the
pre-registered headline test's analysis: PRIMARY verdict, Holm secondaries, TOST), ``compare`` (two results
folders, e.g. two float environments), ``prox_test`` (DRPO-prox's verdicts).
"""

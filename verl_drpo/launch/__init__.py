"""Before and after a run: checks that stop a bad launch before Ray starts, and the check of a finished run.

- ``preflight``: checks of a composed trainer config (anchor, horizon, decoupled inputs, verl's start-up
  assertions mirrored once each, local paths);
- ``dry_run``: ``python -m verl_drpo.dry_run``, compose a recipe's overrides with verl's config and run the checks;
- ``settings``: the resolved settings a dry run prints, and the policy lag a fully_async config implies;
- ``doctor``: ``python -m verl_drpo doctor``, will verl load the losses in fresh processes and Ray workers;
- ``check_run``: ``python -m verl_drpo.launch.check_run``, check a finished run's logged metrics.
"""

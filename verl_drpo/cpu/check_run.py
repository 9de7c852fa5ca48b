"""Forwarding module: ``python -m verl_drpo.cpu.check_run`` runs :mod:`verl_drpo.launch.check_run` (check a finished
verl run from its logged metrics; it is not CPU-specific)."""

from verl_drpo.launch.check_run import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Forwarding module: ``python -m verl_drpo.dry_run`` runs :mod:`verl_drpo.launch.dry_run` (compose a recipe's
overrides with verl's config and run verl's start-up checks, without Ray or a GPU)."""

import sys

from verl_drpo.launch.dry_run import main

if __name__ == "__main__":
    sys.exit(main())

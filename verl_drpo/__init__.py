"""verl-drpo: DRPO (Divergence Regularized Policy Optimization, arXiv 2606.09821) for verl.

- ``verl_drpo.modes``: the one table of loss modes (no torch, no verl).
- ``verl_drpo.losses``: the mathematics, readable (pure torch); ``verl_drpo.fast``: its fast path, eager or compiled.
- ``verl_drpo.plugin``: the verl glue; importing it registers every verl-drpo name of the table (``drpo``,
  ``spo_adaptive_eps``, ``spo``, ``pg_is``, ``mask_drpo``). verl imports it itself on ``import verl`` through the
  ``verl.plugins`` entry point.
- ``verl_drpo.config``: the actor config hook (``DRPOPolicyLossConfig``).
- ``verl_drpo.preflight``: checks of a full trainer config (used by the config hook, the dry run and the doctor).

docs/architecture.md shows how they fit together.
"""

__version__ = "0.1.0"

from verl_drpo.modes import OWN_MODES

# Loss modes this package registers with verl (from the table in verl_drpo.modes, aliases aside); verl's own
# `vanilla`, `dppo_tv`, `dppo_kl` stay verl's.
LOSS_MODES = OWN_MODES

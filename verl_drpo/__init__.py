"""verl-drpo: DRPO (Divergence Regularized Policy Optimization, arXiv 2606.09821) for verl.

- ``verl_drpo.losses``: the mathematics, pure torch (no verl import).
- ``verl_drpo.config``: the actor config hook (``DRPOPolicyLossConfig``).
- ``verl_drpo.plugin``: the verl glue; importing it registers the loss modes ``drpo``, ``spo``, ``pg_is`` and
  ``mask_drpo``. verl imports it itself on ``import verl`` through the ``verl.plugins`` entry point.
"""

__version__ = "0.1.0"

from verl_drpo.modes import OWN_MODES

# Loss modes this package registers with verl (from the table in verl_drpo.modes); verl's own `vanilla`, `dppo_tv`,
# `dppo_kl` stay verl's.
LOSS_MODES = OWN_MODES

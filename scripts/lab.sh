#!/usr/bin/env bash
# The project's main command: set up ./.venv (see setup_env.sh), then run the off-policy lab
# (python -m verl_drpo.lab). The default compares DRPO (delta 12.5, 2.5, 1, 0.2) with dppo_tv, dppo_kl, vanilla
# (GRPO clip-higher), spo and pg_is, on- and off-policy, 3 seeds, in about 5 minutes on 2 cores; results, table
# and figure go to runs/lab/. Extra arguments pass through, e.g.
#   bash scripts/lab.sh --quick
#   bash scripts/lab.sh --methods drpo,dppo_tv --staleness 0,16 --mismatch 0,0.5 --seeds 5 --out runs/lab2
# Design, default results and limits: docs/lab.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
exec .venv/bin/python -m verl_drpo.lab "$@"

#!/usr/bin/env bash
# The project's main command: set up ./.venv (see setup_env.sh), then run the off-policy lab
# (python -m verl_drpo.lab). The default compares pg_is, drpo (delta 12.5), drpo_d0.2, dppo_tv, vanilla and spo
# under three settings, one off-policy axis at a time (on-policy, staleness k=16, logit noise sigma=1), 5 seeds,
# paired against pg_is and dppo_tv; results, table, generated conclusions and figure go to runs/lab/. Examples:
#   bash scripts/lab.sh --quick                       # CI smoke run, about a minute
#   bash scripts/lab.sh --full --out runs/lab_full    # the wide design (cost in docs/lab.md)
#   bash scripts/lab.sh --dtype float64 --out runs/lab_f64      # a numerical check (same seeds), not a replication
#   bash scripts/lab.sh --design headline --out runs/headline  # the pre-registered headline test, ~13 min; prints PRIMARY:
# Design, default results and limits: docs/lab.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
exec .venv/bin/python -m verl_drpo.lab "$@"

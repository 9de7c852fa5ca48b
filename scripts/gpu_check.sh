#!/usr/bin/env bash
# One command that checks an install on one CUDA GPU (offline, at most 10 minutes): the registered losses on the
# device (compiled = eager = the float64 formula, float32 and bf16; the same metric keys; no recompilation over
# ragged shapes), scripts/bench_loss.py, one FSDP update per model shape with its peak memory, and, where vLLM is
# importable, the GSM8K recipe for 2 steps (sync, colocate_async) checked by check_run. Exit 0 only if all holds;
# one summary table. The body is verl_drpo/launch/gpu_check.py; docs/gpu.md has the figures of the first GPU run.
#
#   bash scripts/gpu_check.sh            # on the GPU
#   bash scripts/gpu_check.sh --cpu      # the same plumbing with tiny shapes on CPU (CI)
#   bash scripts/gpu_check.sh --entropy  # also the entropy sweep at the DAPO recipe's token budget
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
exec "$PYTHON" -m verl_drpo.launch.gpu_check --root "$PWD" "$@"

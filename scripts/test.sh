#!/usr/bin/env bash
# The project's test command: sets up ./.venv (see setup_env.sh; --vllm: also vLLM's CPU build, the CPU smoke's
# rollout engine), then runs the whole CPU test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k drpo -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh --vllm
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -ra --durations=15 "$@"

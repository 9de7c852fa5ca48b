#!/usr/bin/env bash
# The project's test command: sets up ./.venv (see setup_env.sh; --vllm: also vLLM's CPU build, the CPU smoke's
# rollout engine), then runs the whole CPU test suite.
#   bash scripts/test.sh            # everything (what CI runs: .ci/run)
#   bash scripts/test.sh --fast     # the inner loop: pytest -m "not slow" (no subprocess, Ray, FSDP, lab-CLI, smoke)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k drpo -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh --vllm
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
tier=()
if [[ "${1:-}" == --fast ]]; then shift; tier=(-m "not slow"); fi
exec .venv/bin/python -m pytest -ra --durations=15 "${tier[@]}" "$@"

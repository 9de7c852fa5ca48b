#!/usr/bin/env bash
# Creates ./.venv with everything the project needs on a CPU machine: torch 2.13.0 (CPU build), verl 0.9.1 with
# its `verl-core` extra (TransferQueue, for verl's own trainer), and this package in editable mode with the
# cpu, lab and test extras. Idempotent: a second call with an unchanged setup.cfg returns in about a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# torch first, pinned, so that no later dependency (accelerate, peft, ...) pulls a multi-GB CUDA build.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-core,cpu,lab,test}

stamp="$VENV/.verl-drpo-setup"
want="$(sha256sum setup.cfg pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16) $TORCH_SPEC $EXTRAS"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

echo "[setup] creating $VENV with $TORCH_SPEC and verl-drpo[$EXTRAS] (first time: 2-4 minutes)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pip_install "$TORCH_SPEC"
pip_install -e ".[$EXTRAS]"
"$VENV/bin/python" - <<'PY'
import torch, verl
print(f"[setup] torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), verl {verl.__version__}")
PY
echo "$want" > "$stamp"

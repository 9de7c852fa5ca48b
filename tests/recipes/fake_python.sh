#!/usr/bin/env bash
# Stand-in for $PYTHON in recipe tests. Records each `-m MODULE ...` invocation's arguments (NUL-separated, one file
# per call) under $FAKE_PYTHON_DIR and exits with $FAKE_DOCTOR_RC for `-m verl_drpo doctor ...`, 0 otherwise.
# With FAKE_ENV_LOG set, each recorded call also appends its VERL_FILE_LOGGER_PATH to that file. With
# FAKE_REAL_DRY_RUN set, `-m verl_drpo.dry_run ...` is recorded and then run by $FAKE_REAL_PYTHON.
# Not recorded: `-m verl_drpo overrides MODE` (the loss-mode table, answered for real by $FAKE_REAL_PYTHON) and
# `-c CODE` / `-` (small probes, which succeed).
set -euo pipefail
if [[ "${1:-}" == -m && "${2:-}" == verl_drpo && "${3:-}" == overrides ]]; then
  exec "$FAKE_REAL_PYTHON" "$@"
fi
[[ "${1:-}" == -c || "${1:-}" == - ]] && exit 0
n=$(ls "$FAKE_PYTHON_DIR" | wc -l)
printf '%s\0' "$@" > "$FAKE_PYTHON_DIR/call-$(printf %03d "$n")"
if [[ -n "${FAKE_REAL_DRY_RUN:-}" && "${1:-}" == -m && "${2:-}" == verl_drpo.dry_run ]]; then
  exec "$FAKE_REAL_PYTHON" "$@"  # recorded above, then run for real (the recipes' preflight of drpo_prox)
fi
[[ -z "${FAKE_ENV_LOG:-}" ]] || echo "VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-}" >> "$FAKE_ENV_LOG"
if [[ "${1:-}" == -m && "${2:-}" == verl_drpo && "${3:-}" == doctor ]]; then
  [[ "${FAKE_DOCTOR_RC:-0}" == 0 ]] || echo "doctor: loss mode drpo is not registered in a fresh process" >&2
  exit "${FAKE_DOCTOR_RC:-0}"
fi
exit 0

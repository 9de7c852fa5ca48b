#!/usr/bin/env bash
# Applies verl-0.9.1-drpo.patch to a COPY of the installed verl and runs the patch's own test against that copy.
#
#   bash upstream/apply_and_test.sh [--workdir DIR] [--no-test]
#
# The installed verl is found with the project's Python (.venv/bin/python, or $PYTHON) and copied, laid out like
# verl's repository, to DIR/verl (DIR: a new temporary folder, removed afterwards, unless --workdir names a folder
# that does not exist yet or is empty; it is then kept). The patch then adds docs/ and tests/ next to it. The test
# runs with PYTHONPATH=DIR, so `import verl` is the patched copy, and VERL_USE_EXTERNAL_PLUGINS=none, so verl-drpo's
# plugin does not register its own `drpo` over the patched one. The installed verl is never modified.
# Exit status: 0 if the patch applies and its test passes, non-zero otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATCH="$HERE/verl-0.9.1-drpo.patch"
PYTHON="${PYTHON:-$HERE/../.venv/bin/python}"
TEST=tests/trainer/ppo/test_drpo_policy_loss_on_cpu.py

fail() { echo "apply_and_test: $*" >&2; exit 1; }

workdir="" run_test=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --workdir) [[ $# -ge 2 ]] || fail "--workdir needs a folder"; workdir="$2"; shift 2 ;;
        --no-test) run_test=0; shift ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument '$1' (usage: apply_and_test.sh [--workdir DIR] [--no-test])" ;;
    esac
done

[[ -f "$PATCH" ]] || fail "patch not found: $PATCH"
[[ -x "$PYTHON" ]] || fail "no Python at $PYTHON (set PYTHON=/path/to/python of the environment with verl 0.9.1)"
command -v git >/dev/null || fail "git is needed to apply the patch (git apply)"
if [[ -n "$workdir" && -e "$workdir" ]]; then
    [[ -d "$workdir" && -z "$(ls -A "$workdir")" ]] || fail "--workdir $workdir exists and is not an empty folder"
fi

# Where verl is installed, without importing it (find_spec of a top-level package does not run its __init__).
read -r verl_dir verl_version < <(
    VERL_USE_EXTERNAL_PLUGINS=none "$PYTHON" -c '
import importlib.metadata, importlib.util
spec = importlib.util.find_spec("verl")
print(spec.submodule_search_locations[0] if spec else "-", importlib.metadata.version("verl") if spec else "-")'
) || fail "could not run $PYTHON"
[[ "$verl_dir" != "-" && -d "$verl_dir" ]] || fail "verl is not installed for $PYTHON"
echo "installed verl $verl_version: $verl_dir"
[[ "$verl_version" == "0.9.1" ]] || echo "note: the patch was made against verl 0.9.1, this is $verl_version"

# The working folder: a new temporary one, or the given one if it is new or empty (never overwrite anything).
if [[ -z "$workdir" ]]; then
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/verl-drpo-upstream.XXXXXX")"
    trap 'rm -rf "$workdir"' EXIT
else
    mkdir -p "$workdir"
fi
workdir="$(cd "$workdir" && pwd)"

cp -R "$verl_dir" "$workdir/verl"
find "$workdir/verl" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "copied verl to $workdir/verl"

# A git repository of its own, so that `git apply` resolves paths from $workdir even inside another repository.
git -C "$workdir" init -q
if ! check_output="$(cd "$workdir" && git apply --check "$PATCH" 2>&1)"; then
    fail "the patch does not apply to verl $verl_version at $verl_dir: $(head -n 1 <<<"$check_output")"
fi
(cd "$workdir" && git apply "$PATCH")
echo "applied $(basename "$PATCH"):"
(cd "$workdir" && git apply --stat "$PATCH" | sed 's/^/  /')

[[ $run_test -eq 1 ]] || { echo "patched copy: $workdir (test not run)"; exit 0; }

export PYTHONPATH="$workdir" VERL_USE_EXTERNAL_PLUGINS=none PYTHONDONTWRITEBYTECODE=1
imported="$(cd "$workdir" && "$PYTHON" -c 'import importlib.util; print(importlib.util.find_spec("verl").origin)')"
[[ "$imported" == "$workdir/verl/__init__.py" ]] || fail "with PYTHONPATH=$workdir, verl resolves to $imported"
echo "running $TEST against the patched copy (PYTHONPATH=$workdir, VERL_USE_EXTERNAL_PLUGINS=none)"
(cd "$workdir" && "$PYTHON" -m pytest -q -p no:cacheprovider -p no:asyncio --rootdir "$workdir" "$TEST") \
    || fail "the patch's test failed against the patched copy"
echo "OK: the patch applies to verl $verl_version and its test passes"

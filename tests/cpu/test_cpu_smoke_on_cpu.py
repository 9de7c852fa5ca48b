"""verl's own trainer, end to end on CPU: scripts/smoke_cpu.sh on the DRPO GSM8K recipe (minutes).

CI runs all five runs of the script (one Ray head shared by all; about 5-6 minutes on 2 cores). Choose a subset with
VERL_DRPO_CPU_SMOKE_MODES (e.g. "sync2 colocate_async vanilla", about 4 minutes), or "none" to skip.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI_MODES = "sync sync2 colocate_async dppo_tv vanilla"


@pytest.mark.slow
def test_smoke_cpu_script(tmp_path):
    modes = os.environ.get("VERL_DRPO_CPU_SMOKE_MODES", CI_MODES).split()
    if modes == ["none"]:
        pytest.skip("VERL_DRPO_CPU_SMOKE_MODES=none")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERL_PLATFORM")}
    env["SMOKE_DIR"] = str(tmp_path / "smoke")
    env["PYTHON"] = sys.executable
    r = subprocess.run(["bash", "scripts/smoke_cpu.sh", *modes], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=1500)
    tail = "\n".join(l for l in (r.stdout + r.stderr).splitlines() if "target_num_threads" not in l)[-6000:]
    assert r.returncode == 0, tail
    for mode in modes:
        assert f"  {mode}: ok" in r.stdout, tail
    # the runs' metric files exist and were checked (check_run prints OK once per run)
    assert r.stdout.count("[check_run] OK") == len(modes), tail

"""Fixtures of the CPU tests: a fresh interpreter for code that depends on what verl loads on ``import verl``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CPU_ENV = {"VERL_PLATFORM": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run_python(code: str, env_extra: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "WG_BACKEND", "RANK", "WORLD_SIZE",
                                                              "MASTER_ADDR", "MASTER_PORT", "VERL_ENGINE_DEVICE",
                                                              "VLLM_TARGET_DEVICE", "VLLM_CPU_KVCACHE_SPACE")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def run_python():
    """``run_python(code, env_extra)``: run code in a fresh interpreter (verl loads plugins once per process, on
    ``import verl``), with the verl worker/platform variables of this process removed."""
    return _run_python

"""Fixtures of the CPU tests: a fresh interpreter for code that depends on what verl loads on ``import verl``."""

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
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


_STARTER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fresh-interpreter")


@pytest.fixture(scope="module")
def start_python():
    """``start_python(code, env_extra)``: ``run_python`` started in the background; ``.result()`` waits for it. A
    module starts its fresh interpreters together (each is one process importing verl: two at a time keep both cores
    busy) and each test reads its own one."""
    def start(code: str, env_extra: dict | None = None, timeout: int = 180) -> Future:
        return _STARTER.submit(_run_python, code, env_extra, timeout)
    return start

"""scripts/gpu_check.sh (verl_drpo/launch/gpu_check.py): its --cpu mode runs the plumbing end to end and passes; a
failed or broken check gives a FAIL row and a non-zero exit; a wrong loss on the device is caught."""

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from verl_drpo import metrics
from verl_drpo.launch import gpu_check

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # subprocesses: the loss checks, bench_loss.py twice, two FSDP updates (about a minute)
def test_cpu_mode_passes_and_prints_the_table(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| check" in proc.stdout and "| result |" in proc.stdout
    rows = {r["check"]: r for r in json.loads(out.read_text())}
    for name in ["loss drpo float32", "loss drpo bfloat16", "loss drpo_prox float32", "no recompilation (drpo, ragged)",
                 "bench_loss float32", "bench_loss bfloat16", "fsdp tiny", "fsdp tiny-qwen3"]:
        assert rows[name]["result"] == "pass", rows[name]
    assert rows["recipe (vLLM)"]["result"] == "skip"
    figure = rows["loss drpo float32"]["figure"]
    assert "compiled" in figure and f"{len(metrics.LOGGED)} metric keys" in figure  # every name the loss logs


def fake(rows):
    return lambda ctx: rows


def test_a_failed_check_gives_a_non_zero_exit_and_a_fail_row(capsys):
    ok = ("ok", fake([gpu_check.Row("a", gpu_check.PASS, "1 s")]))
    bad = ("bad", fake([gpu_check.Row("b", gpu_check.FAIL, "loss rel. err 1e-2")]))
    assert gpu_check.main(["--cpu", "--root", str(ROOT)], checks=[ok]) == 0
    capsys.readouterr()
    assert gpu_check.main(["--cpu", "--root", str(ROOT)], checks=[ok, bad]) == 1
    out = capsys.readouterr().out
    assert "| b" in out and "FAIL" in out and "1 failed" in out


def test_a_check_that_raises_is_a_fail_row_with_its_cause(capsys):
    def broken(ctx):
        raise RuntimeError("CUDA out of memory\nlong traceback text")

    assert gpu_check.main(["--cpu", "--root", str(ROOT)], checks=[("fsdp", broken)]) == 1
    out = capsys.readouterr().out
    assert "RuntimeError: CUDA out of memory" in out and "long traceback text" not in out


def test_a_wrong_loss_on_the_device_fails_its_row(tmp_path, monkeypatch):
    """The loss rows compare verl's registered losses with the float64 formula: a formula off by 1 % fails them."""
    real = gpu_check.reference_token_loss
    monkeypatch.setattr(gpu_check, "reference_token_loss", lambda *a: real(*a) * 1.01)
    profile = replace(gpu_check.CPU, compiled_modes=())
    rows = gpu_check.loss_rows(gpu_check.Context(ROOT, profile, tmp_path))
    assert rows and all(r.result == gpu_check.FAIL for r in rows)
    assert "loss rel. err" in rows[0].figure
    monkeypatch.setattr(gpu_check, "reference_token_loss", real)
    assert all(r.result == gpu_check.PASS for r in gpu_check.loss_rows(gpu_check.Context(ROOT, profile, tmp_path)))


def test_the_gpu_profile_covers_both_model_shapes():
    assert [name for name, _ in gpu_check.GPU.fsdp_runs] == ["qwen2.5-0.5b", "qwen3-4b-base"]
    assert gpu_check.GPU.recipe_runs == ("sync", "colocate_async")


def test_json_output_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "rows.json"
    out.write_text("earlier")
    assert gpu_check.main(["--cpu", "--root", str(ROOT), "--json", str(out)], checks=[]) == 2
    assert out.read_text() == "earlier" and "exists" in capsys.readouterr().err

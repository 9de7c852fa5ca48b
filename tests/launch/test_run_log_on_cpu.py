"""Reading a finished (or killed) run's metrics: verl's file-logger lines, read by check_run and plot_runs. Every bad
input is one line, never a traceback; a cut-off last line (a killed or still-running logger) is skipped and said."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_drpo.launch import check_run, run_log

ROOT = Path(__file__).resolve().parents[2]
STEP = {"actor/pg_loss": 0.1, "actor/grad_norm": 1.0, "critic/advantages/max": 1.0, "critic/advantages/min": -1.0,
        "actor/drpo/weight_mean": 1.0, "actor/drpo/abs_prob_diff_mean": 1e-7, "actor/drpo/ratio_mean": 1.0}


def write_log(path: Path, steps: int, tail: str = "") -> Path:
    path.write_text("".join(json.dumps({"step": s, "data": STEP}) + "\n" for s in range(1, steps + 1)) + tail)
    return path


def test_a_cut_off_last_line_is_skipped_and_said(tmp_path):
    log = run_log.read(str(write_log(tmp_path / "run.jsonl", 2, '{"step": 3, "da')))
    assert log.cut_off and sorted(log.steps()) == [1, 2]
    assert not run_log.read(str(write_log(tmp_path / "ok.jsonl", 2))).cut_off


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n')
    with pytest.raises(run_log.RunLogError, match=r"run\.jsonl:2: not a verl file-logger line"):
        run_log.read(str(path))


@pytest.mark.parametrize("kind", ["binary", "folder", "corrupt"])
def test_check_run_gives_one_line_not_a_traceback(tmp_path, kind, capsys):
    if kind == "binary":
        target = tmp_path / "run.jsonl"
        target.write_bytes(b"\x00\xd0\xff" * 50)
    elif kind == "folder":
        target = tmp_path
    else:
        target = tmp_path / "run.jsonl"
        target.write_text('{"step": 1\n{"step": 2, "data": {}}\n')
    assert check_run.main([str(target), "--steps", "1", "--loss-mode", "drpo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[check_run] FAIL: ") and "Traceback" not in err[0]


def test_check_run_reads_a_log_whose_last_line_is_cut_off(tmp_path, capsys):
    path = write_log(tmp_path / "run.jsonl", 2, '{"step": 3, "data": {"actor/pg')
    assert check_run.main([str(path), "--steps", "2", "--loss-mode", "drpo"]) == 0
    assert "last line of" in capsys.readouterr().out


@pytest.mark.parametrize("argv,expected", [
    (["--steps", "1", "--loss-mode", "drpoo"], "--loss-mode: unknown loss mode 'drpoo'"),
    (["--steps", "0", "--loss-mode", "drpo"], "--steps must be >= 1"),
    (["--steps", "-5", "--loss-mode", "drpo"], "--steps must be >= 1"),
    (["--steps", "2", "--first-step", "3", "--loss-mode", "drpo"], "--first-step must be between 1 and --steps"),
])
def test_check_run_refuses_nonsense_arguments(tmp_path, argv, expected, capsys):
    """Before: a file without DRPO metrics passed --loss-mode drpoo, and --steps 0 / -5 checked nothing."""
    path = write_log(tmp_path / "run.jsonl", 2)
    with pytest.raises(SystemExit) as exit_info:
        check_run.main([str(path), *argv])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_plot_runs_gives_one_line_for_a_binary_file(tmp_path):
    """Before: a UnicodeDecodeError traceback."""
    target = tmp_path / "run.jsonl"
    target.write_bytes(b"\x00\xd0\xff" * 50)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_runs.py"), str(target), "-o",
                           str(tmp_path / "out.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not a text file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_plot_runs_draws_the_complete_lines_of_a_cut_off_log(tmp_path):
    path = write_log(tmp_path / "run.jsonl", 3, '{"step": 4, "data": {"actor/gr')
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_runs.py"), str(path), "--metrics",
                           "actor/grad_norm", "-o", str(tmp_path / "out.png")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "last line is cut off" in proc.stderr and "read 3 complete lines" in proc.stderr
    assert (tmp_path / "out.png").stat().st_size > 0

"""The lab's command line end to end: --quick trains and writes complete output, runs are deterministic, bad input
fails fast with one line, and the results folder is never lost or half-written."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses (lab CLI / fresh venvs): seconds each

from verl_drpo.lab import outputs
from verl_drpo.lab.design import QUICK

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
LAB = [sys.executable, "-m", "verl_drpo.lab"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab_quick") / "out"
    proc = subprocess.run(LAB + ["--quick", "--out", str(out), "--no-progress"], capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_quick_trains_with_nonzero_advantages_and_writes_everything(quick):
    out, proc = quick
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    assert [r["method"] for r in runs] == list(QUICK.methods)
    steps = res["meta"]["config"]["steps"]
    for r in runs:
        assert len(r["per_step"]["abs_prob_diff"]) == steps
        assert r["curve"]["eval_step"] == [0, 2, 4]
        assert all(0.0 < s < 1.0 for s in r["curve"]["success"])
        # A group's advantages are all non-zero when its rewards are mixed and all zero otherwise, so the share of
        # sequences with a non-zero advantage is (mixed groups) / prompts_per_step: a structural fact on any CPU.
        # (Whether a given step of a given run has a mixed group is chance: PG-IS had none at one step on one CPU.)
        groups = res["meta"]["config"]["prompts_per_step"]
        assert all(abs(f * groups - round(f * groups)) < 1e-6 for f in r["per_step"]["nonzero_adv_frac"])
        # a step without a mixed group has no gradient (every loss term is scaled by the advantage)
        grads = r["per_update"]["grad_norm"]
        per_step_updates = res["meta"]["config"]["mini_batches"]
        for i, f in enumerate(r["per_step"]["nonzero_adv_frac"]):
            if f == 0:
                assert all(g == 0 for g in grads[i * per_step_updates:(i + 1) * per_step_updates]), r["method"]
        assert math.isfinite(r["abs_prob_diff_mean"]) and r["abs_prob_diff_mean"] > 0  # Gaussian logit noise: pi != mu
        for key in ("final_success", "auc", "grad_norm_median", "grad_norm_max", "w_mean", "ratio_max"):
            assert math.isfinite(r[key]), (r["method"], key)
        assert "actor/pg_clipfrac" in r["loss_metrics"]
    # It really trains, judged on the whole grid rather than per step: the warm start's exact success is strictly
    # inside (0, 1), so each of the grid's groups (methods x steps x prompts, 96 here) has mixed rewards with a
    # probability bounded away from 0; that none has is not a chance any CPU's round-off can produce.
    assert sum(sum(r["per_step"]["nonzero_adv_frac"]) for r in runs) > 0
    assert sum(g > 0 for r in runs for g in r["per_update"]["grad_norm"]) > 0
    # the methods differ once they have trained (all share the start)
    assert len({r["final_success"] for r in runs}) > 1 and len({r["start_success"] for r in runs}) == 1
    env = res["meta"]["environment"]
    for key in ("torch", "transformers", "verl", "dtype", "threads_per_worker", "cpu", "git_commit"):
        assert key in env
    assert isinstance(env["cpu"]["flags"], list)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["wall_s"] > 0 and cost["cpu_s"] > 0
    assert (out / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("runs.csv", "summary.csv", "table.md", "report.md"):
        assert (out / name).stat().st_size > 0
    assert "| k=4,sigma=0.5 | drpo_d0.2 |" in (out / "table.md").read_text()
    assert "cost: wall" in proc.stdout
    assert not list(out.parent.glob(".out.staging-*"))  # the staging folder was renamed into place


def test_same_command_same_numbers_any_worker_count(tmp_path):
    from verl_drpo.lab.__main__ import main

    def strip(d):  # wall-clock fields are the only ones allowed to differ
        for r in d["runs"]:
            r.pop("wall_s")
        return d["runs"], d["summary"], d["meta"]["mechanism_check"]

    args = ["--quick", "--methods", "drpo_d0.2,pg_is", "--steps", "2", "--no-plot", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a = strip(json.loads((tmp_path / "a" / "results.json").read_text()))
    b = strip(json.loads((tmp_path / "b" / "results.json").read_text()))
    assert a == b
    assert (tmp_path / "a" / "report.md").read_text() == (tmp_path / "b" / "report.md").read_text()


@pytest.mark.parametrize("bad, words", [
    (["--methods", "drpo,nope"], "unknown method"),
    (["--methods", "drpo,drpo"], "duplicate method"),
    (["--staleness", "x"], "expected comma-separated integers"),
    (["--mismatch", "-1"], "mismatch must be"),
    (["--workers", "0"], "--workers"),
    (["--steps", "0"], "--steps"),
    (["--seeds", ","], "empty seed list"),
    (["--seeds", "0,12345678901234567890"], "seeds must be <="),  # was an OverflowError traceback after 37 s
    (["--seeds", "1000000000"], "N <= 1000000"),  # was a MemoryError traceback
    (["--seeds", "-1,2"], "seeds must be >= 0"),  # was argparse's "expected one argument"
    (["--seeds=-1,2"], "seeds must be >= 0"),
    (["--staleness", ""], "expected at least one integer"),  # was staleness 0
    (["--mismatch", ""], "expected at least one number"),  # was sigma 0
    (["--staleness", "0,100000"], "more than the run's 80 optimizer steps"),
    (["--quick", "--staleness", "9"], "more than the run's 8 optimizer steps"),
    (["--seeds", "100000"], "pass --yes"),  # 1.8 million runs, started without a word before
    (["--full", "--seeds", "20"], "about"),  # 1920 runs: the refusal states the cost
    (["--seeds", "1,1"], "duplicate seed"),
    (["--seeds", "1"], "N >= 2"),
    (["--quick", "--full"], "not allowed with"),
])
def test_bad_arguments_fail_fast_with_one_line(tmp_path, bad, words):
    t0 = time.perf_counter()
    proc = subprocess.run(LAB + ["--out", str(tmp_path / "o"), *bad], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert proc.returncode == 2, bad
    assert words in proc.stderr, proc.stderr[-800:]
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 30  # validated before torch, verl or any training is loaded
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())


def _main_error(capsys, args):
    from verl_drpo.lab.__main__ import main

    rc = main(args)
    return rc, capsys.readouterr().err


def test_output_folder_is_validated_before_any_work(tmp_path, capsys, monkeypatch):
    from verl_drpo.lab import runner

    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: pytest.fail("training started"))
    a_file = tmp_path / "file"
    a_file.write_text("precious")
    rc, err = _main_error(capsys, ["--quick", "--out", str(a_file)])
    assert rc == 2 and "is not a folder" in err and a_file.read_text() == "precious"
    full = tmp_path / "full"
    full.mkdir()
    (full / "results.json").write_text("old results")
    rc, err = _main_error(capsys, ["--quick", "--out", str(full)])
    assert rc == 2 and "not empty" in err and "--force" in err
    assert (full / "results.json").read_text() == "old results"
    rc, err = _main_error(capsys, ["--quick", "--out", str(a_file / "sub")])
    assert rc == 2 and "cannot write" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        rc, err = _main_error(capsys, ["--quick", "--out", str(locked / "out")])
        assert rc == 2 and "cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file", "full"] + (["locked"] if os.geteuid() else []))


def _fake_grid(design, workers=1, threads=1, show_progress=True):
    run = {"method": "pg_is", "setting": "k=0,sigma=0", "seed": 0, "start_success": 0.3, "final_success": 0.4,
           "auc": 0.35, "tokens_trained": 1, "curve": {"eval_step": [0, 1], "success": [0.3, 0.4]},
           "per_step": {"abs_prob_diff": [0.0]}}
    return [run], {"warm_start_success": {"0": 0.3}, "mechanism_check": []}


def test_crash_while_writing_leaves_the_old_results_and_no_half_folder(tmp_path, capsys, monkeypatch):
    from verl_drpo.lab import runner
    from verl_drpo.lab.__main__ import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("old results")
    monkeypatch.setattr(runner, "run_grid", _fake_grid)

    def crash(folder, runs, meta):
        (folder / "results.json").write_text("half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(outputs, "write_outputs", crash)
    with pytest.raises(OSError, match="simulated"):
        main(["--quick", "--out", str(out), "--force", "--no-plot", "--no-progress"])
    assert (out / "results.json").read_text() == "old results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    # without the crash, --force replaces the folder as a whole
    monkeypatch.undo()
    monkeypatch.setattr(runner, "run_grid", _fake_grid)
    monkeypatch.setattr(outputs, "write_outputs", lambda folder, runs, meta: (folder / "new.txt").write_text("n")
                        and {"table": "", "report": ""})
    assert main(["--quick", "--out", str(out), "--force", "--no-plot", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cost.json", "manifest.json", "new.txt"]
    assert json.loads((out / "manifest.json").read_text())["files"] == ["cost.json", "new.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ctrl_c_exits_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    # A test runner started in the background (`cmd &` without job control, nohup) has SIGINT ignored, and a child
    # inherits that, so Python would never raise KeyboardInterrupt: give the lab a terminal's default Ctrl-C.
    proc = subprocess.Popen(LAB + ["--quick", "--out", str(out), "--no-progress", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".out.staging-*")):
        time.sleep(0.2)  # the staging folder exists once the arguments and the folder are validated
    time.sleep(3)  # workers started
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert [ln for ln in stderr.splitlines() if "interrupted" in ln] == [f"[lab] interrupted: nothing written to {out}"]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_force_replaces_only_what_the_lab_wrote(tmp_path, capsys, monkeypatch):
    """--force on a folder holding the user's own files refuses and deletes nothing (it deleted them before)."""
    from verl_drpo.lab import runner
    from verl_drpo.lab.__main__ import build_parser, main

    monkeypatch.setattr(runner, "run_grid", _fake_grid)
    monkeypatch.setattr(outputs, "write_outputs", lambda folder, runs, meta: (folder / "results.json").write_text("n")
                        and {"table": "", "report": ""})
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "mine.txt").write_text("mine")
    (out / "sub" / "data.txt").write_text("data")
    (out / "results.json").write_text("old results")
    rc, err = _main_error(capsys, ["--quick", "--out", str(out), "--force", "--no-plot", "--no-progress"])
    assert rc == 2 and "replaces only what the lab wrote" in err and "mine.txt" in err and "sub/" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "mine.txt").read_text() == "mine" and (out / "sub" / "data.txt").read_text() == "data"
    assert (out / "results.json").read_text() == "old results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a lab output folder (its manifest lists what it wrote) is replaced as a whole, twice in a row
    lab_out = tmp_path / "lab_out"
    assert main(["--quick", "--out", str(lab_out), "--no-plot", "--no-progress"]) == 0
    assert main(["--quick", "--out", str(lab_out), "--force", "--no-plot", "--no-progress"]) == 0
    assert sorted(p.name for p in lab_out.iterdir()) == ["cost.json", "manifest.json", "results.json"]
    # a file the user adds to a lab output is protected the same way
    (lab_out / "notes.md").write_text("my notes")
    rc, err = _main_error(capsys, ["--quick", "--out", str(lab_out), "--force", "--no-plot", "--no-progress"])
    assert rc == 2 and "notes.md" in err and (lab_out / "notes.md").read_text() == "my notes"
    assert "only the files the lab wrote" in " ".join(build_parser().format_help().split())


def test_headline_design_writes_the_primary_line_and_key(tmp_path, capsys, monkeypatch):
    """--design headline: report.md has exactly one line beginning PRIMARY: and results.json a `primary` key with the
    pre-registered verdict word (the grid itself is replaced by synthetic runs: this checks the wiring)."""
    from verl_drpo.lab import runner
    from verl_drpo.lab.__main__ import main
    from verl_drpo.lab.design import HEADLINE

    def grid(design, workers=1, threads=1, show_progress=True):
        runs = []
        for st in design.conditions:
            for m in design.methods:
                for i, seed in enumerate(design.seeds):
                    auc = 0.3 + 0.01 * (i % 4) - (0.05 if m in ("pg_is", "drpo") and st.staleness == 32 else 0.0)
                    runs.append({"method": m, "setting": st.name, "seed": seed, "start_success": 0.3,
                                 "final_success": auc, "auc": auc, "tokens_trained": 1, "ratio_max": 1.0,
                                 "grad_norm_median": 1.0, "grad_norm_max": 1.0, "w_min": 1.0, "w_max": 1.0,
                                 "stopped_at": None, "curve": {"eval_step": [0, 1], "success": [0.3, auc]},
                                 "per_step": {"abs_prob_diff": [0.0]}})
        return runs, {"warm_start_success": {str(s): 0.3 for s in design.seeds}, "mechanism_check": []}

    monkeypatch.setattr(runner, "run_grid", grid)
    out = tmp_path / "out"
    assert main(["--design", "headline", "--out", str(out), "--no-plot", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert set(res["primary"]) == {"contrast", "estimate", "low", "high", "verdict"}
    assert res["primary"]["verdict"] == "contradicted" and res["primary"]["estimate"] == pytest.approx(-0.05)
    assert res["meta"]["seeds"] == list(HEADLINE.seeds) and res["headline"]["primary"]["preregistered_grid"]
    lines = [ln for ln in (out / "report.md").read_text().splitlines() if ln.startswith("PRIMARY:")]
    assert len(lines) == 1 and "verdict contradicted" in lines[0] and "NOT the pre-registered" not in lines[0]
    assert lines[0] in stdout

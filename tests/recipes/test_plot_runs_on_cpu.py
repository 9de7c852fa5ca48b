"""scripts/plot_runs.py on logs written by verl's own loggers (FileLogger, the console format)."""

import importlib.util
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("plot_runs", os.path.join(ROOT, "scripts", "plot_runs.py"))
plot_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_runs)


def _metrics(step, offset):
    return {
        "val-core/openai/gsm8k/reward/mean@1": 0.4 + 0.01 * step + offset,
        "critic/score/mean": 0.3 + 0.02 * step,
        "actor/drpo/abs_log_ratio_mean": 0.01 * (1 + step),
        "actor/entropy": 1.0 - 0.01 * step,
        "training/global_step": step,
    }


def _file_logger_run(tmp_path, monkeypatch, name, offset=0.0, steps=5):
    from verl.utils.tracking import FileLogger

    path = tmp_path / f"{name}.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger("proj", name)
    for step in range(1, steps + 1):
        logger.log(_metrics(step, offset), step)
    logger.finish()
    return str(path)


def test_reads_verls_file_logger_and_console_format_alike(tmp_path, monkeypatch):
    from verl.utils.logger.aggregate_logger import concat_dict_to_str

    jsonl = _file_logger_run(tmp_path, monkeypatch, "drpo-seed1")
    console = tmp_path / "drpo-console.log"
    console.write_text("unrelated line\n" + "".join(
        f"(TaskRunnerV1 pid=7) {concat_dict_to_str(_metrics(s, 0.0), step=s)}\n" for s in range(1, 6)))
    a, b = plot_runs.read_run(jsonl), plot_runs.read_run(str(console))
    assert a == b
    assert a["critic/score/mean"][3] == pytest.approx(0.36)
    assert sorted(a["actor/entropy"]) == [1, 2, 3, 4, 5]


def test_draws_one_png_for_several_runs(tmp_path, monkeypatch):
    runs = [_file_logger_run(tmp_path, monkeypatch, f"{m}-seed{s}", offset=0.05 * s)
            for m in ("drpo", "dppo_tv") for s in (1, 2)]
    out = tmp_path / "plots" / "cmp.png"
    assert plot_runs.main([*runs, "-o", str(out), "--group-seeds", "--smooth", "0.5"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    # default metric patterns pick up what exists, including the val-core glob
    series = {plot_runs.run_label(r): plot_runs.read_run(r) for r in runs}
    chosen = plot_runs.select_metrics(plot_runs.DEFAULT_METRICS, series)
    assert chosen[0] == "val-core/openai/gsm8k/reward/mean@1" and "actor/drpo/abs_log_ratio_mean" in chosen
    assert set(plot_runs.group_by_seed(series)) == {"drpo", "dppo_tv"}


def test_ema_and_errors(tmp_path, capsys):
    assert plot_runs.ema([1.0, 3.0], 0.5) == [1.0, 2.0]
    assert plot_runs.ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {"a": 1}}\nnot json\n')
    assert plot_runs.main([str(bad)]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"step": 1, "data": {"a": 1}}\n')
    assert plot_runs.main([str(good), "--metrics", "nope/*", "-o", str(tmp_path / "x.png")]) == 1
    assert "none of the metrics" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ issue 12: -o, nested values, unwritable output
def _tiny_run(tmp_path, name="r.jsonl", data='{"a": 1}'):
    path = tmp_path / name
    path.write_text(f'{{"step": 1, "data": {data}}}\n{{"step": 2, "data": {data}}}\n')
    return str(path)


def test_output_without_extension_or_a_directory_reports_the_file_written(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    assert plot_runs.main([run, "--metrics", "a", "-o", str(tmp_path / "fig")]) == 0
    assert f"wrote {tmp_path / 'fig.png'}:" in capsys.readouterr().out
    assert (tmp_path / "fig.png").exists()
    folder = tmp_path / "plots"
    folder.mkdir()
    assert plot_runs.main([run, "--metrics", "a", "-o", str(folder)]) == 0
    assert f"wrote {folder / 'runs.png'}:" in capsys.readouterr().out
    assert (folder / "runs.png").read_bytes()[:4] == b"\x89PNG"


def test_nested_values_are_flattened_and_a_non_object_is_one_clear_line(tmp_path, capsys):
    run = _tiny_run(tmp_path, data='{"actor": {"drpo": {"weight_mean": 0.5}, "tag": "x"}, "b": [1, 2]}')
    series = plot_runs.read_run(run)
    assert series == {"actor/drpo/weight_mean": {1: 0.5, 2: 0.5}}
    bad = _tiny_run(tmp_path, "bad.jsonl", data="[1, 2]")
    assert plot_runs.main([bad, "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.jsonl:1" in err and '"data" is a list' in err


def test_unwritable_output_is_one_clear_line(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert plot_runs.main([run, "--metrics", "a", "-o", str(blocker / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-o" in err and "is a file" in err and "Traceback" not in err
    assert plot_runs.main([run, "--metrics", "a", "-o", str(tmp_path / "x.notaformat")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write -o" in err

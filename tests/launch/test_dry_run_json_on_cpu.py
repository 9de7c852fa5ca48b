"""The dry run's --json (DRY_RUN_JSON) never changes a file it did not write, and is checked before any work."""

import json
import os
import stat

import pytest

from verl_drpo.launch import dry_run

NOT_A_KEY = "not_a_key_at_all=1"  # composing this fails: reaching it would mean the path was not checked first


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_an_existing_file_that_is_not_a_report_is_refused_and_kept(tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    os.chmod(mine, 0o644)
    assert dry_run.main(["--json", str(mine), NOT_A_KEY]) == dry_run.EXIT_COMPOSE
    _one_line(capsys, "exists and is not a dry-run report; refusing to replace it")
    assert mine.read_text() == "my notes\n" and stat.S_IMODE(mine.stat().st_mode) == 0o644


def test_a_report_of_an_earlier_dry_run_is_replaced_keeping_its_mode(tmp_path, monkeypatch):
    report = tmp_path / "dry.json"
    report.write_text(json.dumps({"settings": {"old": 1}, "warnings": []}))
    os.chmod(report, 0o640)
    monkeypatch.setattr(dry_run, "run_dry", lambda overrides, entry: dry_run.DryRunReport(entry, {"new": 2}, []))
    assert dry_run.main(["--quiet", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["settings"] == {"new": 2}
    assert stat.S_IMODE(report.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dry.json"]


def test_a_new_report_gets_ordinary_permissions_not_600(tmp_path, monkeypatch):
    monkeypatch.setattr(dry_run, "run_dry", lambda overrides, entry: dry_run.DryRunReport(entry, {"a": 1}, []))
    umask = os.umask(0o022)
    try:
        assert dry_run.main(["--quiet", "--json", str(tmp_path / "new.json")]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("path", ["/proc/verl_drpo_dry_run.json", "/proc/self/nope/x.json"])
def test_a_place_no_file_can_be_created_is_refused_before_any_work(path, capsys):
    """Before: the whole dry run completed, then a traceback."""
    assert dry_run.main(["--json", path, NOT_A_KEY]) == dry_run.EXIT_COMPOSE
    _one_line(capsys, "--json (DRY_RUN_JSON)", path)


def test_a_write_that_fails_after_the_check_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dry_run, "run_dry", lambda overrides, entry: dry_run.DryRunReport(entry, {"a": 1}, []))
    monkeypatch.setattr(dry_run, "json_path_problem", lambda path: None)  # the folder vanishes in between
    assert dry_run.main(["--quiet", "--json", "/proc/verl_drpo_dry_run.json"]) == dry_run.EXIT_COMPOSE
    _one_line(capsys, "[dry-run] FAILED to write the settings")


def test_a_hydra_syntax_error_gets_a_syntax_hint_not_a_spelling_hint(capsys):
    assert dry_run.main(["data.train_files=[a,b"]) == dry_run.EXIT_COMPOSE
    err = capsys.readouterr().err
    assert "not valid Hydra syntax (data.train_files=[a,b)" in err and "spelling" not in err

"""The dry run's own behaviour (verl_drpo.dry_run): settings it resolves, the paths it checks, its JSON output, and
the fully_async entry. The recipes' use of it is tested in tests/recipes/test_recipes_on_cpu.py."""

import json
import subprocess
import sys

import pytest

from verl_drpo.launch import dry_run

from helpers import BASE as CONFIG_BASE

BASE = [
    *CONFIG_BASE,
    "algorithm.rollout_correction.bypass_mode=True",
    "actor_rollout_ref.rollout.calculate_log_probs=True",
    "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct",
    "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm",
    "data.max_response_length=1024",
    "actor_rollout_ref.rollout.name=vllm",
]


@pytest.fixture
def data_files(tmp_path):
    train, val = tmp_path / "train.parquet", tmp_path / "test.parquet"
    train.write_bytes(b"")
    val.write_bytes(b"")
    return [f"data.train_files={train}", f"data.val_files={val}"]


def test_resolved_settings_include_the_horizon_and_warn_without_it(data_files):
    report = dry_run.run_dry([*BASE, *data_files])
    assert report.settings["loss_scale_factor"] is None
    assert [w for w in report.warnings if "loss_scale_factor" in w]
    report = dry_run.run_dry([*BASE, *data_files, "actor_rollout_ref.actor.loss_scale_factor=1024"])
    assert report.settings["loss_scale_factor"] == 1024 and report.warnings == []


def test_missing_local_data_and_model_paths_are_warned(tmp_path):
    missing = tmp_path / "nowhere" / "train.parquet"
    report = dry_run.run_dry([*BASE, f"data.train_files={missing}", "data.val_files=hdfs://cluster/test.parquet",
                              f"actor_rollout_ref.model.path={tmp_path / 'no_model'}",
                              "actor_rollout_ref.actor.loss_scale_factor=1024"])
    assert len(report.warnings) == 2, report.warnings
    assert f"data.train_files: {missing} does not exist" in report.warnings[0]
    assert "actor_rollout_ref.model.path" in report.warnings[1]


@pytest.mark.parametrize("remote", ["s3://bucket/train.parquet", "gs://bucket/train.parquet",
                                    "hdfs://namenode/train.parquet"])
def test_remote_paths_and_hugging_face_ids_pass(remote):
    report = dry_run.run_dry([*BASE, f"data.train_files={remote}", f"data.val_files={remote}",
                              "actor_rollout_ref.actor.loss_scale_factor=1024"])
    assert report.warnings == []


def test_a_comma_in_a_data_path_gets_the_quoting_hint(tmp_path):
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry([*BASE, f"data.train_files={tmp_path}/a,b.parquet"])
    assert err.value.exit_code == dry_run.EXIT_COMPOSE
    assert "quote it inside the override" in str(err.value) and "spelling" not in str(err.value)
    quoted = tmp_path / "a,b.parquet"
    quoted.write_bytes(b"")
    report = dry_run.run_dry([*BASE, f"data.train_files='{quoted}'", f"data.val_files='{quoted}'",
                              "actor_rollout_ref.actor.loss_scale_factor=1024"])
    assert report.settings["train_files"] == str(quoted) and report.warnings == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "verl_drpo.dry_run", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # fresh interpreter / subprocess
def test_json_to_a_directory_is_one_clear_error_before_any_work(tmp_path):
    proc = run_cli("--json", str(tmp_path), "not_a_key=1")  # the bad override is never reached
    assert proc.returncode == dry_run.EXIT_COMPOSE
    assert proc.stderr.strip().splitlines() == [
        f"[dry-run] REJECTED: --json (DRY_RUN_JSON) {tmp_path} is a directory; give a file path, e.g. "
        f"{tmp_path}/dry_run.json"]
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    proc = run_cli("--json", str(blocker / "out.json"), "not_a_key=1")
    assert proc.returncode == dry_run.EXIT_COMPOSE and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert blocker.read_text() == "keep"


@pytest.mark.slow  # fresh interpreter / subprocess
def test_json_is_written_atomically(tmp_path, data_files):
    out = tmp_path / "sub" / "dry.json"
    proc = run_cli("--quiet", "--json", str(out), *BASE, *data_files)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads(out.read_text())
    assert written["settings"]["loss_scale_factor"] is None
    assert sorted(p.name for p in out.parent.iterdir()) == ["dry.json"]  # no temporary file left


# ---- fully_async -----------------------------------------------------------------------------------------------------

FULLY_ASYNC = [
    *(o for o in BASE if not o.startswith(("data.train_batch_size=", "critic."))),
    "actor_rollout_ref.actor.loss_scale_factor=1024",
    "actor_rollout_ref.hybrid_engine=False", "data.train_batch_size=0", "data.gen_batch_size=1",
    "rollout.n_gpus_per_node=1", "rollout.nnodes=1",
    "async_training.require_batches=2", "async_training.trigger_parameter_sync_step=3",
]


@pytest.mark.parametrize("staleness,versions", [(0, 0), (0.5, 1), (1, 1), (2, 2)])
def test_fully_async_shows_the_lag_bound_staleness_threshold_implies(data_files, staleness, versions):
    report = dry_run.run_dry([*FULLY_ASYNC, *data_files, f"async_training.staleness_threshold={staleness}"],
                             "fully_async")
    s = report.settings
    assert s["max_queued_samples"] == int(8 * 2 * (staleness + 1) * 3)
    assert s["policy_lag_bound"].startswith(f"<= {versions} parameter versions = {versions * 3} optimizer steps")


def test_fully_async_without_its_verl_module_is_a_clear_message(monkeypatch):
    package, config_name, module = dry_run.ENTRIES["fully_async"]
    monkeypatch.setitem(dry_run.ENTRIES, "fully_async", ("verl.experimental.gone_policy", config_name, module))
    with pytest.raises(dry_run.DryRunError) as err:
        dry_run.run_dry(FULLY_ASYNC, "fully_async")
    assert err.value.exit_code == dry_run.EXIT_COMPOSE
    assert "moving out of verl into verl-recipe" in str(err.value) and "trainer_mode=sync" in str(err.value)

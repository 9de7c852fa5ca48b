"""DRPO's actor/drpo/* metrics reach a TensorBoard event file written by verl's own tracking (issue 13.4).

The metrics come from one real call of verl's ppo_loss with loss_mode=drpo (inputs built as verl's engine builds them,
verl_drpo.lab.verl_path); verl.utils.tracking.Tracking with the "tensorboard" backend writes them (`trainer.logger=
[...,"tensorboard"]` in a recipe), and TensorBoard's own reader reads them back."""

import torch

from verl_drpo.lab import verl_path


def _drpo_metrics():
    gen = torch.Generator().manual_seed(0)
    bs, p, r = 4, 3, 6
    mb = verl_path.MiniBatch(
        prompt_ids=torch.randint(0, 50, (bs, p), generator=gen), prompt_mask=torch.ones(bs, p, dtype=torch.long),
        response_ids=torch.randint(0, 50, (bs, r), generator=gen),
        response_mask=(torch.arange(r) < torch.tensor([[6], [4], [5], [2]])).long(),
        old_log_probs=torch.log(torch.rand(bs, r, generator=gen).clamp_min(0.05)),
        advantages=torch.tensor([[1.0], [-1.0], [0.5], [-0.5]]).expand(bs, r).clone(),
    )
    seq_log_probs = torch.cat([torch.zeros(bs, p), mb.old_log_probs + 0.5 * torch.randn(bs, r, generator=gen)], 1)
    config = verl_path.make_actor_config("drpo", mini_batch_size=bs, rollout_n=1, loss_scale_factor=r)
    _, metrics = verl_path.verl_policy_loss(config, seq_log_probs.clamp(max=0), mb)
    return metrics


def test_drpo_metrics_land_in_a_tensorboard_event_file_written_by_verls_tracking(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from verl.utils.tracking import Tracking

    metrics = _drpo_metrics()
    drpo_keys = sorted(k for k in metrics if k.startswith("actor/drpo/"))
    assert drpo_keys, f"ppo_loss returned no actor/drpo/* metric: {sorted(metrics)}"
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "tb"))
    tracking = Tracking(project_name="verl_drpo_test", experiment_name="drpo", default_backend=["tensorboard"])
    for step in (1, 2):
        tracking.log(data={k: v * step for k, v in metrics.items()}, step=step)
    tracking.finish()

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert set(drpo_keys) <= tags and "actor/pg_loss" in tags
    for key in drpo_keys:
        logged = {e.step: e.value for e in events.Scalars(key)}
        assert logged.keys() == {1, 2}
        assert abs(logged[2] - 2 * metrics[key]) <= 1e-6 * max(1.0, abs(metrics[key]))

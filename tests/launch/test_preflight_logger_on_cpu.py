"""trainer.logger is checked against verl's own list of tracking backends before anything starts."""

import pytest

from verl_drpo.launch import dry_run, preflight

BASE = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", "actor_rollout_ref.rollout.name=vllm",
        "algorithm.adv_estimator=grpo", "critic.enable=False"]


@pytest.mark.parametrize("logger,bad", [('["console","fiel"]', "fiel"), ("[wandbb]", "wandbb"), ("tensorbord", None)])
def test_an_unknown_logger_backend_is_refused(logger, bad):
    cfg = dry_run.compose_config([*BASE, f"trainer.logger={logger}"])
    problems = [p for p in preflight.trainer_start_problems(cfg) if "trainer.logger" in p]
    assert len(problems) == 1 and f"['{bad or logger}']" in problems[0] and "choose from" in problems[0]


def test_the_known_backends_pass():
    cfg = dry_run.compose_config([*BASE, 'trainer.logger=["console","file","tensorboard","wandb"]'])
    assert not [p for p in preflight.trainer_start_problems(cfg) if "trainer.logger" in p]

"""Metric names live in verl_drpo.metrics: the plugin logs exactly them, and the glossary (docs/metrics.md) has a row
for each and none for a name that is not logged."""

import re
from pathlib import Path

import torch

from verl_drpo import metrics, plugin
from verl_drpo.config import actor_config

GLOSSARY = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()


def glossary_rows(section: str) -> list[str]:
    """The first cells of the table rows under the heading that contains ``section``."""
    text = GLOSSARY.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.M)


def test_the_plugin_logs_exactly_the_names_of_the_metrics_module():
    mask = torch.tensor([[True, True, False]])
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.1]])).requires_grad_()
    _, logged = plugin.REGISTERED["drpo"](
        old_log_prob=torch.log(torch.tensor([[0.4, 0.3, 0.1]])), log_prob=lp, advantages=torch.tensor([[1.0, 1.0, 0.0]]),
        response_mask=mask, loss_agg_mode="token-mean", config=actor_config("drpo"))
    assert sorted(logged) == sorted(metrics.LOGGED)


def test_the_glossary_has_a_row_for_every_logged_metric_and_no_other():
    drpo_rows = glossary_rows("## DRPO diagnostics")
    verl_rows = glossary_rows("## verl's conventions")
    assert sorted(metrics.PREFIX + r for r in drpo_rows) == sorted(n for n in metrics.LOGGED
                                                                   if n.startswith(metrics.PREFIX))
    assert set(metrics.VERL_CONVENTIONS) <= set(verl_rows)
    assert set(verl_rows) - set(metrics.VERL_CONVENTIONS) == {metrics.PG_LOSS}  # verl's own, described there


def test_the_statistics_and_their_internal_names_are_consistent():
    assert metrics.INTERNAL <= set(metrics.STATISTICS)
    assert len(set(metrics.STATISTICS)) == len(metrics.STATISTICS)

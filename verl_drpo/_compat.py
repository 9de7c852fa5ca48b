"""Which verl this package runs on: the verl APIs the plugin uses, detected, not a version string.

setup.cfg depends on ``verl>=0.9.1,<0.10`` (the range this project stands behind); the plugin was tested on 0.9.1.
On import the plugin calls :func:`check_verl`: it refuses only when an API it uses is missing (naming it), and warns
once when the installed version is outside the tested range (a newer patch release, or a source build), so that a
verl 0.9.2 or a cluster's own build keeps working and says so.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

TESTED_VERSIONS = ("0.9.1",)
TESTED_RANGE = ">=0.9.1,<0.10 (tested on 0.9.1)"

# (module, attribute) the plugin and its config hook use.
REQUIRED_APIS: tuple[tuple[str, str], ...] = (
    ("verl.trainer.ppo.core_algos", "register_policy_loss"),
    ("verl.trainer.ppo.core_algos", "get_policy_loss_fn"),
    ("verl.trainer.ppo.core_algos", "POLICY_LOSS_REGISTRY"),
    ("verl.trainer.ppo.core_algos", "agg_loss"),
    ("verl.workers.config", "PolicyLossConfig"),
    ("verl.workers.config", "ActorConfig"),
)
# agg_loss's keywords the plugin passes (ppo_loss fills config.global_batch_info with the last four)
AGG_LOSS_KEYWORDS = ("loss_mat", "loss_mask", "loss_agg_mode", "dp_size", "batch_num_tokens", "global_batch_size",
                     "loss_scale_factor")
# the keywords verl calls a registered policy loss with (read off verl's own `vanilla`)
POLICY_LOSS_KEYWORDS = ("old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config",
                        "rollout_is_weights")


class UnsupportedVerlError(ImportError):
    """The installed verl lacks an API the plugin uses."""


def installed_verl_version() -> str:
    import verl

    return str(getattr(verl, "__version__", "unknown"))


def missing_verl_apis() -> list[str]:
    """The verl APIs of REQUIRED_APIS (and the keywords the plugin passes or receives) that the installed verl
    lacks, as 'module.attribute' or 'function(keyword)'; [] when everything is there."""
    missing, found = [], {}
    for module_name, attribute in REQUIRED_APIS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name} (module)")
            continue
        if hasattr(module, attribute):
            found[attribute] = getattr(module, attribute)
        else:
            missing.append(f"{module_name}.{attribute}")
    if "agg_loss" in found:
        params = inspect.signature(found["agg_loss"]).parameters
        missing += [f"agg_loss({k})" for k in AGG_LOSS_KEYWORDS if k not in params]
    if "get_policy_loss_fn" in found:
        try:
            params = inspect.signature(found["get_policy_loss_fn"]("vanilla")).parameters
            missing += [f"policy loss signature ({k})" for k in POLICY_LOSS_KEYWORDS if k not in params]
        except (ValueError, KeyError, TypeError):
            missing.append("get_policy_loss_fn('vanilla') (verl's own loss, read for the call signature)")
    return missing


def in_tested_range(version: str) -> bool:
    return version in TESTED_VERSIONS


def missing_apis_message(version: str, missing: list[str]) -> str:
    return (f"verl {version} lacks what verl-drpo uses: {', '.join(missing)}. verl-drpo supports verl "
            f"{TESTED_RANGE}: `pip install 'verl>=0.9.1,<0.10'`.")


def check_verl() -> str:
    """Return the installed verl version. Raise UnsupportedVerlError naming each missing API; warn (once per
    process) when the version is outside the tested range."""
    version = installed_verl_version()
    missing = missing_verl_apis()
    if missing:
        raise UnsupportedVerlError(missing_apis_message(version, missing))
    if not in_tested_range(version):
        warnings.warn(f"verl-drpo: verl {version} is outside the tested range {TESTED_RANGE}; every verl API the "
                      "plugin uses is present, so it loads. Run `python -m verl_drpo doctor` and report problems.",
                      UserWarning, stacklevel=2)
    return version

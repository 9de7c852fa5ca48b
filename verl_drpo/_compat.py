"""The one verl version this package supports, and the check that enforces it."""

import os

SUPPORTED_VERL_VERSION = "0.9.1"
ALLOW_ENV = "VERL_DRPO_ALLOW_UNSUPPORTED_VERL"


class UnsupportedVerlError(ImportError):
    pass


def check_verl_version(version: str | None = None) -> str:
    """Return the installed verl version; raise UnsupportedVerlError unless it is the supported one.

    Set VERL_DRPO_ALLOW_UNSUPPORTED_VERL=1 to try another version at your own risk (registry signatures and
    config fields this package relies on change between verl releases).
    """
    if version is None:
        import verl

        version = getattr(verl, "__version__", "unknown")
    if version != SUPPORTED_VERL_VERSION and os.environ.get(ALLOW_ENV, "") not in ("1", "true", "True"):
        raise UnsupportedVerlError(
            f"verl-drpo supports verl=={SUPPORTED_VERL_VERSION} only, but verl {version} is installed. "
            f"Install it with `pip install verl=={SUPPORTED_VERL_VERSION}`, or set {ALLOW_ENV}=1 to try anyway."
        )
    return version

"""Writing files without losing a user's data: every output of this package goes through here.

- :func:`folder_problem` / :func:`check_outputs`: is every destination writable, and is an existing file replaced
  only when the caller allows it? Checked before any work starts.
- :func:`write_all_or_none`: the one writer. Each file is produced into a staging folder inside its destination
  folder (same file system, so renames are atomic), then renamed into place; an old file is first moved into the
  staging folder, so that a failure at any step puts every old file back. The staging folder is removed in every
  case. New files get the permissions of an ordinary ``open()`` (0666 minus the umask), a replaced file keeps its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable


class OutputError(ValueError):
    """An output cannot (or may not) be written; the message names the flag or variable that chose it."""


def folder_problem(folder: str) -> str | None:
    """Why files cannot be written into ``folder`` (which need not exist yet), or None: the nearest existing
    ancestor decides whether the folder can be made."""
    probe = os.path.abspath(os.path.expanduser(folder))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def output_problem(path: str, overwrite: bool = False) -> str | None:
    """Why ``path`` cannot be written as a new file (or, with ``overwrite``, replace an existing regular file), or
    None. The reason does not repeat the path."""
    target = os.path.abspath(os.path.expanduser(path))
    problem = folder_problem(os.path.dirname(target))
    if problem:
        return problem
    if os.path.isdir(target) or (os.path.lexists(target) and not os.path.isfile(target)):
        return "it exists and is not a regular file; move it away"
    if os.path.exists(target) and not overwrite:
        return "it already exists"
    return None


def check_outputs(paths: Iterable[str], overwrite: bool = False, flag: str = "--local_save_dir",
                  how_to_overwrite: str = "pass --overwrite to replace it, or choose another directory") -> None:
    """Check every destination before any work; raise OutputError naming ``flag`` at the first problem."""
    for path in paths:
        problem = output_problem(path, overwrite)
        if problem:
            hint = f"; {how_to_overwrite}" if problem == "it already exists" else ""
            raise OutputError(f"{flag} {path}: {problem}{hint}")


def _ordinary_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_all_or_none(writers: dict[str, Callable[[str], None]], overwrite: bool = False,
                      flag: str = "output") -> list[str]:
    """Write ``{path: write}`` all or none: ``write(tmp_path)`` produces each file at a temporary path, and nothing
    is renamed into place until every file exists. Destinations are checked first (``check_outputs``); an existing
    file is replaced only with ``overwrite``. Returns the paths written. An OSError becomes an OutputError saying
    that every old file is back; any other exception propagates after the same clean-up."""
    targets = {os.path.abspath(os.path.expanduser(p)): write for p, write in writers.items()}
    check_outputs(writers, overwrite=overwrite, flag=flag)
    folders = sorted({os.path.dirname(t) for t in targets})
    created = [f for f in folders if not os.path.isdir(f)]
    staging: dict[str, str] = {}
    try:
        for folder in created:
            os.makedirs(folder, exist_ok=True)
        for folder in folders:
            staging[folder] = tempfile.mkdtemp(prefix=".staging-", dir=folder)
    except OSError as exc:
        for folder in staging.values():
            os.rmdir(folder)
        raise OutputError(f"cannot write into {exc.filename or folders[0]}: {exc.strerror or exc}") from None
    placed: list[str] = []  # destinations that hold a new file
    moved: list[tuple[str, str]] = []  # (destination, where its old file waits in the staging folder)
    try:
        staged = []
        for i, (target, write) in enumerate(targets.items()):
            tmp = os.path.join(staging[os.path.dirname(target)], f"new-{i}-{os.path.basename(target)}")
            write(tmp)
            mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else _ordinary_mode()
            os.chmod(tmp, mode)
            staged.append((tmp, target))
        for i, (tmp, target) in enumerate(staged):
            if os.path.exists(target):
                backup = os.path.join(os.path.dirname(tmp), f"old-{i}")
                os.replace(target, backup)
                moved.append((target, backup))
            os.replace(tmp, target)
            placed.append(target)
    except BaseException as exc:
        for target in placed:  # undo: new files out, then old files back
            os.remove(target)
        for target, backup in moved:
            os.replace(backup, target)
        if isinstance(exc, OSError):
            raise OutputError(f"writing {exc.filename or 'the outputs'} failed ({exc.strerror or exc}); every old "
                              "file is back in place") from None
        raise
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        for folder in created:  # a folder this call made, left empty by a failure
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
    return list(targets)


def write_text(path: str, text: str, overwrite: bool = False, flag: str = "output") -> None:
    """One text file, through :func:`write_all_or_none`."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    write_all_or_none({path: write}, overwrite=overwrite, flag=flag)

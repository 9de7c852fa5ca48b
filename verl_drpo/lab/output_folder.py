"""The results folder: validated before any work, staged next to ``--out`` and renamed into place at the end, so a
crash or Ctrl-C leaves the previous results untouched; ``--force`` replaces only what the lab wrote there."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"  # the list of files the lab wrote into an output folder; --force replaces only those
# what the lab wrote before it kept a manifest: an output folder without one may hold only these
LAB_OUTPUT_NAMES = frozenset({"results.json", "runs.csv", "summary.csv", "table.md", "report.md", "cost.json",
                              "lab.png", MANIFEST})


def _lab_files(folder: Path) -> set[str]:
    """Names the lab wrote into `folder`: its manifest's list, or the lab's fixed output names if it has none."""
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
            return set(listed) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return set(LAB_OUTPUT_NAMES)


class OutputFolder:
    """The results folder, validated before any work and written atomically.

    ``check()`` fails at once if ``path`` is a file, if it is a non-empty folder and ``force`` is off, if ``force``
    is on but the folder holds anything the lab did not write (its manifest lists what it wrote), or if its parent
    is not writable (it creates the hidden staging folder next to it, which proves that). ``commit()`` writes the
    manifest and moves the staged files into place with renames; ``discard()`` removes the staging folder. A crash
    before ``commit`` leaves ``path`` as it was. A user's own file in ``path`` is never deleted.
    """

    def __init__(self, path: Path, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.staging: Path | None = None

    def check(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {p}: exists and is not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not self.force:
                raise ValueError(f"--out {p}: folder is not empty (pass --force to replace an earlier lab output, "
                                 f"or choose another --out)")
            foreign = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir()
                             if c.name not in _lab_files(p) or not c.is_file() or c.is_symlink())
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise ValueError(f"--out {p}: --force replaces only what the lab wrote, and this folder also holds "
                                 f"{shown}; move them or choose another --out")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{p.name}.staging-", dir=p.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp's 0700 would make the results private
        except OSError as e:
            raise ValueError(f"--out {p}: cannot write there ({e.strerror or e})") from None

    def commit(self) -> None:
        assert self.staging is not None, "check() first"
        names = sorted(c.name for c in self.staging.iterdir() if c.name != MANIFEST)
        (self.staging / MANIFEST).write_text(json.dumps({"written_by": "python -m verl_drpo.lab",
                                                          "files": names}, indent=1) + "\n")
        if self.path.exists() and any(c.name not in _lab_files(self.path) for c in self.path.iterdir()):
            kept, self.staging = self.staging, None  # discard() must not delete the new results
            raise RuntimeError(f"--out {self.path}: a file the lab did not write appeared there during the run; "
                               f"the new results are left in {kept}")
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.staging, self.path)
        self.staging = None
        if old is not None:
            shutil.rmtree(old)

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None



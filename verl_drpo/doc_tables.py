"""The docs' hyper-parameter tables, generated from the table of loss modes (``verl_drpo.modes``).

``python -m verl_drpo docs`` says which generated blocks are out of date; ``--write`` rewrites them. A block sits
between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` in a Markdown file; a test fails while
any block differs from what the table gives.
"""

from __future__ import annotations

import os
import re

from verl_drpo import files, modes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _number(value: float) -> str:
    return f"{value:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell: |pi - mu| must not end the cell


def recipe_variables() -> str:
    """docs/recipes.md: every hyper-parameter variable the recipes read, what it sets and for which modes."""
    rows = {}
    for mode in modes.MODES.values():
        for s in mode.settings:
            key = (f"{modes.POLICY_LOSS_KEY}.{s.field}" if s.where == "policy_loss" else f"{modes.ACTOR_KEY}.{s.field}")
            row = rows.setdefault(s.env, {"keys": [], "defaults": [], "modes": [], "help": s.help})
            for name, value in (("keys", key), ("defaults", _number(s.default)), ("modes", mode.name)):
                if value not in row[name]:
                    row[name].append(value)
    lines = ["| variable | sets | default (empty variable) | loss modes | meaning |", "|---|---|---|---|---|"]
    for env, row in rows.items():
        keys = ", ".join(f"`{k.rsplit('.', 1)[-1]}`" for k in row["keys"])
        lines.append(f"| `{env}` | {keys} | {' / '.join(f'`{d}`' for d in row['defaults'])} | "
                     f"{', '.join(f'`{m}`' for m in row['modes'])} | {_cell(row['help'])} |")
    return "\n".join(lines)


def config_fields() -> str:
    """docs/algo/drpo.md: the config hook's fields with their defaults."""
    lines = ["| key (under `actor_rollout_ref.actor.policy_loss`) | default | meaning |", "|---|---|---|"]
    for name, s in modes.POLICY_LOSS_FIELDS.items():
        users = ", ".join(f"`{m.name}`" for m in modes.MODES.values() if name in m.reads)
        lines.append(f"| `{name}` | `{_number(s.default)}` | {_cell(s.help)} Read by {users}; recipe variable `{s.env}`. |")
    lines.append(f"| `{modes.NONFINITE_FIELD}` | `{modes.NONFINITE_DEFAULT}` | {_cell(modes.NONFINITE_HELP)} Read by every "
                 "verl-drpo mode; no recipe variable (add the override, with its leading `+`). |")
    return "\n".join(lines)


# file (relative to the repository) -> block name -> generator
BLOCKS = {
    "docs/recipes.md": {"hyper-parameter variables": recipe_variables},
    "docs/algo/drpo.md": {"config fields": config_fields},
}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end generated: {re.escape(name)} -->)",
                      flags=re.S)


def render(text: str, blocks: dict) -> str:
    """``text`` with every named block replaced by its generator's output; ValueError if a block is missing."""
    for name, generate in blocks.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(f"no generated block {name!r} (<!-- generated: {name} --> ... <!-- end generated: "
                             f"{name} -->)")
        text = pattern.sub(lambda m: m.group(1) + generate() + "\n" + m.group(3), text)
    return text


def stale(root: str = ROOT) -> list[str]:
    """The files whose generated blocks differ from the table."""
    out = []
    for rel, blocks in BLOCKS.items():
        with open(os.path.join(root, rel)) as fh:
            text = fh.read()
        if render(text, blocks) != text:
            out.append(rel)
    return out


def write(root: str = ROOT) -> list[str]:
    """Rewrite the stale files (atomically; each keeps its permissions); return them."""
    changed = stale(root)
    for rel in changed:
        path = os.path.join(root, rel)
        with open(path) as fh:
            text = fh.read()
        files.write_text(path, render(text, BLOCKS[rel]), overwrite=True)
    return changed

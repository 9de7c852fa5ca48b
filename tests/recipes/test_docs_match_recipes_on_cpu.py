"""The docs name every recipe variable with its real default, and every config-hook field with its table default.

Reads the texts only (no bash, no verl): docs/recipes.md against recipe/drpo/*.sh, docs/algo/drpo.md against
verl_drpo/modes.py."""

import os
import re

import pytest

from verl_drpo import modes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPES = ("run_drpo_gsm8k.sh", "run_drpo_math.sh", "run_drpo_dapo_qwen3_4b.sh", "run_drpo_moe_qwen3_30b_a3b.sh", "sweep.sh")
VARIABLE = re.compile(r"^(?:export )?([A-Z][A-Z0-9_]*)=\$\{\1:-(.*?)\}(?:\s+#.*)?$")


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as fh:
        return fh.read()


def recipe_variables(name):
    """{variable: default} of a recipe, first occurrence of each (the one --help prints and the run uses)."""
    found = {}
    lines = _read("recipe", "drpo", name).splitlines()
    if name.startswith("run_drpo_"):  # then the variables every recipe shares (common.sh's drpo_shared_variables)
        common = _read("recipe", "drpo", "common.sh")
        start = common.index("\ndrpo_shared_variables() {\n")
        lines += common[start:common.index("\n}\n", start)].splitlines()
    for line in lines:
        match = VARIABLE.match(line.strip())
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2).strip("'\"")  # LOGGER's default is shell-quoted
    return found


def doc_lines_naming(text, variable):
    return [line for line in text.splitlines() if re.search(rf"`{variable}`|`{variable}[,/ ]", line)]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_variable_is_documented_with_its_default(recipe):
    docs = _read("docs", "recipes.md")
    variables = recipe_variables(recipe)
    assert len(variables) > 5, variables  # the pattern matched the recipe's variable block
    undocumented, wrong_default = [], []
    for variable, default in variables.items():
        lines = doc_lines_naming(docs, variable)
        if not lines:
            undocumented.append(variable)
        elif default and "$" not in default and not any(f"`{default}`" in line or f" {default}" in line
                                                         for line in lines):
            wrong_default.append(f"{variable}={default}")
    assert not undocumented, f"docs/recipes.md does not name {undocumented} ({recipe})"
    assert not wrong_default, f"docs/recipes.md does not give the default of {wrong_default} ({recipe})"


def test_the_algorithm_page_lists_every_config_hook_field_with_its_default():
    page = _read("docs", "algo", "drpo.md")
    for name, setting in modes.POLICY_LOSS_FIELDS.items():
        rows = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert rows, f"docs/algo/drpo.md has no row for {name}"
        assert f"| `{setting.default:g}` |" in rows[0], f"docs/algo/drpo.md: {name} default is {setting.default}"
    for alias, name in modes.ALIASES.items():
        assert f"`{alias}`" in page, f"docs/algo/drpo.md does not name the alias {alias} of {name}"

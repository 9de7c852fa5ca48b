"""The package's layers as docs/architecture.md draws them: every module is in a layer, imports only what its layer
may, the import graph has no cycle, and the architecture page names every module."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "verl_drpo"

# The loss layer, module by module (what each may import from the package).
LOSS = {
    "modes": set(), "_compat": set(), "metrics": set(), "losses": {"modes"}, "fast": {"losses", "metrics"},
    "plugin": {"modes", "losses", "fast", "_compat", "metrics"}, "config": {"modes", "plugin"},
}
UTIL = {"files": set()}
# Every other module: its layer (the first part of its dotted name below verl_drpo) and what that layer may import.
LAYERS = {
    "launch": set(LOSS) | set(UTIL) | {"launch"},
    "data": set(UTIL) | {"data"},
    "lab": set(LOSS) | set(UTIL) | {"lab"},
    "cpu": set(LOSS) | {"cpu", "launch"},  # cpu/check_run.py forwards to launch
}
# The entry points users type (and the package's own __init__): they may import any layer.
ENTRIES = {"__init__", "__main__", "dry_run", "rewards", "doc_tables"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def package_imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (dotted below verl_drpo; a package import counts as its __init__)."""
    tree = ast.parse(path.read_text())
    here = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "verl_drpo" or node.module.startswith("verl_drpo.")):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                candidate = ".".join([*target, alias.name])
                found.add(candidate if candidate in ALL else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("verl_drpo.")}
    resolved = set()
    for target in found:
        resolved.add(target if target in ALL else f"{target}.__init__" if f"{target}.__init__" in ALL else target)
    return resolved - {name}


ALL = modules()


def allowed(name: str, target: str) -> bool:
    top, target_top = name.split(".")[0], target.split(".")[0]
    if name in ENTRIES:
        return True
    if name in LOSS:
        return target in LOSS[name]
    if name in UTIL:
        return target in UTIL[name]
    return target_top in LAYERS[top]


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_module_imports_only_what_its_layer_may(name):
    top = name.split(".")[0]
    assert name in LOSS or name in UTIL or name in ENTRIES or top in LAYERS, f"{name} is in no layer"
    bad = sorted(t for t in package_imports(name, ALL[name]) if not allowed(name, t))
    assert not bad, f"verl_drpo.{name} imports {bad}, which its layer may not"


def test_the_import_graph_has_no_cycle():
    graph = {name: package_imports(name, path) & set(ALL) for name, path in ALL.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(PACKAGE)) for name, path in ALL.items()
               if str(path.relative_to(PACKAGE)) not in page and not name.endswith("__init__")]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_mathematics_and_the_table_load_without_verl():
    code = ("import sys, verl_drpo.modes, verl_drpo.losses, verl_drpo.fast, verl_drpo.metrics; "
            "print(sorted(m for m in sys.modules if m == 'verl' or m.startswith('verl.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, verl_drpo.modes, verl_drpo.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_checker_sees_imports_it_must_refuse():
    """The graph test could pass by seeing nothing: check it reads real edges, relative ones included."""
    assert "losses" in package_imports("fast", ALL["fast"])
    assert "lab.design" in package_imports("lab.verl_path", ALL["lab.verl_path"])
    assert "launch.preflight" in package_imports("launch.dry_run", ALL["launch.dry_run"])
    assert not allowed("losses", "plugin") and not allowed("data.writer", "plugin") and not allowed("modes", "files")

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


# ---- the tests' own structure ---------------------------------------------------------------------------------------

TESTS = ROOT / "tests"


def imported_test_modules(source: str, test_modules: set[str]) -> set[str]:
    """The names in ``test_modules`` that ``source`` imports (``import test_x``, ``from test_x import y``, or the
    same below a package such as ``tests.core.test_x``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names])
        elif isinstance(node, ast.ImportFrom):  # from . import test_x
            names = [a.name for a in node.names]
        else:
            continue
        found |= {part for name in names for part in name.split(".") if part in test_modules}
    return found


def test_no_test_module_imports_another():
    """Shared inputs and configs live in helper modules (tests/core/helpers.py), not in a test module that others
    import: importing a test module runs its collection-time code and ties two files' tests together."""
    files = sorted(TESTS.rglob("*.py"))
    test_modules = {p.stem for p in files if p.name.startswith("test_")}
    offenders = {str(p.relative_to(ROOT)): sorted(found) for p in files
                 if (found := imported_test_modules(p.read_text(), test_modules))}
    assert not offenders, f"test modules import other test modules (move the shared code to a helper): {offenders}"
    # pytest's default import mode puts each test folder on sys.path: two helpers of one name would shadow each other
    helpers = [p.stem for p in files if not p.name.startswith("test_") and p.name != "conftest.py"]
    assert len(helpers) == len(set(helpers)), f"helper modules under tests/ share a name: {sorted(helpers)}"


def test_the_test_import_checker_sees_what_it_must_refuse():
    names = {"test_plugin_on_cpu", "test_config_on_cpu"}
    assert imported_test_modules("from test_plugin_on_cpu import batch", names) == {"test_plugin_on_cpu"}
    assert imported_test_modules("import test_config_on_cpu as c", names) == {"test_config_on_cpu"}
    assert imported_test_modules("from tests.core.test_plugin_on_cpu import call", names) == {"test_plugin_on_cpu"}
    assert imported_test_modules("from . import test_config_on_cpu", names) == {"test_config_on_cpu"}
    assert imported_test_modules("from helpers import batch\nimport verl_drpo.plugin", names) == set()

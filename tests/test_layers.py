"""The package's layers: module-level imports form no cycle, the commands sit on top, and the
training presets (plain configuration) import nothing that trains."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diffusion_edu"


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, module_level: bool) -> set[str]:
    """The diffusion_edu modules ``path`` imports (at module level only, or anywhere in it)."""
    me = _name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # "from . import models" imports the module diffusion_edu.models
                found.add(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in MODULES else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m not in (me, "diffusion_edu")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_module_level_imports_form_no_cycle():
    graph = {m: _imports(p, module_level=True) for m, p in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["diffusion_edu.presets", "diffusion_edu.forward", "diffusion_edu.schedules"])
def test_configuration_and_math_import_no_training_machinery(module):
    """Not even lazily: presets -> training -> checkpoint -> distributed -> presets was a cycle."""
    banned = {"diffusion_edu.training", "diffusion_edu.checkpoint", "diffusion_edu.distributed", "diffusion_edu.cli"}
    imported = _imports(MODULES[module], module_level=False)
    assert not imported & banned and not any(m.startswith("diffusion_edu.commands") for m in imported)


def test_only_the_command_line_imports_the_commands():
    for m, p in MODULES.items():
        if m.startswith("diffusion_edu.commands") or m == "diffusion_edu.cli":
            continue
        assert not any(d.startswith("diffusion_edu.commands") for d in _imports(p, module_level=False)), m

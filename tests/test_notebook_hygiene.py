"""Notebook hygiene: chapters import the package instead of redefining it, and are stored executed.

The package is the only source of truth (DESIGN.md): a notebook that defines its own ``q_sample`` can
drift from the tested one without anyone noticing, one that edits ``sys.path`` runs a different
package than the reader installed, and ``import *`` hides where a name comes from. Each rule is
checked on every notebook under ``notebooks/``, and the checker itself is tested on small sources so
that it can fail.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

import diffusion_edu

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SYS_PATH_EDITS = {"append", "insert", "extend", "remove", "pop", "clear", "__setitem__", "__iadd__"}


@lru_cache(maxsize=1)
def exported_names() -> frozenset[str]:
    """Every name in ``__all__`` of diffusion_edu and of each of its submodules."""
    names = set(diffusion_edu.__all__)
    for info in pkgutil.walk_packages(diffusion_edu.__path__, prefix="diffusion_edu."):
        module = importlib.import_module(info.name)
        names.update(getattr(module, "__all__", ()))
    return frozenset(names)


def _bound_names(target: ast.AST) -> list[str]:
    """Names a for / with / assignment target binds (tuples unpacked; attributes and items bind none)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound_names(elt)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def cell_problems(source: str, exported: frozenset[str]) -> list[str]:
    """What a code cell does wrong: redefining an exported name, editing sys.path, or ``import *``.

    IPython magics (``%pip``, ``!ls``) are turned into plain Python first, as IPython itself does.
    Importing an exported name from diffusion_edu under its own name is fine; binding it any other way
    (def, class, assignment, loop variable, import from elsewhere or under that alias) is not.
    """
    tree = ast.parse(TransformerManager().transform_cell(source))
    problems: list[str] = []

    def bind(name: str, how: str, line: int) -> None:
        if name in exported:
            problems.append(f"line {line}: {how} redefines {name!r}, which diffusion_edu exports")

    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name, type(node).__name__, line)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in _bound_names(target):
                    bind(name, "assignment", line)
                if _is_sys_path(target) or (isinstance(target, ast.Subscript) and _is_sys_path(target.value)):
                    problems.append(f"line {line}: assigns to sys.path")
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            for name in _bound_names(node.target):
                bind(name, "loop variable", line)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                for name in _bound_names(item.optional_vars) if item.optional_vars is not None else []:
                    bind(name, "with-as", line)
        elif isinstance(node, ast.NamedExpr):
            bind(node.target.id, "walrus assignment", line)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bind(alias.asname or alias.name.split(".")[0], "import", line)
        elif isinstance(node, ast.ImportFrom):
            ours = (node.module or "").split(".")[0] == "diffusion_edu" and node.level == 0
            for alias in node.names:
                if alias.name == "*":
                    problems.append(f"line {line}: `from {node.module} import *`")
                elif not ours or (alias.asname and alias.asname != alias.name):
                    bind(alias.asname or alias.name, f"import from {node.module or '.'}", line)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_sys_path(node.func.value) and node.func.attr in SYS_PATH_EDITS:
                problems.append(f"line {line}: sys.path.{node.func.attr}(...)")
            if node.func.attr == "addsitedir":
                problems.append(f"line {line}: site.addsitedir(...) edits sys.path")
        elif isinstance(node, ast.Delete):
            if any(_is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)) for t in node.targets):
                problems.append(f"line {line}: deletes from sys.path")
    return problems


def test_notebooks_exist():
    """The pipeline is for many notebooks; it must at least find chapter 1."""
    assert (ROOT / "notebooks" / "01_forward_process.ipynb") in NOTEBOOKS


def test_exported_names_cover_submodules():
    """The rule covers every submodule's __all__, not just the top-level re-exports."""
    names = exported_names()
    assert {"q_sample", "make_schedule", "noising_widget", "render_ledger", "write_results"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_does_not_redefine_or_hack_imports(path: Path):
    """No code cell redefines an exported name, edits sys.path or uses import *."""
    nb = nbformat.read(path, as_version=4)
    problems = [
        f"cell {i} ({cell.get('id', '?')}): {p}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for p in cell_problems(cell.source, exported_names())
    ]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_executed_at_a_real_tier(path: Path):
    """The site renders stored outputs, so every code cell must have run, without errors, at a tier
    whose numbers mean something (tools/run_notebooks.py stamps it; smoke outputs are never stored)."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("diffusion_edu", {}).get("tier") in ("cpu", "colab", "gpu"), "run `make notebooks`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    not_run = [c.get("id") for c in code[1:] if c.execution_count is None]  # code[0]: the Colab install cell
    assert not not_run, f"cells never executed: {not_run}"
    errors = [c.get("id") for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells stored with an error: {errors}"


def test_notebooks_that_use_widgets_store_their_state():
    """A widget's first view appears on the static site only if its state was saved at execution."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        views = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        if views:
            state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
            for view in views:
                model = view["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
                assert model in state, f"{path.name}: widget {model} has no stored state"


# ---- the checker itself ------------------------------------------------------------------------

EXPORTED = frozenset({"q_sample", "make_schedule", "NoiseSchedule"})


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("def q_sample(x0, t):\n    return x0", "FunctionDef redefines 'q_sample'"),
        ("class NoiseSchedule:\n    pass", "ClassDef redefines 'NoiseSchedule'"),
        ("q_sample = lambda x: x", "assignment redefines 'q_sample'"),
        ("a, (b, make_schedule) = 1, (2, 3)", "assignment redefines 'make_schedule'"),
        ("for q_sample in range(3):\n    pass", "loop variable redefines 'q_sample'"),
        ("with open('f') as make_schedule:\n    pass", "with-as redefines 'make_schedule'"),
        ("if (q_sample := 3):\n    pass", "walrus assignment redefines 'q_sample'"),
        ("from numpy import q_sample", "import from numpy redefines 'q_sample'"),
        ("from diffusion_edu import make_schedule as q_sample", "redefines 'q_sample'"),
        ("import sys\nsys.path.insert(0, '..')", "sys.path.insert"),
        ("import sys\nsys.path.append('/tmp')", "sys.path.append"),
        ("import sys\nsys.path = ['x']", "assigns to sys.path"),
        ("import sys\nsys.path += ['x']", "assigns to sys.path"),
        ("import site\nsite.addsitedir('x')", "addsitedir"),
        ("from diffusion_edu import *", "import *"),
        ("if True:\n    %pip install foo\n    from os.path import *", "import *"),
    ],
)
def test_checker_flags(source: str, fragment: str):
    """Each rule fires on a minimal offending cell (magics included), so the notebook tests can fail."""
    problems = cell_problems(source, EXPORTED)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    "source",
    [
        "from diffusion_edu import q_sample, make_schedule",
        "from diffusion_edu.schedules import NoiseSchedule as NoiseSchedule",
        "import diffusion_edu\nx = diffusion_edu.q_sample",
        "def q_sample_scratch(x0, t):\n    return x0",
        "schedule = make_schedule('linear', 10)\nprint(sys.path)",
        "import sys\n\nif 'google.colab' in sys.modules:\n    %pip install --quiet diffusion-edu",
        "!ls\n%matplotlib inline",
    ],
)
def test_checker_accepts(source: str):
    """Importing from the package, _scratch versions, reading sys.path and magics are all fine."""
    assert cell_problems(source, EXPORTED) == []

"""The package's shape, checked from its source with `ast` (nothing imported): no import circles,
training independent of the hub, and functions that fit on a screen or say why they cannot."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "tte_hf"
PACKAGE = "tte_hf"
#: a function longer than this many lines needs a comment with `SPLIT_MARKER` saying why it is one piece
MAX_FUNCTION_LINES = 60
SPLIT_MARKER = "cannot be split"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module name ``module`` imports, anywhere in the file (top level, functions, TYPE_CHECKING
    blocks), relative imports resolved; ``from x import y`` yields both ``x`` and ``x.y``."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, as written (``from pkg import name`` where ``name`` is
    a class or function is an edge to ``pkg``, a package's ``__init__``)."""
    modules = _package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name in _imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "tte_hf.models.tte.st_inputs" in graph and graph["tte_hf.training.train_gate"], "the walk found nothing"
    cycle = _find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .sub import x\n")
    (package / "mod.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sib import T\n"
        "def f():\n    from ..other import y\n"
    )
    assert _imported_names("pkg", package / "__init__.py") >= {"pkg.sub", "pkg.sub.x"}
    assert _imported_names("top.pkg.mod", package / "mod.py") >= {"top.pkg.sib", "top.other", "top.other.y"}


def test_training_does_not_import_hub():
    graph = _import_graph()
    offenders = {
        module: sorted(t for t in targets if t == "tte_hf.hub" or t.startswith("tte_hf.hub."))
        for module, targets in graph.items()
        if module == "tte_hf.training" or module.startswith("tte_hf.training.")
    }
    offenders = {module: targets for module, targets in offenders.items() if targets}
    assert not offenders, f"tte_hf.training imports tte_hf.hub: {offenders}"


def _comment_lines(path: Path) -> dict[int, str]:
    import io
    import tokenize

    with open(path, encoding="utf8") as handle:
        tokens = tokenize.generate_tokens(io.StringIO(handle.read()).readline)
        return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def _long_functions_without_reason() -> list[str]:
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        comments = _comment_lines(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            if length <= MAX_FUNCTION_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            said = [text for line, text in comments.items() if first <= line <= node.end_lineno]
            if not any(SPLIT_MARKER in text.lower() for text in said):
                found.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_functions_say_why():
    """A function over `MAX_FUNCTION_LINES` lines is split, or carries a comment (on the line above its
    ``def``/decorators or in its body) containing "cannot be split" and the reason."""
    long_ones = _long_functions_without_reason()
    assert not long_ones, (
        f"functions over {MAX_FUNCTION_LINES} lines without a '# ... {SPLIT_MARKER} because ...' comment:\n"
        + "\n".join(long_ones)
    )


def test_shipped_code_imports_only_the_stdlib_third_party_and_its_siblings():
    """``tte_hf/models/tte/`` is copied flat next to the weights, where no ``tte_hf`` exists: its files
    import ``tte_hf`` by no absolute name and their siblings only as ``from .x import``. (ruff's
    banned-api cannot say this: it resolves ``from .x`` to ``tte_hf.models.tte.x`` and bans it too.)"""
    shipped = PACKAGE_ROOT / "models" / "tte"
    offenders = []
    for path in sorted(shipped.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            bad = [name for name in names if name == PACKAGE or name.startswith((PACKAGE + ".", ".."))]
            offenders += [f"{path.name}:{node.lineno} imports {name}" for name in bad]
    assert not offenders, offenders

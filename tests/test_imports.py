"""Import hygiene: ``import tte_hf`` and the CLI parser load no model code, the TTE classes still reach
the auto classes in any import order, and tte_hf's modules import each other without cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tte_hf

PACKAGE_ROOT = Path(tte_hf.__file__).parent
HEAVY = ("torch", "transformers", "sentence_transformers", "trl", "peft", "datasets", "accelerate")


def _python(code: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PACKAGE_ROOT.parent)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "statement",
    ["import tte_hf", "from tte_hf.cli import build_parser; build_parser()"],
)
def test_import_and_cli_parser_load_no_heavy_library(statement):
    loaded = _python(
        f"""
        import sys
        {statement}
        print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))
        """
    )
    assert loaded == "[]", f"`{statement}` imported {loaded}"


def test_lazy_exports_resolve():
    from tte_hf.models.tte.configuration_tte import TTEEmbedderConfig
    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel

    assert tte_hf.TTEEmbedderConfig is TTEEmbedderConfig
    assert tte_hf.TTEUnifiedModel is TTEUnifiedModel
    assert set(tte_hf.__all__) <= set(dir(tte_hf))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        tte_hf.Nope  # noqa: B018


@pytest.mark.parametrize(
    "imports",
    [
        "import tte_hf; from transformers import AutoConfig, AutoModel",
        "from transformers import AutoConfig, AutoModel; import tte_hf",
        "import tte_hf; from transformers import AutoConfig",  # configs without AutoModel's module
        "import tte_hf.models.tte.modeling_tte",  # tte_hf's own modules first (heads import AutoModel midway)
        "import tte_hf.models.tte.configuration_tte",
    ],
)
def test_auto_classes_know_tte_in_any_import_order(imports):
    out = _python(
        f"""
        {imports}
        from transformers import AutoConfig
        kinds = [type(AutoConfig.for_model(t)).__module__ for t in ("tte_embedder", "tte_unified")]
        from transformers.models.auto.modeling_auto import MODEL_MAPPING
        from tte_hf.models.tte.configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig
        kinds += [MODEL_MAPPING[c].__module__ + "." + MODEL_MAPPING[c].__name__ for c in (TTEEmbedderConfig, TTEUnifiedConfig)]
        print(kinds)
        """
    )
    expected = ["tte_hf.models.tte.configuration_tte"] * 2 + ["tte_hf.models.tte.modeling_tte.TTEEmbedderModel", "tte_hf.models.tte.modeling_tte.TTEUnifiedModel"]  # fmt: skip
    assert out == str(expected)


def test_automodel_loads_a_local_tte_checkpoint_after_import_tte_hf(tiny_vlm, tmp_path):
    from tte_hf.models.tte.modeling_tte import TTEEmbedderModel

    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(tmp_path / "tte")
    out = _python(
        f"""
        import tte_hf
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "tte")!r})  # no trust_remote_code
        print(type(model).__module__ + "." + type(model).__name__)
        """,
        cwd=tmp_path,
    )
    assert out == "tte_hf.models.tte.modeling_tte.TTEEmbedderModel"


def test_make_tiny_choices_match_the_factory():
    from tte_hf.commands.make_tiny import TINY_ARCHS
    from tte_hf.testing import SUPPORTED_TINY_ARCHS

    assert TINY_ARCHS == SUPPORTED_TINY_ARCHS


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """tte_hf module -> tte_hf modules it imports, at module or function level (imports a
    ``TYPE_CHECKING`` block guards are left out: they never run)."""
    files = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skipped = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_tte_hf_modules_import_each_other_without_cycles():
    graph = _import_graph()
    assert "tte_hf.evaluation.rows" in graph["tte_hf.evaluation.video_data"]  # the walk sees relative imports
    # A package's __init__ re-exporting its children, imported back by a child, is the usual layout,
    # not a cycle of the code: drop edges into a package __init__ from its own submodules.
    graph = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}
    assert _cycles(graph) == []

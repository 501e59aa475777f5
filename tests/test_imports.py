"""Import hygiene: ``import tte_hf`` and the CLI parser load no model code, the TTE classes still reach
the auto classes in any import order, and tte_hf's modules import each other without cycles."""

from __future__ import annotations

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
    from tte_hf.configuration_tte import TTEEmbedderConfig
    from tte_hf.modeling_tte import TTEUnifiedModel

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
        "import tte_hf.modeling_tte",  # tte_hf's own modules first (heads import AutoModel midway)
        "import tte_hf.configuration_tte",
    ],
)
def test_auto_classes_know_tte_in_any_import_order(imports):
    out = _python(
        f"""
        {imports}
        from transformers import AutoConfig
        kinds = [type(AutoConfig.for_model(t)).__module__ for t in ("tte_embedder", "tte_unified")]
        from transformers.models.auto.modeling_auto import MODEL_MAPPING
        from tte_hf.configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig
        kinds += [MODEL_MAPPING[c].__module__ + "." + MODEL_MAPPING[c].__name__ for c in (TTEEmbedderConfig, TTEUnifiedConfig)]
        print(kinds)
        """
    )
    expected = ["tte_hf.configuration_tte"] * 2 + ["tte_hf.modeling_tte.TTEEmbedderModel", "tte_hf.modeling_tte.TTEUnifiedModel"]  # fmt: skip
    assert out == str(expected)


def test_automodel_loads_a_local_tte_checkpoint_after_import_tte_hf(tiny_vlm, tmp_path):
    from tte_hf.modeling_tte import TTEEmbedderModel

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
    assert out == "tte_hf.modeling_tte.TTEEmbedderModel"


def test_make_tiny_choices_match_the_factory():
    from tte_hf.commands.make_tiny import TINY_ARCHS
    from tte_hf.testing import SUPPORTED_TINY_ARCHS

    assert TINY_ARCHS == SUPPORTED_TINY_ARCHS

"""The code shipped next to the weights (tte_hf/models/tte/): its import contract is enforced by the
linter CI runs, and repos exported before it moved there keep loading with the same vectors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from hub_helpers import populate_hf_cache, run_offline

from tte_hf.models.remote_code import REMOTE_CODE_DIR, REMOTE_CODE_FILES, copy_remote_code, missing_remote_code

ROOT = Path(__file__).resolve().parents[1]
PRE_MOVE_ARCHIVE = Path(__file__).parent / "fixtures" / "pre_move.tar.gz"  # kept packed: frozen old code


@pytest.fixture(scope="module")
def pre_move(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fixtures")
    with tarfile.open(PRE_MOVE_ARCHIVE) as archive:
        archive.extractall(folder, filter="data")
    return folder / "pre_move"


def _ruff(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--quiet", str(folder)],
        capture_output=True,
        text=True,
        cwd=folder,
    )


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    """The shipped folder with CI's lint configuration, as the repo lays them out."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        REMOTE_CODE_DIR, tmp_path / "tte_hf" / "models" / "tte", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


@pytest.mark.parametrize(
    "planted",
    [
        "from tte_hf.training import data",
        "import tte_hf.hub.export",
        "from tte_hf import __version__",
        "from ...training.data import DatasetSpec",
        "from .. import remote_code",
    ],
)
def test_the_linter_refuses_a_shipped_file_that_imports_tte_hf(shipped_copy, planted):
    assert _ruff(shipped_copy).returncode == 0, "the shipped folder must pass as it is"
    target = shipped_copy / "tte_hf" / "models" / "tte" / "heads.py"
    target.write_text(target.read_text() + f"\n{planted}  # noqa: E402, F401\n")
    result = _ruff(shipped_copy)
    assert result.returncode != 0
    assert "TID25" in result.stdout


def test_the_ban_names_every_other_part_of_the_package():
    """ruff resolves the shipped files' sibling imports to ``tte_hf.models.tte.*``, so the ban cannot name
    ``tte_hf`` itself; it names every other module and subpackage, and must keep up with the package."""
    import tomllib

    banned = set(
        tomllib.loads((REMOTE_CODE_DIR / "ruff.toml").read_text())["lint"]["flake8-tidy-imports"]["banned-api"]
    )
    package = REMOTE_CODE_DIR.parents[1]
    children = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in package.glob("*/__init__.py")} - {"models"}
    expected = {f"tte_hf.{name}" for name in children} | {"tte_hf.__version__", "tte_hf.models.remote_code"}
    assert banned == expected


def test_shipped_files_are_the_folder_and_a_missing_sibling_is_refused(tmp_path, monkeypatch):
    assert set(REMOTE_CODE_FILES) == {p.name for p in REMOTE_CODE_DIR.glob("*.py")} - {"__init__.py"}
    assert missing_remote_code() == []
    broken = tmp_path / "tte"
    shutil.copytree(REMOTE_CODE_DIR, broken)
    (broken / "ecr.py").unlink()  # imported by inputs, fingerprints, reasoner_* ...
    assert missing_remote_code(broken) == ["ecr.py"]
    import tte_hf.models.remote_code as remote_code

    monkeypatch.setattr(remote_code, "REMOTE_CODE_DIR", broken)
    with pytest.raises(FileNotFoundError, match="ecr.py"):
        copy_remote_code(tmp_path / "out")


@pytest.mark.parametrize("kind", ["embedder", "unified"])
def test_repo_exported_before_the_move_loads_with_the_same_vectors(kind, pre_move, tiny_vlm, tmp_path):
    """The fixture was exported by the code before the move (tests/fixtures/make_pre_move_repos.py);
    it loads by path in a subprocess that cannot import tte_hf, through AutoModel and SentenceTransformer."""
    recorded = json.loads((pre_move / "vectors.json").read_text())
    repo = tmp_path / kind
    shutil.copytree(pre_move / kind, repo)
    script = f"""
        import json, torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel, AutoProcessor
        torch.set_num_threads(1)
        queries, repo = {recorded["queries"]!r}, {str(repo)!r}
        model = SentenceTransformer(repo, trust_remote_code=True, device="cpu")
        auto = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        inputs = AutoProcessor.from_pretrained(repo)(text=queries, padding=True, return_tensors="pt")
        with torch.no_grad():
            raw = auto(**inputs).embeddings
        json.dump({{"query": model.encode_query(queries, convert_to_tensor=True).tolist(),
                   "document": model.encode_document(queries, convert_to_tensor=True).tolist(),
                   "auto_model": raw.tolist(), "auto_class": type(auto).__name__}}, open(RESULT_PATH, "w"))
    """
    # The embedder names its reasoner by repo id and loads it with the model; queries do not reason here.
    populate_hf_cache(tiny_vlm, "tte-test/reasoner", tmp_path / "cache")
    result = run_offline(script, tmp_path / "cache", tmp_path)
    assert result["auto_class"] == {"embedder": "TTEEmbedderModel", "unified": "TTEUnifiedModel"}[kind]
    for key in ("query", "document", "auto_model"):
        torch.testing.assert_close(
            torch.tensor(result[key]), torch.tensor(recorded["vectors"][kind][key]), atol=1e-5, rtol=0
        )


def test_repo_exported_before_the_move_loads_through_tte_hf_too(pre_move):
    """With tte_hf installed, the same old repo loads through the package's own classes (no remote code)."""
    from transformers import AutoModel, AutoProcessor

    recorded = json.loads((pre_move / "vectors.json").read_text())
    model = AutoModel.from_pretrained(pre_move / "embedder").eval()
    assert type(model).__module__ == "tte_hf.models.tte.modeling_tte"
    inputs = AutoProcessor.from_pretrained(pre_move / "embedder")(
        text=recorded["queries"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        vectors = model(**inputs).embeddings
    torch.testing.assert_close(vectors, torch.tensor(recorded["vectors"]["embedder"]["auto_model"]), atol=1e-5, rtol=0)

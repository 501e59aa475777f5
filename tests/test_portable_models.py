"""Saved models are portable: every folder the training commands and the ST builders write loads from any
working directory, and after it moves, and embeds the same vectors.

The runs lay their files out as the README's commands do, with paths relative to the working directory
(``out/tiny-vlm``, ``out/tiny-data``): a folder that recorded such a path loaded only from that directory.
Complete folders (trained weights, a bundled reasoner or backbone) are moved alone; folders that name
another one (a head-only checkpoint, an ST model saved with ``save()``, and its train-gate copy, next to
their reasoner) are moved together with it, and a head moved without its backbone fails naming both.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoProcessor

from tte_hf.evaluation.fingerprint import model_fingerprint
from tte_hf.sentence_transformers import build_sentence_transformer, save_sentence_transformer
from tte_hf.testing import build_tiny_vlm
from tte_hf.training import train_embedder, train_head
from tte_hf.training.synthetic import write_synthetic_retrieval
from tte_hf.training.train_gate import train_gate

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a red bus", "what is the dog holding"]
DOCUMENTS = ["a green cross on the left", "a blue circle"]


def _recipe(kind: str, **overrides) -> dict:
    return yaml.safe_load((ROOT / "recipes" / kind / "tiny.yaml").read_text()) | overrides


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A run folder as the README lays it out, entered as the working directory."""
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.chdir(folder)
    build_tiny_vlm("out/tiny-vlm")
    write_synthetic_retrieval("out/tiny-data", num_items=8)
    return folder


def _queries() -> list:
    image = Image.open("out/tiny-data/images/shape-0.png").convert("RGB")
    return [*TEXTS, {"text": "Find the color and shape of the object in this image", "image": image}]


def _st_vectors(folder, queries: list, reasons: bool = True, fingerprint: bool = True) -> dict[str, Any]:
    """What a saved ST model embeds: queries reasoned about (its reasoner runs), not, as configured
    (``think=None``: ``"auto"`` with a gate), and documents; and its evaluation fingerprint, by which
    `tte-hf eval` reuses results, and which must not name where the folder is."""
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    modes = (True, False, None) if reasons else (False,)
    return {
        **{f"think={think}": model.encode_query(queries, think=think, convert_to_tensor=True) for think in modes},
        "documents": model.encode_document(DOCUMENTS, convert_to_tensor=True),
        **({"fingerprint": model_fingerprint(model)} if fingerprint else {}),
    }


def _auto_vectors(folder) -> torch.Tensor:
    """`AutoModel` (the folder's own remote code) on tokenised text."""
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
    tokenizer = AutoProcessor.from_pretrained(str(folder)).tokenizer
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).embeddings


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], torch.Tensor):
            torch.testing.assert_close(after[key], before[key], atol=1e-5, rtol=0, msg=key)
        else:
            assert after[key] == before[key], key


def _elsewhere(tmp_path: Path, monkeypatch, name: str) -> None:
    """Enter another working directory, from which none of the run's relative paths resolve."""
    folder = tmp_path / f"elsewhere-{name}"
    folder.mkdir()
    monkeypatch.chdir(folder)


def test_unified_head_and_its_st_model_load_from_anywhere_after_moving(run, tmp_path, monkeypatch):
    train_head(_recipe("unified", max_steps=2, hidden_cache_dir=None))
    saved = json.loads(Path("out/tiny-unified/config.json").read_text())
    assert saved["backbone_name_or_path"] == "../tiny-vlm"  # relative to the head's own folder
    # The demo's `tte-unified`: an ST folder made from the head, which carries the backbone's weights
    save_sentence_transformer(build_sentence_transformer("out/tiny-unified", max_new_tokens=4), "out/tte-unified")
    files = {p.name for p in Path("out/tte-unified").iterdir()}
    assert "model.safetensors" in files and "head.safetensors" not in files
    queries = _queries()
    before = {
        "head": {"auto": _auto_vectors("out/tiny-unified")},
        # (not the fingerprint: the unified module's own reasoner is described by its folder's path, as before)
        "st": {"auto": _auto_vectors("out/tte-unified"), **_st_vectors("out/tte-unified", queries, fingerprint=False)},
    }

    bundled = shutil.move(run / "out" / "tte-unified", tmp_path / "alone" / "tte-unified")
    moved = shutil.move(run / "out", tmp_path / "moved" / "out")  # the head together with its backbone
    _elsewhere(tmp_path, monkeypatch, "after-move")
    _assert_same(before["head"], {"auto": _auto_vectors(Path(moved) / "tiny-unified")})
    _assert_same(before["st"], {"auto": _auto_vectors(bundled), **_st_vectors(bundled, queries, fingerprint=False)})

    # A head moved away from its backbone cannot load; the error names the reference and the folder.
    alone = shutil.move(Path(moved) / "tiny-unified", tmp_path / "alone" / "tiny-unified")
    with pytest.raises(FileNotFoundError, match=r"backbone_name_or_path='\.\./tiny-vlm'"):
        AutoModel.from_pretrained(alone, trust_remote_code=True)


def test_embedder_reasoner_and_gate_folders_load_from_anywhere_after_moving(run, tmp_path, monkeypatch):
    train_embedder(_recipe("embedder", max_steps=2))
    model = build_sentence_transformer("out/tiny-embedder", reasoner="out/tiny-vlm", max_new_tokens=4)
    model.save("out/tte-ref")  # names its reasoner
    save_sentence_transformer(model, "out/tte-bundled")  # carries its reasoner
    config = json.loads(Path("out/tte-ref/sentence_bert_config.json").read_text())
    assert config["reasoner_name_or_path"] == "../tiny-vlm"
    # train-gate into a folder at another depth than its source: the copy's reasoner reference follows
    gate = _recipe("gate", model_name_or_path="out/tte-ref", output_dir="out/gated/tte", max_steps=20)
    train_gate(gate)
    config = json.loads(Path("out/gated/tte/sentence_bert_config.json").read_text())
    assert (config["reasoner_name_or_path"], config["query_reasoning"]) == ("../../tiny-vlm", "auto")
    queries = _queries()
    complete, naming_the_reasoner = ("tiny-embedder", "tte-bundled"), ("tte-ref", "gated/tte")
    folders = complete + naming_the_reasoner
    before = {name: _st_vectors(f"out/{name}", queries, name != "tiny-embedder") for name in folders}
    before["tiny-embedder"]["auto"] = _auto_vectors("out/tiny-embedder")
    # the reasoner ran: reasoned vectors differ from the plain ones
    assert not torch.allclose(before["tte-ref"]["think=True"], before["tte-ref"]["think=False"])

    places = {name: Path(shutil.move(run / "out" / name, tmp_path / "alone" / name)) for name in complete}
    moved = Path(shutil.move(run / "out", tmp_path / "moved" / "out"))  # the others with their reasoner
    places |= {name: moved / name for name in naming_the_reasoner}
    _elsewhere(tmp_path, monkeypatch, "after-move")
    after = {name: _st_vectors(places[name], queries, name != "tiny-embedder") for name in folders}
    after["tiny-embedder"]["auto"] = _auto_vectors(places["tiny-embedder"])
    for name in folders:
        _assert_same(before[name], after[name])

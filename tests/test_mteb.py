"""A TTE model evaluated through mteb (offline): an image-to-text retrieval task and an image
classification task defined locally in mteb's own task classes, with data this test writes.
mteb's main scores must equal a recomputation from the model's own query/document vectors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from tte_hf.mteb_model import TTEMtebModel, tte_model_meta  # noqa: E402
from tte_hf.sentence_transformers import build_sentence_transformer  # noqa: E402

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}
SHAPES = ["square", "circle", "triangle"]
PROMPTS = {
    "query": "Represent the query.",
    "document": "Represent the caption.",
    "LocalI2TRetrieval-query": "Find the caption of this picture.",
    "ImageClassification": "Classify the shape in the picture.",
}
GENERAL = dict(
    description="A local test task.",
    reference="https://example.org/local-task",
    dataset={"path": "local/none", "revision": "0"},
    eval_splits=["test"],
    eval_langs=["eng-Latn"],
    date=("2026-01-01", "2026-01-02"),
    dialect=[],
    domains=[],
    task_subtypes=[],
    license="cc-by-4.0",
    annotations_creators="derived",
    sample_creation="found",
    bibtex_citation="",
)


def _draw(color: str, shape: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((32, 40, 3)) * 60).astype("uint8")
    mask = np.zeros((32, 40), bool)
    if shape == "square":
        mask[8:24, 10:30] = True
    elif shape == "circle":
        yy, xx = np.mgrid[:32, :40]
        mask = (yy - 16) ** 2 + (xx - 20) ** 2 < 100
    else:
        for row in range(8, 26):
            half = (row - 8) // 2
            mask[row, 20 - half : 21 + half] = True
    pixels[mask] = COLORS[color]
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Images on disk plus JSONL files naming them: the data the local tasks load."""
    root = tmp_path_factory.mktemp("mteb_local")
    rows = []
    for i, (color, shape) in enumerate([(c, s) for c in COLORS for s in SHAPES]):
        path = root / f"img{i}.png"
        _draw(color, shape, seed=i).save(path)
        rows.append({"id": i, "path": path.name, "color": color, "shape": shape})
    (root / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "images.jsonl").read_text().splitlines()]


def _open(root: Path, row: dict) -> Image.Image:
    return Image.open(root / row["path"]).convert("RGB")


def make_tasks(root: Path):
    class LocalI2TRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="LocalI2TRetrieval",
            type="Any2AnyRetrieval",
            category="i2t",
            modalities=["image", "text"],
            main_score="ndcg_at_10",
            **GENERAL,
        )

        def load_data(self, num_proc: int | None = None, **kwargs) -> None:
            rows = _rows(root)[:8]  # 8 pictures are queries; their captions plus 3 distractors are the corpus
            captions = [f"a {r['color']} {r['shape']}" for r in _rows(root)[:11]]
            self.dataset = {
                "default": {
                    "test": RetrievalSplitData(
                        queries=Dataset.from_dict(
                            {"id": [f"q{r['id']}" for r in rows], "image": [_open(root, r) for r in rows]}
                        ),
                        corpus=Dataset.from_dict({"id": [f"d{i}" for i in range(11)], "text": captions}),
                        relevant_docs={f"q{r['id']}": {f"d{r['id']}": 1} for r in rows},
                        top_ranked=None,
                    )
                }
            }
            self.data_loaded = True

    class LocalShapeClassification(AbsTaskClassification):
        metadata = TaskMetadata(
            name="LocalShapeClassification",
            type="ImageClassification",
            category="i2c",
            modalities=["image"],
            main_score="accuracy",
            **GENERAL,
        )
        input_column_name = "image"
        n_experiments = 1
        samples_per_label = 100  # every training row is used: a 1-NN over all of them
        evaluator_model = KNeighborsClassifier(n_neighbors=1)

        def load_data(self, num_proc: int | None = None, **kwargs) -> None:
            rows = _rows(root)
            train, test = rows[:8], rows[8:]
            label = {s: i for i, s in enumerate(SHAPES)}
            self.dataset = DatasetDict(
                {
                    split: Dataset.from_dict(
                        {"image": [_open(root, r) for r in part], "label": [label[r["shape"]] for r in part]}
                    )
                    for split, part in (("train", train), ("test", test))
                }
            )
            self.data_loaded = True

    return LocalI2TRetrieval(), LocalShapeClassification()


class EchoReasoner:
    """A reasoner backend that records what it was asked and writes a trace naming the input."""

    def __init__(self):
        self.requests = []

    def describe(self):
        return {"name": "echo"}

    def generate(self, requests):
        self.requests.extend(requests)
        return [f"<think> {r.text or 'a picture'} with colour </think> shape" for r in requests]


@pytest.fixture(scope="module")
def st_model(tiny_vlm):
    reasoner = EchoReasoner()
    model = build_sentence_transformer(tiny_vlm, reasoner=reasoner, prompts=PROMPTS)
    return model, reasoner


def _main_score(result, name: str) -> float:
    task_result = next(r for r in result.task_results if r.task_name == name)
    return task_result.scores["test"][0]["main_score"]


def _ndcg_at_10(queries: np.ndarray, docs: np.ndarray, relevant: list[int]) -> float:
    """Binary relevance, one relevant document per query: 1 / log2(rank + 1) when ranked in the top 10."""
    total = 0.0
    for q, gold in zip(queries, relevant):
        order = np.argsort(-(docs @ q), kind="stable")
        rank = int(np.where(order == gold)[0][0]) + 1
        total += 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0
    return total / len(relevant)


def _one_nn_accuracy(train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> float:
    distances = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    predicted = np.asarray(train_labels)[distances.argmin(1)]
    return float((predicted == np.asarray(test_labels)).mean())


@pytest.mark.parametrize("think", [None, False])
def test_mteb_scores_equal_recomputation_from_model_vectors(st_model, data_dir, think):
    model, reasoner = st_model
    reasoner.requests.clear()
    retrieval, classification = make_tasks(data_dir)
    result = mteb.evaluate(
        TTEMtebModel(model, think=think),
        [retrieval, classification],
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 4},
    )
    rows = _rows(data_dir)
    images = [_open(data_dir, r) for r in rows]
    # The reasoner ran on the query side only (query images and images to classify), unless think=False.
    asked = len(reasoner.requests)
    assert asked == (0 if think is False else 8 + 12)
    assert all(r.text is None and len(r.images) == 1 for r in reasoner.requests)

    kw = {} if think is None else {"think": think}
    queries = model.encode_query(images[:8], prompt=PROMPTS["LocalI2TRetrieval-query"], **kw)
    captions = [f"a {r['color']} {r['shape']}" for r in rows[:11]]
    docs = model.encode_document(captions, prompt=PROMPTS["document"], **kw)
    expected = _ndcg_at_10(queries, docs, relevant=list(range(8)))
    assert _main_score(result, "LocalI2TRetrieval") == pytest.approx(expected, abs=1e-5)
    assert 0.0 < expected < 1.0  # a random model: neither all right nor all wrong, so ranks matter

    vectors = model.encode_query(images, prompt=PROMPTS["ImageClassification"], **kw)
    labels = [SHAPES.index(r["shape"]) for r in rows]
    expected = _one_nn_accuracy(vectors[:8], labels[:8], vectors[8:], labels[8:])
    assert _main_score(result, "LocalShapeClassification") == pytest.approx(expected, abs=1e-9)


def test_think_value_and_instruction_are_passed_through_unchanged(st_model, data_dir):
    """``think="auto"`` (designed elsewhere) reaches encode_query as is; documents get it too."""
    model, _ = st_model
    calls = []

    class Spy:
        prompts = PROMPTS

        def __init__(self):
            self.model = model

        def __len__(self):
            return len(model)

        def __getitem__(self, i):
            return model[i]

        def encode_query(self, inputs, **kwargs):
            calls.append(("query", kwargs.get("think"), kwargs.get("prompt"), len(inputs)))
            return model.encode_query(inputs, **{**kwargs, "think": False})

        def encode_document(self, inputs, **kwargs):
            calls.append(("document", kwargs.get("think"), kwargs.get("prompt"), len(inputs)))
            return model.encode_document(inputs, **{**kwargs, "think": False})

        def get_embedding_dimension(self):
            return model.get_embedding_dimension()

        def parameters(self):
            return model.parameters()

    retrieval, _ = make_tasks(data_dir)
    mteb.evaluate(
        TTEMtebModel(Spy(), think="auto", meta=tte_model_meta(model)),
        retrieval,
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 16},
    )
    assert ("query", "auto", PROMPTS["LocalI2TRetrieval-query"], 8) in calls
    assert ("document", "auto", PROMPTS["document"], 11) in calls


def test_model_meta_from_exported_folder(st_model, tmp_path):
    model, _ = st_model
    folder = tmp_path / "tte-tiny"
    folder.mkdir()
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: Qwen/Qwen2-VL-2B-Instruct\ndatasets:\n- TIGER-Lab/MMEB-train\n---\n# x\n"
    )
    (folder / "tte_export.json").write_text(json.dumps({"reasoner": {"name_or_path": "org/tte-reasoner"}}))
    meta = tte_model_meta(model, name=str(folder))
    assert meta.license == "apache-2.0"
    assert meta.adapted_from == "Qwen/Qwen2-VL-2B-Instruct"
    assert meta.training_datasets == {"TIGER-Lab/MMEB-train"}
    assert meta.embed_dim == model.get_embedding_dimension()
    assert meta.n_parameters == sum(p.numel() for p in model.parameters())
    assert meta.experiment_kwargs["reasoner"] == "org/tte-reasoner"
    assert meta.use_instructions and set(meta.modalities) == {"text", "image"}


def test_model_meta_from_an_exported_repo_loaded_by_repo_id(tiny_vlm, tmp_path, monkeypatch):
    """`TTEMtebModel("org/...")` as README shows it: the card and `tte_export.json` that `tte-hf export`
    wrote are read from the Hub (here: a populated HF cache, offline), not only from a local folder."""
    from hub_helpers import populate_hf_cache
    from huggingface_hub import constants
    from transformers import AutoProcessor

    from tte_hf import TTEEmbedderModel
    from tte_hf.hub import export_model
    from tte_hf.hub.export import CardInfo

    cache = tmp_path / "cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    populate_hf_cache(tiny_vlm, "org/tte-reasoner", cache)
    ckpt = tmp_path / "ckpt"
    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(ckpt)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(ckpt)
    card = CardInfo(repo_id="org/tte-tiny", base_model="Qwen/Qwen2-VL-2B-Instruct", datasets=["TIGER-Lab/MMEB-train"])
    export_model(ckpt, tmp_path / "export", reasoner="org/tte-reasoner", card=card)
    populate_hf_cache(tmp_path / "export", "org/tte-tiny", cache)

    meta = TTEMtebModel("org/tte-tiny", device="cpu").mteb_model_meta
    assert meta.name == "org/tte-tiny"
    assert (meta.license, meta.adapted_from) == ("apache-2.0", "Qwen/Qwen2-VL-2B-Instruct")
    assert meta.training_datasets == {"TIGER-Lab/MMEB-train"}
    assert meta.experiment_kwargs["reasoner"] == "org/tte-reasoner"


_LOCAL_TASKS = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import mteb
import test_mteb
_tasks = {{t.metadata.name: t for t in test_mteb.make_tasks(Path({root!r}))}}
mteb.get_tasks = lambda tasks: [_tasks[name] for name in tasks]  # the script's task names, served locally
"""


def test_mteb_example_script_prints_the_scores_of_the_model_vectors(tiny_vlm, data_dir, tmp_path):
    """examples/mteb_evaluate.py, run as a user runs it, on a saved model; mteb's task lookup is the
    only thing swapped (for the local tasks above: mteb's own datasets need the network)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    model = build_sentence_transformer(tiny_vlm, query_reasoning=False, prompts=PROMPTS)
    model.save(str(tmp_path / "model"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_LOCAL_TASKS.format(tests=str(root / "tests"), root=str(data_dir)))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(root)]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(root / "examples" / "mteb_evaluate.py"), str(tmp_path / "model"), "LocalI2TRetrieval"]
    cmd += ["--think", "false", "--batch-size", "4", "--output", str(tmp_path / "results")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = dict(line.split(": ") for line in done.stdout.strip().splitlines() if ": " in line)

    rows = _rows(data_dir)
    queries = model.encode_query([_open(data_dir, r) for r in rows[:8]], prompt=PROMPTS["LocalI2TRetrieval-query"])
    docs = model.encode_document([f"a {r['color']} {r['shape']}" for r in rows[:11]], prompt=PROMPTS["document"])
    expected = _ndcg_at_10(queries, docs, relevant=list(range(8)))
    assert float(printed["LocalI2TRetrieval"]) == pytest.approx(expected, abs=1e-4)


# --- cross-check: the same model and local tasks through mteb.evaluate and through tte-hf eval -------


def _t2i_retrieval_task(root: Path):
    """Captions retrieve pictures (10 pictures: every query ranks all of them, so mteb's mrr@10 is the full MRR)."""
    rows = _rows(root)[:10]

    class LocalT2IRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="LocalT2IRetrieval",
            type="Any2AnyRetrieval",
            category="t2i",
            modalities=["image", "text"],
            main_score="ndcg_at_5",
            **GENERAL,
        )

        def load_data(self, num_proc: int | None = None, **kwargs) -> None:
            self.dataset = {
                "default": {
                    "test": RetrievalSplitData(
                        queries=Dataset.from_dict(
                            {
                                "id": [f"q{r['id']}" for r in rows],
                                "text": [f"a {r['color']} {r['shape']}" for r in rows],
                            }
                        ),
                        corpus=Dataset.from_dict(
                            {"id": [f"d{r['id']}" for r in rows], "image": [_open(root, r) for r in rows]}
                        ),
                        relevant_docs={f"q{r['id']}": {f"d{r['id']}": 1} for r in rows},
                        top_ranked=None,
                    )
                }
            }
            self.data_loaded = True

    # The same data as a BEIR folder for tte-hf eval: queries, corpus (image paths) and qrels.
    folder = root / "beir_t2i"
    folder.mkdir(exist_ok=True)
    lines = {
        "queries": [{"query-id": f"q{r['id']}", "query": f"a {r['color']} {r['shape']}"} for r in rows],
        "corpus": [{"corpus-id": f"d{r['id']}", "image": r["path"]} for r in rows],
        "qrels": [{"query-id": f"q{r['id']}", "corpus-id": f"d{r['id']}", "score": 1} for r in rows],
    }
    for name, items in lines.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    return LocalT2IRetrieval()


def test_mteb_and_tte_hf_eval_give_the_same_scores(st_model, data_dir, tmp_path):
    """Where mteb's metric is tte-hf's (retrieval: nDCG@k, MRR with the gold within 10, recall@1 = hit@1
    with one relevant document), the two harnesses score the same model on the same task alike."""
    from tte_hf.evaluation import TaskSpec, evaluate

    model, _ = st_model
    mteb_task = _t2i_retrieval_task(data_dir)
    result = mteb.evaluate(
        TTEMtebModel(model, model_prompts={}),
        [mteb_task],
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 4},
    )
    theirs = next(r for r in result.task_results if r.task_name == "LocalT2IRetrieval").scores["test"][0]
    spec = TaskSpec(
        name="LocalT2IRetrieval", modality="visdoc", meta_task="RET", data_format="beir", metric="ndcg@5",
        ranking="global", data_files=str(data_dir / "beir_t2i"), image_root=str(data_dir),
    )  # fmt: skip
    report = evaluate(model, [spec], tmp_path / "out", show_progress_bar=False, chart=False, require_ecr=False)
    ours = report["tasks"]["LocalT2IRetrieval"]["metrics"]
    pairs = {"ndcg@1": "ndcg_at_1", "ndcg@5": "ndcg_at_5", "ndcg@10": "ndcg_at_10", "mrr": "mrr_at_10"}
    pairs |= {"hit@1": "recall_at_1", "recall@5": "recall_at_5", "recall@10": "recall_at_10"}
    for tte_name, mteb_name in pairs.items():
        assert ours[tte_name] == pytest.approx(theirs[mteb_name], abs=1e-4), tte_name
    assert 0.0 < ours["ndcg@5"] < 1.0  # a random model: ranks matter, so agreement is not trivial

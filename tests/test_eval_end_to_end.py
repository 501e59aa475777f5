"""End-to-end MMEB-format evaluation with a real sentence-transformers model over the tiny Qwen2-VL.

The test writes six small tasks in MMEB's own formats (image CLS, VQA, t2i retrieval, grounding,
video-from-frames classification, a BEIR visual-document task with graded qrels), runs `evaluate`,
and recomputes every score from the raw rows with its own encoding and ranking code.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_toy_data import Recorder, build_tasks, tiny_st_model
from PIL import Image

from tte_hf.evaluation import evaluate


@pytest.fixture(scope="module")
def st_model(tiny_vlm):
    return tiny_st_model(tiny_vlm)


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_mmeb")
    return root, build_tasks(root)


@pytest.fixture(scope="module")
def full_run(st_model, toy_tasks, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    report = evaluate(st_model, toy_tasks[1], out, batch_size=3, chunk_size=2, show_progress_bar=False)
    return out, report


# --- independent recomputation: raw rows -> inputs -> embeddings -> cosine -> metrics -------------


def _open(root: Path, rel: str) -> Image.Image:
    return Image.open(root / "images" / rel).convert("RGB")


def _input(text: str, image=None, video=None):
    if image is None and video is None:
        return text
    out = {"text": text} if text else {}
    if image is not None:
        out["image"] = image
    if video is not None:
        out["video"] = video
    return out if text or video is not None else image


def _clean(inst: str) -> str:
    return inst.replace("<|image_1|>", "").strip()


def _recompute_local(model, root: Path, file: str) -> float:
    """Hit@1 (%) of an mmeb-format file: the gold (first) candidate must beat every other strictly."""
    hits = []
    for line in (root / file).read_text().splitlines():
        row = json.loads(line)
        q_text = " ".join(p for p in (_clean(row.get("qry_inst", "")), row["qry_text"]) if p)
        q_image = _open(root, row["qry_img_path"]) if row.get("qry_img_path") else None
        query = _input(q_text, q_image)
        cands = []  # every listed candidate, repeats included
        paths = row.get("tgt_img_path") or [""] * len(row["tgt_text"])
        for text, path in zip(row["tgt_text"], paths):
            full = " ".join(p for p in (_clean(row.get("tgt_inst", "")), text) if p) if path else text
            cands.append(_input(full, _open(root, path) if path else None))
        q = model.encode_query([query], convert_to_tensor=True, show_progress_bar=False)
        c = model.encode_document(cands, convert_to_tensor=True, show_progress_bar=False)
        sims = torch.nn.functional.cosine_similarity(q, c)
        hits.append(float(bool((sims[0] > sims[1:]).all())))
    return 100 * sum(hits) / len(hits)


def _recompute_video(model, root: Path) -> float:
    rows = [json.loads(line) for line in (root / "video.jsonl").read_text().splitlines()]
    labels = [r["tgt_text"][0] for r in rows]  # global ranking over every label of the task
    c = model.encode_document(labels, convert_to_tensor=True, show_progress_bar=False)
    hits = []
    for i, row in enumerate(rows):
        frames = sorted((root / "images" / row["qry_video_path"]).iterdir())
        frames = [frames[k] for k in np.linspace(0, len(frames) - 1, 4, dtype=int)]  # VLM2Vec's sampling
        video = [Image.open(f).convert("RGB") for f in frames]
        q = model.encode_query([{"text": _clean(row["qry_inst"]), "video": video}], convert_to_tensor=True)
        sims = torch.nn.functional.cosine_similarity(q, c)
        others = torch.cat([sims[:i], sims[i + 1 :]])
        hits.append(float(bool((sims[i] > others).all())))
    return 100 * sum(hits) / len(hits)


def _recompute_visdoc(model, root: Path) -> float:
    import ir_measures
    from ir_measures import nDCG

    doc = root / "visdoc"
    corpus = [json.loads(x) for x in (doc / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(x) for x in (doc / "queries.jsonl").read_text().splitlines()]
    qrels = [json.loads(x) for x in (doc / "qrels.jsonl").read_text().splitlines()]
    pages = [{"text": "Understand the content of the provided document image.", "image": _open(root, c["image"])} for c in corpus]  # fmt: skip
    c = model.encode_document(pages, convert_to_tensor=True, show_progress_bar=False)
    texts = [f"Find a document image that matches the given query: {q['query']}" for q in queries]
    q = model.encode_query(texts, convert_to_tensor=True, show_progress_bar=False)
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
    run = [
        ir_measures.ScoredDoc(qq["query-id"], cc["corpus-id"], float(sims[i, j]))
        for i, qq in enumerate(queries)
        for j, cc in enumerate(corpus)
    ]
    judged = [ir_measures.Qrel(r["query-id"], r["corpus-id"], r["score"]) for r in qrels]
    return 100 * ir_measures.calc_aggregate([nDCG @ 5], judged, run)[nDCG @ 5]


def test_report_files_exist_and_match_a_recomputation(st_model, toy_tasks, full_run):
    root, _ = toy_tasks
    out, report = full_run
    for name in ("report.json", "report.md", "meta_tasks.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    with Image.open(out / "meta_tasks.png") as chart:
        assert chart.format == "PNG"

    expected = {
        "toy-cls": _recompute_local(st_model, root, "cls.jsonl"),
        "toy-vqa": _recompute_local(st_model, root, "vqa.jsonl"),
        "toy-t2i": _recompute_local(st_model, root, "ret.jsonl"),
        "toy-gd": _recompute_local(st_model, root, "gd.jsonl"),
        "toy-video-cls": _recompute_video(st_model, root),
        "toy-visdoc": _recompute_visdoc(st_model, root),
    }
    got = {name: task["main_score"] for name, task in report["tasks"].items()}
    assert got == pytest.approx(expected, abs=1e-4)
    # Aggregation: means over tasks per meta-task / modality / overall.
    image = [expected[n] for n in ("toy-cls", "toy-vqa", "toy-t2i", "toy-gd")]
    assert report["modality"]["image"]["score"] == pytest.approx(sum(image) / 4)
    assert report["meta_task"]["GD"]["score"] == pytest.approx(expected["toy-gd"])
    assert report["overall"] == pytest.approx(sum(expected.values()) / 6)
    assert report["tasks"]["toy-visdoc"]["num_candidates"] == 4
    assert report["tasks"]["toy-t2i"]["num_queries"] == 4
    markdown = (out / "report.md").read_text()
    assert f"| toy-visdoc | visdoc | ViDoRe-V1 | ndcg@5 | {expected['toy-visdoc']:.1f} |" in markdown
    assert math.isfinite(report["tasks"]["toy-cls"]["metrics"]["mrr"])


def test_resume_after_interruption_recomputes_nothing_finished(st_model, toy_tasks, full_run, tmp_path):
    _, tasks = toy_tasks
    kwargs = dict(batch_size=3, chunk_size=2, show_progress_bar=False)
    # chunk_size 2 and 4 queries / 4 candidates per task: 4 encode calls per task, so call 14 falls
    # inside the fourth task (toy-gd), after its first candidate chunk.
    crashing = Recorder(st_model, fail_on_call=14)
    with pytest.raises(KeyboardInterrupt):
        evaluate(crashing, tasks, tmp_path, **kwargs)
    finished = {p.parent.name for p in (tmp_path / "tasks").glob("*/score.json")}
    assert finished == {"toy-cls", "toy-vqa", "toy-t2i"}
    assert [p.name for p in (tmp_path / "tasks" / "toy-gd").glob("*.safetensors")] == ["candidate-00000.safetensors"]
    cached_chunks = {p for p in (tmp_path / "tasks").glob("*/*.safetensors")}
    stamps = {p: p.stat().st_mtime_ns for p in cached_chunks}

    resumed = Recorder(st_model)
    report = evaluate(resumed, tasks, tmp_path, **kwargs)
    # Nothing already embedded is embedded again: the second run's inputs + the first run's = one full run.
    full = Recorder(st_model)
    evaluate(full, tasks, tmp_path / "fresh", **kwargs)
    assert len(crashing.inputs) + len(resumed.inputs) == len(full.inputs)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in cached_chunks)
    # Same numbers as the uninterrupted run.
    ours = {(n, k): v for n, t in report["tasks"].items() for k, v in t["metrics"].items()}
    reference = {(n, k): v for n, t in full_run[1]["tasks"].items() for k, v in t["metrics"].items()}
    assert ours == pytest.approx(reference)
    # A third run computes nothing at all.
    idle = Recorder(st_model)
    assert evaluate(idle, tasks, tmp_path, **kwargs)["tasks"] == report["tasks"]
    assert idle.calls == 0


def test_cli_matches_the_python_api(st_model, toy_tasks, full_run, tmp_path, capsys):
    from tte_hf.cli import main

    root, _ = toy_tasks
    st_model.save(str(tmp_path / "model"))
    argv = ["eval", "--model", str(tmp_path / "model"), "--tasks-file", str(root / "tasks.json")]
    argv += ["--tasks", "toy-cls", "toy-visdoc", "--output", str(tmp_path / "out"), "--batch-size", "3", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["tasks"]) == {"toy-cls", "toy-visdoc"}
    for name in report["tasks"]:
        assert report["tasks"][name]["main_score"] == pytest.approx(full_run[1]["tasks"][name]["main_score"], abs=1e-4)
    assert "overall" in capsys.readouterr().out
    # A saved TTE model is recognised as such; the default protocol is the leaderboard's, and a rerun
    # under the other protocol does not reuse these scores.
    assert (report["input_format"], report["protocol"]) == ("tte", "leaderboard")
    assert main(argv + ["--protocol", "strict"]) == 2
    assert "differing: ['protocol']" in capsys.readouterr().err

    bad = argv[:5] + ["--tasks", "toy-nope", "--output", str(tmp_path / "out2")]
    assert main(bad) == 2
    assert "Unknown task(s) ['toy-nope']" in capsys.readouterr().err

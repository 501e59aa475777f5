"""Bad input gives clear errors naming task and row; ECR traces reach the model; registry shape."""

import json
from collections import Counter

import pytest
from eval_toy_data import Recorder, build_tasks, tiny_st_model
from PIL import Image

from tte_hf.evaluation import BENCHMARKS, TaskDataError, TaskSpec, evaluate, get_benchmark, load_task, load_task_file
from tte_hf.evaluation.runner import default_model_id


@pytest.fixture
def toy(tmp_path):
    return tmp_path, {t.name: t for t in build_tasks(tmp_path)}


def _rewrite_row(path, index, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[index])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_registry_matches_mmeb_counts():
    v2 = BENCHMARKS["mmeb-v2"].tasks
    assert len(BENCHMARKS["mmeb-v1"].tasks) == 36 and len(v2) == 78
    assert Counter(t.modality for t in v2) == {"image": 36, "video": 18, "visdoc": 24}
    assert Counter(t.meta_task for t in v2 if t.modality == "image") == {"CLS": 10, "QA": 10, "RET": 12, "GD": 4}
    assert Counter(t.meta_task for t in v2 if t.modality == "video") == {"V-CLS": 5, "V-QA": 5, "V-RET": 5, "V-MRET": 3}
    assert Counter(t.meta_task for t in v2 if t.modality == "visdoc") == {
        "ViDoRe-V1": 10, "ViDoRe-V2": 4, "VisRAG": 6, "VisDoc-OOD": 4,
    }  # fmt: skip
    assert Counter(t.split for t in BENCHMARKS["mmeb-v1"].tasks) == {"IND": 20, "OOD": 16}
    assert {t.metric for t in v2 if t.modality == "visdoc"} == {"ndcg@5"}
    assert {t.metric for t in v2 if t.modality != "visdoc"} == {"hit@1"}
    assert not [t.name for t in v2 if t.note]  # every video parser is ported
    assert BENCHMARKS["mmeb-v2"].task("SmthSmthV2").num_samples == 1000


def test_unknown_task_and_benchmark_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown task\(s\) \['NoSuchTask'\] for benchmark 'mmeb-v2'"):
        evaluate(object(), "mmeb-v2", tmp_path, tasks=["ImageNet-1K", "NoSuchTask"])
    with pytest.raises(ValueError, match="Unknown benchmark 'mmeb-v9'"):
        get_benchmark("mmeb-v9")


def test_task_file_with_unknown_field_names_the_task(tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps([{"name": "x", "modality": "image", "meta_task": "CLS", "data_files": "x.jsonl", "metrc": "hit@1"}]))  # fmt: skip
    with pytest.raises(ValueError, match=r"task #0: Task 'x': unknown field\(s\) \['metrc'\]"):
        load_task_file(tmp_path / "tasks.json")


def test_missing_field_names_task_row_and_field(toy):
    root, tasks = toy
    _rewrite_row(root / "cls.jsonl", 2, lambda row: row.pop("tgt_text"))
    with pytest.raises(TaskDataError, match=r"Task 'toy-cls', row 2: field 'tgt_text' is missing"):
        load_task(tasks["toy-cls"])


def test_candidate_list_without_gold_is_refused(toy):
    root, tasks = toy
    _rewrite_row(root / "vqa.jsonl", 1, lambda row: row.update(tgt_text=[], tgt_img_path=[]))
    with pytest.raises(TaskDataError, match=r"Task 'toy-vqa', row 1: the candidate list 'tgt_text' is empty"):
        load_task(tasks["toy-vqa"])


def test_qrel_pointing_outside_the_corpus_is_refused(toy):
    root, tasks = toy
    with open(root / "visdoc" / "qrels.jsonl", "a") as handle:
        handle.write(json.dumps({"query-id": "q2", "corpus-id": "p9", "score": 1}) + "\n")
    with pytest.raises(TaskDataError, match=r"Task 'toy-visdoc', qrels row 6: corpus-id 'p9' is not in the corpus"):
        load_task(tasks["toy-visdoc"])


def test_query_without_positive_qrels_is_refused(toy):
    root, tasks = toy
    with open(root / "visdoc" / "queries.jsonl", "a") as handle:
        handle.write(json.dumps({"query-id": "q7", "query": "orphan"}) + "\n")
    with pytest.raises(TaskDataError, match=r"queries row 4 \(query-id q7\): the query has no positive qrels"):
        load_task(tasks["toy-visdoc"])


def test_mismatched_candidate_media_is_refused(toy):
    root, tasks = toy
    _rewrite_row(root / "ret.jsonl", 3, lambda row: row["tgt_img_path"].pop())
    with pytest.raises(TaskDataError, match=r"Task 'toy-t2i', row 3: 'tgt_img_path' has 3 entries for 4"):
        load_task(tasks["toy-t2i"])


def test_missing_image_file_is_named_when_loading(toy):
    root, tasks = toy
    _rewrite_row(root / "gd.jsonl", 0, lambda row: row.update(qry_img_path="nope.png"))
    with pytest.raises(TaskDataError, match=r"Task 'toy-gd', row 0 field 'qry_img_path': image .*nope.png"):
        load_task(tasks["toy-gd"])


def test_unreadable_image_names_task_and_row(toy, tiny_vlm):
    root, tasks = toy
    (root / "images" / "broken.png").write_bytes(b"this is not a png")
    _rewrite_row(root / "cls.jsonl", 3, lambda row: row.update(qry_img_path="broken.png"))
    model = Recorder(tiny_st_model(tiny_vlm))
    with pytest.raises(TaskDataError, match=r"Task 'toy-cls', row 3 \(id 3\): cannot read image .*broken.png"):
        evaluate(model, [tasks["toy-cls"]], root / "out", show_progress_bar=False)
    assert not (root / "out" / "tasks" / "toy-cls" / "score.json").exists()


def test_ecr_traces_are_attached_to_queries_and_missing_ones_refused(toy, tiny_vlm):
    root, tasks = toy
    task = tasks["toy-gd"]  # rows carry ids "gd-<color>"
    ecr = root / "ecr.jsonl"
    rows = [{"id": f"toy-gd/gd-{c}", "ecr": f"<think>look for {c}</think> {c}", "thought": "", "final": c} for c in ("red", "green", "blue")]  # fmt: skip
    ecr.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = Recorder(tiny_st_model(tiny_vlm))
    with pytest.raises(ValueError, match=r"Task 'toy-gd': 1 queries have no ECR trace .*toy-gd/gd-yellow"):
        evaluate(model, [task], root / "out", ecr_files=[ecr], show_progress_bar=False)
    with open(ecr, "a") as handle:
        handle.write(json.dumps({"id": "toy-gd/gd-yellow", "ecr": "<think>y</think> yellow"}) + "\n")
    evaluate(model, [task], root / "out", ecr_files=[ecr], show_progress_bar=False)
    reasoning = [x["reasoning"] for x in model.inputs if isinstance(x, dict) and "reasoning" in x]
    assert reasoning == [f"<think>look for {c}</think> {c}" for c in ("red", "green", "blue")] + [
        "<think>y</think> yellow"
    ]


def test_rerun_with_another_model_into_the_same_folder_is_refused(toy, tiny_vlm):
    root, tasks = toy
    model = tiny_st_model(tiny_vlm)
    assert default_model_id(model) == tiny_vlm  # the checkpoint behind ST's Transformer module
    assert default_model_id(Recorder(model)) == "Recorder"  # unidentifiable: falls back to the class name
    task = TaskSpec.from_dict({**tasks["toy-cls"].to_dict()})
    with pytest.raises(KeyboardInterrupt):
        evaluate(Recorder(model, fail_on_call=2), [task], root / "out", model_id="A", chunk_size=2, show_progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"holds results of a different run \(differing: \['chunk_size', 'model'\]"):
        evaluate(model, [task], root / "out", model_id="B", show_progress_bar=False)
    # A finished task is not silently reused for another model either.
    evaluate(model, [task], root / "out", model_id="A", chunk_size=2, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"differing: \['model'\]"):
        evaluate(model, [task], root / "out", model_id="B", chunk_size=2, show_progress_bar=False)


def test_unknown_video_parser_is_skipped_and_reported(toy, tiny_vlm):
    root, tasks = toy
    odd = TaskSpec(name="odd-video", modality="video", meta_task="V-QA", data_format="vlm2vec-video", parser="nope", data_files=str(root / "video.jsonl"))  # fmt: skip
    report = evaluate(tiny_st_model(tiny_vlm), [tasks["toy-cls"], odd], root / "out", show_progress_bar=False)
    assert report["skipped"] == {"odd-video": "VLM2Vec video parser 'nope' is not implemented"}
    assert list(report["tasks"]) == ["toy-cls"]


def test_momentseeker_rows_map_to_text_image_and_video_queries(tmp_path):
    frames = tmp_path / "frames"
    for clip in ("video_frames/a_pos", "video_frames/a_neg", "video_frames/b_neg", "video_frames/q_clip"):
        (frames / clip).mkdir(parents=True)
        Image.new("RGB", (28, 28)).save(frames / clip / "1.jpg")
    Image.new("RGB", (28, 28)).save(frames / "query_img.jpg")
    pos, neg = [{"output_path": "a/pos.mp4"}], [{"output_path": "a/neg.mp4"}, {"output_path": "b/neg.mp4"}]
    rows = [
        {"query": "a dog", "input_frames": "", "positive_frames": pos, "negative_frames": neg},
        {"query": "a cat", "input_frames": "img.jpg", "positive_frames": pos, "negative_frames": neg},
        {"query": "a car", "input_frames": "q/clip.mp4", "positive_frames": pos, "negative_frames": neg[:1]},
    ]
    (tmp_path / "ms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskSpec(name="ms", modality="video", meta_task="V-MRET", data_format="vlm2vec-video", parser="momentseeker", data_files=str(tmp_path / "ms.jsonl"), frame_root=str(frames))  # fmt: skip
    data = load_task(task)
    q = data.queries
    assert q[0].text == "Find the clip that corresponds to the given text: a dog" and q[0].frames is None
    assert q[1].text == "Select the video clip that aligns with the given text and image: a cat"
    assert q[1].image == str(frames / "query_img.jpg")
    assert q[2].text == "Find the clip that corresponds to the given sentence and video segment: a car"
    assert q[2].frames == [str(frames / "video_frames" / "q_clip" / "1.jpg")]
    keys = [c.key for c in data.candidates]
    assert keys == ["video_frames/a_pos", "video_frames/a_neg", "video_frames/b_neg"]
    assert data.relevance == [{0: 1.0}] * 3 and data.query_candidates[2] == [0, 1]
    rows[0]["positive_frames"] = []
    (tmp_path / "ms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskDataError, match=r"Task 'ms', row 0: 'positive_frames' is empty"):
        load_task(task)

"""Registered MMEB tasks read offline from a local mirror laid out like their Hub repos."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from eval_toy_data import COLORS, Recorder, tiny_st_model
from eval_toy_data import write_hub_dataset as _hub_repo
from PIL import Image

import tte_hf.evaluation
from tte_hf.evaluation import evaluate
from tte_hf.evaluation.video_data import MVBENCH_SUBSETS

names_in_order = list(COLORS)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    images = root / "media" / "image-tasks" / "ImageNet-1K"
    images.mkdir(parents=True)
    names = list(COLORS)
    for name, rgb in COLORS.items():
        Image.new("RGB", (56, 56), rgb).save(images / f"{name}.jpg")
    imagenet = datasets.Dataset.from_list(
        [
            {"qry_inst": "<|image_1|> Represent the given image for classification", "qry_text": "",
             "qry_img_path": f"ImageNet-1K/{n}.jpg", "tgt_inst": "", "tgt_text": [n] + [m for m in names if m != n],
             "tgt_img_path": ["", "", "", ""]}
            for n in names
        ]
    )  # fmt: skip
    _hub_repo(root / "data" / "ziyjiang" / "MMEB_Test_Instruct", {"ImageNet-1K": imagenet}, "test")
    image_feature = datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()})
    corpus = datasets.Dataset.from_dict(
        {"corpus-id": [0, 1, 2], "image": [Image.new("RGB", (56, 56), COLORS[n]) for n in names[:3]]}, image_feature
    )
    queries = datasets.Dataset.from_list([{"query-id": i, "query": f"a {n} page"} for i, n in enumerate(names[:3])])
    qrels = datasets.Dataset.from_list([{"query-id": i, "corpus-id": i, "score": 1} for i in range(3)])
    _hub_repo(root / "data" / "vidore" / "arxivqa_test_subsampled_beir", {"corpus": corpus, "queries": queries, "qrels": qrels}, "test")  # fmt: skip
    # Video: MMEB-V2 ships frames as video-tasks/frames/<kind>/<dataset>/<video id>/frame_NNNN.jpg (png here).
    for kind, dataset in (("video_ret", "MSR-VTT"), ("video_cls", "HMDB51")):
        for name, rgb in COLORS.items():
            folder = root / "media" / "video-tasks" / "frames" / kind / dataset / f"vid_{name}"
            folder.mkdir(parents=True)
            for f in range(1, 11):  # frame_10 must sort after frame_9 (natural order)
                Image.new("RGB", (28, 28), tuple(min(255, c + 10 * f) for c in rgb)).save(
                    folder / f"frame_{f}.png"
                )  # png: exact colours
    msrvtt = datasets.Dataset.from_list([{"video_id": f"vid_{n}", "video": f"vid_{n}.mp4", "caption": f"{n} things"} for n in names])  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "MSR-VTT", {"test_1k": msrvtt}, "test")
    hmdb = datasets.Dataset.from_list([{"video_id": f"vid_{n}", "pos_text": label} for n, label in zip(names, ["wave", "smile", "eat", "clap"])])  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "HMDB51", {"default": hmdb}, "test")
    for dataset in ("Video-MME", "NExTQA"):
        for name, rgb in COLORS.items():
            folder = root / "media" / "video-tasks" / "frames" / "video_qa" / dataset / f"qa_{name}"
            folder.mkdir(parents=True)
            for f in range(4):
                Image.new("RGB", (28, 28), rgb).save(folder / f"{f:04d}.jpeg")
    videomme = datasets.Dataset.from_list(
        [{"videoID": f"qa_{n}", "question": "Which colour fills the video?", "question_id": str(i),
          "options": [f"{letter}. {m}" for letter, m in zip("ABCD", names)], "answer": "ABCD"[i],
          "domain": "toy", "sub_category": "toy"} for i, n in enumerate(names)]
    )  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "Video-MME", {"default": videomme}, "test")
    nextqa = datasets.Dataset.from_list(
        [{"video": f"qa_{n}", "question": "what colour is it", "answer": i, "qid": i, "type": "toy",
          **{f"a{k}": o for k, o in enumerate(names + ["purple"])}} for i, n in enumerate(names)]
    )  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "NExTQA", {"MC": nextqa}, "test")
    # MVBench: 20 subsets concatenated; frames under <subset>/<video file name>/.
    subsets = {}
    for k, subset in enumerate(MVBENCH_SUBSETS):
        name = names_in_order[k % 4]
        frames = root / "media" / "video-tasks" / "frames" / "video_qa" / "MVBench" / subset / f"{name}.mp4"
        frames.mkdir(parents=True)
        Image.new("RGB", (28, 28), COLORS[name]).save(frames / "0001.jpeg")
        subsets[subset] = datasets.Dataset.from_list([{"video": f"{name}.mp4", "question": "Which colour?", "candidates": ["red", "green"], "answer": "green"}])  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "MVBench", subsets, "train")
    # Moment retrieval: <frame_root>/<video>/{query, positive, negative_*}/ frame folders.
    mret = root / "media" / "video-tasks" / "frames" / "video_mret" / "QVHighlight"
    for v, name in enumerate(names_in_order[:2]):
        for clip, colour in [("query", name), ("positive", name)] + [(f"negative_{j}", n) for j, n in enumerate(names_in_order) if n != name]:  # fmt: skip
            (mret / f"vid{v}" / clip).mkdir(parents=True)
            Image.new("RGB", (28, 28), COLORS[colour]).save(mret / f"vid{v}" / clip / "frame_1.jpg")
    qvh = datasets.Dataset.from_list([{"query": f"the {n} part", "video_path": f"videos/vid{v}.mp4"} for v, n in enumerate(names_in_order[:2])])  # fmt: skip
    _hub_repo(root / "data" / "VLM2Vec" / "QVHighlight", {"default": qvh}, "test")
    return root


def test_registered_tasks_run_from_a_local_mirror(mirror, tiny_vlm, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = Recorder(tiny_st_model(tiny_vlm))
    report = evaluate(
        model,
        "mmeb-v2",
        tmp_path,
        tasks=["ImageNet-1K", "ViDoRe_arxivqa", "MSR-VTT", "HMDB51"],
        data_root=mirror / "data",
        image_root=mirror / "media",
        show_progress_bar=False,
    )
    imagenet, vidore = report["tasks"]["ImageNet-1K"], report["tasks"]["ViDoRe_arxivqa"]
    assert (imagenet["num_queries"], imagenet["num_candidates"]) == (4, 4)
    assert (vidore["num_queries"], vidore["num_candidates"], vidore["metric"]) == (3, 3, "ndcg@5")
    # The VLM2Vec query forms: instruction without the Phi-3-V marker; visdoc instruction + query.
    queries = [x for x in model.inputs if isinstance(x, dict) and x.get("text", "").startswith("Represent")]
    assert queries and queries[0]["text"] == "Represent the given image for classification"
    assert "Find a document image that matches the given query: a red page" in model.inputs
    # Published baselines sit beside the run in the Markdown table and the chart.
    markdown = (tmp_path / "report.md").read_text()
    assert "| | ours | TTE-t-7B | TTE-t-2B |" in markdown
    assert "**Partial run: 4 of 78 tasks.**" in markdown
    assert f"| image / CLS (1) | {imagenet['main_score']:.1f} |" in markdown
    assert "62.9" in markdown  # VLM2Vec-V2-2B's CLS mean
    assert json.loads((tmp_path / "report.json").read_text())["baselines"]["TTE-t-7B"]["overall"] == 71.5
    assert (tmp_path / "meta_tasks.png").stat().st_size > 0

    # Video retrieval: caption queries against every video (8 of 10 frames, VLM2Vec's linspace sampling).
    msrvtt, hmdb = report["tasks"]["MSR-VTT"], report["tasks"]["HMDB51"]
    assert (msrvtt["num_queries"], msrvtt["num_candidates"], msrvtt["ranking"]) == (4, 4, "global")
    videos = [x for x in model.inputs if isinstance(x, dict) and x.get("text") == "Understand the content of the provided video."]  # fmt: skip
    assert len(videos) == 4 and all(len(v["video"]) == 8 for v in videos)
    first_frame_colors = [v["video"][0].getpixel((0, 0)) for v in videos]
    assert first_frame_colors[0] == tuple(min(255, c + 10) for c in COLORS["red"])  # frame_1, not frame_10
    last = videos[0]["video"][-1].getpixel((0, 0))
    assert last == tuple(min(255, c + 100) for c in COLORS["red"])  # frame_10 closes the sample
    assert "Find a video that contains the following visual content: red things" in model.inputs
    # Video classification: ranked against VLM2Vec's full HMDB51 label list (51 labels).
    assert (hmdb["num_queries"], hmdb["num_candidates"]) == (4, 51)
    assert "What actions or objects interactions are the person in the video doing?" in [
        x.get("text") for x in model.inputs if isinstance(x, dict)
    ]
    # ... and its score matches a recomputation from the raw rows, frames and label list.
    labels = json.loads((Path(tte_hf.evaluation.__file__).parent / "video_labels.json").read_text())["labels"]["HMDB51"]
    st = model.model
    label_emb = st.encode_document(labels, convert_to_tensor=True, show_progress_bar=False)
    hits = []
    for name, gold in zip(names_in_order, ["wave", "smile", "eat", "clap"]):
        folder = mirror / "media" / "video-tasks" / "frames" / "video_cls" / "HMDB51" / f"vid_{name}"
        files = sorted(folder.iterdir(), key=lambda p: int(p.stem.split("_")[1]))
        frames = [Image.open(files[i]).convert("RGB") for i in np.linspace(0, len(files) - 1, 8, dtype=int)]
        text = "What actions or objects interactions are the person in the video doing?"
        q = st.encode_query([{"text": text, "video": frames}], convert_to_tensor=True, show_progress_bar=False)
        sims = torch.nn.functional.cosine_similarity(q, label_emb)
        gold_index = labels.index(gold)
        hits.append(float(bool((sims[gold_index] > torch.cat([sims[:gold_index], sims[gold_index + 1 :]])).all())))
    assert hmdb["main_score"] == pytest.approx(100 * sum(hits) / len(hits))


def test_registered_video_qa_tasks_follow_vlm2vec_prompts(mirror, tiny_vlm, tmp_path):
    model = Recorder(tiny_st_model(tiny_vlm))
    report = evaluate(
        model,
        "mmeb-v2-video",
        tmp_path,
        tasks=["Video-MME", "NExTQA"],
        data_root=mirror / "data",
        image_root=mirror / "media",
        show_progress_bar=False,
    )
    assert report["tasks"]["Video-MME"]["num_candidates"] == 4  # option texts without their "A. " prefix
    assert report["tasks"]["NExTQA"]["num_candidates"] == 5
    texts = [x["text"] if isinstance(x, dict) else x for x in model.inputs]
    prompt = "Given a video and a question, select the most accurate answer from the provided candidates. Return only the exact text of your chosen answer. Question:"  # fmt: skip
    assert f"{prompt} Which colour fills the video?\nA. red\nB. green\nC. blue\nD. yellow" in texts
    assert f"{prompt} what colour is it\nOptions:\n(A) red\n(B) green\n(C) blue\n(D) yellow\n(E) purple" in texts
    assert {"red", "green", "blue", "yellow", "purple"} <= set(texts)
    assert "A. red" not in texts
    # Scores: each query ranks its own options; recompute Video-MME's hit@1 from the recorded embeddings.
    st = model.model
    hits = []
    for i, name in enumerate(names_in_order):
        frames_dir = mirror / "media" / "video-tasks" / "frames" / "video_qa" / "Video-MME" / f"qa_{name}"
        frames = [Image.open(p).convert("RGB") for p in sorted(frames_dir.iterdir())]
        text = f"{prompt} Which colour fills the video?\nA. red\nB. green\nC. blue\nD. yellow"
        q = st.encode_query([{"text": text, "video": frames}], convert_to_tensor=True, show_progress_bar=False)
        c = st.encode_document(names_in_order, convert_to_tensor=True, show_progress_bar=False)
        sims = torch.nn.functional.cosine_similarity(q, c)
        hits.append(float(bool((sims[i] > torch.cat([sims[:i], sims[i + 1 :]])).all())))
    assert report["tasks"]["Video-MME"]["main_score"] == pytest.approx(100 * sum(hits) / len(hits))


def test_registered_mvbench_and_moment_retrieval(mirror, tiny_vlm, tmp_path):
    model = Recorder(tiny_st_model(tiny_vlm))
    report = evaluate(
        model,
        "mmeb-v2",
        tmp_path,
        tasks=["MVBench", "QVHighlight"],
        data_root=mirror / "data",
        image_root=mirror / "media",
        show_progress_bar=False,
    )
    mvbench, qvh = report["tasks"]["MVBench"], report["tasks"]["QVHighlight"]
    assert (mvbench["num_queries"], mvbench["num_candidates"]) == (20, 2)  # "(A) red", "(B) green"
    prompt = "Given a video and a question, select the most accurate answer from the provided candidates. Return only the exact text of your chosen answer. Question:"  # fmt: skip
    texts = [x["text"] if isinstance(x, dict) else x for x in model.inputs]
    assert f"{prompt} Which colour?\nOptions:\n(A) red\n(B) green" in texts
    assert {"(A) red", "(B) green"} <= set(texts)
    # QVHighlight: each query ranks its own video's clips (1 positive + 3 negatives), query = text + video.
    assert (qvh["num_queries"], qvh["num_candidates"], qvh["ranking"]) == (2, 8, "local")
    query = next(x for x in model.inputs if isinstance(x, dict) and x.get("text", "").endswith("the red part"))
    assert query["text"] == "Find the clip that corresponds to the described scene in the given video: the red part"
    assert query["video"][0].getpixel((0, 0)) == pytest.approx(COLORS["red"], abs=3)
    # Recompute QVHighlight's hit@1 from the frame folders.
    st, mret, hits = model.model, mirror / "media" / "video-tasks" / "frames" / "video_mret" / "QVHighlight", []
    for v, name in enumerate(names_in_order[:2]):
        clip_dirs = sorted(p for p in (mret / f"vid{v}").iterdir() if p.name != "query")
        clips = [{"text": "Understand the content of the provided video.", "video": [Image.open(p / "frame_1.jpg").convert("RGB")]} for p in clip_dirs]  # fmt: skip
        text = f"Find the clip that corresponds to the described scene in the given video: the {name} part"
        q_video = [Image.open(mret / f"vid{v}" / "query" / "frame_1.jpg").convert("RGB")]
        q = st.encode_query([{"text": text, "video": q_video}], convert_to_tensor=True, show_progress_bar=False)
        sims = torch.nn.functional.cosine_similarity(q, st.encode_document(clips, convert_to_tensor=True, show_progress_bar=False))  # fmt: skip
        gold = [p.name for p in clip_dirs].index("positive")
        hits.append(float(bool((sims[gold] > torch.cat([sims[:gold], sims[gold + 1 :]])).all())))
    assert qvh["main_score"] == pytest.approx(100 * sum(hits) / 2)

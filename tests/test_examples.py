"""Every script in examples/ run as a user runs it (``python examples/X.py ...``), on tiny models, offline.

The training run, the export and the Hub model chain as in a real project: the embedder that
``train_embedder.py`` writes is what ``export_and_push.py`` publishes (to a fake Hub), and that repo, served
from a local Hub cache, is what ``embed_with_hub_model.py`` and ``evaluate_mmeb.py`` load.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from chat_server import ChatServer
from eval_toy_data import COLORS, write_hub_dataset
from hub_helpers import populate_hf_cache
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# A recipe's GPU settings turned into CPU ones for a tiny model (TRL-style overrides after the flags).
CPU = ["--dtype", "float32", "--attn_implementation", "sdpa", "--bf16", "false", "--use_cpu", "true"]
CPU += ["--activation_checkpointing", "false", "--dataloader_num_workers", "0", "--logging_steps", "1"]
CPU += ["--lr_scheduler_type", "constant", "--warmup_steps", "0"]
REASONER_REPO, MODEL_REPO = "tte-test/tte-reasoner-tiny", "tte-test/tte-tiny"

# Stops huggingface_hub at the network boundary (as tests/test_hub.py does) and logs what a push sends.
FAKE_HUB = """
import hashlib, json, os
from huggingface_hub import CommitInfo, HfApi, RepoUrl, hf_api

def _log(**entry):
    with open(os.environ["FAKE_HUB_LOG"], "a") as handle:
        handle.write(json.dumps(entry) + "\\n")

def _bytes(source):
    return open(source, "rb").read() if isinstance(source, str) else source

def create_repo(self, repo_id, **kwargs):
    _log(call="create_repo", repo_id=repo_id, private=kwargs.get("private"))
    return RepoUrl(f"https://huggingface.co/{repo_id}")

def create_commit(self, repo_id, operations, **kwargs):
    files = {op.path_in_repo: hashlib.sha256(_bytes(op.path_or_fileobj)).hexdigest() for op in operations}
    _log(call="create_commit", repo_id=repo_id, files=files, revision=kwargs.get("revision"))
    return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}", commit_message="",
                      commit_description="", oid="0" * 40)

hf_api.is_xet_available = lambda: False
HfApi.create_repo, HfApi.create_commit = create_repo, create_commit
HfApi._validate_yaml = lambda self, content, **kwargs: None
"""
# What a user without tte-hf has: the Hub repo's own code must do everything.
NO_TTE = """
import importlib.abc, sys

class _NoTTE(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tte_hf" or name.startswith("tte_hf."):
            raise ImportError("tte_hf is blocked: the example must run from the Hub repo alone")

sys.meta_path.insert(0, _NoTTE())
"""


def run_example(script: str, *args, cwd: Path, hub_cache: Path, site: str | None = None, tte_hf: bool = True):
    """Run ``examples/<script>`` in a fresh interpreter, offline, with ``hub_cache`` as the Hub; ``site`` is
    code run at start-up (a ``sitecustomize``). Returns stdout; a failure shows the script's output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH", "TRANSFORMERS_"))}
    paths = [str(ROOT)] if tte_hf else []
    if site is not None:
        (cwd / "site").mkdir(parents=True, exist_ok=True)
        (cwd / "site" / "sitecustomize.py").write_text(site)
        paths.insert(0, str(cwd / "site"))
    env |= {"PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    env |= {"HF_HOME": str(cwd / "hf_home"), "HF_MODULES_CACHE": str(cwd / "modules")}
    env |= {"TOKENIZERS_PARALLELISM": "false", "FAKE_HUB_LOG": str(cwd / "hub_log.jsonl")}
    cmd = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tte_hf.training.synthetic import write_synthetic_retrieval

    return write_synthetic_retrieval(tmp_path_factory.mktemp("ex_data"), num_items=8)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_vlm):
    """A local Hub cache holding the reasoner the exported embedder names by repo id."""
    cache = tmp_path_factory.mktemp("hub_cache")
    populate_hf_cache(tiny_vlm, REASONER_REPO, cache)
    return cache


def _data_args(data) -> list:
    return ["--data", data["data"], "--image-root", data["image_root"], "--ecr", data["query_ecr"]]


@pytest.fixture(scope="module")
def embedder(data, tiny_vlm, hub_cache, tmp_path_factory):
    """``train_embedder.py``, shortened for a CPU: 4 full fine-tuning steps on one batch of 8 (LoRA's merge is
    tested in test_training_embedder.py)."""
    cwd = tmp_path_factory.mktemp("ex_train_embedder")
    args = ["--model", tiny_vlm, *_data_args(data), "--output", cwd / "out", *CPU]
    args += ["--use_peft", "false", "--learning_rate", "1e-4", "--max_steps", "4"]
    args += ["--per_device_train_batch_size", "8", "--gradcache_chunk_size", "4"]
    stdout = run_example("train_embedder.py", *args, cwd=cwd, hub_cache=hub_cache)
    return cwd / "out", stdout


@pytest.fixture(scope="module")
def exported(embedder, tiny_vlm, hub_cache, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ex_export")
    args = ["--checkpoint", embedder[0], "--output", cwd / "repo", "--repo-id", MODEL_REPO, "--reasoner", REASONER_REPO]
    stdout = run_example("export_and_push.py", *args, "--private", cwd=cwd, hub_cache=hub_cache, site=FAKE_HUB)
    calls = [json.loads(line) for line in (cwd / "hub_log.jsonl").read_text().splitlines()]
    populate_hf_cache(cwd / "repo", MODEL_REPO, hub_cache)  # what a later download of the repo finds
    return cwd / "repo", calls, stdout


def _image(path: Path, color: str) -> Path:
    Image.new("RGB", (56, 56), COLORS[color]).save(path)
    return path


# --- 2. teacher traces from an OpenAI-compatible server ------------------------------------------------


def test_generate_ecr_with_teacher_writes_one_trace_per_row(data, hub_cache, tmp_path):
    from tte_hf.models.tte.ecr import task_prompt

    rows = [json.loads(line) for line in data["data"].read_text().splitlines()]
    args = ["--input", data["data"], "--image-root", data["image_root"], "--dataset-name", "ImageNet_1K"]
    args += ["--model", "teacher", "--output", tmp_path / "ecr.jsonl"]
    with ChatServer() as server:
        stdout = run_example("generate_ecr_with_teacher.py", *args, "--base-url", server.base_url, cwd=tmp_path, hub_cache=hub_cache)  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "ecr.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    # The fake teacher answers "<think> {the user text} </think> ok"; the parser splits it.
    for record in records:
        assert record["final"] == "ok" and "Find the color and shape" in record["thought"]
    assert len(server.received) == len(rows)  # one request per row, no retries
    assert all(body["messages"][0]["content"] == task_prompt("classification") for body in server.received)
    sent = sorted(np.asarray(ChatServer.images(body)[0]).tobytes() for body in server.received)
    on_disk = sorted(np.asarray(Image.open(data["image_root"] / r["qry_image_path"])).tobytes() for r in rows)
    assert sent == on_disk
    assert "8 traces written (0 already done)" in stdout


# --- 3. student reasoner SFT ----------------------------------------------------------------------------


def _trace_nll(model, processor, data) -> float:
    """Mean NLL of the teacher's trace tokens (+ end token) given each training prompt."""
    from tte_hf.models.tte.ecr import task_prompt
    from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt

    rows = [json.loads(line) for line in data["data"].read_text().splitlines()]
    traces = {r["id"]: r["ecr"] for r in map(json.loads, data["query_ecr"].read_text().splitlines())}
    losses = []
    for row in rows:
        image = Image.open(data["image_root"] / row["qry_image_path"]).convert("RGB")
        text = row["qry"].replace("<|image_1|>", "").strip()
        prompt = render_prompt(processor, build_messages(text, 1, system=task_prompt("classification")))
        prompt_len = processor(text=[prompt], images=[image], return_tensors="pt").input_ids.shape[1]
        batch = processor(text=[embedder_text(prompt, traces[row["id"]])], images=[image], return_tensors="pt")
        labels = batch.input_ids.clone()
        labels[:, :prompt_len] = -100
        with torch.no_grad():
            losses.append(model(**batch, labels=labels).loss.item())
    return float(np.mean(losses))


def test_train_student_reasoner_learns_the_teacher_traces_with_the_vision_tower_frozen(
    data, tiny_vlm, hub_cache, tmp_path
):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    args = ["--model", tiny_vlm, *_data_args(data), "--task", "classification", "--output", tmp_path / "student"]
    args += [
        *CPU,
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
    ]
    run_example("train_student_reasoner.py", *args, cwd=tmp_path, hub_cache=hub_cache)
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm).eval()
    student = AutoModelForImageTextToText.from_pretrained(tmp_path / "student").eval()
    before, after = base.state_dict(), student.state_dict()
    vision = [k for k in before if ".visual." in f".{k}"]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k)
    assert _trace_nll(student, processor, data) < _trace_nll(base, processor, data) - 0.5


# --- 4. contrastive embedder ----------------------------------------------------------------------------


def test_train_embedder_lowers_the_loss_and_saves_an_automodel(embedder, tiny_vlm):
    from transformers import AutoModel

    import tte_hf  # noqa: F401  (registers TTEEmbedderModel with AutoModel)
    from tte_hf import TTEEmbedderModel

    out, stdout = embedder
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1, losses
    assert f"InfoNCE loss {losses[0]:.3f} -> {losses[-1]:.3f} over 4 steps" in stdout
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, TTEEmbedderModel)
    before, after = TTEEmbedderModel.from_backbone(tiny_vlm).state_dict(), model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("language_model" in k for k in changed)  # the vision tower stayed frozen


# --- 5. unified model -----------------------------------------------------------------------------------


def test_unified_model_trains_only_the_head_then_reasons_like_its_reasoner_and_embeds(
    data, tiny_vlm, hub_cache, tmp_path
):
    from tte_hf.reasoning import ReasoningRequest, load_reasoner

    images = [_image(tmp_path / "red.png", "red"), _image(tmp_path / "blue.png", "blue")]
    question = "Find the color and shape of the object in this image"
    args = ["--reasoner", tiny_vlm, *_data_args(data), "--task", "classification", "--head-num-layers", "1"]
    args += ["--output", tmp_path / "unified", "--question", question, "--images", *images, "--max-new-tokens", "12"]
    args += ["--documents", "a red circle", "a blue square", "a green cross", "--results", tmp_path / "result.json"]
    args += [*CPU, "--learning_rate", "1e-3", "--max_steps", "4", "--per_device_train_batch_size", "8"]
    run_example("unified_model.py", *args, "--gradcache_chunk_size", "4", cwd=tmp_path, hub_cache=hub_cache)

    out = tmp_path / "unified"
    assert (out / "head.safetensors").is_file() and not (out / "model.safetensors").exists()  # backbone frozen
    losses = [log["loss"] for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log]  # fmt: skip
    assert losses[-1] < losses[0], losses
    result = json.loads((tmp_path / "result.json").read_text())
    q, d = torch.tensor(result["query"]), torch.tensor(result["document"])
    assert q.shape == (2, 64) and d.shape == (3, 64)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2)) and torch.testing.assert_close(d.norm(dim=-1), torch.ones(3))  # fmt: skip
    # The unified model's traces are its frozen reasoner's own greedy generations.
    reasoner = load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=12)
    requests = [ReasoningRequest(text=question, images=(Image.open(p).convert("RGB"),), task="classification") for p in images]  # fmt: skip
    expected = reasoner.generate(requests)
    assert result["reasoning"] == expected and all(expected)


# --- 7. export and push ---------------------------------------------------------------------------------


def test_export_and_push_uploads_every_file_of_a_repo_holding_the_trained_weights(exported, embedder):
    from huggingface_hub import ModelCard
    from transformers import AutoModel

    folder, calls, stdout = exported
    assert [c["call"] for c in calls] == ["create_repo", "create_commit"]
    assert calls[0] == {"call": "create_repo", "repo_id": MODEL_REPO, "private": True}
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}  # fmt: skip
    assert calls[1]["repo_id"] == MODEL_REPO and calls[1]["files"] == files
    assert {"model.safetensors", "modules.json", "modeling_tte.py", "sentence_transformer_tte.py", "README.md"} <= set(files)  # fmt: skip
    assert f"https://huggingface.co/{MODEL_REPO}/commit/" in stdout
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "Qwen/Qwen2-VL-2B-Instruct" and card.data.datasets == ["TIGER-Lab/MMEB-train"]
    assert json.loads((folder / "tte_export.json").read_text())["reasoner"]["name_or_path"] == REASONER_REPO
    published = AutoModel.from_pretrained(folder, trust_remote_code=True).state_dict()
    trained = AutoModel.from_pretrained(embedder[0], trust_remote_code=True).state_dict()
    assert published.keys() == trained.keys() and all(torch.equal(published[k], trained[k]) for k in trained)


# --- 1. embed with the Hub model ------------------------------------------------------------------------


def test_embed_with_hub_model_loads_the_repo_offline_without_tte_hf_and_matches_the_trained_model(
    exported, embedder, tiny_vlm, hub_cache, tmp_path
):
    from tte_hf.sentence_transformers import build_sentence_transformer

    image = _image(tmp_path / "query.png", "green")
    queries, documents = ["Which shape is in the picture?", "What colour is it?"], ["a green circle", "a red square"]
    args = ["--model", MODEL_REPO, "--query", *queries, "--image", image, "--documents", *documents]
    args += ["--device", "cpu", "--max-new-tokens", 16, "--output", tmp_path / "out.json"]
    stdout = run_example("embed_with_hub_model.py", *args, cwd=tmp_path, hub_cache=hub_cache, site=NO_TTE, tte_hf=False)  # fmt: skip
    result = json.loads((tmp_path / "out.json").read_text())
    q, d = torch.tensor(result["query"]), torch.tensor(result["document"])
    assert q.shape == (2, 64) and d.shape == (2, 64)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2))
    # AutoModel on the chat sequence gives sentence-transformers' document vectors.
    torch.testing.assert_close(torch.tensor(result["automodel_document"]), d, atol=1e-5, rtol=0)
    assert "AutoModel vs sentence-transformers, max |diff|" in stdout
    # The Hub repo embeds and reasons as the trained checkpoint with its reasoner does, in process.
    reference = build_sentence_transformer(str(embedder[0]), reasoner=tiny_vlm, max_new_tokens=16, device="cpu")
    ref_queries = [{"text": text, "image": str(image)} for text in queries]
    assert result["reasoning"] == reference.get_reasoning(ref_queries) and all(result["reasoning"])
    torch.testing.assert_close(q, reference.encode_query(ref_queries, convert_to_tensor=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(d, reference.encode_document(documents, convert_to_tensor=True), atol=1e-5, rtol=0)


# --- 6. MMEB evaluation from a local mirror -------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """MMEB-V2's ImageNet-1K task, four rows, laid out as the Hub dataset and MMEB's media folder."""
    import datasets

    root = tmp_path_factory.mktemp("ex_mirror")
    (root / "media" / "image-tasks" / "ImageNet-1K").mkdir(parents=True)
    names = list(COLORS)
    for name in names:
        _image(root / "media" / "image-tasks" / "ImageNet-1K" / f"{name}.png", name)
    rows = [
        {"qry_inst": "<|image_1|> Represent the given image for classification", "qry_text": "",
         "qry_img_path": f"ImageNet-1K/{n}.png", "tgt_inst": "", "tgt_text": [n] + [m for m in names if m != n],
         "tgt_img_path": [""] * len(names)}
        for n in names
    ]  # fmt: skip
    repo = root / "data" / "ziyjiang" / "MMEB_Test_Instruct"
    write_hub_dataset(repo, {"ImageNet-1K": datasets.Dataset.from_list(rows)}, "test")
    return root


def test_evaluate_mmeb_scores_a_mirrored_task(exported, mirror, hub_cache, tmp_path):
    args = ["--model", exported[0], "--tasks", "ImageNet-1K", "--data-root", mirror / "data"]
    args += [
        "--image-root",
        mirror / "media",
        "--output",
        tmp_path / "results",
        "--device",
        "cpu",
        "--max-new-tokens",
        8,
    ]
    stdout = run_example("evaluate_mmeb.py", *args, cwd=tmp_path, hub_cache=hub_cache)
    report = json.loads((tmp_path / "results" / "report.json").read_text())
    task = report["tasks"]["ImageNet-1K"]
    assert (task["num_queries"], task["num_candidates"], task["metric"]) == (4, 4, "hit@1")
    # Hit@1 over 4 queries, recomputed from the ranks the run recorded per query
    per_query = (tmp_path / "results" / "tasks" / "ImageNet-1K" / "per_query.jsonl").read_text().splitlines()
    hits = [json.loads(line)["hit@1"] for line in per_query]
    assert len(hits) == 4 and task["main_score"] == pytest.approx(100 * np.mean(hits))
    assert report["overall"] == pytest.approx(task["main_score"])
    assert f"ImageNet-1K: hit@1 {task['main_score']:.1f} (4 queries)" in stdout

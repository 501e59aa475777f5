"""Hub export: repos that load by repo id, offline, without tte_hf; model cards; vLLM export; push; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_helpers import populate_hf_cache, run_offline
from PIL import Image
from transformers import AutoProcessor

from tte_hf.hub import CardInfo, ExportError, export_model, export_vllm, push_folder
from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def processor(tiny_vlm):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_vlm)
    proc.tokenizer.padding_side = "left"
    return proc


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def texts(processor) -> list[str]:
    """The TTE embedder input, built by the shared contract functions: one image query with a trace,
    one text query without."""
    with_image = render_prompt(processor, build_messages("a red bus", num_images=1, instruction="Find the vehicle"))
    text_only = render_prompt(processor, build_messages("what is the dog holding", instruction="Answer"))
    return [embedder_text(with_image, "<think> the bus is red </think> bus"), embedder_text(text_only, None)]


def _inputs(processor, texts, image):
    return processor(text=texts, images=[Image.open(image).convert("RGB")], return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def embedder_ckpt(tiny_vlm, tmp_path_factory):
    """A trained-embedder stand-in saved by TTEEmbedderModel.save_pretrained; no processor in it."""
    from tte_hf import TTEEmbedderModel

    model = TTEEmbedderModel.from_backbone(tiny_vlm).eval()
    path = tmp_path_factory.mktemp("ckpt") / "embedder"
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def unified_ckpt(tiny_vlm, processor, tmp_path_factory):
    from tte_hf import TTEUnifiedModel

    torch.manual_seed(0)
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 2}).eval()
    with torch.no_grad():  # a "trained" head, distinct from the copied backbone layers
        for param in model.head.parameters():
            param.add_(0.01 * torch.randn_like(param))
    path = tmp_path_factory.mktemp("ckpt") / "unified"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def reasoner_lora(tiny_vlm, tmp_path_factory):
    """A student reasoner as a LoRA adapter (non-zero B, so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config).eval()
    path = tmp_path_factory.mktemp("ckpt") / "reasoner_lora"
    peft_model.save_pretrained(path)
    return path, peft_model


@pytest.fixture(scope="module")
def exports(embedder_ckpt, unified_ckpt, reasoner_lora, tiny_vlm, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    with pytest.warns(UserWarning, match="is a local folder: the exported repo will name a path"):
        embedder = export_model(
            embedder_ckpt[0], root / "embedder", processor=tiny_vlm, reasoner=tiny_vlm, sentence_transformers=False
        )
    return {
        "embedder": embedder,
        "unified": export_model(unified_ckpt[0], root / "unified", sentence_transformers=False),
        "reasoner": export_model(reasoner_lora[0], root / "reasoner"),
    }


def test_exported_repos_load_by_repo_id_offline_without_tte_hf(
    exports, embedder_ckpt, unified_ckpt, reasoner_lora, processor, texts, image, tmp_path
):
    cache = tmp_path / "hub_cache"
    repos = {kind: f"tte-test/{kind}" for kind in exports}
    for kind, folder in exports.items():
        populate_hf_cache(folder, repos[kind], cache)
    script = f"""
        import json, torch
        from PIL import Image
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
        torch.set_num_threads(1)
        try:
            import tte_hf  # noqa
            raise SystemExit("tte_hf must not be importable here")
        except ImportError:
            pass
        repos, texts = {repos!r}, {texts!r}
        image = Image.open({str(image)!r}).convert("RGB")
        out = {{}}
        for kind in ("embedder", "unified"):
            processor = AutoProcessor.from_pretrained(repos[kind])
            model = AutoModel.from_pretrained(repos[kind], trust_remote_code=True).eval()
            inputs = processor(text=texts, images=[image], return_tensors="pt", padding=True)
            with torch.no_grad():
                out[kind] = model(**inputs).embeddings.tolist()
            out[kind + "_class"] = type(model).__name__
            out[kind + "_padding"] = processor.tokenizer.padding_side
        processor = AutoProcessor.from_pretrained(repos["reasoner"])
        model = AutoModelForImageTextToText.from_pretrained(repos["reasoner"], trust_remote_code=True).eval()
        inputs = processor(text=texts, images=[image], return_tensors="pt", padding=True)
        with torch.no_grad():
            out["reasoner"] = model(**inputs).logits[:, -3:].tolist()
        out["reasoner_class"] = type(model).__name__
        json.dump(out, open(RESULT_PATH, "w"))
    """
    result = run_offline(script, cache, tmp_path)

    inputs = _inputs(processor, texts, image)
    with torch.no_grad():
        expected = {
            "embedder": embedder_ckpt[1](**inputs).embeddings,
            "unified": unified_ckpt[1](**inputs).embeddings,
            "reasoner": reasoner_lora[1](**inputs).logits[:, -3:],  # the unmerged LoRA model
        }
    assert result["embedder_class"] == "TTEEmbedderModel"
    assert result["unified_class"] == "TTEUnifiedModel"
    assert result["reasoner_class"] == "Qwen2VLForConditionalGeneration"
    assert result["unified_padding"] == "left"
    torch.testing.assert_close(torch.tensor(result["embedder"]), expected["embedder"], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(result["unified"]), expected["unified"], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(result["reasoner"]), expected["reasoner"], atol=1e-5, rtol=1e-5)


def test_export_folder_contents(exports):
    embedder = {p.name for p in exports["embedder"].iterdir()}
    assert {"config.json", "model.safetensors", "modeling_tte.py", "configuration_tte.py", "heads.py"} <= embedder
    assert {"inputs.py", "tokenizer.json", "processor_config.json", "README.md", "tte_export.json"} <= embedder
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in embedder)
    config = json.loads((exports["embedder"] / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_tte.TTEEmbedderModel"
    manifest = json.loads((exports["embedder"] / "tte_export.json").read_text())
    assert manifest["kind"] == "embedder" and manifest["reasoner"]["name_or_path"]
    reasoner = {p.name for p in exports["reasoner"].iterdir()}
    assert "adapter_config.json" not in reasoner and "modeling_tte.py" not in reasoner  # merged, stock code
    assert json.loads((exports["reasoner"] / "tte_export.json").read_text())["merged_lora"] is True
    unified_config = json.loads((exports["unified"] / "config.json").read_text())
    assert unified_config["backbone_name_or_path"] is None  # the local training path does not leak
    assert not list(exports["embedder"].parent.glob(".*partial*"))


# --- model cards -------------------------------------------------------------------------------------

REPORT = {
    "benchmark": "MMEB-V2",
    "dataset_id": "TIGER-Lab/MMEB-V2",
    "tasks": [
        {"task": "ImageNet-1K", "meta_task": "classification", "modality": "image", "metric": "hit@1", "score": 65.2},
        {"task": "DocVQA", "meta_task": "vqa", "modality": "image", "metric": "hit@1", "score": 81.25},
        {"task": "ViDoRe_arxivqa", "meta_task": "visdoc", "modality": "visdoc", "metric": "ndcg@5", "score": 70.5},
    ],
    "summary": {"overall": 72.32, "image": 73.23},
}


def test_model_card_metadata_and_model_index(embedder_ckpt, tiny_vlm, tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 5.0e-5\nlora:\n  r: 16\n  alpha: 64\ntemperature: 0.02\n")
    card_info = CardInfo(
        repo_id="tte-org/tte-tiny",
        base_model="Qwen/Qwen2-VL-2B-Instruct",
        datasets=["TIGER-Lab/MMEB-train"],
        eval_report=report,
        recipe=recipe,
    )
    out = export_model(
        embedder_ckpt[0], tmp_path / "repo", processor=tiny_vlm, sentence_transformers=False, card=card_info
    )
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "feature-extraction"
    assert data.base_model == "Qwen/Qwen2-VL-2B-Instruct" and data.datasets == ["TIGER-Lab/MMEB-train"]
    assert data.license == "apache-2.0" and "think-then-embed" in data.tags
    ModelCardData(**data.to_dict())  # validates (model-index needs model_name, fields well-formed)

    by_task = {r.dataset_config: (r.metric_type, r.metric_value) for r in data.eval_results}
    for task in REPORT["tasks"]:
        assert by_task[task["task"]] == (task["metric"], task["score"])
    for name, value in REPORT["summary"].items():
        assert by_task[name] == ("mean", value)
    assert len(data.eval_results) == len(REPORT["tasks"]) + len(REPORT["summary"])
    assert all(r.dataset_type == "TIGER-Lab/MMEB-V2" for r in data.eval_results)

    text = card.text
    assert 'AutoModel.from_pretrained("tte-org/tte-tiny", trust_remote_code=True)' in text
    assert "| `lora.r` | `16` |" in text and "| DocVQA | vqa | image | hit@1 | 81.25 |" in text
    assert "arXiv:2510.05014" in text and "## Limitations" in text


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"tasks": []}, "non-empty 'tasks'"),
        ({"tasks": [{"task": "A", "metric": "hit@1", "score": 1.0}, {"task": "B", "score": 2.0}]}, "tasks[1] lacks"),
        ({"tasks": [{"task": "A", "metric": "hit@1", "score": "high"}]}, "tasks[0] (A) has a non-numeric score"),
    ],
)
def test_bad_eval_report_is_refused_before_writing(embedder_ckpt, tiny_vlm, tmp_path, report, message):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    with pytest.raises(ExportError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        export_model(
            embedder_ckpt[0],
            tmp_path / "out",
            processor=tiny_vlm,
            card=CardInfo(eval_report=path),
            sentence_transformers=False,
        )
    assert not (tmp_path / "out").exists()


# --- vLLM export ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_export(embedder_ckpt, tiny_vlm, tmp_path_factory):
    return export_vllm(embedder_ckpt[0], tmp_path_factory.mktemp("vllm") / "repo", processor=tiny_vlm)


def test_vllm_export_is_plain_qwen2vl_with_the_embedders_vectors(vllm_export, embedder_ckpt, processor, texts, image):
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(vllm_export, output_loading_info=True)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    config = json.loads((vllm_export / "config.json").read_text())
    assert "auto_map" not in config and not list(vllm_export.glob("*.py"))
    inputs = _inputs(processor, texts, image)
    with torch.no_grad():
        hidden = model.eval().model(**inputs).last_hidden_state
        expected = embedder_ckpt[1](**inputs).embeddings
    # left padding: the last position is every row's end token
    torch.testing.assert_close(torch.nn.functional.normalize(hidden[:, -1], dim=-1), expected, atol=1e-5, rtol=0)


def test_vllm_pooling_files_say_last_and_normalize(vllm_export):
    """The files vLLM's get_pooling_config reads, and sentence-transformers 6 reads the same layout."""
    from sentence_transformers import SentenceTransformer

    modules = json.loads((vllm_export / "modules.json").read_text())
    types = [m["type"] for m in modules]
    assert types == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Normalize",
    ]
    pooling = json.loads((vllm_export / modules[1]["path"] / "config.json").read_text())
    assert [k for k, v in pooling.items() if v is True] == ["pooling_mode_lasttoken", "include_prompt"]
    st = SentenceTransformer(str(vllm_export), device="cpu")
    assert st[1].pooling_mode == "lasttoken" and type(st[2]).__name__ == "Normalize"
    assert st.get_sentence_embedding_dimension() == 64


@pytest.mark.gpu
def test_vllm_pooling_runner_matches_the_embedder(vllm_export, embedder_ckpt, processor, texts, image):
    pytest.importorskip("vllm", reason="pip install 'tte-hf[vllm]'")
    from vllm import LLM

    llm = LLM(model=str(vllm_export), runner="pooling", dtype="float32", enforce_eager=True, max_model_len=1024)
    pil = Image.open(image).convert("RGB")
    requests = [{"prompt": texts[0], "multi_modal_data": {"image": pil}}, {"prompt": texts[1]}]
    got = torch.tensor([o.outputs.embedding for o in llm.embed(requests)])
    with torch.no_grad():
        expected = torch.cat(
            [
                embedder_ckpt[1](**processor(text=[texts[0]], images=[pil], return_tensors="pt")).embeddings,
                embedder_ckpt[1](**processor(text=[texts[1]], return_tensors="pt")).embeddings,
            ]
        )
    cos = torch.nn.functional.cosine_similarity(got, expected.float(), dim=-1)
    assert cos.min() >= 0.999, cos


def test_vllm_export_refuses_unified_models(unified_ckpt, tmp_path):
    with pytest.raises(ExportError, match="custom head cannot run in vLLM"):
        export_vllm(unified_ckpt[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- sentence-transformers files (need the ST module; enabled when it lands) --------------------------


def test_sentence_transformers_repo_loads_offline_with_same_vectors(embedder_ckpt, tiny_vlm, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tte_hf.sentence_transformers import build_sentence_transformer

    # The reasoner is referenced by repo id and resolves from the cache, here and in the subprocess.
    cache = tmp_path / "cache"
    populate_hf_cache(tiny_vlm, "tte-test/reasoner", cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = export_model(embedder_ckpt[0], tmp_path / "repo", processor=tiny_vlm, reasoner="tte-test/reasoner")
    for name in ("modules.json", "config_sentence_transformers.json"):
        assert (out / name).is_file()
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["similarity_fn_name"] == "cosine"
    assert card_library(out) == "sentence-transformers"
    populate_hf_cache(out, "tte-test/st", cache)
    queries = ["a red bus", "what is the dog holding"]
    script = f"""
        import json, torch
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer("tte-test/st", trust_remote_code=True, device="cpu")
        json.dump({{"q": model.encode_query({queries!r}, convert_to_tensor=True).tolist(),
                   "d": model.encode_document({queries!r}, convert_to_tensor=True).tolist()}}, open(RESULT_PATH, "w"))
    """
    result = run_offline(script, cache, tmp_path)
    # The in-process reference reads the same checkpoint, given the processor the export was given.
    reference_dir = tmp_path / "reference"
    shutil.copytree(embedder_ckpt[0], reference_dir)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(reference_dir)
    reference = build_sentence_transformer(str(reference_dir), reasoner=tiny_vlm)
    for key, encode in (("q", reference.encode_query), ("d", reference.encode_document)):
        expected = encode(queries, convert_to_tensor=True)
        torch.testing.assert_close(torch.tensor(result[key]), expected.cpu(), atol=1e-5, rtol=0)


def card_library(folder: Path) -> str:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md").data.library_name


# --- push -------------------------------------------------------------------------------------------


@pytest.fixture
def hub_calls(monkeypatch):
    """Stops huggingface_hub at the network boundary and records what it would send."""
    from huggingface_hub import CommitInfo, HfApi, RepoUrl, hf_api

    calls: dict[str, list] = {"create_repo": [], "create_branch": [], "create_commit": [], "validate_yaml": []}
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # the single-commit upload path

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append((repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"].append((repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        calls["create_commit"].append((repo_id, list(operations), kwargs))
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message=kwargs.get("commit_message"),
            commit_description="",
            oid="0" * 40,
        )

    def validate_yaml(self, content, **kwargs):  # the Hub's metadata check, a POST request
        calls["validate_yaml"].append(content)

    monkeypatch.setattr(HfApi, "_validate_yaml", validate_yaml)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_push_uploads_every_exported_file_to_the_named_repo(exports, hub_calls):
    from tte_hf.cli import main

    folder = exports["embedder"]
    code = main(["push", str(folder), "tte-org/tte-tiny", "--private", "--revision", "v1", "--commit-message", "m1"])
    assert code == 0
    assert hub_calls["create_repo"] == [("tte-org/tte-tiny", {"repo_type": "model", "private": True, "exist_ok": True})]
    assert hub_calls["create_branch"][0][0] == "tte-org/tte-tiny" and hub_calls["create_branch"][0][1]["branch"] == "v1"
    ((repo_id, operations, kwargs),) = hub_calls["create_commit"]
    assert repo_id == "tte-org/tte-tiny" and kwargs["revision"] == "v1" and kwargs["commit_message"] == "m1"
    assert not kwargs["create_pr"]
    expected = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {op.path_in_repo for op in operations} == expected
    readme = next(op for op in operations if op.path_in_repo == "README.md")
    assert Path(readme.path_or_fileobj).read_bytes() == (folder / "README.md").read_bytes()
    assert hub_calls["validate_yaml"] == [(folder / "README.md").read_text()]


def test_push_as_pull_request(exports, hub_calls):
    push_folder(exports["reasoner"], "tte-org/student", create_pr=True)
    ((_, _, kwargs),) = hub_calls["create_commit"]
    assert kwargs["create_pr"] is True and kwargs["revision"] is None
    assert hub_calls["create_branch"] == []
    assert hub_calls["create_repo"][0][1]["private"] is None  # keep the Hub's default / the existing setting


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path, hub_calls):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="lacks \\['README.md'\\]"):
        push_folder(tmp_path, "tte-org/x")
    assert not any(hub_calls.values())


# --- bad input --------------------------------------------------------------------------------------


def test_not_a_tte_checkpoint(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ExportError, match="is not a TTE checkpoint: config.json has model_type='bert'"):
        export_model(tmp_path / "src", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="neither config.json nor adapter_config.json"):
        export_model(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_processor(embedder_ckpt, tmp_path):
    with pytest.raises(ExportError, match="No processor found .* Pass processor=/--processor"):
        export_model(embedder_ckpt[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reasoner_reference_that_does_not_resolve(embedder_ckpt, tiny_vlm, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    for ref in ("tte-org/no-such-reasoner", str(tmp_path / "missing" / "reasoner")):
        with pytest.raises(ExportError, match="does not resolve"):
            export_model(embedder_ckpt[0], tmp_path / "out", processor=tiny_vlm, reasoner=ref)
    with pytest.raises(ExportError, match="not a generative model"):
        export_model(embedder_ckpt[0], tmp_path / "out", processor=tiny_vlm, reasoner=str(embedder_ckpt[0]))
    assert not (tmp_path / "out").exists()


def test_reasoner_reference_resolves_from_the_hub_cache(embedder_ckpt, tiny_vlm, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "cache"
    populate_hf_cache(tiny_vlm, "tte-org/student", cache, revision="v2")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = export_model(
        embedder_ckpt[0],
        tmp_path / "out",
        processor=tiny_vlm,
        reasoner="tte-org/student",
        reasoner_revision="v2",
        sentence_transformers=False,
    )
    manifest = json.loads((out / "tte_export.json").read_text())
    assert manifest["reasoner"] == {"name_or_path": "tte-org/student", "revision": "v2"}
    with pytest.raises(ExportError, match="revision main"):
        export_model(embedder_ckpt[0], tmp_path / "out2", processor=tiny_vlm, reasoner="tte-org/student")


def test_lora_on_the_wrong_model_is_refused(reasoner_lora, tmp_path):
    with pytest.raises(ExportError, match="is a LoRA adapter on a reasoner"):
        export_model(reasoner_lora[0], tmp_path / "out", kind="unified")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_is_not_overwritten(embedder_ckpt, tiny_vlm, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("work")
    with pytest.raises(ExportError, match="not empty"):
        export_model(embedder_ckpt[0], out, processor=tiny_vlm, sentence_transformers=False)
    assert (out / "keep.txt").read_text() == "work"


# --- LoRA -------------------------------------------------------------------------------------------


def test_embedder_lora_is_merged_into_the_exported_weights(tiny_vlm, processor, texts, image, tmp_path):
    """A LoRA trained on a TTEEmbedderModel built in memory (PEFT records no base): merged on export, the
    repo's vectors equal the unmerged PEFT model's; the vLLM export from the same adapter agrees."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForImageTextToText

    from tte_hf import TTEEmbedderModel

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(TTEEmbedderModel.from_backbone(tiny_vlm), config).eval()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    with pytest.raises(ExportError, match="pass adapter_base=/--adapter-base"):
        export_model(adapter, tmp_path / "x", kind="embedder", processor=tiny_vlm)

    out = export_model(adapter, tmp_path / "repo", adapter_base=tiny_vlm, kind="embedder", sentence_transformers=False)
    vllm_out = export_vllm(adapter, tmp_path / "vllm", adapter_base=tiny_vlm)
    inputs = _inputs(processor, texts, image)
    with torch.no_grad():
        expected = peft_model(**inputs).embeddings
        merged = AutoModel.from_pretrained(out, trust_remote_code=True).eval()(**inputs).embeddings
        plain = AutoModelForImageTextToText.from_pretrained(vllm_out).eval().model(**inputs).last_hidden_state
        base = TTEEmbedderModel.from_backbone(tiny_vlm).eval()(**inputs).embeddings
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the vectors, so merging is tested
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.nn.functional.normalize(plain[:, -1], dim=-1), expected, atol=1e-5, rtol=0)
    assert not (out / "adapter_config.json").exists()


def test_unmerged_lora_export_keeps_the_adapter(reasoner_lora, tiny_vlm, processor, texts, image, tmp_path):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    out = export_model(reasoner_lora[0], tmp_path / "repo", merge_lora=False)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert ModelCard.load(out / "README.md").data.library_name == "peft"
    assert "holds a LoRA adapter, not merged weights" in (out / "README.md").read_text()
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_vlm), out).eval()
    inputs = _inputs(processor, texts, image)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reasoner_lora[1](**inputs).logits, atol=1e-5, rtol=0)


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_export_writes_a_repo_and_reports_bad_input(embedder_ckpt, tiny_vlm, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from tte_hf.cli import main

    code = main(["export", str(embedder_ckpt[0]), str(tmp_path / "bad"), "--prompts", "[1]", "--processor", tiny_vlm])
    assert code == 2 and "--prompts must be a JSON object" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "bad")]) == 2
    assert "is not a folder" in capsys.readouterr().out
    assert not (tmp_path / "bad").exists()

    args = ["export", str(embedder_ckpt[0]), str(tmp_path / "vllm"), "--vllm", "--processor", tiny_vlm]
    args += ["--repo-id", "tte-org/tte-tiny-vllm", "--base-model", "Qwen/Qwen2-VL-2B-Instruct", "--tag", "demo"]
    assert main(args) == 0
    card = ModelCard.load(tmp_path / "vllm" / "README.md")
    assert card.data.base_model == "Qwen/Qwen2-VL-2B-Instruct" and {"vllm", "demo"} <= set(card.data.tags)
    assert "vllm serve tte-org/tte-tiny-vllm --runner pooling" in card.text
    assert 'LLM(model="tte-org/tte-tiny-vllm", runner="pooling")' in card.text

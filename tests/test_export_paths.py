"""One TTE model, one vector: every repo `tte-hf export CKPT OUT` writes (default flags) loads, by repo id,
offline and without tte_hf, as the TTE class through `AutoModel` and `SentenceTransformer`, and every path
gives the same embedding; reasoner revisions and Hub arguments reach the repo they belong to."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hub_helpers import populate_hf_cache, run_offline
from test_hub import image  # noqa: F401 - the same photo fixture

from tte_hf.cli import main
from tte_hf.testing import build_tiny_vlm

torch.set_num_threads(1)

#: Backbone architectures every export path is checked on (add an arch here once `build_tiny_vlm` builds it).
ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
TRACE = "<think> the bus is red </think> bus"


@contextlib.contextmanager
def offline_cache(cache: Path):
    """This process reads the Hub only from ``cache`` (what a populated download cache looks like)."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        yield


def _export(*args: str) -> None:
    """`tte-hf export ...` exactly as the command line runs it."""
    assert main(["export", *map(str, args)]) == 0


def _perturb_head(model) -> None:
    with torch.no_grad():  # a "trained" head, distinct from the copied backbone layers
        for param in model.head.parameters():
            param.add_(0.01 * torch.randn_like(param))


@pytest.fixture(scope="module", params=ARCHS)
def repos(request, tmp_path_factory):
    """Per arch: checkpoints of each kind, exported with default flags, laid out in one HF cache."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tte_hf import TTEEmbedderModel, TTEUnifiedModel

    arch = request.param
    root = tmp_path_factory.mktemp(f"paths_{arch}")
    cache = root / "cache"
    base = build_tiny_vlm(root / "base", arch=arch)
    processor = AutoProcessor.from_pretrained(base)
    ids = {kind: f"tte-test/{arch}-{kind}" for kind in ("base", "embedder", "vllm", "unified", "head", "reasoner")}
    populate_hf_cache(base, ids["base"], cache)
    torch.manual_seed(0)
    models = {"embedder": TTEEmbedderModel.from_backbone(base).eval()}
    models["unified"] = TTEUnifiedModel.from_backbone(base, head_type="mhsa", head_kwargs={"head_num_layers": 2})
    with offline_cache(cache):  # the head-only checkpoint names its backbone by repo id, as training on a Hub id does
        models["head"] = TTEUnifiedModel.from_backbone(
            ids["base"], head_type="mhsa", head_kwargs={"head_num_layers": 2}
        )
    for kind in ("unified", "head"):
        _perturb_head(models[kind].eval())
    models["reasoner"] = AutoModelForImageTextToText.from_pretrained(base).eval()
    ckpts = {kind: root / "ckpt" / kind for kind in models}
    for kind, model in models.items():
        model.save_head(ckpts[kind]) if kind == "head" else model.save_pretrained(ckpts[kind])
        processor.save_pretrained(ckpts[kind])
    out = root / "out"
    with offline_cache(cache):
        for kind in ("embedder", "unified", "head", "reasoner"):
            _export(ckpts[kind], out / kind)
        _export(ckpts["embedder"], out / "vllm", "--vllm")
    for kind in ("embedder", "vllm", "unified", "head", "reasoner"):
        populate_hf_cache(out / kind, ids[kind], cache)
    return {"arch": arch, "cache": cache, "ids": ids, "models": models, "out": out, "root": root}


def test_default_export_is_one_model_through_every_path(repos, image, tmp_path):  # noqa: F811
    out, ids = repos["out"], repos["ids"]
    # One copy of the weights per repo: the TTE config at the root, no plain-backbone duplicate.
    for kind, weights in (("embedder", "model.safetensors"), ("unified", "model.safetensors")):
        assert json.loads((out / kind / "config.json").read_text())["auto_map"]["AutoModel"].startswith("modeling_tte.")
        assert sorted(p.name for p in (out / kind).rglob("*.safetensors")) == [weights]
    assert sorted(p.name for p in (out / "head").rglob("*.safetensors")) == ["head.safetensors"]
    assert json.loads((out / "head" / "config.json").read_text())["backbone_name_or_path"] == ids["base"]
    for kind in ("embedder", "unified", "head"):
        assert (out / kind / "modules.json").is_file()

    script = f"""
        import json, torch
        from PIL import Image
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
        torch.set_num_threads(1)
        ids = {ids!r}
        image = Image.open({str(image)!r}).convert("RGB")
        inputs = [{{"text": "a red bus", "image": image, "reasoning": {TRACE!r}}}, "what is the dog holding"]
        out = {{}}
        def batch_of(module):
            features = module.preprocess(inputs, think=False)
            return {{k: v for k, v in features.items() if isinstance(v, torch.Tensor)}}
        for kind in ("embedder", "unified", "head"):
            st = SentenceTransformer(ids[kind], trust_remote_code=True, device="cpu")
            auto = AutoModel.from_pretrained(ids[kind], trust_remote_code=True).eval()
            features = batch_of(st[0])
            model_inputs = {{k: v for k, v in features.items() if k not in ("batch_size", "forward_rows")}}
            with torch.no_grad():
                out[kind] = {{
                    "st_module": type(st[0]).__name__,
                    "auto_class": type(auto).__name__,
                    "st": st.encode(inputs, think=False, convert_to_tensor=True).tolist(),
                    "auto": auto(**model_inputs).embeddings.tolist(),
                    "inputs": {{k: v.tolist() for k, v in model_inputs.items()}},
                }}
            if kind == "embedder":
                vllm = AutoModelForImageTextToText.from_pretrained(ids["vllm"]).eval()
                left = bool(model_inputs["attention_mask"][:, -1].all())
                with torch.no_grad():
                    hidden = vllm.model(**model_inputs).last_hidden_state[:, -1]
                out["vllm"] = {{"class": type(vllm).__name__, "left_padded": left,
                               "emb": torch.nn.functional.normalize(hidden, dim=-1).tolist()}}
        reasoner = AutoModelForImageTextToText.from_pretrained(ids["reasoner"]).eval()
        with torch.no_grad():
            tensors = {{k: torch.tensor(v) for k, v in out["embedder"]["inputs"].items()}}
            out["reasoner"] = {{"class": type(reasoner).__name__, "logits": reasoner(**tensors).logits[:, -3:].tolist()}}
        json.dump(out, open(RESULT_PATH, "w"))
    """
    result = run_offline(script, repos["cache"], tmp_path, timeout=600)

    expected_class = {"embedder": "TTEEmbedderModel", "unified": "TTEUnifiedModel", "head": "TTEUnifiedModel"}
    for kind in ("embedder", "unified", "head"):
        got = result[kind]
        assert got["auto_class"] == expected_class[kind], kind
        assert got["st_module"] == ("TTETransformer" if kind == "embedder" else "TTEUnifiedTransformer")
        inputs = {k: torch.tensor(v) for k, v in got["inputs"].items()}
        with torch.no_grad():  # the checkpoint that was exported, in this process, on the same tokens
            reference = repos["models"][kind](**inputs).embeddings
        torch.testing.assert_close(torch.tensor(got["auto"]), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(got["st"]), reference, atol=1e-5, rtol=0)
    assert result["vllm"]["class"].endswith("VLForConditionalGeneration") and result["vllm"]["left_padded"]
    torch.testing.assert_close(
        torch.tensor(result["vllm"]["emb"]), torch.tensor(result["embedder"]["auto"]), atol=1e-5, rtol=0
    )
    assert result["reasoner"]["class"].endswith("VLForConditionalGeneration")
    inputs = {k: torch.tensor(v) for k, v in result["embedder"]["inputs"].items()}
    with torch.no_grad():
        reference = repos["models"]["reasoner"](**inputs).logits[:, -3:]
    torch.testing.assert_close(torch.tensor(result["reasoner"]["logits"]), reference, atol=1e-5, rtol=1e-5)


# --- revisions and Hub arguments ---------------------------------------------------------------------

TOKEN = "hf_recorded_token"


def _weight_sum(folder) -> float:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(folder)
    return sum(p.double().sum().item() for p in model.parameters())


def test_pinned_reasoner_revision_and_hub_arguments_reach_every_repo(tiny_vlm, tmp_path):
    """The reasoner repo's ``main`` moved on after revision v1 was pinned: the embedder still loads v1.
    The Hub cache is reachable only through an explicit ``cache_dir``/``cache_folder`` (HF_HUB_CACHE is
    empty), and every download records the token, so both must reach the backbone of a head-only unified
    repo and the pinned and bundled reasoners."""
    from transformers import AutoProcessor

    from tte_hf import TTEEmbedderModel, TTEUnifiedModel
    from tte_hf.sentence_transformers import build_sentence_transformer, save_sentence_transformer

    cache = tmp_path / "cache"
    moved_on = build_tiny_vlm(tmp_path / "reasoner_main", seed=1)
    ids = {"student": "tte-test/student", "base": "tte-test/base"}
    ids |= {"pinned": "tte-test/pinned", "bundled": "tte-test/bundled", "head": "tte-test/head"}
    populate_hf_cache(tiny_vlm, ids["student"], cache, revision="v1")
    populate_hf_cache(moved_on, ids["student"], cache, revision="main")
    populate_hf_cache(tiny_vlm, ids["base"], cache)
    ckpt = tmp_path / "ckpt" / "embedder"
    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(ckpt)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(ckpt)
    with offline_cache(cache):
        # README's export line: --reasoner REPO --reasoner-revision v1
        _export(ckpt, tmp_path / "pinned", "--reasoner", ids["student"], "--reasoner-revision", "v1")
        st = build_sentence_transformer(str(ckpt), reasoner=ids["student"], reasoner_revision="v1")
        save_sentence_transformer(st, tmp_path / "bundled")  # README's save_sentence_transformer: bundles v1
        head = TTEUnifiedModel.from_backbone(ids["base"], head_type="mhsa", head_kwargs={"head_num_layers": 2})
        head.save_head(tmp_path / "head")
        AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(tmp_path / "head")
    for name in ("pinned", "bundled", "head"):
        populate_hf_cache(tmp_path / name, ids[name], cache)

    script = f"""
        import json, torch
        import sentence_transformers.util.file_io as st_io
        import transformers.utils.hub as tf_hub
        calls = []
        def recorded(fn):
            def call(*args, **kwargs):
                repo = kwargs.get("repo_id", args[0] if args else None)
                filename = kwargs.get("filename", args[1] if len(args) > 1 else None)
                calls.append([repo, filename, kwargs.get("token"), str(kwargs.get("cache_dir")), kwargs.get("revision")])
                return fn(*args, **kwargs)
            return call
        for module, name in ((tf_hub, "hf_hub_download"), (st_io, "hf_hub_download"), (st_io, "snapshot_download")):
            setattr(module, name, recorded(getattr(module, name)))
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
        for auto in (AutoModelForImageTextToText, AutoProcessor):  # the loads our code makes for other repos
            def load(cls, name, *args, _load=auto.from_pretrained, **kwargs):
                calls.append([str(name), "from_pretrained", kwargs.get("token"), str(kwargs.get("cache_dir")), kwargs.get("revision")])
                return _load(name, *args, **kwargs)
            auto.from_pretrained = classmethod(load)
        ids, cache, token = {ids!r}, {str(cache)!r}, {TOKEN!r}
        def weight_sum(model):
            return sum(p.double().sum().item() for p in model.parameters())
        out = {{}}
        head = AutoModel.from_pretrained(ids["head"], trust_remote_code=True, cache_dir=cache, token=token)
        out["head_class"] = type(head).__name__
        for name in ("pinned", "bundled"):
            st = SentenceTransformer(ids[name], trust_remote_code=True, cache_folder=cache, token=token, device="cpu")
            out[name] = weight_sum(st[0].reasoner.model)
        out["calls"] = calls
        json.dump(out, open(RESULT_PATH, "w"))
    """
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    result = run_offline(script, empty, tmp_path)

    assert result["head_class"] == "TTEUnifiedModel"
    pinned, moved = _weight_sum(tiny_vlm), _weight_sum(moved_on)
    assert pinned != moved  # the two revisions differ, so loading the wrong one is seen
    assert result["pinned"] == pinned and result["bundled"] == pinned
    # transformers' AutoModel probes for an optional adapter_config.json with neither cache_dir nor token
    # (its own code; a miss only means "no adapter"), so that probe is left out. Files transformers serves
    # straight from the cache make no download call; their loads are recorded at from_pretrained.
    ours = [call for call in result["calls"] if call[0] in ids.values() and call[1] != "adapter_config.json"]
    # every repo our code reaches on its own (not the head repo the caller named) went through a recorded call
    assert {call[0] for call in ours} >= set(ids.values()) - {ids["head"]}
    for repo, filename, token, cache_dir, revision in ours:
        assert (token, cache_dir) == (TOKEN, str(cache)), (repo, filename, token, cache_dir)
        if repo == ids["student"]:
            assert revision == "v1"


def test_building_and_exporting_leave_no_temp_dirs(tiny_vlm, tmp_path, monkeypatch):
    from transformers import AutoProcessor

    from tte_hf import TTEEmbedderModel
    from tte_hf.sentence_transformers import build_sentence_transformer

    ckpt = tmp_path / "ckpt"
    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(ckpt)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(ckpt)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    def entries() -> int:
        return len(list(temp.iterdir()))

    build_sentence_transformer(str(ckpt))
    _export(ckpt, tmp_path / "out0")
    before = entries()
    for i in range(1, 3):
        build_sentence_transformer(str(ckpt))
        _export(ckpt, tmp_path / f"out{i}")
    assert entries() == before == 0

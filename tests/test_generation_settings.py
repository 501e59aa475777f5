"""Traces are decoded greedily whatever the checkpoint's generation_config says (Qwen2.5-VL's samples,
with a repetition penalty), unless sampling is asked for; `describe()` reports the settings used."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from tte_hf.models.tte.ecr import task_prompt
from tte_hf.models.tte.inputs import build_messages, render_prompt
from tte_hf.models.tte.modeling_tte import TTEUnifiedModel
from tte_hf.models.tte.reasoner_transformers import TransformersReasoner
from tte_hf.reasoning import ReasoningRequest

NEW_TOKENS = 12
TEXTS = ["what color is the bus", "a dog on a road near a tree"]
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.8, "repetition_penalty": 1.5}


@pytest.fixture(scope="module")
def sampling_vlm(tiny_vlm, tmp_path_factory):
    """The tiny checkpoint with a generation_config that samples, as Qwen2.5-VL's does."""
    path = tmp_path_factory.mktemp("sampling_vlm") / "model"
    shutil.copytree(tiny_vlm, path)
    config_file = path / "generation_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | SAMPLING))
    return str(path)


@pytest.fixture(scope="module")
def greedy_reference(sampling_vlm):
    """A hand-rolled argmax loop (full forward each step, no generate) per prompt: the generated ids
    before the end token."""
    model = AutoModelForImageTextToText.from_pretrained(sampling_vlm).eval()
    processor = AutoProcessor.from_pretrained(sampling_vlm)
    end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for text in TEXTS:
        prompt = render_prompt(processor, build_messages(text, system=task_prompt("generic")))
        ids = processor(text=[prompt], return_tensors="pt").input_ids
        generated = []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                token = int(model(input_ids=ids).logits[0, -1].argmax())
                if token == end_id:
                    break
                generated.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        out.append(generated)
    assert all(out), "the tiny model should write a trace"
    # The checkpoint's own settings would give other tokens: the test can tell the difference.
    prompt = render_prompt(processor, build_messages(TEXTS[1], system=task_prompt("generic")))
    batch = processor(text=[prompt], return_tensors="pt")
    torch.manual_seed(0)
    default = model.generate(**batch, max_new_tokens=NEW_TOKENS)[0, batch["input_ids"].shape[1] :].tolist()
    assert default[: len(out[1])] != out[1]
    return out


def _requests():
    return [ReasoningRequest(text=text, task="generic") for text in TEXTS]


def test_transformers_backend_is_greedy_on_a_sampling_checkpoint(sampling_vlm, greedy_reference):
    reasoner = TransformersReasoner(sampling_vlm, max_new_tokens=NEW_TOKENS)
    first, second = reasoner.generate(_requests()), reasoner.generate(_requests())
    assert first == second == reasoner.processor.batch_decode(greedy_reference, skip_special_tokens=True)
    assert [list(t.token_ids) for t in first] == [list(t.token_ids) for t in second] == greedy_reference


def test_generate_and_embed_is_greedy_on_a_sampling_checkpoint(sampling_vlm, greedy_reference):
    model = TTEUnifiedModel.from_backbone(sampling_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).eval()
    processor = AutoProcessor.from_pretrained(sampling_vlm)
    processor.tokenizer.padding_side = "left"
    prompts = [render_prompt(processor, build_messages(t, system=task_prompt("generic"))) for t in TEXTS]
    batch = processor(text=prompts, padding=True, return_tensors="pt")
    first = model.generate_and_embed(**batch, max_new_tokens=NEW_TOKENS)
    second = model.generate_and_embed(**batch, max_new_tokens=NEW_TOKENS)
    assert [t.tolist() for t in first.trace_ids] == [t.tolist() for t in second.trace_ids] == greedy_reference
    torch.testing.assert_close(first.embeddings, second.embeddings)


class _EndFirst:
    """A logits processor that makes the end token the greedy choice at every step."""

    def __init__(self, end_id: int):
        self.end_id = end_id

    def __call__(self, input_ids, scores):
        scores[:, self.end_id] = scores.max() + 100.0
        return scores


def test_generate_and_embed_keeps_the_end_token_back_for_min_new_tokens(tiny_vlm):
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).eval()
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    processor.tokenizer.padding_side = "left"
    prompts = [render_prompt(processor, build_messages(t, system=task_prompt("generic"))) for t in TEXTS]
    batch = processor(text=prompts, padding=True, return_tensors="pt")
    end_first = [_EndFirst(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))]

    def lengths(**kwargs):
        out = model.generate_and_embed(**batch, max_new_tokens=NEW_TOKENS, logits_processor=end_first, **kwargs)
        return [len(trace) for trace in out.trace_ids]

    assert lengths() == [0, 0], "the end token comes first without a minimum"
    assert lengths(generation_settings={"min_new_tokens": 5}) == [5, 5]
    prompt_len = batch["input_ids"].shape[1]
    assert lengths(generation_settings={"min_length": prompt_len + 3}) == [3, 3], "min_length counts the prompt"
    assert lengths(min_new_tokens=4) == [4, 4], "a generate keyword argument counts too"
    assert lengths(generation_settings={"min_new_tokens": NEW_TOKENS + 8}) == [NEW_TOKENS] * 2, "the cap wins"


def _spy_generate(monkeypatch, model):
    calls = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    return calls


def test_describe_reports_the_settings_generate_gets(sampling_vlm, monkeypatch):
    greedy = TransformersReasoner(sampling_vlm, max_new_tokens=4)
    sampler = TransformersReasoner(sampling_vlm, max_new_tokens=4, do_sample=True, temperature=0.5, top_k=3)
    assert greedy.describe() != sampler.describe()
    for reasoner in (greedy, sampler):
        calls = _spy_generate(monkeypatch, reasoner.model)
        reasoner.generate(_requests()[:1])
        settings = reasoner.describe()["generation"]
        assert settings["repetition_penalty"] == 1.0  # not the checkpoint's 1.5
        assert {k: calls[0][k] for k in settings} == settings
    assert (
        sampler.describe()["generation"] | {"do_sample": True, "temperature": 0.5, "top_k": 3}
        == (sampler.describe()["generation"])
    )


def test_unified_module_describes_its_generation_settings(sampling_vlm, tmp_path, monkeypatch):
    from tte_hf.sentence_transformers import build_sentence_transformer

    path = tmp_path / "unified"
    TTEUnifiedModel.from_backbone(sampling_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).save_pretrained(
        path
    )
    AutoProcessor.from_pretrained(sampling_vlm).save_pretrained(path)
    greedy = build_sentence_transformer(str(path), max_new_tokens=4)
    sampled = build_sentence_transformer(str(path), max_new_tokens=4, generation_settings={"do_sample": True})
    assert greedy[0]._reasoner_id() != sampled[0]._reasoner_id()  # so ECR / embedding caches keep them apart
    for st in (greedy, sampled):
        calls = _spy_generate(monkeypatch, st[0].model.backbone)
        st.encode_query(["what color is the bus"])
        settings = st[0].reasoner.describe()["generation"]
        assert {k: calls[0][k] for k in settings} == settings
    assert sampled[0].reasoner.describe()["generation"]["do_sample"] is True
    with pytest.raises(ValueError, match="unknown generation setting"):
        build_sentence_transformer(str(path), generation_settings={"temprature": 0.5})

"""TTE embedder and unified model: parity with raw transformers, single pass, save/load, errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, LogitsProcessor

from tte_hf import TTEEmbedderConfig, TTEEmbedderModel, TTEUnifiedConfig, TTEUnifiedModel
from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt

HEAD_KWARGS = {"head_num_layers": 2, "head_num_heads": 4, "head_num_queries": 4}
ARCH_FIXTURES = ["tiny_vlm", "tiny_vlm_25", "tiny_vlm_3"]


def _items():
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    noise = Image.effect_noise((56, 84), 40).convert("RGB")
    return [
        ("a red star left of a blue circle", None),
        (None, red),
        ("which shape is closest to the top?", noise),
        ("two", None),
    ]


def _texts(processor, items, trace=None):
    prompts = [render_prompt(processor, build_messages(text, num_images=int(img is not None))) for text, img in items]
    return [embedder_text(p, trace) for p in prompts]


def _batch(processor, items, padding_side, trace=None):
    processor.tokenizer.padding_side = padding_side
    images = [img for _, img in items if img is not None]
    return processor(text=_texts(processor, items, trace), images=images or None, return_tensors="pt", padding=True)


def _reference_embeddings(path, processor, items, trace=None):
    """Independent reference: raw transformers forward of each input alone, final hidden state of the
    last token, L2-normalised."""
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    out = []
    for text, item in zip(_texts(processor, items, trace), items):
        image = item[1]
        inputs = processor(text=[text], images=[image] if image is not None else None, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
        out.append(F.normalize(hidden[0, -1], dim=-1))
    return torch.stack(out)


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_embedder_matches_raw_backbone(request, fixture, padding_side):
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    model = TTEEmbedderModel.from_backbone(path).eval()
    items = _items()
    batch = _batch(processor, items, padding_side, trace="<think> red </think> red")
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding to test pooling"
    with torch.no_grad():
        embeddings = model(**batch).embeddings
    reference = _reference_embeddings(path, processor, items, trace="<think> red </think> red")
    torch.testing.assert_close(embeddings, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(items)), atol=1e-5, rtol=0)


def test_embedder_matryoshka_and_unnormalised(tiny_vlm):
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    batch = _batch(processor, _items(), "left")
    raw = TTEEmbedderModel.from_backbone(tiny_vlm, normalize=False).eval()
    short = TTEEmbedderModel.from_backbone(tiny_vlm, truncate_dim=16).eval()
    with torch.no_grad():
        full, truncated = raw(**batch).embeddings, short(**batch).embeddings
    assert full.norm(dim=-1).sub(1).abs().max() > 1e-2  # really not normalised
    torch.testing.assert_close(truncated, F.normalize(full[:, :16], dim=-1), atol=1e-6, rtol=0)


def _count_backbone_passes(model):
    """Counts forward calls of the language model by length: prompt-length passes vs 1-token steps."""
    calls = []
    handle = model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    return calls, handle


class _EndRowsEarly(LogitsProcessor):
    def __init__(self, prompt_len, end_id, rows):
        self.prompt_len, self.end_id, self.rows = prompt_len, end_id, rows

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        scores[:, self.end_id] = -1e9
        if step < self.rows:
            scores[step, self.end_id] = 1e9
        return scores


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
@pytest.mark.parametrize("head_type", ["attention_pooler", "latent_attention", "qformer", "mhsa"])
def test_generate_and_embed_equals_second_forward(request, fixture, head_type):
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    model = TTEUnifiedModel.from_backbone(path, head_type=head_type, head_kwargs=HEAD_KWARGS).eval()
    items = _items()
    processor.tokenizer.padding_side = "left"
    prompts = [render_prompt(processor, build_messages(t, num_images=int(i is not None))) for t, i in items]
    images = [i for _, i in items if i is not None]
    batch = processor(text=prompts, images=images, return_tensors="pt", padding=True)

    end_id = model.backbone.generation_config.eos_token_id
    calls, handle = _count_backbone_passes(model)
    try:
        # Row i ends after i tokens (row 0: an empty trace); the last row runs into the cap, where the end is forced.
        out = model.generate_and_embed(
            **batch, max_new_tokens=5, logits_processor=[_EndRowsEarly(batch["input_ids"].shape[1], end_id, rows=3)]
        )
    finally:
        handle.remove()
    assert sum(length > 1 for length in calls) == 1, f"expected one prompt pass, got passes of lengths {calls}"
    assert [len(t) for t in out.trace_ids] == [0, 1, 2, 5]
    assert all(end_id not in t for t in out.trace_ids)

    for i, (_, image) in enumerate(items):
        single = processor(text=[prompts[i]], images=[image] if image is not None else None, return_tensors="pt")
        ids = torch.cat([single["input_ids"][0], out.trace_ids[i], torch.tensor([end_id])])[None]
        single["input_ids"], single["attention_mask"] = ids, torch.ones_like(ids)
        single["mm_token_type_ids"] = F.pad(
            single["mm_token_type_ids"], (0, ids.shape[1] - single["mm_token_type_ids"].shape[1])
        )
        with torch.no_grad():
            separate = model(**single).embeddings[0]
        torch.testing.assert_close(out.embeddings[i], separate, atol=1e-4, rtol=0)


def _mm_rows():
    """(text, images, video) rows: text only, one image, two images, a video of four frames."""
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    noise = Image.effect_noise((56, 84), 40).convert("RGB")
    frames = [Image.effect_noise((56, 56), 30 + 10 * i).convert("RGB") for i in range(4)]
    return [
        ("a red star left of a blue circle", [], None),
        ("which shape is closest to the top?", [noise], None),
        ("compare the two pictures", [red, noise], None),
        ("what happens in the clip?", [], frames),
    ]


def _mm_prompts(processor, rows):
    return [
        render_prompt(processor, build_messages(t, num_images=len(imgs), has_video=v is not None))
        for t, imgs, v in rows
    ]


def _mm_inputs(processor, texts, rows, padding_side="left"):
    processor.tokenizer.padding_side = padding_side
    images = [image for _, imgs, _ in rows for image in imgs]
    videos = [video for _, _, video in rows if video is not None]
    return processor(text=texts, images=images or None, videos=videos or None, padding=True, return_tensors="pt")


def _final_state_reference(path, rows_inputs):
    """Independent reference: the backbone's own ``output_hidden_states`` final state at the last
    token of each row run alone, L2-normalised."""
    backbone = AutoModelForImageTextToText.from_pretrained(path).eval()
    out = []
    for inputs in rows_inputs:
        with torch.no_grad():
            hidden = backbone(**inputs, output_hidden_states=True).hidden_states[-1]
        out.append(F.normalize(hidden[0, -1], dim=-1))
    return torch.stack(out)


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
def test_fresh_mhsa_head_equals_the_backbones_final_state_on_every_modality(request, fixture):
    """A freshly copied MHSA head reproduces the backbone's final last-token state on text, image,
    multi-image and video rows: it runs its layers with the backbone's multimodal positions."""
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    model = TTEUnifiedModel.from_backbone(path, head_type="mhsa", head_kwargs={"head_num_layers": 2}).eval()
    rows = _mm_rows()
    texts = [embedder_text(p, "<think> red </think> red") for p in _mm_prompts(processor, rows)]
    reference = _final_state_reference(path, [_mm_inputs(processor, [t], [r]) for t, r in zip(texts, rows)])
    for padding_side in ("left", "right"):
        batch = _mm_inputs(processor, texts, rows, padding_side)
        with torch.no_grad():
            embeddings = model(**batch).embeddings
        torch.testing.assert_close(embeddings, reference, atol=1e-5, rtol=0)


def test_an_embedding_pass_stops_at_the_layer_the_mhsa_head_reads(tiny_vlm):
    """`forward` runs the backbone only up to the head's input: the layers the head copied do not run
    (their outputs would be thrown away); generation, which needs the logits, still runs them all."""
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).eval()
    layers = model.language_model.layers
    ran = {i: 0 for i in range(len(layers))}
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.__setitem__(i, ran[i] + 1)) for i, layer in enumerate(layers)]  # fmt: skip
    batch = _batch(processor, _items(), "left", trace="<think> red </think> red")
    try:
        with torch.no_grad():
            model(**batch)
        assert ran == {**{i: 1 for i in range(len(layers) - 1)}, len(layers) - 1: 0}
        model.generate_and_embed(**_batch(processor, _items(), "left"), max_new_tokens=2)
    finally:
        for handle in handles:
            handle.remove()
    assert ran[len(layers) - 1] > 0


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
def test_fresh_mhsa_head_in_generate_and_embed_equals_the_backbones_final_state(request, fixture):
    """Through the single pass: the generated tokens' positions come from the backbone's rope deltas."""
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    model = TTEUnifiedModel.from_backbone(path, head_type="mhsa", head_kwargs={"head_num_layers": 2}).eval()
    rows = _mm_rows()
    prompts = _mm_prompts(processor, rows)
    batch = _mm_inputs(processor, prompts, rows, "left")
    end_id = model.backbone.generation_config.eos_token_id
    ends_early = _EndRowsEarly(batch["input_ids"].shape[1], end_id, rows=3)
    out = model.generate_and_embed(**batch, max_new_tokens=4, logits_processor=[ends_early])
    assert [len(t) for t in out.trace_ids] == [0, 1, 2, 4]

    singles = []
    for prompt, row, trace in zip(prompts, rows, out.trace_ids):
        single = _mm_inputs(processor, [prompt], [row])
        ids = torch.cat([single["input_ids"][0], trace, torch.tensor([end_id])])[None]
        extra = ids.shape[1] - single["input_ids"].shape[1]
        single["input_ids"], single["attention_mask"] = ids, torch.ones_like(ids)
        single["mm_token_type_ids"] = F.pad(single["mm_token_type_ids"], (0, extra))
        singles.append(single)
    torch.testing.assert_close(out.embeddings, _final_state_reference(path, singles), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
def test_save_load_roundtrip_native(request, fixture, tmp_path):
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    batch = _batch(processor, _items(), "left")
    for model in (
        TTEEmbedderModel.from_backbone(path, truncate_dim=32),
        TTEUnifiedModel.from_backbone(path, head_type="qformer", head_kwargs=HEAD_KWARGS),
    ):
        model.eval()
        model.save_pretrained(tmp_path / type(model).__name__)
        loaded = AutoModel.from_pretrained(tmp_path / type(model).__name__).eval()
        assert type(loaded) is type(model)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).embeddings, model(**batch).embeddings, atol=0, rtol=0)
        config = json.loads((tmp_path / type(model).__name__ / "config.json").read_text())
        assert config["auto_map"]["AutoModel"].startswith("modeling_tte.")
        assert not list((tmp_path / type(model).__name__).glob("*.bin"))


def test_head_only_save_references_backbone(tiny_vlm, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    batch = _batch(processor, _items(), "left")
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="attention_pooler", head_kwargs=HEAD_KWARGS).eval()
    model.save_head(tmp_path / "head")
    files = sorted(p.name for p in (tmp_path / "head").iterdir())
    assert files == [
        "config.json",
        "configuration_tte.py",
        "generation_tte.py",
        "head.safetensors",
        "heads.py",
        "modeling_tte.py",
    ]
    assert (tmp_path / "head" / "head.safetensors").stat().st_size < 200_000
    loaded = AutoModel.from_pretrained(tmp_path / "head")
    assert isinstance(loaded, TTEUnifiedModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).embeddings, model(**batch).embeddings, atol=0, rtol=0)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys, json, torch
    class BlockTTE(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tte_hf":
                raise ImportError("tte_hf is blocked in this process")
    sys.meta_path.insert(0, BlockTTE())
    try:
        import tte_hf  # noqa
        raise SystemExit("tte_hf must not be importable here")
    except ImportError:
        pass
    from transformers import AutoModel
    model_dir, batch_file = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    batch = torch.load(batch_file)
    with torch.no_grad():
        print(json.dumps(model(**batch).embeddings.tolist()))
    """
)


@pytest.mark.parametrize("fixture", ARCH_FIXTURES)
def test_trust_remote_code_without_tte_hf(request, fixture, tmp_path):
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    batch = dict(_batch(processor, _items(), "left"))
    torch.save(batch, tmp_path / "batch.pt")
    for model in (
        TTEEmbedderModel.from_backbone(path),
        TTEUnifiedModel.from_backbone(path, head_type="mhsa", head_kwargs=HEAD_KWARGS),
    ):
        model.eval()
        target = tmp_path / type(model).__name__
        model.save_pretrained(target)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        result = subprocess.run(
            [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(target), str(tmp_path / "batch.pt")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        remote = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
        with torch.no_grad():
            torch.testing.assert_close(remote, model(**batch).embeddings, atol=1e-6, rtol=0)


def test_native_auto_classes_know_the_model_types():
    assert AutoConfig.for_model("tte_embedder").__class__ is TTEEmbedderConfig
    assert AutoConfig.for_model("tte_unified").__class__ is TTEUnifiedConfig


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pooling": "mean"}, "pooling"),
        ({"truncate_dim": 0}, "truncate_dim"),
        ({"backbone_config": {"model_type": "llama"}}, "model_type"),
        ({"backbone_config": {"hidden_size": 8}}, "model_type"),
    ],
)
def test_embedder_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TTEEmbedderConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"head_type": "mlp"}, "head_type"),
        ({"head_num_layers": 0}, "head_num_layers"),
        ({"head_num_layers": 4}, "head_num_layers"),  # tiny backbone has 4 layers: MHSA needs n < L
        ({"head_type": "qformer", "head_num_heads": 3}, "head_num_heads"),
        ({"embedding_dim": -1}, "embedding_dim"),
    ],
)
def test_unified_config_errors_name_the_field(tiny_vlm, kwargs, field):
    backbone_config = AutoConfig.from_pretrained(tiny_vlm)
    with pytest.raises(ValueError, match=field):
        TTEUnifiedConfig(backbone_config=backbone_config, **kwargs)


def test_mhsa_head_over_qwen3_vl_deepstack_layers_is_refused(tiny_vlm_3):
    """The tiny Qwen3-VL adds deepstack features to layers 0 and 1 of 4: a 3-layer head would miss them."""
    backbone_config = AutoConfig.from_pretrained(tiny_vlm_3)
    TTEUnifiedConfig(backbone_config=backbone_config, head_num_layers=2)
    with pytest.raises(ValueError, match="head_num_layers <= 2"):
        TTEUnifiedConfig(backbone_config=backbone_config, head_num_layers=3)


def test_mismatched_head_and_backbone_sizes(tiny_vlm):
    small = AutoConfig.from_pretrained(tiny_vlm)
    config = TTEUnifiedConfig(backbone_config=small, head_type="attention_pooler", head_num_heads=4)
    other = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    other.config.text_config.hidden_size = 32  # pretend the weights came from a different backbone
    with pytest.raises(ValueError, match="hidden_size"):
        TTEUnifiedModel(config, backbone=other)


def test_flash_attention_without_flash_attn_says_how_to_install(tiny_vlm):
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"tte-hf\[flash\]"):
        TTEEmbedderModel.from_backbone(tiny_vlm, attn_implementation="flash_attention_2")


def test_generate_and_embed_rejects_right_padding(tiny_vlm):
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="attention_pooler", head_kwargs=HEAD_KWARGS)
    batch = _batch(processor, [("a", None), ("a much longer query about shapes", None)], "right")
    with pytest.raises(ValueError, match="left"):
        model.generate_and_embed(**batch, max_new_tokens=2)


def test_unified_backbone_is_frozen(tiny_vlm):
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="qformer", head_kwargs=HEAD_KWARGS)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not model.backbone.training


def test_make_tiny_writes_a_qwen3_vl_with_its_own_features(tmp_path):
    """`tte-hf make-tiny --arch qwen3_vl`: the Auto classes load a Qwen3-VL whose RoPE is interleaved and
    whose deepstack visual features really reach the text layers; its template has no default system."""
    from tte_hf.cli import main

    assert main(["make-tiny", str(tmp_path / "q3"), "--arch", "qwen3_vl"]) == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "q3").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "q3")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert model.config.text_config.rope_parameters["mrope_interleaved"]
    prompt = render_prompt(processor, build_messages("a red star", num_images=1))
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert len(processor.tokenizer.tokenize("<think>")) == 1
    batch = processor(text=[prompt], images=[Image.new("RGB", (64, 64), (200, 30, 30))], return_tensors="pt")
    with torch.no_grad():
        with_deepstack = model(**batch).logits
        model.model.language_model._deepstack_process = lambda hidden, *args: hidden
        without = model(**batch).logits
    assert (with_deepstack - without).abs().max() > 1e-3

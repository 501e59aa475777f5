"""Input profiles on tiny models: the token ids and pixel_values shapes each profile feeds equal ids
built here from its reference's documented template (VLM2Vec `process_input_text` and its MMEB
parsers, GME's message in VLM2Vec's `gme_inference.py`, the Qwen3-VL-Embedding card's conversation)
and image sizes from qwen-vl-utils' ``smart_resize`` rule — written here, not imported."""

import math

import pytest
from PIL import Image

from tte_hf.evaluation.input_formats import ProfileItem
from tte_hf.evaluation.profile_encoder import ProfileEncoder, detect_input_format

PAD = "<|image_pad|>"
CLS_INST = "<|image_1|> Represent the given image for classification\n"


def smart_resize(h, w, factor, lo, hi):
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > hi:
        beta = math.sqrt(h * w / hi)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < lo:
        beta = math.sqrt(lo / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def qwen2_grid(width, height):
    """(patches, image tokens) of a Qwen2-VL image after VLM2Vec's processor resize (28·28·4 .. 28·28·1280)."""
    h, w = smart_resize(height, width, 28, 28 * 28 * 4, 28 * 28 * 1280)
    return (h // 14) * (w // 14), (h // 28) * (w // 28)


@pytest.fixture(scope="module")
def encoders(tiny_vlm):
    return {fmt: ProfileEncoder(tiny_vlm, fmt, device="cpu") for fmt in ("vlm2vec", "gme")}


def _ids(encoder, text):
    return encoder.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def _fed(encoder, item):
    batch = encoder.model_inputs(item)
    shape = tuple(batch["pixel_values"].shape) if "pixel_values" in batch else None
    return batch["input_ids"][0].tolist(), shape


IMAGE = Image.new("RGB", (100, 60), (200, 30, 30))
TINY = Image.new("RGB", (20, 12), (30, 200, 30))


def _vlm2vec_cases():
    n_patch, n_tok = qwen2_grid(100, 60)
    tiny_patch, tiny_tok = qwen2_grid(56, 56)  # under 28 px on a side: VLM2Vec resizes to 56x56 first
    t2i_inst = "Find me an everyday image that matches the given caption:"
    return {
        "cls query": (
            ProfileItem("query", "image_cls", "ImageNet-1K", CLS_INST, "", IMAGE),
            PAD * n_tok + "  Represent the given image for classification\n\n",
            (n_patch, 1176),
        ),
        "cls candidate": (ProfileItem("candidate", "image_cls", "ImageNet-1K", "", "crane"), "crane", None),
        "qa query": (
            ProfileItem(
                "query",
                "image_qa",
                "OK-VQA",
                "<|image_1|> Represent the given image with the following question:",
                "What is it?",
                TINY,
            ),  # fmt: skip
            PAD * tiny_tok + "\nRepresent the given image with the following question: What is it?\n",  # " \n" -> "\n"
            (tiny_patch, 1176),
        ),
        "t2i query": (ProfileItem("query", "image_t2i", "MSCOCO_t2i", t2i_inst, "a dog"), t2i_inst + " a dog\n", None),
        "visdial query": (
            ProfileItem("query", "image_t2i", "VisDial", t2i_inst, "a dog"),
            t2i_inst + " a dog\n\n",
            None,
        ),
        "t2i candidate": (
            ProfileItem("candidate", "image_t2i", "MSCOCO_t2i", "<|image_1|> Represent the given image.", "", IMAGE),
            PAD * n_tok + "  Represent the given image.\n",
            (n_patch, 1176),
        ),
        "t2i captioned candidate": (
            ProfileItem(
                "candidate",
                "image_t2i",
                "WebQA",
                "<|image_1|> Represent the given image with related text information:",
                "a page",
                IMAGE,
                captioned=True,
            ),  # fmt: skip
            PAD * n_tok + "  Represent the given image with related text information: a page\n",
            (n_patch, 1176),
        ),
        "grounding candidate": (  # image_i2i_vg: no final newline without a caption
            ProfileItem(
                "candidate",
                "image_i2i_vg",
                "MSCOCO",
                "<|image_1|> Represent the given cropped image of the object",
                "",
                IMAGE,
            ),  # fmt: skip
            PAD * n_tok + "  Represent the given cropped image of the object",
            (n_patch, 1176),
        ),
        "visdoc query": (
            ProfileItem(
                "query", "vidore", "ViDoRe_arxivqa", "Find a document image that matches the given query:", "a red page"
            ),  # fmt: skip
            "Find a document image that matches the given query: a red page",
            None,
        ),
        "visdoc page": (
            ProfileItem(
                "candidate",
                "vidore",
                "ViDoRe_arxivqa",
                "Understand the content of the provided document image.",
                "",
                IMAGE,
            ),  # fmt: skip
            PAD * n_tok + " Understand the content of the provided document image.",
            (n_patch, 1176),
        ),
    }


@pytest.mark.parametrize("case", list(_vlm2vec_cases()))
def test_vlm2vec_feeds_the_reference_sequence(encoders, case):
    item, text, pixels = _vlm2vec_cases()[case]
    ids, shape = _fed(encoders["vlm2vec"], item)
    assert ids == _ids(encoders["vlm2vec"], text)
    assert shape == pixels


def _gme_message(text, n_tok):
    vision = "<|vision_start|>" + PAD * n_tok + "<|vision_end|>" if n_tok else ""
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{vision}{text}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )


def test_gme_feeds_its_message_with_instruction_and_text(encoders):
    big = Image.new("RGB", (1000, 700))
    # fetch_image: smart_resize to 28-multiples within 4·28² .. 16384·28², then the processor's budget.
    h, w = smart_resize(700, 1000, 28, 4 * 28 * 28, 16384 * 28 * 28)
    n_patch, n_tok = qwen2_grid(w, h)
    cases = [
        (
            ProfileItem("query", "image_cls", "ImageNet-1K", CLS_INST, "", big),
            " Represent the given image for classification\n \n",
            n_tok,
            (n_patch, 1176),
        ),  # fmt: skip
        (ProfileItem("candidate", "image_cls", "ImageNet-1K", "", "crane"), "crane", 0, None),
        (
            ProfileItem(
                "query", "vidore", "ViDoRe_arxivqa", "Find a document image that matches the given query:", "a red page"
            ),
            "Find a document image that matches the given query: a red page",
            0,
            None,
        ),  # fmt: skip
    ]
    for item, text, tokens, pixels in cases:
        ids, shape = _fed(encoders["gme"], item)
        assert ids == _ids(encoders["gme"], _gme_message(text, tokens)), text
        assert shape == pixels


def test_qwen3_vl_embedding_puts_the_instruction_in_the_system_turn(tiny_vlm_3):
    encoder = ProfileEncoder(tiny_vlm_3, "qwen3-vl-embedding", device="cpu")
    h, w = smart_resize(60, 100, 32, 4 * 32 * 32, 1800 * 32 * 32)
    n_patch, n_tok = (h // 16) * (w // 16), (h // 32) * (w // 32)
    item = ProfileItem("query", "image_qa", "OK-VQA", "<|image_1|> Answer the question:", "What is it?", IMAGE)
    expected = (
        "<|im_start|>system\nAnswer the question:<|im_end|>\n<|im_start|>user\n<|vision_start|>" + PAD * n_tok
        + "<|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
    )  # fmt: skip
    ids, shape = _fed(encoder, item)
    assert ids == _ids(encoder, expected)
    assert shape == (n_patch, 3 * 2 * 16 * 16)
    text_only = ProfileItem("candidate", "image_cls", "ImageNet-1K", "", "crane")
    expected = "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\ncrane<|im_end|>\n<|im_start|>assistant\n"  # fmt: skip
    assert _fed(encoder, text_only) == (_ids(encoder, expected), None)


def test_embeddings_are_the_normalised_last_token_state(encoders):
    import torch

    encoder = encoders["vlm2vec"]
    item = ProfileItem("query", "image_cls", "ImageNet-1K", CLS_INST, "", IMAGE)
    batch = encoder.model_inputs(item)
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state[0, -1]
    vector = encoder.encode_query([item])[0]
    assert torch.allclose(vector, hidden / hidden.norm(), atol=1e-5)


def test_video_items_are_refused(encoders):
    item = ProfileItem("query", "image_cls", "K700", "Classify the video", "", frames=[IMAGE, IMAGE])
    with pytest.raises(ValueError, match="does not cover video"):
        encoders["vlm2vec"].encode_query([item])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VLM2Vec/VLM2Vec-V2.0", "vlm2vec"),
        ("Alibaba-NLP/gme-Qwen2-VL-2B-Instruct", "gme"),
        ("Qwen/Qwen3-VL-Embedding-8B", "qwen3-vl-embedding"),
        ("org/tte-2b", "tte"),
    ],
)
def test_input_format_is_recognised_from_the_repo(name, expected):
    assert detect_input_format(name) == expected


def test_a_profiled_baseline_runs_through_evaluate_and_the_report_names_its_format(encoders, tmp_path):
    import json

    from tte_hf.evaluation import TaskSpec, evaluate

    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        Image.new("RGB", (40, 40), rgb).save(tmp_path / f"{name}.png")
    rows = [
        {"qry_inst": CLS_INST, "qry_text": "", "qry_img_path": f"{n}.png", "tgt_text": [n, m, m]}
        for n, m in (("red", "blue"), ("blue", "red"))
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskSpec(name="toy-cls", modality="image", meta_task="CLS", data_files=str(tmp_path / "t.jsonl"), image_root=str(tmp_path))  # fmt: skip
    report = evaluate(encoders["gme"], [task], tmp_path / "out", show_progress_bar=False, chart=False)
    assert report["input_format"] == "gme" and report["protocol"] == "leaderboard"
    meta = json.loads((tmp_path / "out/tasks/toy-cls/meta.json").read_text())
    assert (meta["input_format"], meta["fingerprint"]["input_format"]) == ("gme", "gme")
    assert report["tasks"]["toy-cls"]["ties"]["duplicate_gold_queries"] == 0  # a repeated negative is no gold repeat
    assert "input format: **gme**" in (tmp_path / "out/report.md").read_text()

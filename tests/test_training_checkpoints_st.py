"""Checkpoints written by the training recipes load through sentence-transformers: a few steps of the
embedder and the unified-head recipes, then build -> save -> ``SentenceTransformer(dir,
trust_remote_code=True)`` gives the vectors of the model classes on hand-built TTE sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
from test_training_embedder import tiny_recipe
from test_training_head import recipe as head_recipe
from transformers import AutoProcessor

from tte_hf.models.tte.ecr import task_prompt
from tte_hf.models.tte.inputs import build_messages, embedder_system_prompt, embedder_text, render_prompt
from tte_hf.models.tte.modeling_tte import TTEEmbedderModel, TTEUnifiedModel
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.training import train_embedder, train_head
from tte_hf.training.synthetic import write_synthetic_retrieval

TRACE = "<think> the object is a red square near the top </think> red square"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_retrieval(tmp_path_factory.mktemp("st_ckpt_data"), num_items=8)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return Image.fromarray((rng.random((48, 72, 3)) * 255).astype("uint8"))


def mixed_inputs(image):
    """Text, a PIL image and a text + image dict, with the (text, images) each one stands for."""
    inputs = ["a blue circle on the left", image, {"text": "which shape is this", "image": image}]
    parts = [("a blue circle on the left", []), (None, [image]), ("which shape is this", [image])]
    return inputs, parts


@torch.no_grad()
def by_hand(model, processor, text, images, system=None, trace=None) -> torch.Tensor:
    """The reference: the model class on render_prompt + trace + end token, one input at a time."""
    prompt = render_prompt(processor, build_messages(text, len(images), False, None, system))
    batch = processor(text=[embedder_text(prompt, trace)], images=images or None, return_tensors="pt")
    return model(**batch).embeddings[0]


def save_and_reload(model, path) -> SentenceTransformer:
    model.save(str(path))
    return SentenceTransformer(str(path), trust_remote_code=True)


def test_embedder_recipe_checkpoint_loads_through_sentence_transformers(data, tiny_vlm, image, tmp_path):
    checkpoint = tmp_path / "embedder"
    train_embedder(tiny_recipe(data, tiny_vlm, checkpoint, max_steps=2))
    st = save_and_reload(build_sentence_transformer(checkpoint, query_reasoning=False), tmp_path / "st")
    inputs, parts = mixed_inputs(image)
    vectors = st.encode_document(inputs, convert_to_tensor=True)

    processor = AutoProcessor.from_pretrained(checkpoint)
    trained = TTEEmbedderModel.from_pretrained(checkpoint).eval()
    expected = torch.stack([by_hand(trained, processor, text, images) for text, images in parts])
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    # The comparison can tell the trained weights from the backbone the recipe started from.
    untrained = TTEEmbedderModel.from_backbone(tiny_vlm).eval()
    assert not torch.allclose(by_hand(untrained, processor, *parts[0]), expected[0], atol=1e-3)


def test_unified_head_checkpoint_loads_through_sentence_transformers(data, tiny_vlm, image, tmp_path):
    train_head(head_recipe(data, tiny_vlm, tmp_path, max_steps=2))
    head_dir = tmp_path / "out"
    st = save_and_reload(build_sentence_transformer(head_dir), tmp_path / "st")
    inputs, parts = mixed_inputs(image)
    processor = AutoProcessor.from_pretrained(head_dir)
    trained = TTEUnifiedModel.from_pretrained(head_dir).eval()

    # Documents: no reasoning, so no trace and no system prompt (the template's default).
    documents = st.encode_document(inputs, convert_to_tensor=True)
    assert embedder_system_prompt("generic", has_trace=False) is None
    expected = torch.stack([by_hand(trained, processor, text, images) for text, images in parts])
    torch.testing.assert_close(documents, expected, atol=1e-5, rtol=0)

    # Queries with a precomputed trace: no generation; the sequence is the reasoner's own, so it starts
    # with the task prompt of reasoning_task ("generic" by default).
    queries = st.encode_query(
        [{"text": "a blue circle on the left", "reasoning": TRACE}, {"image": image, "reasoning": TRACE}],
        convert_to_tensor=True,
    )
    system = task_prompt("generic")
    expected = torch.stack([by_hand(trained, processor, text, images, system, TRACE) for text, images in parts[:2]])
    torch.testing.assert_close(queries, expected, atol=1e-5, rtol=0)

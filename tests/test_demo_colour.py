"""The demo's tiny VLM keeps colour: mean-colour detectors in the frozen tower's patch embedding."""

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from tte_hf.demo.data import COLOURS, SHAPES, render_shape
from tte_hf.testing import COLOUR_DETECTOR_GAIN, COLOUR_DETECTORS, build_tiny_vlm, colour_patch_embedding


@pytest.fixture(scope="module")
def towers(tiny_vlm, tmp_path_factory):
    """The session's tiny Qwen2-VL (seed 0, plain) and the same seed with the colour detectors."""
    return {False: Path(tiny_vlm), True: build_tiny_vlm(tmp_path_factory.mktemp("colour"), colour_patches=True)}


def _weights(path):
    return load_file(path / "model.safetensors")


def test_colour_patches_change_only_the_detector_channels(towers):
    plain, colour = _weights(towers[False]), _weights(towers[True])
    key = next(k for k in plain if k.endswith("patch_embed.proj.weight"))
    n = len(COLOUR_DETECTORS)
    assert not torch.equal(plain[key][:n], colour[key][:n])
    assert torch.equal(plain[key][n:], colour[key][n:])  # the rest of the tower stays as it was
    assert all(torch.equal(plain[k], colour[k]) for k in plain if k != key)


def test_detector_channels_read_a_patchs_mean_colour(towers):
    """On a one-colour image every patch's first channels are gain x detectors @ the normalised colour,
    computed here by hand from the processor's mean and std."""
    model = AutoModelForImageTextToText.from_pretrained(towers[True]).eval()
    processor = AutoProcessor.from_pretrained(towers[True]).image_processor
    rgb = (235, 140, 20)
    batch = processor(images=[render_uniform(rgb)], return_tensors="pt")
    with torch.no_grad():
        patches = model.model.visual.patch_embed(batch["pixel_values"])
    normalised = (torch.tensor(rgb) / 255 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    expected = COLOUR_DETECTOR_GAIN * torch.tensor(COLOUR_DETECTORS) @ normalised
    n = len(COLOUR_DETECTORS)
    torch.testing.assert_close(patches[:, :n], expected.expand(len(patches), -1), rtol=1e-4, atol=1e-4)


def render_uniform(rgb):
    from PIL import Image

    return Image.new("RGB", (56, 56), rgb)


def _tower_features(path, images):
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path).image_processor
    batch = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        merged = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
    return torch.cat(merged).reshape(len(images), -1)  # the tokens the language model reads, per image


def _probe_accuracy(features, labels, n_train):
    """A ridge-regression linear probe (standardised features, centred one-hot targets), trained on the
    first ``n_train`` images, scored on the rest."""
    x = features.double()
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    y = torch.nn.functional.one_hot(labels, len(COLOURS)).double()
    y = y - y[:n_train].mean(0)
    a = x[:n_train]
    w = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ y[:n_train])
    return ((x[n_train:] @ w).argmax(1) == labels[n_train:]).double().mean().item()


def test_colour_survives_the_frozen_tower(towers):
    """The demo's pictures, through the frozen random tower: a linear probe on the merged tokens reads
    the shape's colour more often with the detectors than without."""
    rng = random.Random(0)
    names = list(COLOURS)
    labels = torch.tensor([i % len(names) for i in range(512)])
    images = [render_shape(names[i], rng.choice(SHAPES), rng) for i in labels.tolist()]
    accuracy = {flag: _probe_accuracy(_tower_features(path, images), labels, 384) for flag, path in towers.items()}
    assert accuracy[True] >= accuracy[False] + 0.05, accuracy


def test_rejects_a_weight_that_is_not_a_patch_embedding():
    with pytest.raises(ValueError, match="patch embedding"):
        colour_patch_embedding(torch.zeros(32, 3, 14, 14))

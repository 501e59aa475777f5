"""The one fingerprint module: the weights keys the embedding cache, the hidden-state cache and the
evaluation resume record are built on."""

from __future__ import annotations

import hashlib

import pytest
import torch

from tte_hf.models.tte.fingerprints import PROBE_STRIDE, weights_digest, weights_state_key


class Small(torch.nn.Module):
    """Wide enough rows (2 * PROBE_STRIDE) for a one-row write to be a run of PROBE_STRIDE elements."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(4, 2 * PROBE_STRIDE)
        self.norm = torch.nn.LayerNorm(8)
        self.register_buffer("scale", torch.tensor(2.0))


def _random_like(tensor: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(tensor.shape, generator=torch.Generator().manual_seed(seed), dtype=tensor.dtype)


def _sgd_step(model: Small) -> None:
    model.embed.weight.grad = torch.ones_like(model.embed.weight)
    torch.optim.SGD(model.parameters(), lr=0.1).step()


@torch.no_grad()
def _scale_in_place(model: Small) -> None:
    model.norm.weight.mul_(3.0)


CHANGES = {
    "optimizer step": _sgd_step,
    "in-place under no_grad": _scale_in_place,
    "load_state_dict": lambda m: m.load_state_dict(Small(seed=1).state_dict()),
    ".to(float64)": lambda m: m.to(torch.float64),
    "param.data = x": lambda m: setattr(m.embed.weight, "data", _random_like(m.embed.weight, 2)),
    "param.data.copy_": lambda m: m.embed.weight.data.copy_(_random_like(m.embed.weight, 3)),
    "one row through .data": lambda m: m.embed.weight.data[2].copy_(_random_like(m.embed.weight[2], 4)),
    "buffer through .data": lambda m: m.scale.data.fill_(3.0),
}


@pytest.mark.parametrize("change", CHANGES)
def test_state_key_follows_every_way_weights_change(change):
    model = Small()
    before = weights_state_key(model)
    assert weights_state_key(model) == before  # nothing changed: the same key, so the cache hits
    CHANGES[change](model)
    assert weights_state_key(model) != before


def test_state_key_reads_a_sample_not_every_weight():
    """What keeps ``encode`` from reading a 2B model per call, and its documented price: a ``.data``
    write confined to elements between two samples goes unseen (``embedding_cache.clear()``)."""
    model = Small()
    before = weights_state_key(model)
    model.embed.weight.data.view(-1)[PROBE_STRIDE // 2] += 1.0  # not a sampled element
    assert weights_state_key(model) == before
    assert weights_digest(model) != weights_digest(Small())  # the exact digest does see it


def test_weights_digest_is_content_and_keeps_its_scheme_for_plain_models():
    model, twin = Small(), Small()
    assert weights_digest(model) == weights_digest(twin)  # other objects, same content
    # The scheme evaluation results folders were keyed with: a change orphans every finished run.
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(flat.shape)};".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    assert weights_digest(model) == digest.hexdigest()[:16]


def test_weights_digest_covers_peft_adapter_state():
    from peft import LoraConfig, get_peft_model

    def lora():
        return LoraConfig(r=2, target_modules=["fc"], init_lora_weights=False)

    base = torch.nn.Sequential()
    base.add_module("fc", torch.nn.Linear(8, 8))
    model = get_peft_model(base, lora(), adapter_name="first")
    model.add_adapter("second", lora())
    seen = {weights_digest(model)}
    model.set_adapter("second")  # the same tensors, another adapter applied
    seen.add(weights_digest(model))
    model.base_model.disable_adapter_layers()
    seen.add(weights_digest(model))
    assert len(seen) == 3


def test_hidden_cache_fingerprint_follows_the_backbone_in_memory(tiny_vlm):
    """The folder is keyed by the weights that compute the states, not only by the checkpoint named."""
    from transformers import AutoProcessor

    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel
    from tte_hf.training.hidden_cache import cache_fingerprint

    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1})
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    before = cache_fingerprint(model, processor, tiny_vlm)
    with torch.no_grad():
        model.backbone.get_input_embeddings().weight[0, 0] += 1.0
    assert cache_fingerprint(model, processor, tiny_vlm)["weights"] != before["weights"]

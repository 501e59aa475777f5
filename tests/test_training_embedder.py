"""Contrastive embedder on sentence-transformers' trainer: the cached ranking loss == full-batch InfoNCE,
loss falls and Hit@1 rises, the output loads through ST and AutoModel, 2 processes == 1, resume;
GradCache refused under DeepSpeed."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from training_launch import launch_losses
from transformers import AutoModel, AutoProcessor

import tte_hf  # noqa: F401  (registers the TTE classes with AutoModel)
from tte_hf import TTEEmbedderModel
from tte_hf.models.tte.inputs import build_messages, embedder_system_prompt, embedder_text, render_prompt
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.training import train_embedder
from tte_hf.training.contrastive_trainer import contrastive_loss
from tte_hf.training.data import DatasetSpec, load_pairs
from tte_hf.training.pair_dataset import pairs_dataset, side_input
from tte_hf.training.synthetic import write_synthetic_retrieval
from tte_hf.training.train_embedder import build_embedder_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_retrieval(tmp_path_factory.mktemp("emb_data"), num_items=8)


def dataset_entry(data):
    return {
        "task": "classification",  # as in recipes/embedder/tiny.yaml: the same system prompt
        "path": str(data["data"]),
        "image_root": str(data["image_root"]),
        "query_ecr": str(data["query_ecr"]),
    }


def tiny_recipe(data, tiny_vlm, output_dir, **overrides):
    recipe = yaml.safe_load((ROOT / "recipes" / "embedder" / "tiny.yaml").read_text())
    recipe["model_name_or_path"] = tiny_vlm
    recipe["datasets"][0] |= dataset_entry(data)
    return recipe | {"output_dir": str(output_dir)} | overrides


def embedder_model(tiny_vlm):
    """The recipe's ST model, eager attention and eval mode (no dropout)."""
    model_args = SimpleNamespace(model_name_or_path=tiny_vlm, dtype=None, attn_implementation="eager", use_peft=False)
    return build_embedder_model(model_args, SimpleNamespace(normalize=True, freeze_vision_tower=True)).eval()


def sequences_batch(processor, sides, task=None, instruction=None) -> dict:
    """The embedder's inputs built by hand from `tte_hf.models.tte.inputs`: prompt + trace + end token."""
    from PIL import Image

    texts, images = [], []
    for side in sides:
        system = embedder_system_prompt(task, side.trace is not None)
        messages = build_messages(side.text, len(side.images), instruction=instruction, system=system)
        texts.append(embedder_text(render_prompt(processor, messages), side.trace))
        images += [Image.open(path).convert("RGB") for path in side.images]
    return dict(processor(text=texts, images=images or None, padding=True, return_tensors="pt"))


@torch.no_grad()
def hit_at_1(model, pairs) -> float:
    """Each query ranks all positives; Hit@1 = share whose own positive scores highest."""
    queries = model.encode_query([side_input(p.query, p.task) for p in pairs], convert_to_tensor=True)
    targets = model.encode_document([side_input(p.positive, p.task) for p in pairs], convert_to_tensor=True)
    return ((queries @ targets.T).argmax(-1) == torch.arange(len(pairs))).float().mean().item()


def test_cached_ranking_loss_equals_full_batch_info_nce_with_hard_negatives(data, tiny_vlm):
    """The recipe's loss (CMNRL, mini-batches of 3 over 8 rows, scale 1/0.02) on the ST training columns
    gives the loss and gradients of InfoNCE written here over one full-batch forward of the model class
    on the sequences `tte_hf.models.tte.inputs` builds. In float64: in float32 the two equivalent computations
    already differ by ~2e-5 (rounding amplified by the scale of 50), with or without mini-batches."""
    torch.manual_seed(0)
    model = embedder_model(tiny_vlm).double()
    spec = DatasetSpec.from_dict({"name": "s", **dataset_entry(data), "hard_negatives": True}, 0)
    pairs = load_pairs(spec)[:8]
    rows = pairs_dataset(pairs, [8], ["s"])[0]["s"]
    features = [model.preprocess(rows[column]) for column in ("anchor", "positive", "negative")]
    args = SimpleNamespace(temperature=0.02, gradcache_chunk_size=3, uses_grad_cache=True, world_size=1)
    loss_fn = contrastive_loss(model, args)
    assert type(loss_fn).__name__ == "CachedMultipleNegativesRankingLoss" and loss_fn.mini_batch_size == 3
    loss = loss_fn(features, None)
    loss.backward()
    params = dict(model.named_parameters())
    got = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    model.zero_grad()

    tte = model[0].model  # the TTEEmbedderModel the ST module runs
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    queries, positives, negatives = (
        tte(**sequences_batch(processor, [getattr(p, side) for p in pairs], pairs[0].task)).embeddings
        for side in ("query", "positive", "negative")
    )
    logits = queries @ torch.cat([positives, negatives]).T / 0.02
    reference = F.cross_entropy(logits, torch.arange(8))
    reference.backward()
    torch.testing.assert_close(loss.detach(), reference.detach(), atol=1e-5, rtol=0)
    expected = {n: p.grad for n, p in params.items() if p.grad is not None}
    assert got.keys() == expected.keys() and len(got) > 20
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_recipe_loss_falls_hit_at_1_rises_and_output_loads_through_st_and_automodel(data, tiny_vlm, tmp_path):
    pairs = load_pairs(DatasetSpec.from_dict({"name": "s", **dataset_entry(data)}, 0))
    before = hit_at_1(build_sentence_transformer(tiny_vlm), pairs)
    trainer = train_embedder(tiny_recipe(data, tiny_vlm, tmp_path))  # the recipe as shipped
    assert isinstance(trainer, SentenceTransformerTrainer)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0] - 0.5
    st = SentenceTransformer(str(tmp_path), trust_remote_code=True)
    after = hit_at_1(st, pairs)
    assert after >= before + 0.25, (before, after)
    assert "sentence-transformers" in (tmp_path / "README.md").read_text()  # ST's own model card

    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, TTEEmbedderModel)
    batch = sequences_batch(AutoProcessor.from_pretrained(tmp_path), [p.query for p in pairs[:4]], pairs[0].task)
    vectors = st.encode_query([side_input(p.query, p.task) for p in pairs[:4]], convert_to_tensor=True)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).embeddings, vectors, atol=1e-5, rtol=0)


def test_lora_is_merged_on_request(data, tiny_vlm, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    recipe = tiny_recipe(data, tiny_vlm, tmp_path, max_steps=2, use_peft=True, lora_r=16, lora_alpha=64)
    train_embedder(recipe | {"lora_dropout": 0.1})
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k and "language_model" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # trained, not the zero init
    processor = AutoProcessor.from_pretrained(tmp_path)
    pairs = load_pairs(DatasetSpec.from_dict({"name": "s", **dataset_entry(data)}, 0))
    batch = sequences_batch(processor, [p.query for p in pairs[:4]], pairs[0].task)
    base = TTEEmbedderModel.from_backbone(tiny_vlm)
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(**batch).embeddings
        merged = TTEEmbedderModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(merged(**batch).embeddings, expected, atol=1e-5, rtol=1e-4)
    assert not any("lora" in k for k in merged.state_dict())


@pytest.mark.slow  # ~1 min: three `accelerate launch` start-ups
def test_two_processes_match_one_process_with_the_same_global_batch(data, tiny_vlm, tmp_path):
    """2 CPU processes (gloo) x 4 rows == 1 process x 8 rows: same loss at every step, so also the
    same gradients (the steps after the first depend on them)."""
    losses = {}
    for procs, per_device in ((1, 8), (2, 4)):
        recipe = tiny_recipe(data, tiny_vlm, tmp_path / f"p{procs}", max_steps=3, learning_rate=3e-4)
        recipe |= {"per_device_train_batch_size": per_device, "gradcache_chunk_size": 2}
        losses[procs] = launch_losses("tte_hf.training.train_embedder", recipe, procs, tmp_path)
    assert len(losses[1]) == 3
    assert losses[1] == pytest.approx(losses[2], abs=1e-4), losses


def test_resuming_mid_epoch_continues_exactly(data, tiny_vlm, tmp_path):
    """Stopped after step 2 of an epoch of 4 batches and resumed: the same losses as a run never stopped
    (the sampler's batches, the skipped batches and the optimiser state all carry over)."""
    settings = {"max_steps": 4, "per_device_train_batch_size": 2, "gradcache_chunk_size": None}
    settings |= {"save_strategy": "steps", "save_steps": 2, "learning_rate": 3e-4}
    straight = train_embedder(tiny_recipe(data, tiny_vlm, tmp_path / "a", **settings))
    train_embedder(tiny_recipe(data, tiny_vlm, tmp_path / "b", **settings | {"max_steps": 2}))
    resumed = train_embedder(
        tiny_recipe(data, tiny_vlm, tmp_path / "b", **settings),
        ["--resume_from_checkpoint", str(tmp_path / "b" / "checkpoint-2")],
    )

    def losses(trainer):
        return [log["loss"] for log in trainer.state.log_history if "loss" in log]

    assert len(losses(straight)) == 4 and len(set(losses(straight))) == 4
    assert losses(resumed) == pytest.approx(losses(straight), abs=1e-5)


# --- GradCache under DeepSpeed (issue 13) -------------------------------------------------------


def test_cached_ranking_loss_accumulates_each_gradient_once_per_mini_batch(data, tiny_vlm):
    """Why GradCache stays refused under DeepSpeed with ST's loss: one backward of the cached loss
    accumulates a parameter's gradient once per mini-batch, and ZeRO-2 reduces a gradient in such a
    hook and asserts on a second one ("Gradient computed twice for this partition")."""
    model = embedder_model(tiny_vlm)
    rows = pairs_dataset(load_pairs(DatasetSpec.from_dict({"name": "s", **dataset_entry(data)}, 0))[:4], [4], ["s"])
    features = [model.preprocess(rows[0]["s"][column]) for column in ("anchor", "positive")]
    weight = model[0].model.backbone.language_model.norm.weight
    calls = []
    weight.register_post_accumulate_grad_hook(lambda param: calls.append(1))
    args = SimpleNamespace(temperature=0.02, gradcache_chunk_size=2, uses_grad_cache=True, world_size=1)
    contrastive_loss(model, args)(features, None).backward()
    assert len(calls) == 4  # 2 columns x 2 mini-batches, in one backward call


@pytest.mark.parametrize(
    ("deepspeed", "chunk", "refused"),
    [("DEEPSPEED", 2, True), ("MULTI_GPU", 2, False), ("DEEPSPEED", None, False), ("DEEPSPEED", 8, False)],
)
def test_gradcache_under_deepspeed_is_refused_naming_the_keys(deepspeed, chunk, refused):
    from accelerate.utils import DistributedType

    from tte_hf.training.contrastive_args import check_grad_cache_backend

    for flag in (deepspeed, DistributedType(deepspeed)):
        if refused:
            with pytest.raises(ValueError, match=r"gradcache_chunk_size: null.*distributed_type: MULTI_GPU"):
                check_grad_cache_backend(flag, chunk, 8)
        else:
            check_grad_cache_backend(flag, chunk, 8)


def test_embedder_recipe_refuses_gradcache_under_deepspeed_before_loading(data, tmp_path, monkeypatch):
    """`accelerate launch` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED; a recipe may set
    `deepspeed:` itself. Either way the run stops at argument parsing, before any model loads."""
    recipe = tiny_recipe(data, "/no/model/is/loaded", tmp_path, per_device_train_batch_size=8, gradcache_chunk_size=2)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match=r"cannot run under DeepSpeed.*gradcache_chunk_size: null"):
        train_embedder(recipe)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with pytest.raises(ValueError, match=r"cannot run under DeepSpeed"):
        train_embedder({**recipe, "deepspeed": {"zero_optimization": {"stage": 1}}})

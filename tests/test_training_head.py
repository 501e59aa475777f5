"""Unified head training: frozen backbone stays bit-identical, loss falls, the cache is exact, reload."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file
from training_launch import launch_losses
from transformers import AutoModel, AutoProcessor, TrainerCallback

import tte_hf  # noqa: F401  (registers the TTE classes with AutoModel)
from tte_hf import TTEUnifiedModel
from tte_hf.testing import build_tiny_vlm
from tte_hf.training import train_head
from tte_hf.training.data import DatasetSpec, load_pairs
from tte_hf.training.head_module import HeadTrainingModule
from tte_hf.training.hidden_cache import HiddenStateCache, backbone_fingerprint, cache_fingerprint
from tte_hf.training.pair_dataset import side_input
from tte_hf.training.sampler import WeightedGlobalBatches
from tte_hf.training.synthetic import write_synthetic_retrieval

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_retrieval(tmp_path_factory.mktemp("head_data"), num_items=8)


def recipe(data, tiny_vlm, tmp_path, **overrides):
    cfg = yaml.safe_load((ROOT / "recipes" / "unified" / "tiny.yaml").read_text())
    cfg["reasoner_name_or_path"] = tiny_vlm
    cfg["datasets"][0] |= {
        "path": str(data["data"]),
        "image_root": str(data["image_root"]),
        "query_ecr": str(data["query_ecr"]),
    }
    cfg |= {"output_dir": str(tmp_path / "out"), "hidden_cache_dir": str(tmp_path / "cache")}
    return cfg | overrides


def query_cells(pairs):
    return [side_input(pair.query, pair.task, token_ids=True) for pair in pairs]


def model_inputs(features):
    """The processor's outputs among a `HeadTrainingModule.preprocess` result (what the model reads)."""
    return {k: v for k, v in features.items() if k not in ("cache_keys", "num_images_per_sample")}


def embed(module, features):
    return module(dict(features))["sentence_embedding"]


@pytest.mark.parametrize("head_type", ["mhsa", "qformer"])
def test_head_trains_backbone_stays_bit_identical_and_reloads(head_type, data, tiny_vlm, tmp_path):
    trainer = train_head(recipe(data, tiny_vlm, tmp_path, head_type=head_type, max_steps=10))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0] - 0.3, losses
    model = trainer.model[0].unified.eval()
    original = load_file(Path(tiny_vlm) / "model.safetensors")
    fresh = TTEUnifiedModel.from_backbone(tiny_vlm, head_type=head_type, head_kwargs={"head_num_layers": 1})
    backbone_now, backbone_then = model.backbone.state_dict(), fresh.backbone.state_dict()
    assert backbone_now.keys() == backbone_then.keys() and len(original) == len(backbone_now)
    assert all(torch.equal(backbone_now[k], backbone_then[k]) for k in backbone_now)
    assert any(
        not torch.equal(a, b) for a, b in zip(model.head.state_dict().values(), fresh.head.state_dict().values())
    )

    out = tmp_path / "out"
    assert (out / "head.safetensors").is_file() and not (out / "model.safetensors").exists()
    reloaded = AutoModel.from_pretrained(out)
    assert isinstance(reloaded, TTEUnifiedModel)
    processor = AutoProcessor.from_pretrained(out)
    pairs = load_pairs(DatasetSpec.from_dict({"name": "s", **recipe(data, tiny_vlm, tmp_path)["datasets"][0]}, 0))
    batch = model_inputs(HeadTrainingModule(model, processor).preprocess(query_cells(pairs[:4])))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).embeddings, model(**batch).embeddings)


def test_cached_hidden_states_give_the_same_embeddings(data, tiny_vlm, tmp_path):
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).eval()
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    pairs = load_pairs(DatasetSpec.from_dict({"name": "s", **recipe(data, tiny_vlm, tmp_path)["datasets"][0]}, 0))
    cache = HiddenStateCache(tmp_path / "cache", cache_fingerprint(model, processor, tiny_vlm))
    features = HeadTrainingModule(model, processor, cache).preprocess(query_cells(pairs[:4]))
    with torch.no_grad():
        direct = model(**model_inputs(features)).embeddings
        first = embed(HeadTrainingModule(model, processor, cache), features)
    assert (cache.hits, cache.misses) == (0, 4)
    # a later epoch: read back, with autograd for the head
    second = embed(HeadTrainingModule(model, processor, cache), features)
    assert (cache.hits, cache.misses) == (4, 4)
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    assert second.requires_grad


def test_cached_epochs_skip_preprocessing_and_train_exactly_like_no_cache(data, tiny_vlm, tmp_path, monkeypatch):
    """Once an epoch has filled the cache, later batches carry keys alone (no image decoding, no
    tokenization) and the head trains to the same losses as without any cache."""
    import tte_hf.training.head_module as head_module

    loads = []
    real_load_image = head_module.load_image
    monkeypatch.setattr(head_module, "load_image", lambda path: loads.append(path) or real_load_image(path))
    settings = {"max_steps": -1, "num_train_epochs": 3, "logging_steps": 1}
    cached = train_head(recipe(data, tiny_vlm, tmp_path / "a", **settings))
    first_epoch = len(loads)  # with the cache, epochs 2 and 3 decode no image
    no_cache = train_head(recipe(data, tiny_vlm, tmp_path / "b", **settings | {"hidden_cache_dir": None}))
    assert first_epoch > 0 and len(loads) - first_epoch == 3 * first_epoch  # without, every epoch decodes all

    def losses(trainer):
        return [log["loss"] for log in trainer.state.log_history if "loss" in log]

    assert len(losses(cached)) == 3 and losses(cached) == pytest.approx(losses(no_cache), abs=1e-5)

    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1})
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    cache = HiddenStateCache(tmp_path / "a" / "cache", cache_fingerprint(model, processor, tiny_vlm))
    assert [p.name for p in (tmp_path / "a" / "cache").iterdir()] == [cache.directory.name]  # the run's folder
    spec = DatasetSpec.from_dict({"name": "s", **recipe(data, tiny_vlm, tmp_path)["datasets"][0]}, 0)
    pairs = load_pairs(spec, traces="raw")  # as train_head reads them
    module = HeadTrainingModule(model, processor, cache)
    features = module.preprocess(query_cells(pairs[:2]), prompt=pairs[0].instruction)
    assert set(features) == {"cache_keys"}
    for entry in cache.directory.rglob("*.safetensors"):
        entry.unlink()
    with pytest.raises(RuntimeError, match="lost entry .* during training"):
        embed(module, features)


def _losses(trainer):
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def _edit_processor(tiny_vlm, out):
    """A copy of the backbone folder whose image processor upscales small images (more image tokens)."""
    shutil.copytree(tiny_vlm, out)
    config = json.loads((out / "processor_config.json").read_text())
    config["image_processor"]["size"]["shortest_edge"] = 28 * 28 * 8
    (out / "processor_config.json").write_text(json.dumps(config))
    return str(out)


@pytest.mark.parametrize("change", ["backbone", "dtype", "processor", "image edited in place"])
def test_a_shared_hidden_cache_never_serves_stale_states(change, tiny_vlm, tmp_path):
    """A run that shares ``hidden_cache_dir`` with an earlier one but differs in backbone weights, dtype,
    image processor or the content of an image (same path) trains exactly like a run without cache."""
    data = write_synthetic_retrieval(tmp_path / "data", num_items=8)
    settings = {"max_steps": 2, "hidden_cache_dir": str(tmp_path / "shared_cache")}
    train_head(recipe(data, tiny_vlm, tmp_path / "first", **settings))
    second = {}
    if change == "backbone":
        second["reasoner_name_or_path"] = str(build_tiny_vlm(tmp_path / "other_backbone", seed=1))
    elif change == "dtype":
        second["dtype"] = "bfloat16"
    elif change == "processor":
        second["reasoner_name_or_path"] = _edit_processor(tiny_vlm, tmp_path / "other_processor")
    else:
        for image_path in Path(data["image_root"]).glob("images/*.png"):
            with Image.open(image_path) as image:
                ImageOps.invert(image.convert("RGB")).save(image_path)
    cached = train_head(recipe(data, tiny_vlm, tmp_path / "second", **settings | second))
    uncached = train_head(
        recipe(data, tiny_vlm, tmp_path / "reference", **settings | second | {"hidden_cache_dir": None})
    )
    assert len(_losses(uncached)) == 2 and _losses(cached) == pytest.approx(_losses(uncached), abs=1e-5)


def test_backbone_fingerprint_is_the_hub_commit_or_the_folders_bytes(tiny_vlm, tmp_path, monkeypatch):
    from hub_helpers import populate_hf_cache
    from huggingface_hub import constants

    commit = populate_hf_cache(tiny_vlm, "tte-test/reasoner", tmp_path / "hub")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert backbone_fingerprint("tte-test/reasoner") == {"repo_id": "tte-test/reasoner", "commit": commit}
    copy = Path(shutil.copytree(tiny_vlm, tmp_path / "copy"))
    assert backbone_fingerprint(copy) == backbone_fingerprint(tiny_vlm)  # content, not path
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert backbone_fingerprint(copy) != backbone_fingerprint(tiny_vlm)


def test_gradcache_second_pass_reuses_the_backbone_output(data, tiny_vlm, tmp_path):
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="attention_pooler", head_kwargs={"head_num_heads": 4})
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    pairs = load_pairs(DatasetSpec.from_dict({"name": "s", **recipe(data, tiny_vlm, tmp_path)["datasets"][0]}, 0))
    module = HeadTrainingModule(model, processor)
    features = module.preprocess(query_cells(pairs[:4]))
    calls = []
    handle = model.backbone.model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        first = embed(module, features)
    second = embed(module, features)
    handle.remove()
    assert len(calls) == 1 and not module._pending
    torch.testing.assert_close(second, first)


@pytest.mark.slow  # ~30 s: two `accelerate launch` start-ups
def test_two_processes_train_the_head_like_one(data, tiny_vlm, tmp_path):
    """The head's gradients are all-reduced (DDP sees its forward): 2 processes x 4 rows give the
    losses of 1 process x 8 rows at every step."""
    losses = {}
    for procs, per_device in ((1, 8), (2, 4)):
        cfg = recipe(data, tiny_vlm, tmp_path, max_steps=3, per_device_train_batch_size=per_device)
        cfg |= {"output_dir": str(tmp_path / f"p{procs}"), "hidden_cache_dir": None, "gradcache_chunk_size": 2}
        losses[procs] = launch_losses("tte_hf.training.train_head", cfg, procs, tmp_path, port=29623)
    assert len(losses[1]) == 3 and len(set(losses[1])) == 3
    assert losses[1] == pytest.approx(losses[2], abs=1e-4), losses


def test_head_checkpoints_hold_the_head_and_resume(data, tiny_vlm, tmp_path):
    settings = {"max_steps": 4, "per_device_train_batch_size": 2, "save_strategy": "steps", "save_steps": 2}
    straight = train_head(recipe(data, tiny_vlm, tmp_path / "a", **settings))
    train_head(recipe(data, tiny_vlm, tmp_path / "b", **settings | {"max_steps": 2}))
    checkpoint = tmp_path / "b" / "out" / "checkpoint-2"
    assert (checkpoint / "head.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    resumed = train_head(
        recipe(data, tiny_vlm, tmp_path / "b", **settings), ["--resume_from_checkpoint", str(checkpoint)]
    )

    def losses(trainer):
        return [log["loss"] for log in trainer.state.log_history if "loss" in log]

    assert len(losses(straight)) == 4 and losses(resumed) == pytest.approx(losses(straight), abs=1e-5)


def test_head_trains_on_exactly_the_tokens_generate_and_embed_embeds(data, tiny_vlm, tmp_path, monkeypatch):
    """Traces written by the reasoner itself (generate-ecr, transformers backend): the ids `train_head`
    feeds the backbone equal the ids `generate_and_embed` pools at query time for the same inputs."""
    import json

    from unified_capture import generated_sequences, sorted_like

    from tte_hf.models.tte.reasoner_transformers import TransformersReasoner
    from tte_hf.reasoning import generate_ecr
    from tte_hf.sentence_transformers import build_sentence_transformer

    cap, task, instruction = 10, "classification", "Name the shape."
    rows = [json.loads(line) for line in Path(data["data"]).read_text().splitlines()][:4]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    ecr = tmp_path / "ecr.jsonl"
    reasoner = TransformersReasoner(tiny_vlm, max_new_tokens=cap, batch_size=4)
    generate_ecr(
        {"input": str(source), "image_root": str(data["image_root"]), "task": task, "output": str(ecr)},
        reasoner=reasoner,
    )
    records = [json.loads(line) for line in ecr.read_text().splitlines()]
    assert all(len(r["raw_token_ids"]) for r in records)
    # Why the ids are carried: the decoded text does not give the generated tokens back.
    retokenized = [reasoner.processor.tokenizer(r["raw"], add_special_tokens=False).input_ids for r in records]
    assert any(ids != r["raw_token_ids"] for ids, r in zip(retokenized, records))

    columns = []  # (cells, features) per preprocessed column; the first is the first batch's queries
    real_preprocess = HeadTrainingModule.preprocess
    monkeypatch.setattr(
        HeadTrainingModule,
        "preprocess",
        lambda self, cells, **kwargs: columns.append((cells, real_preprocess(self, cells, **kwargs))) or columns[-1][1],
    )
    dataset = {
        "name": "s",
        "path": str(source),
        "image_root": str(data["image_root"]),
        "task": task,
        "instruction": instruction,
        "query_ecr": str(ecr),
    }
    cfg = recipe(data, tiny_vlm, tmp_path, datasets=[dataset], max_steps=1, per_device_train_batch_size=4)
    trainer = train_head(cfg | {"hidden_cache_dir": None})
    monkeypatch.undo()
    cells, out = columns[0]
    mask = out["attention_mask"].bool()
    by_image = {
        Path(cell["images"][0]).resolve(): out["input_ids"][i][mask[i]].tolist() for i, cell in enumerate(cells)
    }
    trained = [by_image[(data["image_root"] / row["qry_image_path"]).resolve()] for row in rows]

    unified_dir = tmp_path / "unified"
    trainer.model[0].unified.save_pretrained(unified_dir)
    reasoner.processor.save_pretrained(unified_dir)
    st = build_sentence_transformer(
        str(unified_dir), reasoning_task=task, max_new_tokens=cap, prompts={"query": instruction}
    )
    inputs = [
        {
            "text": "Find the color and shape of the object in this image",
            "image": data["image_root"] / row["qry_image_path"],
        }
        for row in rows
    ]
    embedded = generated_sequences(st, inputs, monkeypatch)
    assert sorted_like(embedded, trained) == trained


# --- sentence-transformers' trainer against a plain reference ---------------------------------------


class CacheCounts(TrainerCallback):
    """(hits, misses) of the run's hidden-state cache at the end of every epoch."""

    def __init__(self):
        self.per_epoch = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        cache = model[0].cache
        self.per_epoch.append((cache.hits, cache.misses))


@pytest.fixture(scope="module", params=[None, 3], ids=["one-pass", "gradcache-3"])
def st_run(request, tiny_vlm, tmp_path_factory):
    """Six steps of the tiny recipe (24 pairs, batch 8: three steps an epoch, so two epochs) through
    `train_head`, with the hidden-state cache; ``param``: GradCache mini-batch size."""
    tmp = tmp_path_factory.mktemp("st_run")
    data = write_synthetic_retrieval(tmp / "data", num_items=24)
    counts = CacheCounts()
    cfg = recipe(data, tiny_vlm, tmp, max_steps=6, gradcache_chunk_size=request.param)
    trainer = train_head(cfg, progress=counts)
    return {"data": data, "cfg": cfg, "trainer": trainer, "counts": counts}


def plain_info_nce_losses(cfg: dict, steps: int) -> list[float]:
    """The frozen reference of the head's training: the same batches in the same order (the weighted
    sampler's plan, epoch by epoch), a full backbone pass per step (no cache, no GradCache), InfoNCE of
    queries against positives + hard negatives, clipping at 1.0 and AdamW, as the Trainer's defaults."""
    spec = DatasetSpec.from_dict({"name": "s", **cfg["datasets"][0]}, 0)
    pairs = load_pairs(spec, traces="raw")
    model = TTEUnifiedModel.from_backbone(
        cfg["reasoner_name_or_path"], head_type="mhsa", head_kwargs={"head_num_layers": 1}
    )
    model.head.float()
    model.train()
    inputs = HeadTrainingModule(model, AutoProcessor.from_pretrained(cfg["reasoner_name_or_path"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=0.0)
    plan = WeightedGlobalBatches([len(pairs)], cfg["per_device_train_batch_size"], seed=cfg["seed"])
    losses, epoch = [], 0
    while len(losses) < steps:
        for rows in plan.batches(epoch)[: steps - len(losses)]:
            batch = [pairs[i] for i in rows]
            sides = [[getattr(pair, side) for pair in batch] for side in ("query", "positive", "negative")]
            queries, *targets = [
                model(
                    **model_inputs(inputs.preprocess([side_input(s, pair.task, True) for s, pair in zip(side, batch)]))
                ).embeddings
                for side in sides
            ]
            scores = F.normalize(queries, dim=-1) @ F.normalize(torch.cat(targets), dim=-1).T
            loss = F.cross_entropy(scores / cfg["temperature"], torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
        epoch += 1
    return losses


def test_st_trainer_losses_equal_a_plain_info_nce_reference_step_by_step(st_run):
    """sentence-transformers' trainer + (Cached)MultipleNegativesRankingLoss + the hidden-state cache
    give, at each of six steps (two epochs), the loss of a plain InfoNCE training loop."""
    losses = _losses(st_run["trainer"])
    assert len(losses) == 6 and len(set(losses)) == 6
    assert losses == pytest.approx(plain_info_nce_losses(st_run["cfg"], 6), abs=1e-5)


def test_hidden_cache_is_hit_on_epoch_2(st_run):
    """Epoch 1 fills the cache; in epoch 2 every input (3 columns x 24 rows) is read back, none computed."""
    (hits_1, misses_1), (hits_2, misses_2) = st_run["counts"].per_epoch
    assert misses_1 > 0
    assert (hits_2 - hits_1, misses_2 - misses_1) == (3 * 24, 0)


def test_a_fully_cached_column_is_a_feature_for_the_head_trainer_not_for_st():
    """Why `HeadTrainer.collect_features` exists: ST finds a column by its ``input_ids``/``pixel_values``,
    and a column whose rows are all cached carries its keys alone, so ST's own would drop it (and the
    loss would rank the positives against the negatives as queries)."""
    from sentence_transformers import SentenceTransformerTrainer

    from tte_hf.training.train_head import HeadTrainer

    keys = torch.zeros(2, 32, dtype=torch.uint8)
    batch = {"anchor_cache_keys": keys, "positive_cache_keys": keys + 1, "positive_input_ids": torch.ones(2, 5)}
    batch |= {"positive_attention_mask": torch.ones(2, 5), "negative_cache_keys": keys + 2}
    st_features, _ = SentenceTransformerTrainer.collect_features(None, batch)
    assert [set(f) for f in st_features] == [{"cache_keys", "input_ids", "attention_mask"}]
    features, labels = HeadTrainer.collect_features(None, batch)
    assert labels is None and [f["cache_keys"][0, 0].item() for f in features] == [0, 1, 2]
    assert [set(f) for f in features] == [{"cache_keys"}, {"cache_keys", "input_ids", "attention_mask"}, {"cache_keys"}]


def _held_out(data, name="held-out"):
    return [
        {
            "name": name,
            "path": str(data["data"]),
            "image_root": str(data["image_root"]),
            "query_ecr": str(data["query_ecr"]),
            "task": "classification",
        }
    ]


def test_the_saved_head_is_the_epoch_with_the_lowest_held_out_loss(data, tiny_vlm, tmp_path):
    """``eval_datasets`` + ``load_best_model_at_end``: each evaluation scores the held-out rows, and the head
    written to ``output_dir`` is the best-scoring checkpoint's, not the last step's."""
    settings = {"max_steps": 6, "per_device_train_batch_size": 2, "learning_rate": 5e-2, "eval_strategy": "steps",
                "eval_steps": 2, "save_strategy": "steps", "save_steps": 2, "load_best_model_at_end": True}  # fmt: skip
    trainer = train_head(recipe(data, tiny_vlm, tmp_path, eval_datasets=_held_out(data), **settings))
    scores = {
        log["step"]: log["eval_held-out_loss"] for log in trainer.state.log_history if "eval_held-out_loss" in log
    }
    assert sorted(scores) == [2, 4, 6]
    assert not trainer.model[0]._pending  # evaluation keeps no rows for a GradCache pass that never comes
    best = min(scores, key=scores.get)
    assert trainer.state.best_model_checkpoint == str(tmp_path / "out" / f"checkpoint-{best}")
    saved = load_file(tmp_path / "out" / "head.safetensors")
    chosen = load_file(tmp_path / "out" / f"checkpoint-{best}" / "head.safetensors")
    assert saved.keys() == chosen.keys() and all(torch.equal(saved[k], chosen[k]) for k in saved)
    if best != 6:  # the last step's head differs from the one kept
        last = load_file(tmp_path / "out" / "checkpoint-6" / "head.safetensors")
        assert any(not torch.equal(saved[k], last[k]) for k in saved)


def test_held_out_datasets_are_refused_when_their_score_is_ambiguous(data, tiny_vlm, tmp_path):
    settings = {"max_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps",
                "save_steps": 2, "load_best_model_at_end": True}  # fmt: skip
    with pytest.raises(ValueError, match=r"share the name\(s\) \['shapes'\]"):
        train_head(recipe(data, tiny_vlm, tmp_path / "a", eval_datasets=_held_out(data, "shapes"), **settings))
    two = _held_out(data, "one") + _held_out(data, "two")
    with pytest.raises(ValueError, match="metric_for_best_model: one_loss"):
        train_head(recipe(data, tiny_vlm, tmp_path / "b", eval_datasets=two, **settings))


def test_a_best_checkpoint_that_cannot_load_is_an_error_not_the_last_weights(data, tiny_vlm, tmp_path, monkeypatch):
    from tte_hf.training.train_head import HeadTrainer

    # checkpoints without the head's weights
    monkeypatch.setattr(HeadTrainer, "_save", lambda self, output_dir=None, state_dict=None: Path(output_dir).mkdir())
    settings = {"max_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps",
                "save_steps": 2, "load_best_model_at_end": True}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not a head checkpoint"):
        train_head(recipe(data, tiny_vlm, tmp_path, eval_datasets=_held_out(data), **settings))

"""Training data: ECR join, validation errors before any step, and the one-dataset-per-batch sampler."""

import json
from collections import Counter

import pytest
from PIL import Image

from tte_hf.training.config import parse_recipe
from tte_hf.training.data import DatasetSpec, load_pairs
from tte_hf.training.sampler import WeightedDatasetBatchSampler, WeightedGlobalBatches
from tte_hf.training.sft_data import sft_rows
from tte_hf.training.synthetic import write_synthetic_retrieval


@pytest.fixture
def data(tmp_path):
    return write_synthetic_retrieval(tmp_path / "data", num_items=8)


def spec(data, **kw):
    raw = {"name": "shapes", "path": str(data["data"]), "image_root": str(data["image_root"])}
    raw |= {"query_ecr": str(data["query_ecr"]), "target_ecr": str(data["target_ecr"]), "hard_negatives": True}
    return DatasetSpec.from_dict(raw | kw, 0)


def test_pairs_join_each_side_with_its_own_trace(data):
    pairs = load_pairs(spec(data))
    rows = [json.loads(line) for line in data["data"].read_text().splitlines()]
    q = {json.loads(line)["id"]: json.loads(line)["ecr"] for line in data["query_ecr"].read_text().splitlines()}
    t = {json.loads(line)["id"]: json.loads(line)["ecr"] for line in data["target_ecr"].read_text().splitlines()}
    assert [p.item_id for p in pairs] == [r["id"] for r in rows]
    for pair, row in zip(pairs, rows):
        assert pair.query.trace == q[row["id"]]
        assert pair.positive.trace == t[row["id"]] and pair.negative.trace == t[row["id"] + ":neg"]
        assert pair.query.text == "Find the color and shape of the object in this image"  # <|image_1|> tag gone
        assert pair.query.images == (str(data["image_root"] / row["qry_image_path"]),)
        assert pair.positive.text == row["pos_text"] and pair.positive.images == ()


def test_rows_without_id_use_the_ids_generate_ecr_writes(tmp_path):
    """Rows without `id` are matched by generate-ecr's content id of each side (or, before the
    reasoning package is installed, by a positional id)."""
    path = tmp_path / "d.jsonl"
    rows = [{"qry": "<|image_1|>\nfind a", "qry_image_path": "i.png", "pos_text": "b"}, {"qry": "c", "pos_text": "d"}]
    path.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    try:
        from tte_hf.reasoning.sources import stable_id

        q_ids = [
            stable_id("query", "vqa", "find a", None, ["i.png"], None),
            stable_id("query", "vqa", "c", None, [], None),
        ]
        t_ids = [stable_id("target", "vqa", "b", None, [], None), stable_id("target", "vqa", "d", None, [], None)]
    except ImportError:
        q_ids, t_ids = ["ds-query-0", "ds-query-1"], ["ds-target-0", "ds-target-1"]
    q, t = tmp_path / "q.jsonl", tmp_path / "t.jsonl"
    q.write_text("".join(json.dumps({"id": i, "ecr": f"trace {n}"}) + "\n" for n, i in enumerate(q_ids)))
    t.write_text("".join(json.dumps({"id": i, "ecr": f"target {n}"}) + "\n" for n, i in enumerate(t_ids)))
    raw = {"name": "ds", "task": "vqa", "path": str(path), "image_root": str(tmp_path)}
    pairs = load_pairs(DatasetSpec.from_dict(raw | {"query_ecr": str(q), "target_ecr": str(t)}, 0))
    assert [(p.query.trace, p.positive.trace) for p in pairs] == [("trace 0", "target 0"), ("trace 1", "target 1")]


def test_trace_file_from_other_data_names_line_and_id(data, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "someone-else", "ecr": "<think> t </think> f"}\n')
    with pytest.raises(KeyError, match=r"train.jsonl:1: no ECR trace with id 'shape-0'"):
        load_pairs(spec(data, query_ecr=str(other)))
    with pytest.raises(KeyError, match="train.jsonl:1: no ECR trace with id 'shape-0'"):
        sft_rows(spec(data, query_ecr=str(other)))


def test_skip_missing_traces_drops_only_those_rows(data, tmp_path, caplog):
    lines = data["query_ecr"].read_text().splitlines()
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # shape-3's trace is missing
    with pytest.raises(KeyError, match="shape-3"):
        load_pairs(spec(data, query_ecr=str(partial)))
    pairs = load_pairs(spec(data, query_ecr=str(partial), skip_missing_traces=True))
    assert [p.item_id for p in pairs] == [f"shape-{i}" for i in range(8) if i != 3]
    assert "skipped 1 of 8 rows" in caplog.text
    assert [r["id"] for r in sft_rows(spec(data, query_ecr=str(partial), skip_missing_traces=True))] == [
        p.item_id for p in pairs
    ]
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "ecr": "y", "raw": "y"}\n')  # a generate-ecr row, of other data
    with pytest.raises(KeyError, match="none of its 8 rows has a trace"):
        load_pairs(spec(data, query_ecr=str(other), skip_missing_traces=True))


def test_missing_image_names_line_and_field(data):
    (data["image_root"] / "images" / "shape-3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train.jsonl:4 field `qry_image_path`: image .*shape-3.png"):
        load_pairs(spec(data))


def test_empty_dataset_and_empty_row_are_errors(tmp_path, data):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="has no rows"):
        load_pairs(DatasetSpec.from_dict({"name": "e", "path": str(empty)}, 0))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"qry": "q", "pos_text": ""}\n')
    with pytest.raises(ValueError, match=r"blank.jsonl:1: both `pos_text` and `pos_image_path` are empty"):
        load_pairs(DatasetSpec.from_dict({"name": "b", "path": str(blank), "task": "vqa"}, 0))


def test_unknown_keys_are_refused(tmp_path):
    from trl import ModelConfig

    from tte_hf.training.train_embedder import EmbedderArguments

    with pytest.raises(ValueError, match="learning_rat"):
        parse_recipe((ModelConfig, EmbedderArguments), {"learning_rat": 1e-4})
    with pytest.raises(ValueError, match=r"datasets\[0\] has unknown key\(s\) \['imag_root'\]"):
        DatasetSpec.from_dict({"name": "a", "path": "p", "imag_root": "x"}, 0)


@pytest.mark.parametrize("entry", ["train_embedder", "train_head", "train_reasoner"])
def test_bad_input_fails_before_any_model_is_loaded(entry, data, tmp_path):
    import tte_hf.training as training

    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "ecr": "y", "raw": "y"}\n')  # a generate-ecr row, of other data
    dataset = {"name": "s", "path": str(data["data"]), "image_root": str(data["image_root"]), "query_ecr": str(other)}
    model_key = "reasoner_name_or_path" if entry == "train_head" else "model_name_or_path"
    config = {model_key: str(tmp_path / "no-such-model"), "datasets": [dataset], "output_dir": str(tmp_path / "o")}
    config |= {"use_cpu": True, "bf16": False, "report_to": "none"}
    with pytest.raises(KeyError, match="no ECR trace"):  # not an error about the missing model
        getattr(training, entry)(config)


def _st_sampler(sizes, batch, weights, world, seed):
    """The weighted sampler as sentence-transformers' trainer builds it (one child sampler per dataset)."""
    from functools import partial

    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import ConcatDataset, SequentialSampler

    parts = [list(range(n)) for n in sizes]
    children = [DefaultBatchSampler(SequentialSampler(p), batch_size=batch, drop_last=True) for p in parts]
    make = partial(WeightedDatasetBatchSampler, weights=weights, world_size=world)
    return make(ConcatDataset(parts), batch_samplers=children, generator=None, seed=seed)


def test_st_sampler_one_dataset_per_step_on_every_rank_with_the_configured_weights():
    """Sharded as accelerate shards a batch sampler (batch i to rank i % world), every step's ranks read
    disjoint rows of one dataset; per epoch each dataset gives round(weight x full global batches) steps."""
    from accelerate.data_loader import BatchSamplerShard

    sizes, batch, world, weights = [20, 12, 40], 2, 2, [1.0, 2.0, 0.5]
    bounds = [0, 20, 32, 72]
    sampler = _st_sampler(sizes, batch, weights, world, seed=3)
    ranks = [list(BatchSamplerShard(sampler, world, r, split_batches=False, even_batches=False)) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == len(sampler) // world == 16
    owner = Counter()
    for step in zip(*ranks):
        rows = [i for part in step for i in part]
        assert all(len(part) == batch for part in step) and len(set(rows)) == len(rows)
        datasets = {next(d for d in range(3) if bounds[d] <= i < bounds[d + 1]) for i in rows}
        assert len(datasets) == 1, step
        owner[datasets.pop()] += 1
    assert owner == {0: 5, 1: 6, 2: 5}  # 1*(20//4), 2*(12//4), 0.5*(40//4)


def test_st_sampler_is_deterministic_by_seed_and_interleaves_by_weight():
    """Same seed and epoch: the same batches; another seed or epoch: another order. Over many epochs, a
    dataset's share of the first half of an epoch is its weighted share (the draw is not blockwise)."""
    sizes, batch, weights = [40, 40], 4, [3.0, 1.0]  # 30 and 10 steps an epoch: shares 0.75 / 0.25
    first = list(_st_sampler(sizes, batch, weights, 1, seed=7))
    assert first == list(_st_sampler(sizes, batch, weights, 1, seed=7))
    assert first != list(_st_sampler(sizes, batch, weights, 1, seed=8))
    sampler = _st_sampler(sizes, batch, weights, 1, seed=7)
    shares = []
    for epoch in range(100):
        sampler.set_epoch(epoch)
        steps = list(sampler)
        assert len(steps) == 40 and (epoch > 0 or steps == first)
        shares.append(sum(b[0] < 40 for b in steps[:20]) / 20)
    assert sum(shares) / len(shares) == pytest.approx(0.75, abs=0.03)


def test_sampler_refuses_datasets_smaller_than_a_global_batch():
    with pytest.raises(ValueError, match="'tiny' has 3 items, fewer than one global batch"):
        WeightedGlobalBatches([3], 2, world_size=2, names=["tiny"])


def test_shipped_recipes_parse_and_carry_the_paper_settings():
    """Every key of the real recipes is known (parsed on CPU: bf16 off), and the key numbers hold."""
    from pathlib import Path

    from trl import ModelConfig, ScriptArguments, SFTConfig

    from tte_hf.training.contrastive_trainer import ContrastiveTrainingArguments
    from tte_hf.training.train_embedder import EmbedderArguments
    from tte_hf.training.train_head import HeadArguments
    from tte_hf.training.train_reasoner import ReasonerArguments

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    cpu = ["--bf16", "false", "--use_cpu", "true"]
    for name in ("qwen2vl_2b", "qwen2vl_7b"):
        _, sft, model, reasoner = parse_recipe(
            (ScriptArguments, SFTConfig, ModelConfig, ReasonerArguments), recipes / "reasoner" / f"{name}.yaml", cpu
        )
        assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps * 8 == 128
        assert (sft.learning_rate, sft.num_train_epochs, sft.assistant_only_loss) == (2e-5, 1, True)
        assert reasoner.freeze_vision_tower and len(reasoner.datasets) == 20
    model, embedder, args = parse_recipe(
        (ModelConfig, EmbedderArguments, ContrastiveTrainingArguments), recipes / "embedder" / "qwen2vl_2b.yaml", cpu
    )
    assert (model.lora_r, model.lora_alpha, model.lora_dropout, args.temperature) == (16, 64, 0.1, 0.02)
    assert (args.gradcache_chunk_size, args.learning_rate, args.max_steps, args.warmup_steps) == (8, 5e-5, 5000, 100)
    head, _ = parse_recipe((HeadArguments, ContrastiveTrainingArguments), recipes / "unified" / "qwen2vl_2b.yaml", cpu)
    assert (head.head_type, head.head_num_layers) == ("mhsa", 8)


def test_grpo_recipes_parse_with_the_settings_they_cite():
    """The real GRPO recipes' keys are all known (CPU parse), and DAPO-style settings hold for both backbones."""
    from pathlib import Path

    from trl import GRPOConfig, ModelConfig, ScriptArguments

    from tte_hf.training.train_reasoner_rl import RLArguments

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "reasoner"
    cpu = ["--bf16", "false", "--use_cpu", "true", "--use_vllm", "false"]
    for name in ("qwen2vl_2b_grpo", "qwen3vl_2b_grpo"):
        _, grpo, _, rl = parse_recipe(
            (ScriptArguments, GRPOConfig, ModelConfig, RLArguments), recipes / f"{name}.yaml", cpu
        )
        assert (grpo.loss_type, grpo.beta, grpo.epsilon, grpo.epsilon_high) == ("dapo", 0.0, 0.2, 0.28)
        assert (grpo.num_generations, grpo.learning_rate, grpo.max_completion_length) == (8, 1e-6, 512)
        assert rl.rewards == ["retrieval", "ecr_format"] and len(grpo.reward_weights) == 2
        assert rl.freeze_vision_tower and rl.embedder_name_or_path


def test_held_out_rows_are_the_ones_training_sets_aside(tmp_path):
    """`held_out_fraction` splits a file by a hash of each row's id: training reads one side, a recipe
    with ``held_out: true`` exactly the other, whatever else the two specs say."""
    data = write_synthetic_retrieval(tmp_path / "data", num_items=64)
    every = [p.item_id for p in load_pairs(spec(data))]
    trained = [p.item_id for p in load_pairs(spec(data, held_out_fraction=0.3))]
    held = [p.item_id for p in load_pairs(spec(data, held_out_fraction=0.3, held_out=True, hard_negatives=False))]
    assert sorted(trained + held) == sorted(every) and not set(trained) & set(held)
    assert 5 < len(held) < 35
    assert [p.item_id for p in load_pairs(spec(data, held_out_fraction=0.3, held_out=True, max_examples=3))] == held[:3]
    with pytest.raises(ValueError, match="held_out needs held_out_fraction > 0"):
        spec(data, held_out=True)
    with pytest.raises(ValueError, match=r"held_out_fraction must lie in \[0, 1\), got 1"):
        spec(data, held_out_fraction=1)


def test_the_gate_recipe_fits_on_rows_the_embedder_recipe_never_trains_on():
    from pathlib import Path

    import yaml

    from tte_hf.training.train_gate import GateArguments

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    (gate,) = parse_recipe([GateArguments], recipes / "gate" / "qwen2vl_2b.yaml")
    embedder_datasets = yaml.safe_load((recipes / "embedder" / "qwen2vl_2b.yaml").read_text())["datasets"]
    trained = {raw["path"]: DatasetSpec.from_dict(raw, i) for i, raw in enumerate(embedder_datasets)}
    for index, raw in enumerate(gate.datasets):
        fitted = DatasetSpec.from_dict(raw, index)
        assert fitted.held_out and fitted.held_out_fraction > 0, fitted.name
        embedder_spec = trained[fitted.path]  # the same file the embedder reads...
        assert not embedder_spec.held_out and embedder_spec.held_out_fraction == fitted.held_out_fraction
        # ...with the same row ids (a row without an id is matched by content, which includes its task)
        assert embedder_spec.resolved_task == fitted.resolved_task

"""Student reasoner SFT: supervised tokens, frozen vision tower, falling loss, checkpoint reload."""

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tte_hf.models.tte.ecr import task_prompt
from tte_hf.models.tte.inputs import build_messages, render_prompt
from tte_hf.training import train_reasoner
from tte_hf.training.data import DatasetSpec
from tte_hf.training.sft_data import sft_rows
from tte_hf.training.synthetic import write_synthetic_retrieval

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_retrieval(tmp_path_factory.mktemp("sft_data"), num_items=16)


def tiny_recipe(data, tiny_vlm, output_dir, **overrides):
    """recipes/reasoner/tiny.yaml with the paths of this test session."""
    recipe = yaml.safe_load((RECIPES / "reasoner" / "tiny.yaml").read_text())
    recipe["model_name_or_path"] = tiny_vlm
    recipe["datasets"][0] |= {
        "path": str(data["data"]),
        "image_root": str(data["image_root"]),
        "query_ecr": str(data["query_ecr"]),
    }
    return recipe | {"output_dir": str(output_dir)} | overrides


@pytest.fixture(scope="module")
def trained(data, tiny_vlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("reasoner")
    trainer = train_reasoner(tiny_recipe(data, tiny_vlm, out, max_steps=8))
    return trainer, out


def test_supervised_tokens_are_exactly_trace_and_end_of_turn(trained, data, tiny_vlm):
    trainer, _ = trained
    processor = trainer.processing_class
    tokenizer = processor.tokenizer
    rows = sft_rows(DatasetSpec.from_dict(tiny_recipe(data, tiny_vlm, "x")["datasets"][0], 0))
    examples = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(examples)  # the collator SFTTrainer trains with
    system = task_prompt("classification")
    for i, row in enumerate(rows[:4]):
        supervised = batch["labels"][i] != -100
        trace = row["messages"][-1]["content"][0]["text"]
        assert tokenizer.decode(batch["input_ids"][i][supervised]) == trace + "<|im_end|>"
        # Everything before the supervised span is the reasoner's inference prompt, token for token.
        first = int(supervised.nonzero()[0])
        messages = build_messages("Find the color and shape of the object in this image", num_images=1, system=system)
        prompt = render_prompt(processor, messages)
        expected = processor(text=[prompt], images=[examples[i]["images"][0]], return_tensors="pt")["input_ids"][0]
        assert torch.equal(batch["input_ids"][i][:first], expected)
        span = supervised.nonzero().flatten()
        assert torch.equal(span, torch.arange(span[0], span[-1] + 1))  # one contiguous span


def test_loss_falls_vision_tower_frozen_and_checkpoint_loads(trained, tiny_vlm):
    from transformers import AutoModelForImageTextToText

    trainer, out = trained
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
    before = load_file(Path(tiny_vlm) / "model.safetensors")
    after = load_file(out / "model.safetensors")
    # Checkpoints keep Qwen2-VL's original key layout: `visual.*` and `model.layers.*`.
    visual = [k for k in before if k.startswith("visual.")]
    language = [k for k in before if k.startswith("model.layers.")]
    assert visual and language
    assert all(torch.equal(before[k], after[k]) for k in visual)
    assert sum(not torch.equal(before[k], after[k]) for k in language) > len(language) // 2
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    for name, param in trainer.model.named_parameters():
        assert torch.equal(reloaded.state_dict()[name], param.detach()), name
    # The saved processor keeps the inference template (no training markers).
    assert (out / "chat_template.jinja").read_text() == (Path(tiny_vlm) / "chat_template.jinja").read_text()


def test_lora_trains_only_language_model_adapters(data, tiny_vlm, tmp_path):
    trainer = train_reasoner(tiny_recipe(data, tiny_vlm, tmp_path, max_steps=2, use_peft=True, lora_r=4, lora_alpha=8))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_trl_sft_cli_runs_the_exported_rows(data, tiny_vlm, tmp_path):
    """`tte-hf prepare-sft` + `trl sft --config recipes/reasoner/trl_sft_lora_tiny.yaml` (TRL's own
    script, parsed by its own parser): LoRA adapters land on the language model only."""
    from trl.scripts.sft import main, make_parser

    from tte_hf.cli import main as cli

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_recipe(data, tiny_vlm, tmp_path / "unused")))
    parquet = tmp_path / "sft" / "train.parquet"
    assert cli(["prepare-sft", "--config", str(config), "--output", str(parquet)]) == 0
    trl_recipe = yaml.safe_load((RECIPES / "reasoner" / "trl_sft_lora_tiny.yaml").read_text())
    trl_recipe |= {"model_name_or_path": tiny_vlm, "output_dir": str(tmp_path / "out"), "max_steps": 2}
    trl_recipe["datasets"] = [{"path": "parquet", "data_files": str(parquet)}]
    trl_recipe["chat_template_path"] = str(RECIPES.parent / trl_recipe["chat_template_path"])
    trl_config = tmp_path / "trl.yaml"
    trl_config.write_text(yaml.safe_dump(trl_recipe))
    main(*make_parser().parse_args_and_config(["--config", str(trl_config)], fail_with_unknown_args=True))
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k and "language_model" in k for k in adapter)

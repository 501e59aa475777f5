"""GRPO on the reasoner (TRL GRPOTrainer): the policy learns, resumes, and bad input fails before any step."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tte_hf.training import train_reasoner_rl
from tte_hf.training.synthetic import write_synthetic_retrieval

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_retrieval(tmp_path_factory.mktemp("grpo_data"), num_items=8)


def tiny_recipe(data, tiny_vlm, output_dir, **overrides):
    """recipes/reasoner/tiny_grpo.yaml with the paths of this test session."""
    recipe = yaml.safe_load((RECIPES / "reasoner" / "tiny_grpo.yaml").read_text())
    recipe |= {"model_name_or_path": tiny_vlm, "embedder_name_or_path": tiny_vlm, "output_dir": str(output_dir)}
    recipe["datasets"][0] |= {"path": str(data["data"]), "image_root": str(data["image_root"])}
    return recipe | overrides


class LowFirstToken:
    """A learnable toy objective: 1 when the first generated token id is in the lower half of the vocabulary."""

    __name__ = "low_first_token"

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def __call__(self, completion_ids, **_):
        return [float(ids[0] < self.vocab_size // 2) for ids in completion_ids]


def expected_reward(model, processor, dataset, vocab_size):
    """The toy reward's exact expectation under ``model``: P(first token in the lower half), averaged over prompts."""
    from trl.data_utils import prepare_multimodal_messages

    total = 0.0
    for row in dataset:
        messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            probs = model(**inputs).logits[0, -1].float().softmax(-1)
        total += probs[: vocab_size // 2].sum().item()
    return total / len(dataset)


@pytest.mark.slow  # ~1 min: two short GRPO runs on the tiny VLM
def test_grpo_raises_the_expected_reward_and_changes_only_the_language_model(data, tiny_vlm, tmp_path):
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    vocab = base.get_output_embeddings().weight.shape[0]
    recipe = tiny_recipe(
        data,
        tiny_vlm,
        tmp_path / "rl",
        rewards=["ecr_format"],
        reward_weights=[0.0, 1.0],
        num_generations=8,
        per_device_train_batch_size=16,
        max_completion_length=2,
        max_steps=6,
        learning_rate=5e-2,
    )
    trainer = train_reasoner_rl(recipe, extra_reward_funcs=[LowFirstToken(vocab)])
    dataset, processor = trainer.train_dataset, trainer.processing_class
    before = expected_reward(base, processor, dataset, vocab)
    after = expected_reward(trainer.model, processor, dataset, vocab)
    assert after > before + 0.1, (before, after)
    # The logged (sampled) rewards agree: later steps score higher than the first.
    logged = [
        log["rewards/low_first_token/mean"]
        for log in trainer.state.log_history
        if "rewards/low_first_token/mean" in log
    ]
    assert len(logged) == 6 and sum(logged[-2:]) / 2 > logged[0]

    saved, original = load_file(tmp_path / "rl" / "model.safetensors"), load_file(Path(tiny_vlm) / "model.safetensors")
    visual = [k for k in original if k.startswith("visual.")]
    assert visual and all(torch.equal(original[k], saved[k]) for k in visual)  # vision tower frozen
    assert any(not torch.equal(original[k], saved[k]) for k in original if k.startswith("model.layers."))
    # The output is a reasoner checkpoint like any other: it loads and generates.
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "rl")
    assert torch.equal(reloaded.get_output_embeddings().weight, trainer.model.get_output_embeddings().weight)


@pytest.mark.slow  # ~1 min: three short GRPO runs
def test_resuming_from_a_checkpoint_continues_the_run(data, tiny_vlm, tmp_path):
    settings = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "max_completion_length": 6}
    straight = train_reasoner_rl(tiny_recipe(data, tiny_vlm, tmp_path / "a", **settings))
    train_reasoner_rl(tiny_recipe(data, tiny_vlm, tmp_path / "b", **settings | {"max_steps": 2}))
    resumed = train_reasoner_rl(
        tiny_recipe(data, tiny_vlm, tmp_path / "b", **settings),
        ["--resume_from_checkpoint", str(tmp_path / "b" / "checkpoint-2")],
    )

    def logged(trainer):
        return [(log["step"], log["reward"]) for log in trainer.state.log_history if "reward" in log]

    assert resumed.state.global_step == 4
    # Steps 1-2 come from the checkpoint's state, steps 3-4 were trained after it. (Their rewards are
    # close to the uninterrupted run's but not bit-equal: TRL's sampling after a resume is not replayed.)
    assert [step for step, _ in logged(resumed)] == [1, 2, 3, 4]
    assert logged(resumed)[:2] == logged(straight)[:2]
    at_checkpoint = load_file(tmp_path / "b" / "checkpoint-2" / "model.safetensors")
    final = load_file(tmp_path / "b" / "model.safetensors")
    assert any(not torch.equal(at_checkpoint[k], final[k]) for k in final if k.startswith("model.layers."))


class NoTraining:
    def __init__(self, *args, **kwargs):
        raise AssertionError("GRPOTrainer must not be built for bad input")


def test_a_row_without_target_fails_before_any_step(data, tiny_vlm, tmp_path, monkeypatch):
    import trl

    monkeypatch.setattr(trl, "GRPOTrainer", NoTraining)
    rows = [json.loads(line) for line in Path(data["data"]).read_text().splitlines()]
    rows[3] |= {"pos_text": "", "pos_image_path": ""}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = tiny_recipe(data, tiny_vlm, tmp_path / "out")
    recipe["datasets"][0]["path"] = str(bad)
    with pytest.raises(ValueError, match=r"bad\.jsonl:4.*pos_text"):
        train_reasoner_rl(recipe)


def test_an_embedder_with_another_tokenizer_fails_before_any_step(data, tiny_vlm, tmp_path, monkeypatch):
    import trl
    from transformers import AutoTokenizer

    monkeypatch.setattr(trl, "GRPOTrainer", NoTraining)
    other = tmp_path / "other-embedder"
    shutil.copytree(tiny_vlm, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<not-in-the-reasoner>"])
    tokenizer.save_pretrained(other)
    recipe = tiny_recipe(data, tiny_vlm, tmp_path / "out", embedder_name_or_path=str(other))
    with pytest.raises(ValueError, match="does not use the reasoner's tokenizer"):
        train_reasoner_rl(recipe)


def test_an_unknown_reward_candidate_set_fails_before_anything_loads(data, tiny_vlm, tmp_path, monkeypatch):
    import importlib

    import trl

    module = importlib.import_module("tte_hf.training.train_reasoner_rl")  # the package exports the function
    monkeypatch.setattr(trl, "GRPOTrainer", NoTraining)
    monkeypatch.setattr(module, "load_rl_pairs", lambda *_: pytest.fail("data read before the recipe was checked"))
    with pytest.raises(ValueError, match="reward_candidates must be one of"):
        train_reasoner_rl(tiny_recipe(data, tiny_vlm, tmp_path / "out", reward_candidates="corpus"))

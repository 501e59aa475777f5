"""One override syntax for every recipe command: TRL's ``--config recipe.yaml --key value``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tte_hf.cli import main, parse_args

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def captured(monkeypatch):
    """Run train-embedder up to the parsed recipe, without training."""
    import importlib

    import tte_hf.training.config as config

    train_embedder = importlib.import_module("tte_hf.training.train_embedder")  # the package re-exports a function

    seen = {}
    monkeypatch.setattr(train_embedder, "run_embedder_training", lambda *parsed, **_: seen.setdefault("parsed", parsed))
    monkeypatch.setattr(config, "finish_run", lambda trainer: None)
    return seen


def test_training_command_takes_trl_style_overrides(captured):
    recipe = str(RECIPES / "embedder" / "tiny.yaml")
    main(["train-embedder", "--config", recipe, "--learning_rate", "3e-5", "--max-steps=7", "--lora_r", "4"])
    model_args, _, training_args = captured["parsed"]
    assert (training_args.learning_rate, training_args.max_steps, model_args.lora_r) == (3e-5, 7, 4)


def test_deprecated_set_still_works_and_says_so(captured, capsys):
    main(["train-embedder", "--config", str(RECIPES / "embedder" / "tiny.yaml"), "--set", "learning_rate=2e-5"])
    assert captured["parsed"][2].learning_rate == 2e-5
    assert "--set learning_rate=2e-5 is deprecated; write --learning_rate 2e-5" in capsys.readouterr().err


def test_unknown_recipe_key_is_refused_naming_it(captured):
    with pytest.raises(ValueError, match="learnig_rate"):
        main(["train-embedder", "--config", str(RECIPES / "embedder" / "tiny.yaml"), "--learnig_rate", "1e-4"])


def test_commands_without_a_recipe_still_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["make-tiny", "out", "--learning_rate", "1e-4"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --learning_rate 1e-4" in capsys.readouterr().err


def test_generate_ecr_top_level_and_reasoner_keys():
    from tte_hf.commands.generate_ecr import build_config
    from tte_hf.reasoning.generate import GenerateECRConfig

    recipe = str(RECIPES / "ecr" / "teacher_openai_server.yaml")
    args = parse_args(
        ["generate-ecr", "--config", recipe, "--max_trace_chars", "300", "--chunk-size=4", "--skip_bad"]
        + ["--reasoner.base_url", "http://gpu-node:8000/v1", "--reasoner.max_new_tokens", "64"]
    )
    config = GenerateECRConfig.from_any(build_config(args))
    assert (config.max_trace_chars, config.chunk_size, config.skip_bad) == (300, 4, True)
    assert config.reasoner["base_url"] == "http://gpu-node:8000/v1" and config.reasoner["max_new_tokens"] == 64
    assert config.reasoner["backend"] == "openai"  # the recipe's other reasoner keys stay


@pytest.mark.parametrize("bad", ["--batch", "--reasoner.a.b", "--output.x", "--reasoner."])
def test_generate_ecr_unknown_key_names_it(bad):
    from tte_hf.commands.generate_ecr import build_config

    args = parse_args(["generate-ecr", "--output", "x.jsonl", bad, "1"])
    with pytest.raises(SystemExit, match=f"unknown option {bad}"):
        build_config(args)

"""RL-tuned reasoner: GRPO (TRL's `GRPOTrainer`) on a TTE student, with a frozen TTE embedder as the reward.

The policy is the reasoner VLM (full or LoRA through TRL's `ModelConfig`, vision tower frozen). Its
prompts are exactly the ones it sees at inference and in SFT (`tte_hf.models.tte.inputs.build_messages` with
the task's system prompt); each sampled trace is scored by `RetrievalReward` (the embedder's
probability of the row's positive target) and `ECRFormatReward`, weighted by GRPOConfig's
``reward_weights``. TRL generates with transformers on CPU and with vLLM where ``use_vllm`` is set.
``recipes/grpo_reasoner.py`` is the accelerate-launchable script; ``tte-hf train-reasoner-rl`` the command.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

REWARDS = ("retrieval", "ecr_format")


@dataclass
class RLArguments:
    """This package's GRPO arguments (next to TRL's `ScriptArguments`, `GRPOConfig`, `ModelConfig`).

    ``datasets``: the same dataset dicts as the SFT recipe (`tte_hf.training.data.DatasetSpec`; teacher
    traces are not needed). ``embedder_name_or_path``: the frozen TTE embedder that scores traces; it
    must read the reasoner's tokens (same tokenizer). ``rewards``: names from ``REWARDS``, in the order
    of GRPOConfig's ``reward_weights``.
    """

    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "Training datasets (YAML)."})
    embedder_name_or_path: str | None = field(default=None, metadata={"help": "The TTE embedder giving the reward."})
    rewards: list[str] = field(default_factory=lambda: list(REWARDS), metadata={"help": f"Any of {REWARDS}."})
    reward_temperature: float = field(default=0.02, metadata={"help": "Softmax temperature of the retrieval reward."})
    reward_hard_negatives: bool = field(default=True, metadata={"help": "Score against the rows' hard negatives too."})
    reward_candidates: str = field(default="batch", metadata={"help": "batch (in-batch positives + the row's hard negative) | dataset (every target of the data)."})  # fmt: skip
    max_final_words: int = field(default=32, metadata={"help": "Longest final part the format reward accepts."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder."})


def load_rl_pairs(rl_args: RLArguments) -> list:
    """Every configured dataset's pairs, validated (files, images, non-empty query and target sides)."""
    from .data import DatasetSpec, load_pairs

    if not rl_args.datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, image_root, task).")
    pairs = []
    for index, raw in enumerate(rl_args.datasets):
        spec = DatasetSpec.from_dict({k: v for k, v in raw.items() if k != "query_ecr"}, index)
        pairs.extend(load_pairs(spec))
    return pairs


def build_prompt_dataset(pairs: Sequence) -> Any:
    """TRL's conversational prompt rows: ``prompt`` (system + user turn, image placeholders), ``images``
    (decoded lazily) and ``pair_index`` (which pair the rewards score against)."""
    from datasets import Dataset, Image, List

    from ..models.tte.ecr import task_prompt
    from ..models.tte.inputs import build_messages
    from .sft_data import _as_blocks

    rows = []
    for index, pair in enumerate(pairs):
        system = task_prompt(pair.task or "generic")
        messages = build_messages(pair.query.text, len(pair.query.images), instruction=pair.instruction, system=system)
        # Arrow needs one content type per column: the system string as a text block renders the same.
        messages = [{**m, "content": _as_blocks(m["content"])} for m in messages]
        rows.append({"prompt": messages, "images": list(pair.query.images), "pair_index": index})
    if len({len(row["images"]) > 0 for row in rows}) > 1:
        raise ValueError("Mixing queries with and without images is not supported by GRPO batches; split the datasets.")
    return Dataset.from_list(rows).cast_column("images", List(Image()))


def check_same_tokenizer(reasoner_processor, embedder_tokenizer, reasoner: str, embedder: str) -> None:
    """The embedder reads the reasoner's generated tokens, so both must tokenize alike."""
    mine = getattr(reasoner_processor, "tokenizer", reasoner_processor)
    if mine.get_vocab() != embedder_tokenizer.get_vocab():
        raise ValueError(
            f"The embedder {embedder} does not use the reasoner's tokenizer ({reasoner}): their vocabularies differ, "
            "so the embedder would not read the traces the policy generates. Use an embedder trained from the same "
            "backbone family as the reasoner."
        )


def build_rewards(rl_args: RLArguments, pairs: Sequence, embedder, max_completion_length: int | None) -> list[Callable]:
    from .rewards import ECRFormatReward, RetrievalReward

    unknown = sorted(set(rl_args.rewards) - set(REWARDS))
    if unknown or not rl_args.rewards:
        raise ValueError(f"rewards must be a non-empty list of {REWARDS}; got unknown {unknown}.")
    made = {
        "retrieval": lambda: RetrievalReward(
            embedder,
            pairs,
            temperature=rl_args.reward_temperature,
            hard_negatives=rl_args.reward_hard_negatives,
            candidates=rl_args.reward_candidates,
        ),
        "ecr_format": lambda: ECRFormatReward(rl_args.max_final_words, max_completion_length),
    }
    return [made[name]() for name in rl_args.rewards]


def train_reasoner_rl(
    config: str | os.PathLike | dict[str, Any] | None = None,
    argv: list[str] | None = None,
    extra_reward_funcs: Sequence[Callable] = (),
    progress=None,
):
    """Run the GRPO recipe ``config`` (YAML path or dict; ``argv`` = CLI overrides). Returns the trainer.

    ``extra_reward_funcs``: more TRL reward functions, after the recipe's ``rewards`` (their weights
    follow in ``reward_weights``). ``progress``: a `TrainerCallback` that replaces the Trainer's console
    display."""
    from trl import GRPOConfig, ModelConfig, ScriptArguments

    from .config import parse_recipe

    script_args, training_args, model_args, rl_args = parse_recipe(
        (ScriptArguments, GRPOConfig, ModelConfig, RLArguments), config, argv
    )
    return run_grpo(script_args, training_args, model_args, rl_args, extra_reward_funcs, progress)


def run_grpo(
    script_args, training_args, model_args, rl_args, extra_reward_funcs: Sequence[Callable] = (), progress=None
):
    from transformers import AutoProcessor
    from trl import GRPOTrainer

    from ..sentence_transformers import build_sentence_transformer
    from .config import use_progress
    from .rewards import CANDIDATES
    from .train_reasoner import freeze_vision, load_policy

    if not model_args.model_name_or_path:
        raise ValueError("The recipe needs `model_name_or_path` (the SFT student reasoner).")
    if not rl_args.embedder_name_or_path:
        raise ValueError("The recipe needs `embedder_name_or_path` (the frozen TTE embedder that scores traces).")
    # Everything that can be wrong is checked before the policy loads and before any step.
    if rl_args.reward_candidates not in CANDIDATES:
        raise ValueError(f"reward_candidates must be one of {CANDIDATES}, got {rl_args.reward_candidates!r}.")
    pairs = load_rl_pairs(rl_args)
    dataset = build_prompt_dataset(pairs)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    embedder = build_sentence_transformer(rl_args.embedder_name_or_path, query_reasoning=False)
    check_same_tokenizer(processor, embedder.tokenizer, model_args.model_name_or_path, rl_args.embedder_name_or_path)
    embedder.eval().requires_grad_(False)
    reward_funcs = build_rewards(rl_args, pairs, embedder, training_args.max_completion_length)
    reward_funcs += list(extra_reward_funcs)

    model, peft_config = load_policy(model_args, rl_args.freeze_vision_tower)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    if rl_args.freeze_vision_tower:
        freeze_vision(trainer.model)
    use_progress(trainer, progress)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # weights + the processor (the trainer's processing_class)
    trainer.accelerator.print(f"Saved the GRPO-tuned reasoner to {training_args.output_dir}.")
    return trainer

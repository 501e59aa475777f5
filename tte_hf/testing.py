"""Tiny, random, offline vision-language checkpoints for tests, the demo and trying commands.

`build_tiny_vlm` writes a complete Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint — tokenizer trained on
the spot, image/video processor, random weights — that the stock ``from_pretrained`` loaders read.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_WORDS = (
    "a an the of in on at to is are what which who where how many does do this that image picture photo "
    "video frame page document describe find retrieve represent given question answer label class object "
    "red green blue yellow purple orange black white gray pink brown circle square triangle star cross "
    "left right top bottom above below next near far small large one two three four five six seven eight "
    "nine zero color shape count position scene there think step reasoning final summary because so "
    "therefore first second third then it its with and or not no yes query target candidate relevant "
    "dog cat car bus tree house person man woman boy girl table chair sky water road street building "
    "vehicle closest camera object referred region grounding classification retrieval visual text "
    "animal pet thing plant barks fetches stick meows chases mice wheels drive road bird flies sings feathers "
    "beak fish swims fins lives plant leaves roots tall trunk building people live home roof door boat floats "
    "sea vessel sail painted like riddle describes means colour has you"
).split()

SUPPORTED_TINY_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# Qwen3-VL's tokenizer has <think> and </think> as added (not special) tokens; its chat template
# (TRL's copy of Qwen3-VL-Instruct's) has no default system prompt.
_QWEN3_ADDED_TOKENS = ["<think>", "</think>"]
_CHAT_TEMPLATES = {"qwen2_vl": "qwen2_5_vl", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def _chat_template(name: str) -> str:
    # TRL ships Qwen2-VL's chat template and a `{% generation %}`-marked variant for assistant-only loss.
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / name).read_text()


def _corpus(seed: int, n_lines: int = 2000) -> list[str]:
    from .models.tte.ecr import TASK_PROMPTS

    rng = random.Random(seed)
    lines = list(TASK_PROMPTS.values()) * 20  # the task prompts tokenise into few, whole-word tokens
    for _ in range(n_lines):
        words = rng.choices(_WORDS, k=rng.randint(4, 16))
        line = " ".join(words)
        if rng.random() < 0.3:
            line = f"<think> {line} </think> {rng.choice(_WORDS)}"
        lines.append(line.capitalize() + rng.choice([".", "?", "", "\n"]))
    return lines


def build_tiny_tokenizer(seed: int = 0, vocab_size: int = 1000, arch: str = "qwen2_vl"):
    """A byte-level BPE `Qwen2TokenizerFast` with Qwen's special tokens (and ``arch``'s chat
    template and added tokens), trained on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=fast._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        chat_template=_chat_template(f"{_CHAT_TEMPLATES[arch]}.jinja"),
    )
    if arch == "qwen3_vl":
        tokenizer.add_tokens(_QWEN3_ADDED_TOKENS)
    return tokenizer


#: The vision tower of the tiny Qwen2.5-VL and Qwen3-VL (their vision configs share these fields).
_SMALL_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2)


def _tiny_config(arch: str, tokenizer, hidden_size: int, num_layers: int):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    ids = {name.strip("<|>"): tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    half_head_dim = hidden_size // 4 // 2  # 4 attention heads; M-RoPE splits half the head dim in t/h/w
    temporal = half_head_dim // 4
    height = (half_head_dim - temporal) // 2
    mrope_section = [temporal, height, half_head_dim - temporal - height]  # Qwen's 1/4, 3/8, 3/8
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        bos_token_id=ids["endoftext"],
        eos_token_id=ids["im_end"],
        pad_token_id=ids["endoftext"],
    )
    common = dict(
        text_config=text_config,
        image_token_id=ids["image_pad"],
        video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
    )
    if arch == "qwen3_vl":
        # Interleaved M-RoPE in Qwen3-VL's proportions (24/20/20 of 64); deepstack adds the vision tower's layer-0 and -1 features to the
        # outputs of the first two text layers (an MHSA head of n <= num_layers - 2 layers is valid).
        text_config["head_dim"] = hidden_size // 4
        spatial = half_head_dim * 5 // 16
        mrope_section = [half_head_dim - 2 * spatial, spatial, spatial]
        text_config["rope_parameters"] |= {"mrope_section": mrope_section, "mrope_interleaved": True}
        vision = dict(
            **_SMALL_VISION,
            out_hidden_size=hidden_size,
            patch_size=16,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        )
        return Qwen3VLConfig(vision_config=vision, **common)
    if arch == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=hidden_size, num_heads=2, mlp_ratio=2)
        return Qwen2VLConfig(vision_config=vision, **common)
    if arch == "qwen2_5_vl":
        vision = dict(**_SMALL_VISION, out_hidden_size=hidden_size, fullatt_block_indexes=[1], window_size=56)
        return Qwen2_5_VLConfig(vision_config=vision, **common)
    raise ValueError(f"arch={arch!r} is not supported; choose one of {SUPPORTED_TINY_ARCHS}.")


#: Rows of `colour_patch_embedding`: weights on a patch's mean normalised R, G, B. The channels
#: themselves, then opponent contrasts (red-green, yellow-blue) and luminance, as in early vision:
#: the contrasts keep hues that differ in one channel (orange/yellow: green; white/yellow: blue)
#: apart after the tower's LayerNorms and GELUs, which a sum of random pixels does not.
COLOUR_DETECTORS = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, -1.0, 0.0),
    (0.5, 0.5, -1.0),
    (1 / 3, 1 / 3, 1 / 3),
)
COLOUR_DETECTOR_GAIN = 6.0


@torch.no_grad()
def colour_patch_embedding(weight: torch.Tensor, gain: float = COLOUR_DETECTOR_GAIN) -> None:
    """Turn the first ``len(COLOUR_DETECTORS)`` output channels of a Qwen-VL patch embedding
    (``weight``: out x 3 x time x patch x patch) into mean-colour detectors, in place.

    Why: a random tower keeps a patch's colour only as a faint sum of 1,176 random pixel weights,
    which the merger's LayerNorm and its random MLP partly wash out: the demo's student then names the
    right object in the wrong colour (orange/yellow, purple/blue, white/yellow). Channel ``i`` becomes
    ``gain * sum_c COLOUR_DETECTORS[i][c] * mean(pixels of channel c)``; the rest stay random.
    """
    if weight.dim() != 5 or weight.shape[1] != 3 or weight.shape[0] <= len(COLOUR_DETECTORS):
        raise ValueError(
            f"Expected a Qwen-VL patch embedding weight (out > {len(COLOUR_DETECTORS)}, 3, t, p, p), "
            f"got shape {tuple(weight.shape)}."
        )
    per_pixel = weight[0, 0].numel()  # time x patch x patch pixels of one channel
    rows = torch.tensor(COLOUR_DETECTORS, dtype=weight.dtype) * (gain / per_pixel)
    weight[: len(COLOUR_DETECTORS)] = rows[:, :, None, None, None].expand(-1, -1, *weight.shape[2:])


def _tiny_model(arch: str, tokenizer, seed: int, hidden_size: int, num_layers: int):
    """A random ``arch`` model (eval mode) seeded with ``seed``."""
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    config = _tiny_config(arch, tokenizer, hidden_size, num_layers)
    model_cls = {
        "qwen2_vl": Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": Qwen3VLForConditionalGeneration,
    }[arch]
    torch.manual_seed(seed)
    return model_cls(config).eval()


def _tiny_processor(arch: str, tokenizer, max_pixels: int):
    """The processor of a tiny ``arch`` checkpoint: images up to ``max_pixels``, the tokenizer's template."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    if arch == "qwen3_vl":  # 16-pixel patches merged 2x2: sizes come in multiples of 32
        pixel_limits = {"shortest_edge": 32 * 32 * 4, "longest_edge": max_pixels}
        patches = {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}
        half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        return Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(size=pixel_limits, **patches, **half),
            # Frames are taken as given (ST passes a video as its list of frames), not resampled.
            video_processor=Qwen3VLVideoProcessor(size=pixel_limits, do_sample_frames=False, **patches, **half),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )
    pixel_limits = {"shortest_edge": 28 * 28 * 4, "longest_edge": max_pixels}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixel_limits),
        video_processor=Qwen2VLVideoProcessor(size=pixel_limits),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def build_tiny_vlm(
    output_dir: str | Path,
    *,
    arch: str = "qwen2_vl",
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 4,
    max_pixels: int = 28 * 28 * 16,
    colour_patches: bool = False,
) -> Path:
    """Save a tiny random Qwen2-VL-family checkpoint (model, tokenizer, processor) and return its path.

    Deterministic for ``seed`` and fully offline. ``AutoModelForImageTextToText.from_pretrained`` and
    ``AutoProcessor.from_pretrained`` load the result. The tokenizer also ships the
    ``{% generation %}``-marked template as ``chat_template_training.jinja`` for assistant-only SFT.

    ``colour_patches``: make the first channels of the vision tower's patch embedding mean-colour
    detectors (`colour_patch_embedding`), so a patch's colour survives the frozen random tower; the
    demo sets it. Off by default, which keeps every other caller's weights as they were.
    """
    if arch not in SUPPORTED_TINY_ARCHS:
        raise ValueError(f"arch={arch!r} is not supported; choose one of {SUPPORTED_TINY_ARCHS}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tiny_tokenizer(seed, arch=arch)
    model = _tiny_model(arch, tokenizer, seed, hidden_size, num_layers)
    if colour_patches:
        colour_patch_embedding(model.model.visual.patch_embed.proj.weight)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(output_dir)
    _tiny_processor(arch, tokenizer, max_pixels).save_pretrained(output_dir)
    training_template = f"{_CHAT_TEMPLATES[arch]}_training.jinja"
    (output_dir / "chat_template_training.jinja").write_text(_chat_template(training_template))
    return output_dir

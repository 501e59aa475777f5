"""Input profiles: the exact text sequence and image size a baseline model's reference evaluation feeds it.

With last-token pooling a different final token moves scores by points, so a baseline is only
comparable with its published MMEB figures when it reads what its reference fed it. A profile turns
an MMEB item (its raw instruction, text, image and which VLM2Vec parser read the row) into that input:

- ``tte``: no profile; the TTE / sentence-transformers model builds its own chat input.
- ``vlm2vec``: VLM2Vec-V2 (Qwen2-VL backbone) as TIGER-AI-Lab/VLM2Vec's `eval.py` feeds it: raw text
  from `src/model/processor.py::process_input_text` (``<|image_pad|> {instruction} {text}``, no chat
  template) with each parser's own edits (`src/data/eval_dataset/image_{cls,qa,i2t,t2i,i2i_vg}*.py`,
  `vidore_dataset.py`: ``" \\n" -> "\\n"`` and a final ``"\\n"``); images under 28 px on a side
  resized to 56x56, then the Qwen2-VL processor's resize to 28·28·4 .. 28·28·1280 pixels
  (`src/arguments.py` defaults); the hidden state of the last token (``--pooling eos``), normalised.
- ``gme``: GME-Qwen2-VL as VLM2Vec evaluates it (`src/model/baseline_backbone/gme/gme_inference.py`):
  ``{instruction} {text}`` (process_input_text's GME branch, same parser edits) inside GME's own
  message ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
  [<|vision_start|><|image_pad|><|vision_end|>]{text}<|im_end|>\\n<|im_start|>assistant\\n<|endoftext|>``;
  images through qwen-vl-utils' ``smart_resize`` (4·28·28 .. 16384·28·28) and then the same
  processor resize as ``vlm2vec``; last token, normalised.
- ``qwen3-vl-embedding``: the Qwen3-VL-Embedding model card's format: the instruction as the system
  message (default ``"Represent the user's input."``), the image then the text as the user turn,
  the chat template with the generation prompt; images resized to multiples of 32 within
  4·32·32 .. 1800·32·32 pixels; last token, normalised.

Video items are refused by the ``vlm2vec`` / ``gme`` / ``qwen3-vl-embedding`` profiles: their
video inputs (frame sampling, GME's middle frame) are not reproduced here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TTE = "tte"
VLM2VEC = "vlm2vec"
GME = "gme"
QWEN3_VL_EMBEDDING = "qwen3-vl-embedding"
INPUT_FORMATS = (TTE, VLM2VEC, GME, QWEN3_VL_EMBEDDING)

# VLM2Vec's dataset parsers for the MMEB image tasks (experiments/public/eval/image.yaml), and "vidore"
# for the visual-document tasks.
PARSERS = ("image_cls", "image_qa", "image_i2t", "image_t2i", "image_i2i_vg", "vidore")
QWEN2_IMAGE_TOKEN = "<|image_pad|>"
PHI3_IMAGE_TAG = "<|image_1|>"
GME_SYSTEM = "You are a helpful assistant."
QWEN3_DEFAULT_INSTRUCTION = "Represent the user's input."


@dataclass
class ProfileItem:
    """One query or candidate as its MMEB row gives it, before any profile edits it.

    ``instruction`` and ``text`` are the raw row fields (``qry_inst`` / ``qry_text``, ``tgt_inst`` /
    one ``tgt_text`` entry); ``captioned``: the row's first candidate text is not blank (VLM2Vec's
    test for image candidates that carry a caption); ``task``: the task name (VisDial's extra newline).
    """

    side: str  # "query" or "candidate"
    parser: str
    task: str
    instruction: str = ""
    text: str = ""
    image: Any = None  # a PIL image
    frames: list | None = None
    captioned: bool = False


def check_input_format(name: str) -> str:
    if name not in INPUT_FORMATS:
        raise ValueError(f"input format {name!r}; choose one of {INPUT_FORMATS}.")
    return name


# --- text -------------------------------------------------------------------------------------------


def _process_input_text(instruction: str, text: str, image: bool, family: str) -> str:
    """VLM2Vec `process_input_text` for the Qwen2-VL backbone (``vlm2vec``) and for GME / LamRA."""
    if family == GME:
        return instruction + " " + text if text else instruction + " "
    prompt = instruction + " " + text if text else instruction
    return QWEN2_IMAGE_TOKEN + " " + prompt if image else prompt


def _query_text(item: ProfileItem, family: str) -> str:
    if item.parser == "vidore":
        return _process_input_text(item.instruction, item.text, False, family)
    if item.parser == "image_t2i":  # the Phi-3-V tag becomes the backbone's image token, text-only query
        text = item.instruction.replace(PHI3_IMAGE_TAG, QWEN2_IMAGE_TOKEN) + " " + item.text + "\n"
        return text + "\n" if item.task == "VisDial" else text
    instruction = item.instruction.replace(PHI3_IMAGE_TAG, "")
    if item.parser in ("image_qa", "image_i2i_vg"):
        instruction = "\n" + instruction.strip()
    return _process_input_text(instruction, item.text, True, family).replace(" \n", "\n") + "\n"


def _candidate_text(item: ProfileItem, family: str) -> str:
    if item.parser == "vidore":
        return _process_input_text(item.instruction, "", True, family)
    if item.parser in ("image_cls", "image_qa", "image_i2t"):
        return item.text  # the bare label / answer / caption
    instruction = item.instruction.replace(PHI3_IMAGE_TAG, "")
    if item.captioned:
        return _process_input_text(instruction + " " + item.text, "", True, family).replace(" \n", "\n") + "\n"
    text = _process_input_text(instruction, "", True, family).replace(" \n", "\n")
    return text if item.parser == "image_i2i_vg" else text + "\n"


def reference_text(item: ProfileItem, input_format: str) -> str:
    """The whole text sequence ``input_format`` feeds its tokenizer / processor for ``item`` (image
    placeholders not yet expanded to one token per image patch)."""
    if item.frames is not None:
        raise ValueError(f"Task {item.task!r}: the {input_format!r} input format does not cover video inputs.")
    if input_format == QWEN3_VL_EMBEDDING:
        raise ValueError("qwen3-vl-embedding builds its text with the model's chat template (`qwen3_messages`).")
    if item.parser not in PARSERS:
        raise ValueError(f"Task {item.task!r}: parser {item.parser!r} has no {input_format!r} text; known: {PARSERS}.")
    build = _query_text if item.side == "query" else _candidate_text
    text = build(item, input_format)
    if input_format == VLM2VEC:
        return text
    if input_format == GME:
        text = text.replace(QWEN2_IMAGE_TOKEN + "\n", "")  # src/model/model.py, before GME's own message
        vision = "<|vision_start|><|image_pad|><|vision_end|>" if item.image is not None else ""
        return (
            f"<|im_start|>system\n{GME_SYSTEM}<|im_end|>\n<|im_start|>user\n{vision}{text}<|im_end|>\n"
            "<|im_start|>assistant\n<|endoftext|>"
        )
    raise ValueError(f"input format {input_format!r} has no raw text; choose one of {INPUT_FORMATS}.")


def qwen3_messages(item: ProfileItem) -> list[dict[str, Any]]:
    """Qwen3-VL-Embedding's conversation: instruction as the system turn, image then text as the user's."""
    if item.frames is not None:
        raise ValueError(f"Task {item.task!r}: the qwen3-vl-embedding input format does not cover video inputs.")
    instruction = item.instruction.replace(PHI3_IMAGE_TAG, "").strip() or QWEN3_DEFAULT_INSTRUCTION
    content: list[dict[str, Any]] = [{"type": "image"}] if item.image is not None else []
    if item.text:
        content.append({"type": "text", "text": item.text})
    if not content:
        content.append({"type": "text", "text": ""})
    return [
        {"role": "system", "content": [{"type": "text", "text": instruction}]},
        {"role": "user", "content": content},
    ]


# --- images -----------------------------------------------------------------------------------------


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' ``smart_resize``: sides rounded to ``factor``, area within the pixel budget.

    Written out because the reference applies it on its own, before the processor's resize, and
    qwen-vl-utils is not a dependency of this package.
    """
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


#: The processor's pixel budget per profile: ``size`` for the Qwen-VL image processor.
PROCESSOR_PIXELS = {
    VLM2VEC: {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280},
    GME: {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280},
    QWEN3_VL_EMBEDDING: {"shortest_edge": 4 * 32 * 32, "longest_edge": 1800 * 32 * 32},
}


def reference_image(image, input_format: str):
    """The image as the reference hands it to the processor (which then resizes it to ``PROCESSOR_PIXELS``)."""
    if input_format == VLM2VEC and (image.size[0] < 28 or image.size[1] < 28):
        return image.resize((56, 56))  # Qwen2_VL_process_fn's rare-case rule
    if input_format == GME:  # gme_inference.fetch_image
        height, width = smart_resize(image.size[1], image.size[0], 28, 4 * 28 * 28, 16384 * 28 * 28)
        return image.convert("RGB").resize((width, height))
    if input_format == QWEN3_VL_EMBEDDING:
        height, width = smart_resize(image.size[1], image.size[0], 32, 4 * 32 * 32, 1800 * 32 * 32)
        return image.convert("RGB").resize((width, height))
    return image

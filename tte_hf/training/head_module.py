"""The sentence-transformers input module the unified head trains through (`train_head`).

`HeadTrainingModule.preprocess` turns the pair dataset's cells (`pair_dataset.side_input`) into the
reasoner's own sequences, as `TTEUnifiedTransformer` does at query time: the prompt rendered by the
chat template, then the trace as token ids (the generated ids where the data has them, else the
tokenized text) and the end token. Each row also carries its hidden-state cache key as an integer
tensor (``cache_keys``, sha256 bytes), so that sentence-transformers' losses slice it (GradCache
mini-batches) or concatenate it (columns merged into one forward) along with every other per-row
tensor. A column whose rows are all cached holds its keys alone: no image is decoded, no text
tokenized.

`HeadTrainingModule.forward` reads each row's frozen hidden states from the cache (or runs the
backbone and stores them), then runs the head, the one trainable part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule

from ..models.tte.inputs import END_OF_TURN, build_messages, embedder_system_prompt, embedder_text, render_prompt

KEY_BYTES = 32  # sha256
_NOT_BACKBONE_INPUTS = ("cache_keys", "num_images_per_sample")  # what preprocess adds


def input_key(text: str, images: Sequence[str]) -> str:
    """A content key for one rendered input: its text and its images' bytes (not their paths, so an
    image edited in place gets a new key). Reads the files but does not decode them."""
    from ..models.tte.fingerprints import file_digest

    return hashlib.sha256("\0".join([text, *map(file_digest, images)]).encode()).hexdigest()


def load_image(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


class HeadTrainingModule(InputModule):
    """A `TTEUnifiedModel` (frozen backbone + head) as the only module of a `SentenceTransformer`.

    ``cache``: a `hidden_cache.HiddenStateCache`, or ``None`` (the backbone runs on every pass). Cells
    are ``{"text", "images" (paths), "reasoning", "reasoning_ids", "task"}``; ST's prompt is the
    dataset's instruction.
    """

    save_in_root = True

    def __init__(self, unified, processor, cache=None):
        super().__init__()
        self.unified, self.processor, self.cache = unified, processor, cache
        # GradCache embeds each mini-batch twice (without, then with autograd); the frozen backbone's
        # output is the same both times, so the first pass leaves it here for the second to take.
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def modalities(self) -> list:
        return ["text", "image", "message"]

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def get_embedding_dimension(self) -> int:
        return self.unified.config.truncate_dim or self.unified.config.output_dim

    def prompt_text(self, cell: dict[str, Any], instruction: str | None) -> str:
        system = embedder_system_prompt(cell.get("task"), cell.get("reasoning") is not None)
        messages = build_messages(cell["text"], len(cell["images"]), instruction=instruction, system=system)
        return render_prompt(self.processor, messages)

    def suffix_ids(self, cell: dict[str, Any]) -> list[int]:
        """The tokens after the prompt: the trace (its generated ids, else its tokenized text) + end token."""
        tokenizer = self.processor.tokenizer
        if cell.get("reasoning_ids") is None:
            return tokenizer(embedder_text("", cell.get("reasoning")), add_special_tokens=False).input_ids
        return [*cell["reasoning_ids"], tokenizer.convert_tokens_to_ids(END_OF_TURN)]

    def preprocess(self, inputs: Sequence[dict[str, Any]], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Cache keys for every row, plus the processor's outputs unless every row is cached."""
        from ..models.tte.st_unified import append_suffixes  # the unified ST module's own

        if not inputs:
            return {}
        texts = [self.prompt_text(cell, prompt) for cell in inputs]
        suffixes = [self.suffix_ids(cell) for cell in inputs]
        keys = [input_key(f"{text}\0{suffix}", cell["images"]) for text, suffix, cell in zip(texts, suffixes, inputs)]
        # (rows, 32): GradCache's mini-batches trim trailing padding columns off per-token tensors, which a
        # width of 32 could be taken for; the rows below are left-padded, so no trailing column is trimmed.
        features: dict[str, Any] = {
            "cache_keys": torch.tensor([list(bytes.fromhex(k)) for k in keys], dtype=torch.uint8)
        }
        if self.cache is not None and all(key in self.cache for key in keys):
            return features
        images = [load_image(path) for cell in inputs for path in cell["images"]]
        # No truncation: cutting a sequence would drop the end token the embedding is read from.
        batch = dict(self.processor(text=texts, images=images or None, padding=True, return_tensors="pt"))
        features |= append_suffixes(batch, suffixes, self.processor.tokenizer.pad_token_id)
        # GradCache slices pixel rows by this count (rows may have no image).
        features["num_images_per_sample"] = torch.tensor([len(cell["images"]) for cell in inputs])
        return features

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        hidden, mask, positions = self.hidden_states(features)
        features["sentence_embedding"] = self.unified.embed_hidden_states(hidden, mask, positions)
        return features

    def hidden_states(self, features: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows' frozen hidden states (right-padded), their mask and their RoPE positions."""
        key_bytes = features["cache_keys"]
        if key_bytes.ndim != 2 or key_bytes.shape[1] != KEY_BYTES:
            raise ValueError(f"cache_keys must be (rows, {KEY_BYTES}) bytes, got shape {tuple(key_bytes.shape)}.")
        keys = [bytes(row).hex() for row in key_bytes.cpu().tolist()]
        inputs = {k: v for k, v in features.items() if k not in _NOT_BACKBONE_INPUTS}
        rows = [self._pending.get(key) for key in keys]
        if torch.is_grad_enabled():  # the second (or only) pass: nothing left to hand on
            for key in keys:
                self._pending.pop(key, None)
        if self.cache is not None:
            rows = [row if row is not None else self.cache.get(key) for row, key in zip(rows, keys)]
        if any(row is None for row in rows):
            rows = self._backbone_rows(keys, rows, inputs)
        if self.training and not torch.is_grad_enabled():  # GradCache's first pass; evaluation has no second
            self._pending.update(zip(keys, rows))
        return _right_padded(rows, key_bytes.device)

    def _backbone_rows(self, keys: list[str], rows: list, inputs: dict[str, Any]) -> list:
        if "attention_mask" not in inputs:  # preprocess skipped the processor: all were cached then
            missing = next(key for key, row in zip(keys, rows) if row is None)
            raise RuntimeError(
                f"The hidden-state cache lost entry {missing} during training ({self.cache.directory}). "
                "Do not clear `hidden_cache_dir` while a run uses it; rerun to rebuild the missing entries."
            )
        with torch.no_grad():
            out = self.unified(**inputs)
        mask = inputs["attention_mask"].bool()
        rows = [(out.last_hidden_state[i][mask[i]], out.position_ids[:, i][:, mask[i]]) for i in range(len(keys))]
        if self.cache is not None:
            for key, row in zip(keys, rows):
                self.cache.put(key, *row)
        return rows

    def save(self, output_path: str, *args, **kwargs) -> None:
        """The head alone (the backbone is referenced by name), as `train_head` saves it."""
        self.unified.save_head(output_path)
        self.processor.save_pretrained(output_path)


def _right_padded(rows: list, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack (hidden (seq, dim), positions (3, seq)) rows, right-padded; the heads handle either side."""
    length = max(hidden.shape[0] for hidden, _ in rows)
    first_hidden, first_positions = rows[0]
    padded = first_hidden.new_zeros(len(rows), length, first_hidden.shape[-1])
    positions = first_positions.new_zeros(first_positions.shape[0], len(rows), length)
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
    for i, (hidden, row_positions) in enumerate(rows):
        padded[i, : hidden.shape[0]] = hidden
        positions[:, i, : hidden.shape[0]] = row_positions
        mask[i, : hidden.shape[0]] = 1
    return padded.to(device), mask, positions.to(device)

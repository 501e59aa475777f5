"""Reasoner on transformers: batched ``generate`` with left padding, on CPU or GPU.

Self-contained (torch, transformers and sibling files): shipped next to the weights for
``trust_remote_code``, where the sentence-transformers module builds it from its config; in the package
``load_reasoner(backend="transformers")`` builds the same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .ecr import PROMPT_VERSION
from .generation_tte import decoding_settings
from .reasoner_base import GeneratedText, ReasoningBackend, ReasoningRequest, request_prompt

_HUB_KEYS = ("token", "cache_dir", "local_files_only", "subfolder")


class TransformersReasoner(ReasoningBackend):
    """Generates ECR traces with a Qwen2-VL-family checkpoint through ``model.generate``.

    Requests are processed in batches of ``batch_size`` with left padding. ``do_sample=False`` is
    greedy, whatever the checkpoint's ``generation_config`` says; with ``do_sample=True`` (``temperature``,
    ``top_p``, ``top_k``; 0 = no top-k cut) the torch generator is seeded with ``seed`` before every
    batch, so a run is reproducible for the same batches. Every decoding setting is passed explicitly
    and reported by `describe` (``generation``). Traces are `GeneratedText`: text plus generated ids.
    ``hub_kwargs`` (``token``, ``cache_dir``, ``local_files_only``, ``subfolder``) locate the checkpoint.
    """

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int = 0,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str = "sdpa",
        hub_kwargs: dict[str, Any] | None = None,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        unknown = sorted(set(hub_kwargs or {}) - set(_HUB_KEYS))
        if unknown:
            raise ValueError(f"hub_kwargs keys {unknown} are not supported; use {_HUB_KEYS} (and revision=).")
        hub = {k: v for k, v in (hub_kwargs or {}).items() if v is not None}
        self.model_name, self.revision = str(model), revision
        self.max_new_tokens, self.do_sample = max_new_tokens, do_sample
        self.temperature, self.top_p, self.top_k, self.seed = temperature, top_p, top_k, seed
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(self.model_name, revision=revision, **hub)
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_name, revision=revision, dtype=dtype, attn_implementation=attn_implementation, **hub
        ).to(self.device)
        self.model.eval()
        self.name = f"transformers:{self.model_name}@{revision or 'local'}"

    def generation_settings(self) -> dict[str, Any]:
        """Every decoding setting ``generate`` gets (`generation_tte.decoding_settings`)."""
        if not self.do_sample:
            return decoding_settings()
        return decoding_settings(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)

    def describe(self) -> dict[str, Any]:
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed} if self.do_sample else {}
        return {
            "backend": "transformers",
            "model": self.model_name,
            "revision": self.revision,
            "prompt_version": PROMPT_VERSION,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            **sampling,
            "generation": self.generation_settings(),
            "eos_token_id": self.model.generation_config.eos_token_id,
        }

    def processor_inputs(self, requests: Sequence[ReasoningRequest]):
        """Left-padded processor outputs for ``requests`` (prompt text, images, video frames)."""
        prompts = [request_prompt(self.processor, r) for r in requests]
        images = [img for r in requests for img in r.images]
        videos = [list(r.video) for r in requests if r.video]
        kwargs: dict[str, Any] = {"text": prompts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
        return self.processor(**kwargs).to(self.device)

    @torch.no_grad()
    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            outputs.extend(self._generate_batch(requests[start : start + self.batch_size]))
        return outputs

    def _generate_batch(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        inputs = self.processor_inputs(requests)
        if self.do_sample:
            torch.manual_seed(self.seed)
        sequences = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.generation_settings())
        generated = sequences[:, inputs["input_ids"].shape[1] :]
        ids = [_until_end(row.tolist(), self.model.generation_config.eos_token_id) for row in generated]
        # Special tokens (end of turn, padding) are dropped; <think> tags are plain text in Qwen vocabularies.
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [GeneratedText(text, row) for text, row in zip(texts, ids)]


def _until_end(ids: list[int], end: int | list[int] | None) -> list[int]:
    """A row's generated ids before its first end token (the rest is padding of a finished row)."""
    ends = set(end if isinstance(end, (list, tuple)) else [end])
    for position, token in enumerate(ids):
        if token in ends:
            return ids[:position]
    return ids

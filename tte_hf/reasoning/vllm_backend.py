"""Reasoner on vLLM's offline engine (GPU): ``LLM.generate`` with images, tensor parallel, stable ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest, request_prompt


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "The vllm reasoner needs vLLM: `pip install 'tte-hf[vllm]'` (CUDA GPU only); on a CPU machine use "
            "backend='transformers' or an OpenAI-compatible server (backend='openai')."
        ) from err
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "The vllm reasoner needs a CUDA GPU and none is visible; use backend='transformers' on CPU or "
            "backend='openai' to reach a vLLM server elsewhere."
        )
    return vllm


class VLLMReasoner(ReasoningBackend):
    """Generates ECR traces with ``vllm.LLM``.

    The prompt is rendered by the checkpoint's own processor (`tte_hf.models.tte.inputs.render_prompt`), so the
    embedder later reads exactly this sequence. ``generation_config="vllm"`` makes vLLM ignore the
    checkpoint's ``generation_config.json`` defaults: the sampling set here is the sampling used.
    Each image gets the multimodal UUID ``"{item_id}/image{k}"`` (video ``"{item_id}/video"``), so
    vLLM's multimodal cache reuses work for repeated items without hashing pixels again.
    """

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        tensor_parallel_size: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        max_images_per_prompt: int = 1,
        max_model_len: int | None = 8192,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
    ):
        vllm = _import_vllm()
        from transformers import AutoProcessor

        self.model_name, self.revision = str(model), revision
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.tensor_parallel_size = tensor_parallel_size
        self.processor = AutoProcessor.from_pretrained(self.model_name, revision=revision)
        self.llm = vllm.LLM(
            model=self.model_name,
            revision=revision,
            tensor_parallel_size=tensor_parallel_size,
            generation_config="vllm",
            seed=seed,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            limit_mm_per_prompt={"image": max_images_per_prompt, "video": 1},
            **(engine_kwargs or {}),
        )
        self.sampling = vllm.SamplingParams(
            max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, skip_special_tokens=True
        )
        self.name = f"vllm:{self.model_name}@{revision or 'local'}"

    def describe(self) -> dict[str, Any]:
        return self._sampling_description("vllm", self.model_name)

    def engine_prompt(self, request: ReasoningRequest) -> dict[str, Any]:
        """vLLM's prompt dict for ``request``: text, ``multi_modal_data`` and ``multi_modal_uuids``."""
        prompt: dict[str, Any] = {"prompt": request_prompt(self.processor, request)}
        data: dict[str, Any] = {}
        uuids: dict[str, Any] = {}
        if request.images:
            data["image"] = list(request.images)
            uuids["image"] = [f"{request.item_id}/image{k}" for k in range(len(request.images))]
        if request.video:
            import numpy as np

            data["video"] = np.stack([np.asarray(frame.convert("RGB")) for frame in request.video])
            uuids["video"] = f"{request.item_id}/video"
        if data:
            prompt["multi_modal_data"] = data
            if request.item_id is not None:  # without a stable id vLLM hashes the pixels itself
                prompt["multi_modal_uuids"] = uuids
        return prompt

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        if not requests:
            return []
        results = self.llm.generate([self.engine_prompt(r) for r in requests], self.sampling, use_tqdm=False)
        return [result.outputs[0].text for result in results]

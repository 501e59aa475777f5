"""An embedding engine on vLLM's pooling runner (GPU) for a ``tte-hf export --vllm`` folder.

`VLLMEmbedder` has the two methods `evaluate` calls (``encode_query`` / ``encode_document``) and
feeds vLLM exactly the sequences the transformers path embeds: the TTE generation prompt (built by
`tte_hf.models.tte.inputs`, rendered by the folder's own processor) + the ECR trace as the assistant turn + the
end token. vLLM's LAST pooling + normalisation, which the export configures, give the vectors.
Traces come from the inputs (``"reasoning"``, e.g. ``--ecr`` files) or from a reasoning backend
(`tte_hf.reasoning`, e.g. `VLLMReasoner` on a generation engine: vLLM runs one runner per engine).
vLLM is imported on first use; without it or without a CUDA GPU the error says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.tte.ecr import parse_ecr
from ..models.tte.inputs import build_messages, embedder_system_prompt, embedder_text, render_prompt


def import_vllm():
    """``vllm``, or an error saying what it needs (the extra, a CUDA GPU) and what to use instead."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "--engine vllm needs vLLM and a CUDA GPU: `pip install 'tte-hf[vllm]'` on a GPU machine; on a CPU "
            "machine evaluate with the default sentence-transformers engine."
        ) from err
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "--engine vllm needs a CUDA GPU and none is visible; evaluate with the default sentence-transformers "
            "engine on CPU."
        )
    return vllm


class VLLMEmbedder:
    """TTE embeddings from vLLM's pooling runner.

    Args:
        model: a folder (or repo id) written by ``tte-hf export --vllm``.
        reasoner: a `tte_hf.reasoning` backend writing traces for inputs without ``"reasoning"``
            (``None``: inputs are embedded with the traces they carry, or none).
        query_reasoning / document_reasoning: which sides the reasoner runs for.
        prompts: instructions per side (``{"query": ...}``), as sentence-transformers prompts;
            default: the folder's ``config_sentence_transformers.json``.
        system_prompt: system message of sequences without a trace (``None``: the template's).
        reasoning_task: the ECR task prompt used as system message of sequences with a trace.
        trace_mode: ``"full"`` or ``"final"`` (see ``ecr.parse_ecr``), for reasoner outputs.
        engine_kwargs: more ``vllm.LLM`` arguments (``max_model_len``, ``gpu_memory_utilization``, ...).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        revision: str | None = None,
        reasoner: Any = None,
        query_reasoning: bool = True,
        document_reasoning: bool = False,
        prompts: dict[str, str] | None = None,
        system_prompt: str | None = None,
        reasoning_task: str = "generic",
        trace_mode: str = "full",
        dtype: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
    ):
        from transformers import AutoProcessor

        self.model_name, self.revision = str(model), revision
        self.processor = AutoProcessor.from_pretrained(self.model_name, revision=revision)
        self.reasoner = reasoner
        self.query_reasoning, self.document_reasoning = query_reasoning, document_reasoning
        self.prompts = self._saved_prompts() if prompts is None else dict(prompts)
        self.system_prompt, self.reasoning_task, self.trace_mode = system_prompt, reasoning_task, trace_mode
        parse_ecr("").for_embedder(trace_mode)  # validates the mode early
        self.dtype = dtype
        self.engine_kwargs = dict(engine_kwargs or {})
        self._llm = None

    def _saved_prompts(self) -> dict[str, str]:
        path = Path(self.model_name) / "config_sentence_transformers.json"
        return dict(json.loads(path.read_text()).get("prompts") or {}) if path.is_file() else {}

    @property
    def llm(self):
        """The ``vllm.LLM`` pooling engine, started on first use."""
        if self._llm is None:
            vllm = import_vllm()
            from .distributed import launched_world_size

            options: dict[str, Any] = {}
            if launched_world_size() > 1:  # one engine per torchrun process; the runner shards the data
                options = {"distributed_executor_backend": "external_launcher"}
            self._llm = vllm.LLM(
                model=self.model_name,
                revision=self.revision,
                runner="pooling",
                dtype=self.dtype,
                **options,
                **self.engine_kwargs,
            )
        return self._llm

    def eval_fingerprint(self) -> dict[str, str]:
        """What determines the vectors (the resume key of `evaluate`): weights, dtype, sequence settings."""
        from ..models.tte.fingerprints import files_digest, json_digest

        folder = Path(self.model_name)
        weights = (
            files_digest(folder.glob("*.safetensors"))[:16] if folder.is_dir() else f"{self.model_name}@{self.revision}"
        )
        describe = getattr(self.reasoner, "describe", None)
        settings = {
            "prompts": self.prompts,
            "system_prompt": self.system_prompt,
            "reasoning_task": self.reasoning_task,
            "trace_mode": self.trace_mode,
            "query_reasoning": self.query_reasoning,
            "document_reasoning": self.document_reasoning,
            "reasoner": describe() if callable(describe) else None,
            "pooling": [p.read_text() for p in sorted(folder.glob("*_Pooling/config.json"))],
        }
        return {"weights": weights, "dtype": self.dtype, "module_config": json_digest(settings)}

    # --- inputs -> vLLM prompts ---------------------------------------------------------------------

    @staticmethod
    def _parts(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"text": value}
        if isinstance(value, dict):
            return value
        return {"image": value}  # a PIL image

    def _traces(self, parts: list[dict[str, Any]], side: str, instruction: str | None) -> list[str | None]:
        traces = [p.get("reasoning") for p in parts]
        wanted = self.query_reasoning if side == "query" else self.document_reasoning
        todo = [i for i, trace in enumerate(traces) if trace is None] if wanted and self.reasoner else []
        if todo:
            from ..models.tte.reasoner_base import ReasoningRequest

            requests = [
                ReasoningRequest(
                    text=parts[i].get("text"),
                    images=(parts[i]["image"],) if parts[i].get("image") is not None else (),
                    video=tuple(parts[i]["video"]) if parts[i].get("video") is not None else None,
                    instruction=instruction,
                    task=self.reasoning_task,
                )
                for i in todo
            ]
            for i, raw in zip(todo, self.reasoner.generate(requests)):
                traces[i] = parse_ecr(raw).for_embedder(self.trace_mode)
        return traces

    def engine_inputs(self, inputs: Sequence[Any], side: str = "query") -> list[dict[str, Any]]:
        """vLLM prompt dicts (``prompt`` + ``multi_modal_data``) for ``inputs``: text, PIL image, or
        ``{"text", "image", "video", "reasoning"}`` dicts as `materialize` writes them."""
        instruction = self.prompts.get(side)
        parts = [self._parts(value) for value in inputs]
        traces = self._traces(parts, side, instruction)
        requests = []
        for part, trace in zip(parts, traces):
            image, video = part.get("image"), part.get("video")
            system = embedder_system_prompt(self.reasoning_task, trace is not None, self.system_prompt)
            messages = build_messages(part.get("text"), int(image is not None), video is not None, instruction, system)
            request: dict[str, Any] = {"prompt": embedder_text(render_prompt(self.processor, messages), trace)}
            data: dict[str, Any] = {}
            if image is not None:
                data["image"] = image.convert("RGB")
            if video is not None:
                import numpy as np

                data["video"] = np.stack([np.asarray(frame.convert("RGB")) for frame in video])
            if data:
                request["multi_modal_data"] = data
            requests.append(request)
        return requests

    # --- the two methods `evaluate` calls ----------------------------------------------------------

    def _encode(self, inputs: Sequence[Any], side: str):
        import torch

        if not inputs:
            return torch.empty(0, 0)
        outputs = self.llm.embed(self.engine_inputs(inputs, side), use_tqdm=False)
        return torch.tensor([output.outputs.embedding for output in outputs], dtype=torch.float32)

    def encode_query(self, inputs: Sequence[Any], **kwargs):
        """Query vectors (L2-normalised by the exported pooling config); ST-style kwargs are ignored."""
        return self._encode(inputs, "query")

    def encode_document(self, inputs: Sequence[Any], **kwargs):
        """Document vectors (see `encode_query`)."""
        return self._encode(inputs, "document")

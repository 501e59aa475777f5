"""A baseline embedding model (VLM2Vec-V2, GME, Qwen3-VL-Embedding) fed through its input profile.

`ProfileEncoder` has the `runner.EncoderModel` methods; `evaluate` hands it `input_formats.ProfileItem`
inputs instead of sentence-transformers inputs. Each item is processed on its own (no padding), as
the references' per-item processing gives: the embedding is the hidden state of the last token,
L2-normalised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .input_formats import (
    GME,
    INPUT_FORMATS,
    PROCESSOR_PIXELS,
    QWEN3_VL_EMBEDDING,
    TTE,
    VLM2VEC,
    ProfileItem,
    check_input_format,
    qwen3_messages,
    reference_image,
    reference_text,
)

GME_MAX_LENGTH = 1800  # gme_inference.GmeQwen2VL's max_length (truncation)


def _local_json(path: Path, name: str) -> dict:
    file = path / name
    return json.loads(file.read_text()) if file.is_file() else {}


def detect_input_format(model_name_or_path: str) -> str:
    """The input profile a checkpoint needs, from its name and (for a local folder) its config files.

    A TTE model (``tte_*`` config or a TTE sentence-transformers module) is ``tte``; a name with
    ``VLM2Vec`` is ``vlm2vec``; ``gme-Qwen2-VL`` is ``gme``; a Qwen3-VL config (or name) with
    ``Embedding`` is ``qwen3-vl-embedding``. Anything else is ``tte`` (the model builds its own input).
    """
    name = str(model_name_or_path).rstrip("/").lower()
    folder = Path(model_name_or_path)
    config = _local_json(folder, "config.json")
    modules = json.dumps(_local_json(folder, "modules.json")).lower()
    if str(config.get("model_type", "")).startswith("tte") or "tte" in modules:
        return TTE
    if "vlm2vec" in name:
        return VLM2VEC
    if "gme-qwen2-vl" in name:
        return GME
    if "qwen3-vl-embedding" in name or (config.get("model_type") == "qwen3_vl" and "embedding" in name):
        return QWEN3_VL_EMBEDDING
    return TTE


class ProfileEncoder:
    """``model_name_or_path`` (a Qwen2-VL / Qwen3-VL checkpoint) embedding what ``input_format`` builds."""

    def __init__(
        self,
        model_name_or_path: str,
        input_format: str,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        **hub_kwargs: Any,
    ) -> None:
        from transformers import AutoModel, AutoProcessor

        if check_input_format(input_format) == TTE:
            raise ValueError(f"input format 'tte' needs no profile; choose one of {INPUT_FORMATS[1:]}.")
        self.input_format = input_format
        self.name = str(model_name_or_path)
        self.processor = AutoProcessor.from_pretrained(model_name_or_path, **hub_kwargs)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)  # VLM2Vec: bfloat16
        self.model = AutoModel.from_pretrained(model_name_or_path, dtype=dtype, **hub_kwargs).to(self.device).eval()

    def model_inputs(self, item: ProfileItem):
        """The processor's outputs (``input_ids``, ``pixel_values``, ``image_grid_thw``) for one item."""
        image = reference_image(item.image, self.input_format) if item.image is not None else None
        if self.input_format == QWEN3_VL_EMBEDDING:
            text = self.processor.apply_chat_template(qwen3_messages(item), tokenize=False, add_generation_prompt=True)
        else:
            text = reference_text(item, self.input_format)
        kwargs: dict[str, Any] = {"images": [image]} if image is not None else {}
        if self.input_format == GME:
            kwargs |= {"truncation": True, "max_length": GME_MAX_LENGTH}
        return self.processor(text=[text], size=PROCESSOR_PIXELS[self.input_format], return_tensors="pt", **kwargs)

    @torch.no_grad()
    def _encode(self, inputs: list, **_: Any) -> torch.Tensor:
        vectors = []
        for item in inputs:
            if not isinstance(item, ProfileItem):
                raise TypeError(f"{type(self).__name__} embeds input_formats.ProfileItem inputs, got {type(item).__name__}.")  # fmt: skip
            batch = self.model_inputs(item).to(self.device)
            hidden = self.model(**batch, return_dict=True).last_hidden_state
            vectors.append(torch.nn.functional.normalize(hidden[0, -1].float(), dim=-1))
        return torch.stack(vectors).cpu()

    def encode_query(self, inputs: list, **kwargs: Any) -> torch.Tensor:
        return self._encode(inputs, **kwargs)

    def encode_document(self, inputs: list, **kwargs: Any) -> torch.Tensor:
        return self._encode(inputs, **kwargs)

    def eval_fingerprint(self) -> dict[str, str]:
        """The resume key's parts (`fingerprint.model_fingerprint`): weights, dtype and the profile."""
        from .fingerprint import weights_digest

        dtypes = sorted({str(p.dtype) for p in self.model.parameters()})
        return {"weights": weights_digest(self.model), "dtype": ",".join(dtypes), "input_format": self.input_format}

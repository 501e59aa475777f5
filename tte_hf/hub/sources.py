"""What an export starts from: recognise a checkpoint's kind, check its pieces, load it (LoRA merged).

Everything here validates before anything is written, so a bad source fails with a clear message
and leaves no half-built repo folder behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.tte.configuration_tte import SUPPORTED_BACKBONES, resolve_reference

KINDS = ("embedder", "unified", "reasoner")
_TTE_MODEL_TYPES = {"tte_embedder": "embedder", "tte_unified": "unified"}
ADAPTER_CONFIG = "adapter_config.json"


class ExportError(ValueError):
    """A source that cannot be exported as asked; the message says which item and what to do."""


@dataclass(frozen=True)
class Source:
    """A checkpoint folder to export: its kind, where its weights/processor come from, LoRA or not."""

    path: Path
    kind: str
    config: dict[str, Any]
    adapter_base: str | None = None  # the base of a PEFT adapter folder (local path or repo id)

    @property
    def is_adapter(self) -> bool:
        return self.adapter_base is not None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON ({err}); {what} must be a JSON object.") from err


def _kind_of_config(config: dict[str, Any], where: str) -> str:
    model_type = config.get("model_type")
    if model_type in _TTE_MODEL_TYPES:
        return _TTE_MODEL_TYPES[model_type]
    architectures = config.get("architectures") or []
    if model_type in SUPPORTED_BACKBONES and any(a.endswith("ForConditionalGeneration") for a in architectures):
        return "reasoner"
    raise ExportError(
        f"{where} is not a TTE checkpoint: config.json has model_type={model_type!r}, architectures={architectures}. "
        f"Export a folder saved by TTEEmbedderModel / TTEUnifiedModel.save_pretrained, a reasoner saved as a "
        f"{'/'.join(SUPPORTED_BACKBONES)} ...ForConditionalGeneration, or a PEFT adapter folder of one of these."
    )


def resolve_config(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """config.json of a local folder or a Hub repo (online, or from the local cache when offline)."""
    local = Path(name_or_path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ExportError(f"{local} has no config.json; it is not a model checkpoint folder.")
        return _read_json(local / "config.json", "config.json")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(name_or_path, "config.json", revision=revision)
    except (HFValidationError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ExportError(
            f"{name_or_path!r} (revision {revision or 'main'}) does not resolve: it is not a local folder and its "
            f"config.json could not be fetched from the Hub or found in the local cache ({type(err).__name__}: "
            f"{err}). Give an existing path or repo id, check the revision, or log in for a private repo."
        ) from err
    return _read_json(Path(path), "config.json")


def inspect_source(path: str | Path, kind: str | None = None, adapter_base: str | None = None) -> Source:
    """Recognise what ``path`` holds and check that it can be exported as ``kind`` (inferred when None).

    For a LoRA adapter folder, ``adapter_base`` overrides the base named in ``adapter_config.json``
    (PEFT records none when the wrapped model was built in memory, e.g. ``TTEEmbedderModel.from_backbone``).
    """
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise ExportError(f"kind={kind!r} is not one of {KINDS}.")
    if not path.is_dir():
        raise ExportError(f"{path} is not a folder; export needs a checkpoint folder.")
    if (path / ADAPTER_CONFIG).is_file():
        adapter = _read_json(path / ADAPTER_CONFIG, ADAPTER_CONFIG)
        base = adapter_base or adapter.get("base_model_name_or_path")
        if not base:
            raise ExportError(
                f"{path / ADAPTER_CONFIG} names no base_model_name_or_path; pass adapter_base=/--adapter-base with "
                "the model the LoRA was trained on (a TTE checkpoint, or the plain VLM with kind='embedder')."
            )
        base_config = resolve_config(base)
        base_kind = _kind_of_config(base_config, f"the adapter's base {base!r}")
        if base_kind == "reasoner" and kind == "embedder":
            base_kind = "embedder"  # a LoRA trained on a TTEEmbedderModel wrapped around a plain VLM
        if kind is not None and kind != base_kind:
            raise ExportError(f"{path} is a LoRA adapter on a {base_kind} ({base!r}), not a {kind}.")
        return Source(path=path, kind=base_kind, config=base_config, adapter_base=base)
    if adapter_base is not None:
        raise ExportError(f"adapter_base was given but {path} has no {ADAPTER_CONFIG}; it is not a LoRA adapter.")
    if not (path / "config.json").is_file():
        raise ExportError(
            f"{path} is not a TTE checkpoint: it has neither config.json nor {ADAPTER_CONFIG}. "
            "Point export at the folder your training run saved."
        )
    config = _read_json(path / "config.json", "config.json")
    found = _kind_of_config(config, str(path))
    if kind is not None and kind != found:
        raise ExportError(f"{path} holds a {found} checkpoint (model_type={config.get('model_type')!r}), not a {kind}.")
    if found != "unified" and not any(path.glob("*.safetensors")):
        raise ExportError(f"{path} has a config.json but no *.safetensors weights; export needs the weights.")
    if config.get("backbone_name_or_path"):  # saved relative to the checkpoint's folder when local
        config["backbone_name_or_path"] = resolve_reference(config["backbone_name_or_path"], path)
    return Source(path=path, kind=found, config=config)


def find_processor_dir(source: Source, processor: str | Path | None = None) -> str:
    """Where the processor (tokenizer + image processor + chat template) is read from, checked."""
    candidates = [str(processor)] if processor else [str(source.path)]
    if processor is None and source.is_adapter:
        candidates.append(source.adapter_base)
    if processor is None and source.kind == "unified":
        backbone = source.config.get("backbone_name_or_path")
        if backbone:
            candidates.append(backbone)
    for candidate in candidates:
        local = Path(candidate)
        if local.is_dir():
            if (local / "processor_config.json").is_file() or (local / "preprocessor_config.json").is_file():
                if (local / "tokenizer_config.json").is_file():
                    return candidate
            continue
        try:
            from huggingface_hub import hf_hub_download

            hf_hub_download(candidate, "tokenizer_config.json")
            return candidate
        except Exception:  # noqa: BLE001 - any failure means "not here"; the error below lists all places
            continue
    raise ExportError(
        f"No processor found for {source.path} (looked in {candidates}): a repo needs the tokenizer, image "
        "processor and chat template. Pass processor=/--processor with the base model's folder or repo id."
    )


def load_processor(processor_dir: str):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(processor_dir)
    if getattr(processor, "chat_template", None) is None:
        raise ExportError(f"The processor in {processor_dir} has no chat template; the TTE input format needs one.")
    return processor


def _load_base_model(kind: str, name_or_path: str):
    from transformers import AutoModelForImageTextToText

    from ..models.tte.modeling_tte import TTEEmbedderModel, TTEUnifiedModel

    config = resolve_config(name_or_path)
    if config.get("model_type") == "tte_embedder":
        return TTEEmbedderModel.from_pretrained(name_or_path)
    if config.get("model_type") == "tte_unified":
        return TTEUnifiedModel.from_pretrained(name_or_path)
    if kind == "embedder":
        return TTEEmbedderModel.from_backbone(name_or_path)
    return AutoModelForImageTextToText.from_pretrained(name_or_path)


def _merged_adapter(source: Source, merge: bool):
    """Base model + LoRA; every adapter weight must land on a module of the base (else the merge is wrong)."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    base = _load_base_model(source.kind, source.adapter_base)
    peft_config = PeftConfig.from_pretrained(str(source.path))
    peft_model = get_peft_model(base, peft_config)
    result = set_peft_model_state_dict(peft_model, load_peft_weights(str(source.path)))
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ExportError(
            f"{len(unexpected)} LoRA weights of {source.path} match no module of the base {source.adapter_base!r} "
            f"(e.g. {unexpected[0]!r}); the adapter was trained on a different model or kind. Pass the right kind."
        )
    return peft_model.merge_and_unload().eval() if merge else peft_model.eval()


def load_model(source: Source, merge_lora: bool = True):
    """The model to export: the TTE model / reasoner, with a LoRA adapter merged unless told otherwise."""
    if source.is_adapter:
        return _merged_adapter(source, merge_lora)
    from transformers import AutoModelForImageTextToText

    from ..models.tte.modeling_tte import TTEEmbedderModel, TTEUnifiedModel

    loader = {
        "embedder": TTEEmbedderModel,
        "unified": TTEUnifiedModel,
        "reasoner": AutoModelForImageTextToText,
    }[source.kind]
    return loader.from_pretrained(str(source.path)).eval()

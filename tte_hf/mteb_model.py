"""A Think-Then-Embed sentence-transformers model as an `mteb` (2.x) encoder.

`TTEMtebModel` implements mteb's encoder protocol: ``encode`` receives a DataLoader of batched
text / image inputs, the task's metadata and whether the inputs are queries or documents. Queries go
through ``encode_query`` (the reasoner writes a trace first, by default), documents through
``encode_document``; the instruction is the model's ST prompt that mteb's own priority rules pick
(``"{task}-query"``, task name, ``"{task type}-query"``, task type, ``"query"``). ``think`` is passed
to every ``encode_query`` / ``encode_document`` call unchanged (``None`` = the model's own setting).

    import mteb
    from tte_hf.mteb_model import TTEMtebModel

    results = mteb.evaluate(TTEMtebModel("org/tte-2b"), mteb.get_tasks(tasks=["CIRRIT2IRetrieval"]))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("tte_hf.mteb_model needs the mteb package: pip install 'tte-hf[mteb]'") from err

import numpy as np

SIDES = ("query", "document")
PAPER_CITATION = """@inproceedings{tte2026,
  title     = {Think Then Embed: Generative Context Improves Multimodal Embedding},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2026},
  note      = {arXiv:2510.05014}
}"""


class TTEMtebModel(AbsEncoder):
    """An mteb encoder around a TTE `SentenceTransformer` (or a path / repo id to load one).

    Args:
        model: a loaded TTE sentence-transformers model, or a local folder / Hub repo id.
        revision: Hub revision when ``model`` is a repo id.
        device: device to load the model on.
        think: ``None`` (the model's setting: reason on queries), ``True``, ``False`` or any value the
            model's ``encode_query(..., think=)`` accepts (e.g. ``"auto"``); passed through unchanged.
        model_prompts: instructions by mteb key (task name, task type, ``"query"`` / ``"document"``, or
            ``"{key}-{query|document}"``); default: the ST model's own ``prompts``.
        untyped_side: the side of inputs mteb sends without a prompt type (classification,
            clustering, STS): ``"query"`` (default; the input is what is asked about, as in MMEB) or
            ``"document"``.
        task_map: optional mteb task type -> TTE reasoning task (e.g. ``{"ImageClassification":
            "classification"}``), set as each input's ``"task"``; default: the model's ``reasoning_task``.
        meta: a `ModelMeta` to use instead of the one built by `tte_model_meta`.
        model_kwargs: extra arguments for `SentenceTransformer` when ``model`` is a path.
    """

    def __init__(
        self,
        model: Any,
        revision: str | None = None,
        *,
        device: str | None = None,
        think: Any = None,
        model_prompts: Mapping[str, str] | None = None,
        untyped_side: str = "query",
        task_map: Mapping[str, str] | None = None,
        meta: ModelMeta | None = None,
        trust_remote_code: bool = True,
        **model_kwargs: Any,
    ) -> None:
        if untyped_side not in SIDES:
            raise ValueError(f"untyped_side={untyped_side!r}; use 'query' or 'document'.")
        if isinstance(model, (str, Path)):
            from sentence_transformers import SentenceTransformer

            name = str(model)
            model = SentenceTransformer(
                name, revision=revision, device=device, trust_remote_code=trust_remote_code, **model_kwargs
            )
        else:
            name = None
        hub = {"token": model_kwargs.get("token"), "cache_dir": model_kwargs.get("cache_folder")}
        for method in ("encode_query", "encode_document"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model {type(model).__name__} has no {method}(); pass a TTE SentenceTransformer.")
        self.model = model
        self.think = think
        self.untyped_side = untyped_side
        self.task_map = dict(task_map or {})
        # Not filtered by mteb's task registry: a key naming a locally defined task must still apply.
        self.model_prompts = {k: v for k, v in (model_prompts or getattr(model, "prompts", None) or {}).items() if v}
        self.mteb_model_meta = meta or tte_model_meta(model, name=name, revision=revision, hub_kwargs=hub)

    def _side(self, prompt_type: PromptType | None) -> PromptType:
        if prompt_type is None:
            return PromptType(self.untyped_side)
        return PromptType(prompt_type)

    def instruction(self, task_metadata: Any, prompt_type: PromptType | None) -> str | None:
        """The ST prompt mteb's priority rules pick for this task and side (``None``: the model's default)."""
        name = get_prompt_name(self.model_prompts, task_metadata, self._side(prompt_type))
        return self.model_prompts.get(name) if name and self.model_prompts else None

    def _inputs(self, batch: Mapping[str, Any], task: str | None) -> list[Any]:
        texts, images = batch.get("text"), batch.get("image")
        size = len(texts) if texts is not None else len(images) if images is not None else 0
        if size == 0:
            raise ValueError(f"mteb batch has neither 'text' nor 'image' (keys: {sorted(batch)}).")
        items = []
        for i in range(size):
            item: dict[str, Any] = {}
            text = texts[i] if texts is not None else None
            if isinstance(text, str) and text.strip():
                item["text"] = text
            if images is not None and images[i] is not None:
                item["image"] = images[i]
            if task:
                item["task"] = task
            items.append(item["text"] if list(item) == ["text"] else item)
        return items

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every batch of ``inputs`` with ``encode_query`` or ``encode_document``; float32 rows."""
        side = self._side(prompt_type)
        encode = self.model.encode_query if side == PromptType.query else self.model.encode_document
        prompt = self.instruction(task_metadata, prompt_type)
        task = self.task_map.get(task_metadata.type)
        options = {"batch_size": kwargs.get("batch_size", 32), "show_progress_bar": False}
        if self.think is not None:
            options["think"] = self.think
        if prompt is not None:
            options["prompt"] = prompt
        chunks = []
        for batch in inputs:
            vectors = encode(self._inputs(batch, task), convert_to_numpy=True, **options)
            chunks.append(np.asarray(vectors, dtype=np.float32))
        if not chunks:
            return np.zeros((0, self.model.get_embedding_dimension() or 0), dtype=np.float32)
        return np.concatenate(chunks, axis=0)


def _read_json(path: Path | None) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _card_data(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data.to_dict()
    except Exception:  # a card without YAML front matter is no metadata, not an error
        return {}


def _repo_file(name: str | None, filename: str, revision: str | None, hub_kwargs: Mapping[str, Any]) -> Path | None:
    """``filename`` of a local folder, or of a Hub repo (its HF cache copy, or a download): ``None`` if absent."""
    if not name:
        return None
    if Path(name).is_dir():
        return Path(name) / filename
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, filename, revision=revision, **hub_kwargs))
    except Exception:  # no such file, not a repo id, offline without it: the metadata is optional
        return None


def tte_model_meta(
    model: Any, *, name: str | None = None, revision: str | None = None, hub_kwargs: Mapping[str, Any] | None = None
) -> ModelMeta:
    """An mteb `ModelMeta` for a TTE ST model, from the model and (when ``name`` is a local folder, e.g.
    a ``tte-hf export`` output, or a Hub repo id of one) its model card and ``tte_export.json``: license,
    base model, training datasets, parameter count, embedding size. ``hub_kwargs`` (``token``,
    ``cache_dir``) reach the Hub downloads."""
    folder = Path(name) if name and Path(name).is_dir() else None
    card = _card_data(_repo_file(name, "README.md", revision, hub_kwargs or {}))
    manifest = _read_json(_repo_file(name, "tte_export.json", revision, hub_kwargs or {}))
    module = model[0] if len(model) else None
    dim = model.get_embedding_dimension()
    n_parameters = sum(p.numel() for p in model.parameters())
    datasets = card.get("datasets")
    if isinstance(datasets, str):
        datasets = [datasets]
    base_model = card.get("base_model")
    if isinstance(base_model, list):
        base_model = base_model[0] if base_model else None
    reasoner = manifest.get("reasoner") or {}
    similarity = getattr(model, "similarity_fn_name", None) or "cosine"
    meta_name = (name if name and not folder else None) or card.get("model_name") or (folder and folder.name)
    if not meta_name or "/" not in str(meta_name):
        meta_name = f"local/{meta_name or 'tte-model'}"
    experiment = {
        "query_reasoning": getattr(module, "query_reasoning", None),
        "document_reasoning": getattr(module, "document_reasoning", None),
        "reasoner": reasoner.get("name_or_path") or getattr(module, "reasoner_name_or_path", None),
    }
    return ModelMeta(
        loader=TTEMtebModel,
        loader_kwargs={},
        name=str(meta_name),
        revision=revision or "no_revision_available",
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=n_parameters,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1),
        max_tokens=None,
        embed_dim=dim,
        license=card.get("license"),
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["Sentence Transformers", "PyTorch"],
        similarity_fn_name=ScoringFunction.from_str(similarity),
        use_instructions=True,
        training_datasets=set(datasets) if datasets else None,
        adapted_from=base_model,
        modalities=["text", "image"],
        citation=PAPER_CITATION,
        experiment_kwargs={k: v for k, v in experiment.items() if v is not None} or None,
    )

"""Assemble a Hub repo folder from a trained checkpoint: weights (LoRA merged), processor, remote code,
sentence-transformers files, reasoner reference and model card.

Every check runs before anything is written; the folder is built in a staging directory next to the
target and moved into place only when complete, so a failed export never leaves a half-built repo.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..models.remote_code import copy_remote_code
from .cards import (
    CARD_TEMPLATES,
    PAPER_URL,
    build_card_data,
    load_eval_report,
    load_recipe,
    render_model_card,
)
from .sources import ExportError, Source, find_processor_dir, inspect_source, load_model, load_processor, resolve_config

MANIFEST_NAME = "tte_export.json"
SELF_REASONER = "self"


@dataclass(frozen=True)
class ReasonerRef:
    """Which reasoner writes the ECR at query time: a repo id (+ revision), a local path, or ``"self"``
    (the unified model's own backbone)."""

    name_or_path: str
    revision: str | None = None

    @property
    def is_self(self) -> bool:
        return self.name_or_path == SELF_REASONER


@dataclass
class CardInfo:
    """What the model card says beyond what the checkpoint itself knows."""

    repo_id: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    license: str = "apache-2.0"
    tags: list[str] = field(default_factory=list)
    eval_report: str | Path | None = None
    recipe: str | Path | None = None


def resolve_reasoner(kind: str, reasoner: str | None, revision: str | None) -> ReasonerRef | None:
    """Check the reasoner reference resolves (local folder, Hub, or local Hub cache) and is a generator."""
    if kind == "reasoner":
        if reasoner is not None:
            raise ExportError("A reasoner export takes no reasoner reference (it *is* the reasoner).")
        return None
    if kind == "unified":
        if reasoner not in (None, SELF_REASONER):
            raise ExportError(
                f"A unified model reasons with its own backbone; reasoner={reasoner!r} cannot apply. "
                "Leave it unset (or 'self')."
            )
        return ReasonerRef(SELF_REASONER)
    if reasoner is None:
        return None
    config = resolve_config(reasoner, revision)
    architectures = config.get("architectures") or []
    if not any(a.endswith(("ForConditionalGeneration", "ForCausalLM")) for a in architectures):
        raise ExportError(
            f"reasoner {reasoner!r} is not a generative model (architectures={architectures}); name the "
            "reasoner VLM checkpoint (a ...ForConditionalGeneration) that writes the ECR traces."
        )
    if Path(reasoner).is_dir():
        warnings.warn(
            f"reasoner {reasoner!r} is a local folder: the exported repo will name a path its users do not have. "
            "Push the reasoner to the Hub and pass its repo id (and revision) for a repo others can use.",
            stacklevel=3,
        )
    return ReasonerRef(reasoner, revision)


def check_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"{output_dir} exists and is not a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ExportError(f"{output_dir} exists and is not empty; choose another folder or pass overwrite/--overwrite.")


@contextmanager
def staged_output(output_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``output_dir`` only if the block completes."""
    check_output(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(staging, output_dir)


def save_processor(processor, target: Path) -> None:
    # Generation (reasoner, unified model) needs left padding; last-token pooling handles either side.
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs["padding_side"] = "left"  # what save_pretrained writes to tokenizer_config.json
    processor.save_pretrained(str(target))


def _write_sentence_transformers(target: Path, reasoner: ReasonerRef | None, st_options: dict[str, Any]) -> None:
    """The ST files come from the ST module's own builder (``tte_hf.sentence_transformers``), built on the
    staged repo folder so whatever it records is relative to the repo."""
    try:
        from ..sentence_transformers import build_sentence_transformer as builder
    except ImportError as err:
        raise ExportError(
            "Writing the sentence-transformers files needs tte_hf.sentence_transformers, which this install "
            "lacks; export with sentence_transformers=False (--no-sentence-transformers) or update tte-hf."
        ) from err
    kwargs = dict(st_options)
    accepted = inspect.signature(builder).parameters
    if reasoner is not None and not reasoner.is_self:  # a unified model's ST module reasons with the model itself
        kwargs["reasoner"] = reasoner.name_or_path
        if reasoner.revision:
            if "reasoner_revision" not in accepted:
                raise ExportError("This sentence-transformers builder cannot pin a reasoner revision; omit it.")
            kwargs["reasoner_revision"] = reasoner.revision
    unknown = [k for k in kwargs if k not in accepted and not any(p.kind == p.VAR_KEYWORD for p in accepted.values())]
    if unknown:
        raise ExportError(f"The sentence-transformers builder does not take {unknown}.")
    model = builder(str(target), **kwargs)
    model.save(str(target))
    for name in ("modules.json", "config_sentence_transformers.json"):
        if not (target / name).is_file():
            raise ExportError(f"The sentence-transformers builder did not write {name}; the repo would not load.")


def _card_context(source: Source, model, reasoner: ReasonerRef | None, info: CardInfo, extra: dict[str, Any]):
    report = load_eval_report(info.eval_report) if info.eval_report else None
    return report, {
        "repo_id": info.repo_id or f"your-org/{source.path.name}",
        "kind": source.kind,
        "base_model": info.base_model,
        "datasets": info.datasets,
        "reasoner": asdict(reasoner) if reasoner else None,
        "config": model.config.to_dict() if hasattr(model, "config") else {},
        "recipe": load_recipe(info.recipe),
        "report": report,
        "paper_url": PAPER_URL,
        **extra,
    }


def card_tags(kind: str, info: CardInfo, *more: str) -> list[str]:
    base = ["tte-hf", "think-then-embed", "multimodal", "qwen2-vl"]
    base += {"embedder": ["embeddings", "sentence-similarity"], "unified": ["embeddings"], "reasoner": ["reasoning"]}[
        kind
    ]
    return list(dict.fromkeys([*base, *more, *info.tags]))


def write_card(
    target: Path,
    template: str,
    *,
    source: Source,
    model,
    reasoner,
    info: CardInfo,
    library_name: str,
    pipeline_tag: str,
    tags: list[str],
    extra: dict[str, Any] | None = None,
) -> None:
    report, context = _card_context(source, model, reasoner, info, extra or {})
    card_data = build_card_data(
        kind=source.kind,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        base_model=info.base_model,
        datasets=info.datasets,
        license=info.license,
        tags=tags,
        model_name=(info.repo_id or source.path.name).split("/")[-1],
        report=report,
    )
    render_model_card(template, card_data=card_data, context=context).save(str(target / "README.md"))


def write_manifest(target: Path, source: Source, reasoner: ReasonerRef | None, **fields: Any) -> None:
    from .. import __version__

    manifest = {
        "tte_hf_version": __version__,
        "kind": source.kind,
        "source": source.path.name,  # the folder name only: no training-machine paths in a public repo
        "reasoner": asdict(reasoner) if reasoner else None,
        **fields,
    }
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def prevalidate_card_inputs(info: CardInfo) -> None:
    """Read the card inputs once before any model is loaded, so a bad file fails fast."""
    load_recipe(info.recipe)
    if info.eval_report:
        load_eval_report(info.eval_report)


def export_model(
    source: str | Path,
    output_dir: str | Path,
    *,
    kind: str | None = None,
    processor: str | Path | None = None,
    adapter_base: str | None = None,
    reasoner: str | None = None,
    reasoner_revision: str | None = None,
    merge_lora: bool = True,
    sentence_transformers: bool = True,
    query_reasoning: bool | str = True,
    document_reasoning: bool = False,
    prompts: dict[str, str] | None = None,
    card: CardInfo | None = None,
    overwrite: bool = False,
    gate: str | Path | None = None,
) -> Path:
    """Build a drop-in Hub repo folder for a TTE embedder, unified model or student reasoner.

    ``adapter_base`` names the base of a LoRA adapter folder when its ``adapter_config.json`` does not.
    ``reasoner`` (+ ``reasoner_revision``) is the model the sentence-transformers pipeline calls at query
    time for an embedder; a unified model reasons with itself. ``merge_lora=False`` keeps a LoRA adapter
    as an adapter (``adapter_config.json`` + weights) instead of merging it. ``gate``: a folder with a
    reasoning gate (``tte-hf train-gate`` output; default: ``source`` itself when it has one): shipped
    with the repo, queries default to ``think="auto"`` (unless ``query_reasoning`` is False) and the
    card says how the gate was trained. Returns ``output_dir``.
    """
    output_dir = Path(output_dir)
    # Every input is read and checked before any model is loaded: a bad one fails in seconds.
    src = inspect_source(source, kind, adapter_base)
    gate_files, gate_info = find_gate_files(Path(source) if gate is None else Path(gate), required=gate is not None)
    if gate_files and src.kind == "reasoner":
        raise ExportError("A reasoner export takes no reasoning gate; export the embedder or unified model with it.")
    if gate_files and query_reasoning is True:
        query_reasoning = "auto"
    processor_dir = find_processor_dir(src, processor)
    ref = resolve_reasoner(src.kind, reasoner, reasoner_revision)
    info = _checked_card_info(card or CardInfo(), src)
    check_output(output_dir, overwrite)

    model = load_model(src, merge_lora=merge_lora)
    processor_obj = load_processor(processor_dir)
    adapter_only = src.is_adapter and not merge_lora
    st_options = {"query_reasoning": query_reasoning, "document_reasoning": document_reasoning, "prompts": prompts}
    with staged_output(output_dir, overwrite) as staging:
        head_only = _save_weights(staging, src, model, processor_obj, adapter_only)
        if src.kind != "reasoner" and not adapter_only:
            _write_loading_code(staging, gate_files, ref, st_options if sentence_transformers else None)
        has_st = (staging / "modules.json").is_file()
        _write_card(staging, src, model, ref, info, adapter_only, has_st, {**st_options, "gate": gate_info})
        write_manifest(
            staging,
            src,
            ref,
            merged_lora=src.is_adapter and merge_lora,
            adapter_only=adapter_only,
            head_only=head_only,
        )
    return output_dir


def _checked_card_info(info: CardInfo, src: Source) -> CardInfo:
    """``info`` with its files read once (a bad one fails before any model loads) and ``base_model``
    defaulting to the source's Hub base."""
    prevalidate_card_inputs(info)
    if info.base_model is None:
        info = replace(info, base_model=hub_id(src.adapter_base) or hub_id(src.config.get("backbone_name_or_path")))
    return info


def _save_weights(staging: Path, src: Source, model, processor, adapter_only: bool) -> bool:
    """Save the model and processor into ``staging``; returns whether only a unified model's head was
    saved (a head-only checkpoint on a Hub backbone references the backbone instead of shipping a
    second copy of it)."""
    head_only = False
    if src.kind == "unified" and not adapter_only:
        # A repo id or nothing, never a path on the training machine.
        model.config.backbone_name_or_path = hub_id(model.config.backbone_name_or_path)
        head_only = bool(getattr(model, "loaded_head_only", False) and model.config.backbone_name_or_path)
    if head_only:
        model.save_head(str(staging))
    else:
        model.save_pretrained(str(staging))
    save_processor(processor, staging)
    return head_only


def _write_loading_code(
    staging: Path, gate_files: list[Path], reasoner: ReasonerRef | None, st_options: dict[str, Any] | None
) -> None:
    """The remote code, the gate and (``st_options`` not None) the sentence-transformers files."""
    copy_remote_code(staging)
    for file in gate_files:  # before the ST files: the module loads the gate found next to the weights
        shutil.copyfile(file, staging / file.name)
    if st_options is not None:
        options = {k: v for k, v in st_options.items() if k != "prompts" or v}
        _write_sentence_transformers(staging, reasoner, options)


def _write_card(
    staging: Path,
    src: Source,
    model,
    reasoner: ReasonerRef | None,
    info: CardInfo,
    adapter_only: bool,
    has_st: bool,
    options: dict[str, Any],
) -> None:
    """The model card: library and pipeline from what the folder holds; ``options``: the query and
    document reasoning, prompts and gate info the card describes."""
    library = "peft" if adapter_only else ("sentence-transformers" if has_st else "transformers")
    write_card(
        staging,
        CARD_TEMPLATES[src.kind],
        source=src,
        model=model,
        reasoner=reasoner,
        info=info,
        library_name=library,
        pipeline_tag="image-text-to-text" if src.kind == "reasoner" else "feature-extraction",
        tags=card_tags(src.kind, info, *(["sentence-transformers"] if has_st else [])),
        extra={
            "has_sentence_transformers": has_st,
            "adapter_only": adapter_only,
            "query_reasoning": options["query_reasoning"],
            "document_reasoning": options["document_reasoning"],
            "prompts": options["prompts"] or {},
            "gate": options["gate"],
        },
    )


def find_gate_files(folder: Path, required: bool = False) -> tuple[list[Path], dict[str, Any] | None]:
    """The reasoning gate's files in ``folder`` and its training info, or ``([], None)``."""
    from ..models.tte.gate_tte import GATE_CONFIG, GATE_WEIGHTS
    from ..training.train_gate import TRADEOFF_PLOT

    files = [folder / GATE_CONFIG, folder / GATE_WEIGHTS]
    if not files[0].is_file():
        if required:
            raise ExportError(f"gate={folder} has no {GATE_CONFIG}; pass the output_dir of `tte-hf train-gate`.")
        return [], None
    if not files[1].is_file():
        raise ExportError(f"{folder} has {GATE_CONFIG} but no {GATE_WEIGHTS}; re-run `tte-hf train-gate`.")
    config = json.loads(files[0].read_text())
    info = {"threshold": config.get("threshold"), "feature": config.get("feature"), **config.get("info", {})}
    info["curve_table"] = _curve_table(info.get("curve") or [])
    plot = folder / TRADEOFF_PLOT
    return files + ([plot] if plot.is_file() else []), info


def _curve_table(curve: list[dict[str, Any]], rows: int = 11) -> list[dict[str, Any]]:
    """The trade-off curve's points nearest to 0, 10, ..., 100% reasoner calls (`gate_fit.thin_curve`),
    fewest calls first, for the card."""
    from dataclasses import asdict

    from ..training.gate_fit import CurvePoint, thin_curve

    return [asdict(point) for point in reversed(thin_curve([CurvePoint(**p) for p in curve], rows))]


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` if it looks like a Hub repo id rather than a local path, else None."""
    if name_or_path and not Path(name_or_path).exists() and name_or_path.count("/") == 1:
        return name_or_path
    return None

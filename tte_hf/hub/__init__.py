"""Hub export and push: drop-in repo folders (embedder, unified, reasoner, vLLM), model cards, upload."""

from .cards import EvalReport, TaskScore, eval_results, load_eval_report, render_model_card
from .export import CardInfo, ReasonerRef, export_model
from .push import push_folder
from .sources import ExportError, inspect_source
from .vllm_export import export_vllm

__all__ = [
    "CardInfo",
    "EvalReport",
    "ExportError",
    "ReasonerRef",
    "TaskScore",
    "eval_results",
    "export_model",
    "export_vllm",
    "inspect_source",
    "load_eval_report",
    "push_folder",
    "render_model_card",
]

"""MMEB evaluation: task registry, loaders, metrics, resumable runner and reports."""

from .data import TaskDataError, load_task
from .input_formats import INPUT_FORMATS
from .metrics import PROTOCOLS, rank_candidates, score_rankings
from .runner import default_model_id, evaluate, evaluate_task, load_ecr_files
from .tasks import BENCHMARKS, Benchmark, TaskSpec, get_benchmark, load_task_file

__all__ = [
    "BENCHMARKS",
    "INPUT_FORMATS",
    "PROTOCOLS",
    "Benchmark",
    "TaskDataError",
    "TaskSpec",
    "default_model_id",
    "evaluate",
    "evaluate_task",
    "get_benchmark",
    "load_ecr_files",
    "load_task",
    "load_task_file",
    "rank_candidates",
    "score_rankings",
]

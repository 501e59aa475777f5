"""`tte-hf demo`: every stage of Think-Then-Embed, for real, on tiny models and a CPU.

Stages (each skipped when its output already exists, so an interrupted demo resumes):
data → tiny base VLM → teacher ECR (`generate_ecr`) → student SFT (TRL) → student ECR →
embedders trained without ECR / with teacher ECR / with student ECR → unified head on the student
→ evaluation of the held-out compositions (`evaluate`) → table + chart.

A seed gives the same table on every run: threads pinned, deterministic kernels, every RNG seeded
(`runtime`). The console shows one bar per stage; library logs and warnings go to ``demo.log``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .data import write_benchmark
from .runtime import deterministic, pin_threads, quiet_console, restore_threads
from .teacher import SceneTeacher

TASK = "vqa"  # the ECR task prompt: reason towards an answer
EVAL_TASK_NAME = "held-out-compositions"
MODELS = ("baseline", "tte-teacher", "tte-student", "tte-unified")


@dataclass
class DemoSettings:
    """Sizes and schedules; ``quick`` shrinks everything for a smoke run."""

    seed: int = 0
    num_train: int = 1024
    num_test: int = 256
    num_candidates: int = 16
    hidden_size: int = 64
    num_layers: int = 4
    # Colour detectors in the tiny VLM's patch embedding (`build_tiny_vlm(colour_patches=True)`): with
    # a plain random tower every wrong student trace named the right object in the wrong colour.
    colour_patches: bool = True
    sft_epochs: int = 12
    sft_learning_rate: float = 2e-3
    embed_epochs: int = 3
    embed_learning_rate: float = 1e-3
    # Small batches give the contrastive embedders twice the steps in the same time; at 32 the
    # student embedder was still short of its traces' accuracy after 3 epochs on some seeds.
    embed_batch_size: int = 16
    head_layers: int = 3
    head_epochs: int = 30
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    max_trace_tokens: int = 40

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        # A smoke run of every stage; its numbers mean nothing. The SFT is most of its time, but with 4
        # epochs instead of 8 the student wrote an empty trace on seed 3 and the evaluation refused it.
        return cls(seed=seed, num_train=256, num_test=32, sft_epochs=8, embed_epochs=1, head_epochs=1)


def _done(path: Path) -> bool:
    return path.exists()


def _train_rows(data_dir: Path, ecr: Path | None) -> list[dict[str, Any]]:
    spec = {"name": "demo", "path": str(data_dir / "train.jsonl"), "image_root": str(data_dir), "task": TASK}
    if ecr is not None:
        spec["query_ecr"] = str(ecr)
    return [spec]


def _common_training(
    settings: DemoSettings, output_dir: Path, epochs: int, learning_rate: float, batch_size: int | None = None
) -> dict[str, Any]:
    return {
        "dtype": "float32",
        "attn_implementation": "sdpa",
        "bf16": False,
        "use_cpu": True,
        "per_device_train_batch_size": batch_size or settings.batch_size,
        "num_train_epochs": epochs,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "activation_checkpointing": False,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        "seed": settings.seed,
        "output_dir": str(output_dir),
        "disable_tqdm": True,  # the demo's own bar replaces the Trainer's (see `TrainingBar`)
    }


def write_test_queries(data_dir: Path) -> Path:
    """The held-out queries in the package's JSONL, keyed as the evaluation looks traces up."""
    path = data_dir / "test_queries.jsonl"
    with open(data_dir / "test.jsonl") as src, open(path, "w") as dst:
        for row in map(json.loads, src):
            item = {
                "id": f"{EVAL_TASK_NAME}/{row['id']}",
                "text": row["qry_text"],
                "instruction": row["qry_inst"],
                "images": [row["qry_img_path"]],
                "task": TASK,
            }
            dst.write(json.dumps(item) + "\n")
    return path


class Demo:
    """Runs the stages into ``output``; every artefact stays there."""

    def __init__(self, output: str | os.PathLike, settings: DemoSettings):
        self.out = Path(output)
        self.settings = settings
        self.data = self.out / "data"
        self.models = self.out / "models"
        self.ecr = self.out / "ecr"
        self.timings: dict[str, float] = {}

    def stage(self, name: str, fn, *args, **kwargs):
        self._stage_name = name
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 1)
        return result

    def _bar(self, **kwargs):
        from .progress import stage_bar

        return stage_bar(self._stage_name, **kwargs)

    def _training_bar(self):
        from .progress import TrainingBar

        return TrainingBar(self._stage_name)

    # --- stages -------------------------------------------------------------------------------
    def make_data(self) -> None:
        with self._bar(total=1, unit="step") as bar:
            if not _done(self.data / "test_queries.jsonl"):
                s = self.settings
                write_benchmark(
                    self.data, seed=s.seed, num_train=s.num_train, num_test=s.num_test, num_candidates=s.num_candidates
                )
                write_test_queries(self.data)
            bar.update()

    def make_base(self) -> None:
        from ..testing import build_tiny_vlm

        with self._bar(total=1, unit="step") as bar:
            if not _done(self.models / "base" / "config.json"):
                s = self.settings
                build_tiny_vlm(
                    self.models / "base",
                    seed=s.seed,
                    hidden_size=s.hidden_size,
                    num_layers=s.num_layers,
                    colour_patches=s.colour_patches,
                )
            bar.update()

    def generate(self, name: str, source: Path, fmt: str, reasoner=None, reasoner_config=None) -> Path:
        from ..reasoning import generate_ecr

        output = self.ecr / f"{name}.jsonl"
        config = {
            "input": str(source),
            "input_format": fmt,
            "image_root": str(self.data),
            "task": TASK,
            "output": str(output),
            "chunk_size": 64,
            "reasoner": reasoner_config or {},
            "progress": False,  # the stage's bar counts the splits
        }
        generate_ecr(config, reasoner=reasoner)
        return output

    def _generate_splits(self, prefix: str, reasoner=None, reasoner_config=None) -> None:
        splits = [("train", self.data / "train.jsonl", "mmeb"), ("test", self.data / "test_queries.jsonl", "tte")]
        with self._bar(total=len(splits), unit="split") as bar:
            for split, source, fmt in splits:
                self.generate(f"{prefix}-{split}", source, fmt, reasoner=reasoner, reasoner_config=reasoner_config)
                bar.update()

    def teacher_ecr(self) -> None:
        self._generate_splits("teacher", reasoner=SceneTeacher(self.data / "scenes.jsonl"))

    def train_student(self) -> None:
        from ..training import train_reasoner

        target = self.models / "student"
        if _done(target / "config.json"):
            return
        s = self.settings
        train_reasoner(
            {
                "model_name_or_path": str(self.models / "base"),
                "datasets": _train_rows(self.data, self.ecr / "teacher-train.jsonl"),
                "side": "query",
                "freeze_vision_tower": True,
                "use_peft": False,
                "assistant_only_loss": True,
                "max_length": None,
                **_common_training(s, target, s.sft_epochs, s.sft_learning_rate),
            },
            progress=self._training_bar(),
        )

    def student_ecr(self) -> None:
        config = {
            "backend": "transformers",
            "model": str(self.models / "student"),
            "max_new_tokens": self.settings.max_trace_tokens,
            "do_sample": False,
            "batch_size": 64,
        }
        self._generate_splits("student", reasoner_config=config)

    def train_embedder(self, name: str, ecr: Path | None) -> None:
        from ..training import train_embedder

        target = self.models / f"embedder-{name}"
        if _done(target / "config.json"):
            return
        s = self.settings
        train_embedder(
            {
                "model_name_or_path": str(self.models / "base"),
                "use_peft": False,
                "datasets": _train_rows(self.data, ecr),
                "temperature": 0.02,
                "gradcache_chunk_size": None,
                **_common_training(s, target, s.embed_epochs, s.embed_learning_rate, s.embed_batch_size),
            },
            progress=self._training_bar(),
        )

    def train_unified(self) -> None:
        from ..training import train_head

        target = self.models / "unified"
        if _done(target / "config.json"):
            return
        s = self.settings
        train_head(
            {
                "reasoner_name_or_path": str(self.models / "student"),
                "head_type": "mhsa",  # the paper's best head: the reasoner's last n layers, copied
                "head_num_layers": s.head_layers,
                # The student's own generations (`raw` + `raw_token_ids`, written with the transformers
                # backend and the same trace cap as at query time): the head trains on the exact tokens
                # `generate_and_embed` embeds, not on the parsed `ecr` text.
                "datasets": _train_rows(self.data, self.ecr / "student-train.jsonl"),
                # The reasoner is frozen, so its hidden states are computed once and reused every epoch.
                "hidden_cache_dir": str(self.out / "cache" / "unified-hidden-states"),
                "temperature": 0.02,
                "gradcache_chunk_size": None,
                **_common_training(s, target, s.head_epochs, s.head_learning_rate),
            },
            progress=self._training_bar(),
        )

    def evaluate(self, name: str) -> dict[str, Any]:
        from ..evaluation import TaskSpec, evaluate
        from ..sentence_transformers import build_sentence_transformer

        task = TaskSpec(
            name=EVAL_TASK_NAME,
            modality="image",
            meta_task="VQA",
            data_files=str((self.data / "test.jsonl").resolve()),
            image_root=str(self.data.resolve()),
        )
        reasoning = {"reasoning_task": TASK, "max_new_tokens": self.settings.max_trace_tokens}
        ecr_files: list[Path] = []
        if name == "baseline":
            model = build_sentence_transformer(str(self.models / "embedder-none"), query_reasoning=False)
        elif name == "tte-teacher":
            model = build_sentence_transformer(str(self.models / "embedder-teacher"), query_reasoning=False)
            ecr_files = [self.ecr / "teacher-test.jsonl"]  # the teacher reads scenes, so its traces are precomputed
        elif name == "tte-student":  # the student reasons live, at query time
            model = build_sentence_transformer(
                str(self.models / "embedder-student"), reasoner=str(self.models / "student"), **reasoning
            )
        else:  # one model: generates the trace and embeds from the same hidden states
            model = build_sentence_transformer(str(self.models / "unified"), **reasoning)
        report = evaluate(
            model,
            [task],
            self.out / "eval" / name,
            ecr_files=ecr_files,
            require_ecr=bool(ecr_files),
            model_id=name,
            batch_size=64,
            chart=False,
            show_progress_bar=False,  # the stage's bar counts the models
        )
        return report

    # --- all ----------------------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], Any]]]:
        return [
            ("synthetic benchmark (MMEB formats)", self.make_data),
            ("tiny base VLM", self.make_base),
            ("teacher ECR (generate-ecr)", self.teacher_ecr),
            ("student reasoner SFT (TRL)", self.train_student),
            ("student ECR (generate-ecr, transformers)", self.student_ecr),
            ("embedder without ECR", partial(self.train_embedder, "none", None)),
            ("embedder with teacher ECR", partial(self.train_embedder, "teacher", self.ecr / "teacher-train.jsonl")),
            ("embedder with student ECR", partial(self.train_embedder, "student", self.ecr / "student-train.jsonl")),
            ("unified head on the frozen student", self.train_unified),
            ("evaluation on held-out compositions", self._evaluate_all),
        ]

    def run(self) -> dict[str, Any]:
        """Every stage under the demo's run-time settings (see `runtime`); returns the summary."""
        from .report import console_summary

        self.out.mkdir(parents=True, exist_ok=True)
        threads = pin_threads()
        try:
            with quiet_console(self.out / "demo.log"), deterministic(self.settings.seed):
                stages = self.stages()
                for number, (name, fn) in enumerate(stages, 1):
                    reports = self.stage(f"{number:2d}/{len(stages)} {name}", fn)
                summary = self.write_report(reports)  # the last stage's result: the evaluation reports
        finally:
            restore_threads(threads)
        print(console_summary(summary, self.out), flush=True)
        return summary

    def _evaluate_all(self) -> dict[str, dict[str, Any]]:
        reports = {}
        with self._bar(total=len(MODELS), unit="model") as bar:
            for name in MODELS:
                reports[name] = self.evaluate(name)
                bar.set_postfix({name: f"{reports[name]['overall']:.1f}"})
                bar.update()
        return reports

    def write_report(self, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from .report import write_demo_report

        return write_demo_report(self.out, reports, asdict(self.settings), self.timings)


def run_demo(output: str | os.PathLike = "tte-demo", *, seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Run the whole demo into ``output`` and return its summary (also in ``output/report.json``)."""
    settings = DemoSettings.quick(seed) if quick else DemoSettings(seed=seed)
    return Demo(output, settings).run()

"""`tte-hf demo`: every stage of Think-Then-Embed, for real, on tiny models and a CPU.

Stages (each skipped when its output already exists, so an interrupted demo resumes):
data → tiny base VLM → teacher ECR (`generate_ecr`) → student SFT (TRL) → student ECR →
embedders trained without ECR / with teacher ECR / with student ECR → unified head on the student
→ reasoning gates (`train_gate`, ``think="auto"``) → evaluation of the held-out compositions
(`evaluate`) → table + chart.

The student embedder and the unified head train on rows with and without traces (``no_trace_copies``
of the plain queries), so each serves both modes; saved as sentence-transformers models
(``models/tte-student``, ``models/tte-unified``) with their gates, they are evaluated with ``think`` never / always / auto on the held-out riddles plus plain
queries that need no trace.

A seed gives the same table on every run: threads pinned, deterministic kernels, every RNG seeded
(`runtime`). The console shows one bar per stage; library logs and warnings go to ``demo.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .data import write_benchmark
from .report import PICTURE_TASK, PLAIN_TASK, RIDDLE_TASK
from .runtime import deterministic, pin_threads, quiet_console, restore_threads, user_cpu_seconds
from .teacher import SceneTeacher

TASK = "vqa"  # the ECR task prompt: reason towards an answer
# Task names: the riddles (the paper's claims are checked there) and plain queries of the same
# compositions (no trace needed).
EVAL_TASK_NAME, PLAIN_TASK_NAME = RIDDLE_TASK, PLAIN_TASK
PICTURE_TASK_NAME = PICTURE_TASK
MODELS = ("baseline", "tte-teacher", "tte-student", "tte-unified")
RL_MODEL = "tte-student-rl"  # with --rl: the GRPO-tuned student and an embedder on its traces
#: the models evaluated in every ``think`` mode, on riddles + plain queries (the "mixed" set)
ADAPTIVE_MODELS = ("tte-student", "tte-unified")
MODES = {"never": False, "always": True, "auto": "auto"}
SETTINGS_FILE = "settings.json"  # the settings a folder's stages were run with (`Demo._check_settings`)


#: the settings files shipped in the package (``tte_hf/demo/settings/<name>.yaml``)
SETTINGS_DIR = "settings"
DEFAULT_SETTINGS, QUICK_SETTINGS = "default", "quick"


@dataclass
class DemoSettings:
    """Sizes and schedules of every stage. The values live in ``tte_hf/demo/settings/default.yaml``
    (each with a comment saying what it does); `load` reads them, `quick` the smoke run's."""

    seed: int
    num_train: int
    train_plain_fraction: float
    num_dev: int
    dev_compositions: int
    num_objects: int
    num_test: int
    num_test_plain: int
    num_picture_train: int
    num_picture_dev: int
    num_picture_test: int
    picture_background: str
    num_candidates: int
    hidden_size: int
    num_layers: int
    colour_patches: bool
    sft_epochs: int
    sft_learning_rate: float
    embed_epochs: int
    embed_learning_rate: float
    embed_batch_size: int
    head_layers: int
    head_epochs: int
    head_learning_rate: float
    head_batch_size: int
    head_lr_schedule: str
    no_trace_copies: float
    batch_size: int
    max_trace_tokens: int
    rl: bool
    rl_steps: int
    rl_prompts: int
    rl_samples: int
    rl_learning_rate: float

    @property
    def models(self) -> tuple[str, ...]:
        """The main table's rows."""
        return (*MODELS, RL_MODEL) if self.rl else MODELS

    @classmethod
    def load(cls, settings: str | os.PathLike = DEFAULT_SETTINGS, **overrides: Any) -> DemoSettings:
        """``default.yaml``'s settings, with those of ``settings`` (a shipped file's name, e.g. ``"quick"``,
        or a YAML file's path) and then ``overrides`` in their place."""
        values = _read_settings(_shipped_settings(DEFAULT_SETTINGS), DEFAULT_SETTINGS)
        if os.fspath(settings) != DEFAULT_SETTINGS:
            path = Path(settings)
            text = (
                path.read_text(encoding="utf8")
                if path.suffix in (".yaml", ".yml")
                else _shipped_settings(str(settings))
            )
            values |= _read_settings(text, str(settings))
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"DemoSettings has no setting(s) {unknown}.")
        return cls(**{**values, **overrides})

    @classmethod
    def quick(cls, seed: int = 0, rl: bool = False) -> DemoSettings:
        """The smoke run's settings (``quick.yaml``): every stage, numbers meaningless."""
        return cls.load(QUICK_SETTINGS, seed=seed, rl=rl)


def _shipped_settings(name: str) -> str:
    from importlib.resources import files

    resource = files(__package__) / SETTINGS_DIR / f"{name}.yaml"
    if not resource.is_file():
        shipped = sorted(p.name[: -len(".yaml")] for p in (files(__package__) / SETTINGS_DIR).iterdir())
        raise FileNotFoundError(f"no demo settings {name!r}: the package ships {shipped}, or pass a .yaml path.")
    return resource.read_text(encoding="utf8")


def _read_settings(text: str, source: str) -> dict[str, Any]:
    """The settings of one YAML file; a key that is no setting is an error naming the file and key."""
    import yaml

    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"demo settings {source}: expected a mapping of setting: value, got {type(values).__name__}.")
    unknown = sorted(set(values) - set(DemoSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"demo settings {source}: unknown setting(s) {unknown}.")
    return values


def _done(path: Path) -> bool:
    return path.exists()


def _gate_is_current(folder: Path, recipe: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a gate fitted with ``recipe`` (defaults filled in as `train_gate` fills them)."""
    from ..training.train_gate import GateArguments, recorded_recipe

    config = folder / "gate_config.json"
    if not config.exists():
        return False
    recorded = json.loads(config.read_text()).get("info", {}).get("recipe")
    return recorded == json.loads(json.dumps(recorded_recipe(GateArguments(**recipe))))


def _train_rows(data_dir: Path, ecr: Path | None, split: str = "train", **options: Any) -> list[dict[str, Any]]:
    """The recipe's ``datasets``: one split of the demo's MMEB-train rows, with ``ecr`` traces if any and
    the `DatasetSpec` ``options`` that are set (``trace_dropout``, ``no_trace_copies``, ``hard_negatives``)."""
    spec = {
        "name": f"demo-{split}",
        "path": str(data_dir / f"{split}.jsonl"),
        "image_root": str(data_dir),
        "task": TASK,
    }
    if ecr is not None:
        spec["query_ecr"] = str(ecr)
    spec.update({key: value for key, value in options.items() if value})
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
    """The held-out riddles in the package's JSONL, keyed as the evaluation looks traces up (the
    teacher's test traces are precomputed: it reads scenes)."""
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

    def __init__(self, output: str | os.PathLike, settings: DemoSettings, quick: bool = False):
        self.out = Path(output)
        self.settings = settings
        self.quick = quick  # a smoke run: the report says its numbers mean nothing and checks no claim
        self.data = self.out / "data"
        self.models = self.out / "models"
        self.ecr = self.out / "ecr"
        self.timings: dict[str, float] = {}  # wall seconds per stage
        self.user_cpu: dict[str, float] = {}  # user-CPU seconds per stage: steal time on a VM leaves it be

    def stage(self, name: str, fn, *args, **kwargs):
        self._stage_name = name
        start, cpu = time.perf_counter(), user_cpu_seconds()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.user_cpu[name] = round(user_cpu_seconds() - cpu, 1)
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
                    self.data,
                    seed=s.seed,
                    num_train=s.num_train,
                    num_test=s.num_test,
                    num_candidates=s.num_candidates,
                    train_plain_fraction=s.train_plain_fraction,
                    num_dev=s.num_dev,
                    dev_compositions=s.dev_compositions,
                    num_objects=s.num_objects,
                    num_test_plain=s.num_test_plain,
                    num_picture_train=s.num_picture_train,
                    num_picture_dev=s.num_picture_dev,
                    num_picture_test=s.num_picture_test,
                    picture_background=s.picture_background,
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

    def _generate_splits(self, prefix: str, splits, reasoner=None, reasoner_config=None) -> None:
        with self._bar(total=len(splits), unit="split") as bar:
            for split, source, fmt in splits:
                self.generate(f"{prefix}-{split}", source, fmt, reasoner=reasoner, reasoner_config=reasoner_config)
                bar.update()

    def teacher_ecr(self) -> None:
        splits = [("train", self.data / "train.jsonl", "mmeb"), ("test", self.data / "test_queries.jsonl", "tte")]
        self._generate_splits("teacher", splits, reasoner=SceneTeacher(self.data / "scenes.jsonl"))

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

    def _reasoner_config(self, model: str) -> dict[str, Any]:
        """`generate-ecr` settings for a demo reasoner: greedy, the same trace cap as at query time."""
        return {
            "backend": "transformers",
            "model": str(self.models / model),
            "max_new_tokens": self.settings.max_trace_tokens,
            "do_sample": False,
            "batch_size": 64,
        }

    @property
    def _plain_copies(self) -> dict[str, Any]:
        """The `DatasetSpec` option that also trains the plain queries (rows the data marks
        ``trace_optional``) without their trace."""
        return {"no_trace_copies": self.settings.no_trace_copies}

    @property
    def _reasoning(self) -> dict[str, Any]:
        """How a demo ST model reasons at query time (`build_sentence_transformer` arguments)."""
        return {"reasoning_task": TASK, "max_new_tokens": self.settings.max_trace_tokens}

    def student_ecr(self) -> None:
        # Train: what the student embedder and the unified head learn from; dev: what the gates learn
        # from. Test queries are reasoned about live, at evaluation time.
        splits = [("train", self.data / "train.jsonl", "mmeb"), ("dev", self.data / "dev.jsonl", "mmeb")]
        self._generate_splits("student", splits, reasoner_config=self._reasoner_config("student"))

    def train_embedder(self, name: str, ecr: Path | None, no_trace_copies: bool = False) -> None:
        from ..training import train_embedder

        target = self.models / f"embedder-{name}"
        if _done(target / "config.json"):
            return
        s = self.settings
        train_embedder(
            {
                "model_name_or_path": str(self.models / "base"),
                "use_peft": False,
                "datasets": _train_rows(self.data, ecr, **(self._plain_copies if no_trace_copies else {})),
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
                "datasets": _train_rows(self.data, self.ecr / "student-train.jsonl", **self._plain_copies),
                # The reasoner is frozen, so its hidden states are computed once and reused every epoch.
                "hidden_cache_dir": str(self.out / "cache" / "unified-hidden-states"),
                "temperature": 0.02,
                "gradcache_chunk_size": None,
                **_common_training(s, target, s.head_epochs, s.head_learning_rate, s.head_batch_size),
                "lr_scheduler_type": s.head_lr_schedule,
            },
            progress=self._training_bar(),
        )

    def train_gates(self) -> None:
        """Save the student and unified models as sentence-transformers folders, then fit each one's
        reasoning gate on the dev split (compositions neither model trained on) with `train_gate`. A
        folder's gate is refitted when its recorded recipe is not this demo's (a resumed folder from an
        older default), and that model's evaluations, which read the old gate, are removed."""
        from ..sentence_transformers import build_sentence_transformer, save_sentence_transformer
        from ..training.train_gate import train_gate

        reasoning = self._reasoning
        sources = {
            "tte-student": lambda: build_sentence_transformer(
                str(self.models / "embedder-student"), reasoner=str(self.models / "student"), **reasoning
            ),
            "tte-unified": lambda: build_sentence_transformer(str(self.models / "unified"), **reasoning),
        }
        with self._bar(total=len(ADAPTIVE_MODELS), unit="gate") as bar:
            for name in ADAPTIVE_MODELS:
                folder = self.models / name
                recipe = {
                    "model_name_or_path": str(folder),
                    "output_dir": str(folder),
                    # Ranks among the dev rows' answers *and* hard negatives: the 8 dev answers alone
                    # differ in colour and object at once, so no query would need its trace.
                    "datasets": _train_rows(
                        self.data, self.ecr / "student-dev.jsonl", split="dev", hard_negatives=True
                    ),
                    "batch_size": 64,
                    "device": "cpu",
                    "seed": self.settings.seed,
                }
                if not _gate_is_current(folder, recipe):
                    for mode in MODES:
                        shutil.rmtree(self.out / "eval" / f"{name}-{mode}", ignore_errors=True)
                    save_sentence_transformer(sources[name](), folder)
                    train_gate(recipe)
                bar.update()

    def train_student_rl(self) -> None:
        """GRPO (`train_reasoner_rl`) on the SFT student over the dev rows: no teacher traces, only each
        query's answer, scored against every target of the dev rows (their answers and hard negatives, which
        include training compositions) by the teacher-trace embedder, which learned from correct traces."""
        from ..training import train_reasoner_rl

        target = self.models / "student-rl"
        if _done(target / "config.json"):
            return
        s = self.settings
        training = _common_training(s, target, 1, s.rl_learning_rate, s.rl_prompts * s.rl_samples)
        del training["num_train_epochs"]
        train_reasoner_rl(
            {
                "model_name_or_path": str(self.models / "student"),
                "embedder_name_or_path": str(self.models / "embedder-teacher"),
                "datasets": _train_rows(self.data, None, split="dev", hard_negatives=True),
                "rewards": ["retrieval", "ecr_format"],
                "reward_weights": [1.0, 0.2],
                "reward_candidates": "dataset",
                "freeze_vision_tower": True,
                "use_peft": False,
                "num_generations": s.rl_samples,
                "max_completion_length": s.max_trace_tokens,
                "temperature": 1.0,
                "beta": 0.0,  # no reference model: DAPO / Dr. GRPO practice, and half the compute
                # Most groups of this student are all right with nearly equal rewards: scaling by their
                # tiny standard deviation would turn that noise into full-size updates.
                "scale_rewards": "none",
                "max_steps": s.rl_steps,
                **training,
            },
            progress=self._training_bar(),
        )

    def student_rl_ecr(self) -> None:
        splits = [("train", self.data / "train.jsonl", "mmeb")]
        self._generate_splits("student-rl", splits, reasoner_config=self._reasoner_config("student-rl"))

    def _task(self, name: str, file: str) -> Any:
        from ..evaluation import TaskSpec

        return TaskSpec(
            name=name,
            modality="image",
            meta_task="VQA",
            data_files=str((self.data / file).resolve()),
            image_root=str(self.data.resolve()),
        )

    def evaluate(self, name: str, mode: str = "always", pictures: bool = False) -> dict[str, Any]:
        """Evaluate one model (``mode``: the ``think`` setting of the two adaptive models) on the riddles,
        and the adaptive models on the plain queries too (``pictures``: an adaptive model on the picture
        task alone). The report gains ``reasoner_calls``: the inputs the reasoner wrote a trace for
        (fresh model, so its ECR cache holds exactly those)."""
        from sentence_transformers import SentenceTransformer

        from ..evaluation import evaluate
        from ..sentence_transformers import build_sentence_transformer

        ecr_files: list[Path] = []
        tasks = [self._task(EVAL_TASK_NAME, "test.jsonl")]
        if name == "baseline":
            model = build_sentence_transformer(str(self.models / "embedder-none"), query_reasoning=False)
        elif name == RL_MODEL:  # the GRPO student reasons live, read by the embedder trained on its traces
            model = build_sentence_transformer(
                str(self.models / "embedder-student-rl"),
                reasoner=str(self.models / "student-rl"),
                **self._reasoning,
            )
        elif name == "tte-teacher":
            model = build_sentence_transformer(str(self.models / "embedder-teacher"), query_reasoning=False)
            ecr_files = [self.ecr / "teacher-test.jsonl"]  # the teacher reads scenes, so its traces are precomputed
        else:  # the saved model with its gate: the student reasons live, the unified model in the same pass
            model = SentenceTransformer(str(self.models / name), trust_remote_code=True, device="cpu")
            model[0].query_reasoning = MODES[mode]
            if pictures:
                tasks = [self._task(PICTURE_TASK_NAME, "test_picture.jsonl")]
            else:
                tasks.append(self._task(PLAIN_TASK_NAME, "test_plain.jsonl"))
            name = f"{name}-{mode}" + ("-pictures" if pictures else "")
        output = self.out / "eval" / name
        calls_file = output / "reasoner_calls.json"
        if not calls_file.exists() and output.exists():
            shutil.rmtree(output)  # an interrupted evaluation: its call count would miss what it reused
        report = evaluate(
            model,
            tasks,
            output,
            ecr_files=ecr_files,
            require_ecr=bool(ecr_files),
            model_id=name,
            batch_size=64,
            chart=False,
            show_progress_bar=False,  # the stage's bar counts the models
        )
        if not calls_file.exists():
            calls_file.write_text(json.dumps({"reasoner_calls": len(getattr(model[0], "ecr_cache", {}))}))
        return {**report, **json.loads(calls_file.read_text())}

    # --- all ----------------------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], Any]]]:
        rl = [
            ("GRPO on the student (TRL, --rl)", self.train_student_rl),
            ("GRPO student ECR (generate-ecr)", self.student_rl_ecr),
            (
                "embedder with GRPO-student ECR",
                partial(self.train_embedder, "student-rl", self.ecr / "student-rl-train.jsonl", True),
            ),
        ]
        return [
            ("synthetic benchmark (MMEB formats)", self.make_data),
            ("tiny base VLM", self.make_base),
            ("teacher ECR (generate-ecr)", self.teacher_ecr),
            ("student reasoner SFT (TRL)", self.train_student),
            ("student ECR (generate-ecr, transformers)", self.student_ecr),
            ("embedder without ECR", partial(self.train_embedder, "none", None)),
            ("embedder with teacher ECR", partial(self.train_embedder, "teacher", self.ecr / "teacher-train.jsonl")),
            (
                "embedder with student ECR",
                partial(self.train_embedder, "student", self.ecr / "student-train.jsonl", True),
            ),
            ("unified head on the frozen student", self.train_unified),
            ("reasoning gates (train-gate)", self.train_gates),
            *(rl if self.settings.rl else []),
            ("evaluation on held-out compositions", self._evaluate_all),
        ]

    def run(self) -> dict[str, Any]:
        """Every stage under the demo's run-time settings (see `runtime`); returns the summary."""
        from .report import console_summary

        self.out.mkdir(parents=True, exist_ok=True)
        self._check_settings()
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

    def _check_settings(self) -> None:
        """Record the settings in a new folder; refuse to resume one made with others, whose stages
        would otherwise be reused as they are (the stages resume by what exists, not by its settings)."""
        path = self.out / SETTINGS_FILE
        settings = json.loads(json.dumps(asdict(self.settings)))
        if not path.exists():
            path.write_text(json.dumps(settings, indent=2))
            return
        before = json.loads(path.read_text())
        differing = [f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(before) | set(settings)) if before.get(k) != settings.get(k)]  # fmt: skip
        if differing:
            raise ValueError(
                f"{self.out} holds a demo run with other settings ({'; '.join(differing)}); resuming would "
                "reuse its stages. Choose another --output, or delete that folder to start over."
            )

    def _evaluations(self) -> list[tuple[str, str]]:
        plain = [(name, "always") for name in self.settings.models if name not in ADAPTIVE_MODELS]
        return plain + [(name, mode) for name in ADAPTIVE_MODELS for mode in MODES]

    def _evaluate_all(self) -> dict[str, dict[str, Any]]:
        """The evaluation reports: ``"<model>"`` or ``"<model>/<mode>"``, and the picture task's as
        ``"<model>/<mode>/pictures"`` when the data has one."""
        reports = {}
        evaluations = self._evaluations()
        pictures = [(n, m) for n, m in evaluations if n in ADAPTIVE_MODELS] if self.settings.num_picture_test else []
        with self._bar(total=len(evaluations) + len(pictures), unit="model") as bar:
            for name, mode in evaluations:
                key = name if name not in ADAPTIVE_MODELS else f"{name}/{mode}"
                reports[key] = self.evaluate(name, mode)
                bar.set_postfix({key: f"{reports[key]['tasks'][EVAL_TASK_NAME]['main_score']:.1f}"})
                bar.update()
            for name, mode in pictures:
                reports[f"{name}/{mode}/pictures"] = self.evaluate(name, mode, pictures=True)
                bar.update()
        return reports

    def write_report(self, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from .report import write_demo_report

        return write_demo_report(
            self.out, reports, asdict(self.settings), self.timings, smoke=self.quick, user_cpu=self.user_cpu
        )


def run_demo(
    output: str | os.PathLike = "tte-demo",
    *,
    seed: int = 0,
    quick: bool = False,
    rl: bool = False,
    settings: str | os.PathLike = DEFAULT_SETTINGS,
) -> dict[str, Any]:
    """Run the whole demo into ``output`` and return its summary (also in ``output/report.json``);
    ``rl`` adds the GRPO stages and the GRPO student's row; ``settings``: a shipped settings file's
    name or a YAML path (`DemoSettings.load`); ``quick`` uses ``quick.yaml`` instead."""
    chosen = DemoSettings.quick(seed, rl=rl) if quick else DemoSettings.load(settings, seed=seed, rl=rl)
    return Demo(output, chosen, quick=quick).run()

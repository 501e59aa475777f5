"""MMEB task definitions: which data, which fields, which metric, and how scores are grouped.

The task lists, Hub paths, splits and ranking modes are copied from TIGER-AI-Lab/VLM2Vec
(`experiments/public/eval/{image,video,visdoc}.yaml`, `src/constant/dataset_hf_path.py`,
`experiments/report_score_v2.py`). Local task definitions (a JSONL file or a BEIR folder on disk) use
the same `TaskSpec`, so a custom benchmark is scored and reported exactly like MMEB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# Row formats a task can be stored in.
MMEB_FORMAT = "mmeb"  # one row per query with its own candidate list, gold first (MMEB_Test_Instruct)
BEIR_FORMAT = "beir"  # queries / corpus / qrels (ViDoRe, VisRAG, ViDoSeek, MMLongBench)
VLM2VEC_VIDEO_FORMAT = "vlm2vec-video"  # VLM2Vec's per-dataset video rows + MMEB-V2's pre-extracted frames
DATA_FORMATS = (MMEB_FORMAT, BEIR_FORMAT, VLM2VEC_VIDEO_FORMAT)

HIT_AT_1 = "hit@1"
NDCG_AT_5 = "ndcg@5"
MODALITIES = ("image", "video", "visdoc")

MMEB_IMAGE_HF_PATH = "ziyjiang/MMEB_Test_Instruct"
# VLM2Vec's visual-document and video instructions (src/data/eval_dataset/{vidore,msrvtt}_dataset.py).
VISDOC_QUERY_INSTRUCTION = "Find a document image that matches the given query:"
VISDOC_DOCUMENT_INSTRUCTION = "Understand the content of the provided document image."


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task.

    ``ranking`` is ``"local"`` (each query ranks its own candidate list, MMEB's image protocol) or
    ``"global"`` (each query ranks every candidate of the task, MMEB's visdoc / most video tasks).
    For a local task, ``data_files`` (a JSONL/parquet file, or a BEIR folder) and an absolute
    ``image_root`` replace the Hub source.
    """

    name: str
    modality: str
    meta_task: str
    data_format: str = MMEB_FORMAT
    metric: str = HIT_AT_1
    ranking: str = "local"
    hf_path: str | None = None
    hf_subset: str | None = None
    hf_split: str = "test"
    image_root: str | None = None
    data_files: str | None = None
    query_instruction: str | None = None
    document_instruction: str | None = None
    num_frames: int = 8
    parser: str | None = None  # VLM2Vec's dataset_parser, for its per-dataset video rows
    frame_root: str | None = None  # folder of pre-extracted frames, one sub-folder per video
    num_samples: int | None = None  # keep only the first rows (queries), as VLM2Vec's num_sample_per_subset
    split: str | None = None  # MMEB-V1 only: "IND" (has a training split in MMEB-train) or "OOD"
    note: str | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"Task {self.name!r}: modality={self.modality!r}; choose one of {MODALITIES}.")
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"Task {self.name!r}: data_format={self.data_format!r}; choose one of {DATA_FORMATS}.")
        if self.metric not in (HIT_AT_1, NDCG_AT_5):
            raise ValueError(f"Task {self.name!r}: metric={self.metric!r}; choose {HIT_AT_1!r} or {NDCG_AT_5!r}.")
        if self.ranking not in ("local", "global"):
            raise ValueError(f"Task {self.name!r}: ranking={self.ranking!r}; choose 'local' or 'global'.")
        if self.hf_path is None and self.data_files is None:
            raise ValueError(f"Task {self.name!r}: give hf_path (Hub dataset) or data_files (local file/folder).")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Task {data.get('name', '?')!r}: unknown field(s) {sorted(unknown)}; "
                f"known: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**data)


@dataclass(frozen=True)
class Benchmark:
    """A named list of tasks and how MMEB groups them."""

    name: str
    tasks: tuple[TaskSpec, ...]
    baseline_key: str | None = None
    notes: tuple[str, ...] = field(default=())

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


def _image(name: str, meta_task: str, split: str | None = None) -> TaskSpec:
    return TaskSpec(
        name=name,
        modality="image",
        meta_task=meta_task,
        hf_path=MMEB_IMAGE_HF_PATH,
        hf_subset=name,
        image_root="image-tasks",
        split=split,
    )


# image.yaml order. IND = the 20 datasets with a split in MMEB-train (train_image.yaml); the rest are OOD.
_IMAGE_TASKS = {
    "CLS": ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"]
    + ["Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"],
    "QA": ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"]
    + ["ScienceQA", "VizWiz", "GQA", "TextVQA"],
    "RET": ["VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA"]
    + ["FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"],
    "GD": ["MSCOCO"] + ["RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"],
}
_IND_IMAGE = {
    "ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
    "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
    "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO",
}  # fmt: skip

# (name, hf_path, subset, split, ranking, parser, frame folder) from video.yaml + dataset_hf_path.py.
# Frame folders are relative to the media root (a clone of TIGER-Lab/MMEB-V2 with its archives unpacked).
_VIDEO_TASKS = {
    "V-CLS": [
        ("K700", "VLM2Vec/Kinetics-700", None, "test", "global", "video_classification", "video_cls/K700"),
        ("SmthSmthV2", "VLM2Vec/SmthSmthV2", None, "test", "local", "ssv2", "video_cls/SSv2"),
        ("HMDB51", "VLM2Vec/HMDB51", None, "test", "global", "video_classification", "video_cls/HMDB51"),
        ("UCF101", "VLM2Vec/UCF101", None, "test", "global", "video_classification", "video_cls/UCF101"),
        ("Breakfast", "VLM2Vec/Breakfast", None, "test", "global", "video_classification", "video_cls/Breakfast"),
    ],
    "V-QA": [
        ("MVBench", "VLM2Vec/MVBench", None, "train", "local", "mvbench", "video_qa/MVBench"),
        ("Video-MME", "VLM2Vec/Video-MME", None, "test", "local", "videomme", "video_qa/Video-MME"),
        ("NExTQA", "VLM2Vec/NExTQA", "MC", "test", "local", "nextqa", "video_qa/NExTQA"),
        ("EgoSchema", "VLM2Vec/EgoSchema", "Subset", "test", "local", "egoschema", "video_qa/EgoSchema"),
        ("ActivityNetQA", "VLM2Vec/ActivityNetQA", None, "test", "local", "activitynetqa", "video_qa/ActivityNetQA"),
    ],
    "V-RET": [
        ("DiDeMo", "VLM2Vec/DiDeMo", None, "test", "global", "didemo", "video_ret/DiDeMo"),
        ("MSR-VTT", "VLM2Vec/MSR-VTT", "test_1k", "test", "global", "msrvtt", "video_ret/MSR-VTT"),
        ("MSVD", "VLM2Vec/MSVD", None, "test", "global", "msvd", "video_ret/MSVD"),
        ("VATEX", "VLM2Vec/VATEX", None, "test", "global", "vatex", "video_ret/VATEX"),
        ("YouCook2", "lmms-lab/YouCook2", None, "val", "global", "youcook2", "video_ret/YouCook2"),
    ],
    "V-MRET": [
        ("QVHighlight", "VLM2Vec/QVHighlight", None, "test", "local", "moment_retrieval", "video_mret/QVHighlight"),
        ("Charades-STA", "VLM2Vec/Charades-STA", None, "test", "local", "moment_retrieval", "video_mret/Charades_STA"),
        ("MomentSeeker", "VLM2Vec/MomentSeeker", None, "test", "local", "momentseeker", "video_mret/MomentSeeker"),
    ],
}
# Parsers ported to `video_data.py` (all of MMEB-V2's); a task naming another parser is skipped and reported.
IMPLEMENTED_VIDEO_PARSERS = (
    "video_classification", "ssv2", "msrvtt", "msvd", "didemo", "vatex", "youcook2",
    "nextqa", "videomme", "egoschema", "activitynetqa", "mvbench", "moment_retrieval", "momentseeker",
)  # fmt: skip

# (name, hf_path, subset, split) from visdoc.yaml + dataset_hf_path.py; the ViDoRe-V2 four are the
# ones report_score_v2.py scores (the multilingual variants, plus esg human-labelled).
_VISDOC_TASKS = {
    "ViDoRe-V1": [
        ("ViDoRe_arxivqa", "vidore/arxivqa_test_subsampled_beir", None, "test"),
        ("ViDoRe_docvqa", "vidore/docvqa_test_subsampled_beir", None, "test"),
        ("ViDoRe_infovqa", "vidore/infovqa_test_subsampled_beir", None, "test"),
        ("ViDoRe_tabfquad", "vidore/tabfquad_test_subsampled_beir", None, "test"),
        ("ViDoRe_tatdqa", "vidore/tatdqa_test_beir", None, "test"),
        ("ViDoRe_shiftproject", "vidore/shiftproject_test_beir", None, "test"),
        ("ViDoRe_syntheticDocQA_artificial_intelligence", "vidore/syntheticDocQA_artificial_intelligence_test_beir", None, "test"),
        ("ViDoRe_syntheticDocQA_energy", "vidore/syntheticDocQA_energy_test_beir", None, "test"),
        ("ViDoRe_syntheticDocQA_government_reports", "vidore/syntheticDocQA_government_reports_test_beir", None, "test"),
        ("ViDoRe_syntheticDocQA_healthcare_industry", "vidore/syntheticDocQA_healthcare_industry_test_beir", None, "test"),
    ],
    "ViDoRe-V2": [
        ("ViDoRe_esg_reports_human_labeled_v2", "vidore/esg_reports_human_labeled_v2", None, "test"),
        ("ViDoRe_biomedical_lectures_v2_multilingual", "vidore/biomedical_lectures_v2", None, "test"),
        ("ViDoRe_economics_reports_v2_multilingual", "vidore/economics_reports_v2", None, "test"),
        ("ViDoRe_esg_reports_v2_multilingual", "vidore/esg_reports_v2", None, "test"),
    ],
    "VisRAG": [
        ("VisRAG_ArxivQA", "openbmb/VisRAG-Ret-Test-ArxivQA", None, "train"),
        ("VisRAG_ChartQA", "openbmb/VisRAG-Ret-Test-ChartQA", None, "train"),
        ("VisRAG_MP-DocVQA", "openbmb/VisRAG-Ret-Test-MP-DocVQA", None, "train"),
        ("VisRAG_SlideVQA", "openbmb/VisRAG-Ret-Test-SlideVQA", None, "train"),
        ("VisRAG_InfoVQA", "openbmb/VisRAG-Ret-Test-InfoVQA", None, "train"),
        ("VisRAG_PlotQA", "openbmb/VisRAG-Ret-Test-PlotQA", None, "train"),
    ],
    "VisDoc-OOD": [
        ("ViDoSeek-page", "VLM2Vec/ViDoSeek-page-fixed", None, "test"),
        ("ViDoSeek-doc", "VLM2Vec/ViDoSeek", None, "test"),
        ("MMLongBench-page", "VLM2Vec/MMLongBench-page-fixed", None, "test"),
        ("MMLongBench-doc", "VLM2Vec/MMLongBench-doc", None, "test"),
    ],
}  # fmt: skip


def _image_tasks(with_split: bool) -> list[TaskSpec]:
    return [
        _image(name, meta, ("IND" if name in _IND_IMAGE else "OOD") if with_split else None)
        for meta, names in _IMAGE_TASKS.items()
        for name in names
    ]


def _video_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(
            name=name,
            modality="video",
            meta_task=meta,
            data_format=VLM2VEC_VIDEO_FORMAT,
            ranking=ranking,
            hf_path=path,
            hf_subset=subset,
            hf_split=split,
            parser=parser,
            frame_root=f"video-tasks/frames/{frames}",
            num_samples=1000 if name == "SmthSmthV2" else None,  # video.yaml: num_sample_per_subset
        )
        for meta, rows in _VIDEO_TASKS.items()
        for name, path, subset, split, ranking, parser, frames in rows
    ]


def _visdoc_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(
            name=name,
            modality="visdoc",
            meta_task=meta,
            data_format=BEIR_FORMAT,
            metric=NDCG_AT_5,
            ranking="global",
            hf_path=path,
            hf_subset=subset,
            hf_split=split,
            query_instruction=VISDOC_QUERY_INSTRUCTION,
            document_instruction=VISDOC_DOCUMENT_INSTRUCTION,
        )
        for meta, rows in _VISDOC_TASKS.items()
        for name, path, subset, split in rows
    ]


BENCHMARKS: dict[str, Benchmark] = {
    "mmeb-v1": Benchmark("mmeb-v1", tuple(_image_tasks(with_split=True)), baseline_key="mmeb-v1"),
    "mmeb-v2": Benchmark(
        "mmeb-v2", tuple(_image_tasks(with_split=False) + _video_tasks() + _visdoc_tasks()), baseline_key="mmeb-v2"
    ),
}
BENCHMARKS["mmeb-v2-image"] = Benchmark("mmeb-v2-image", tuple(t for t in BENCHMARKS["mmeb-v2"].tasks if t.modality == "image"), "mmeb-v2")  # fmt: skip
BENCHMARKS["mmeb-v2-video"] = Benchmark("mmeb-v2-video", tuple(t for t in BENCHMARKS["mmeb-v2"].tasks if t.modality == "video"), "mmeb-v2")  # fmt: skip
BENCHMARKS["mmeb-v2-visdoc"] = Benchmark("mmeb-v2-visdoc", tuple(t for t in BENCHMARKS["mmeb-v2"].tasks if t.modality == "visdoc"), "mmeb-v2")  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    """A registered benchmark (``mmeb-v1``, ``mmeb-v2``, ``mmeb-v2-image|video|visdoc``)."""
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.") from None


def select_tasks(benchmark: Benchmark, names: list[str] | None) -> list[TaskSpec]:
    """The benchmark's tasks, or only ``names`` (exact task names) in the benchmark's order."""
    if not names:
        return list(benchmark.tasks)
    known = {t.name for t in benchmark.tasks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown} for benchmark {benchmark.name!r}. Known tasks: {sorted(known)}.")
    return [t for t in benchmark.tasks if t.name in set(names)]


def with_data_root(task: TaskSpec, data_root: str | Path | None, image_root: str | Path | None) -> TaskSpec:
    """Point a registered task at a local mirror: ``data_root/<hf_path>``, media under ``image_root``."""
    changes: dict[str, Any] = {}
    if data_root is not None and task.data_files is None and task.hf_path is not None:
        changes["hf_path"] = str(Path(data_root) / task.hf_path)
    for key in ("image_root", "frame_root"):
        value = getattr(task, key)
        if image_root is not None and value is not None and not Path(value).is_absolute():
            changes[key] = str(Path(image_root) / value)
    return replace(task, **changes) if changes else task


def load_task_file(path: str | Path) -> list[TaskSpec]:
    """Local task definitions from a JSON/YAML file: a list of `TaskSpec` fields (or ``{"tasks": [...]}``).

    Relative ``data_files`` / ``image_root`` are resolved against the file's folder.
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    entries = data["tasks"] if isinstance(data, dict) else data
    tasks = []
    for index, entry in enumerate(entries):
        entry = dict(entry)
        for key in ("data_files", "image_root", "frame_root"):
            if entry.get(key) and not Path(entry[key]).is_absolute():
                entry[key] = str((path.parent / entry[key]).resolve())
        try:
            tasks.append(TaskSpec.from_dict(entry))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: task #{index}: {err}") from None
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: task names must be unique; got {names}.")
    return tasks

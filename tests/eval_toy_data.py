"""Toy tasks in MMEB's own formats, written to disk for the evaluation tests, and a recording model."""

import json
from pathlib import Path

from PIL import Image

from tte_hf.evaluation import TaskSpec, load_task_file

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20)}
SHAPES = ["circle", "square", "triangle"]


def _image(path: Path, color, size=56, inner=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), color)
    if inner:
        img.paste(Image.new("RGB", (size // 2, size // 2), inner), (size // 4, size // 4))
    img.save(path)
    return path.name


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_tasks(root: Path) -> list[TaskSpec]:
    """Six tasks on disk plus a task file describing them; returns the parsed specs."""
    images = root / "images"
    names = list(COLORS)
    for name, rgb in COLORS.items():
        _image(images / f"{name}.png", rgb)
        _image(images / f"{name}_box.png", (128, 128, 128), inner=rgb)
        frames = root / "images" / "frames" / name
        for f in range(6):  # 6 saved frames, sampled down to num_frames=4
            _image(frames / f"{f:03d}.jpg", tuple(min(255, c + 8 * f) for c in rgb))
    cls = [
        {
            "qry_inst": "<|image_1|> Represent the given image for classification",
            "qry_text": "",
            "qry_img_path": f"{n}.png",
            "tgt_inst": "",
            "tgt_text": [n] + [m for m in names if m != n][:2],
            "tgt_img_path": ["", "", ""],
        }
        for n in names
    ]
    vqa = [
        {
            "qry_inst": "<|image_1|> Represent the given image with the following question:",
            "qry_text": "What color is the picture?",
            "qry_img_path": f"{n}.png",
            "tgt_text": [f"It is {n}"] + [f"It is {m}" for m in names if m != n],
            "tgt_img_path": [],
        }
        for n in names
    ]
    ret = [
        {
            "qry_inst": "Find me an everyday image that matches the given caption:",
            "qry_text": f"a {n} picture",
            "qry_img_path": "",
            "tgt_inst": "<|image_1|> Represent the given image.",
            "tgt_text": ["", "", "", ""],
            "tgt_img_path": [f"{n}.png"] + [f"{m}.png" for m in names if m != n],
        }
        for n in names
    ]
    grounding = [
        {
            "id": f"gd-{n}",
            "qry_inst": "<|image_1|> Select the portion of the image that isolates the object:",
            "qry_text": n,
            "qry_img_path": f"{n}_box.png",
            "tgt_inst": "<|image_1|> Represent the given cropped image of the object",
            "tgt_text": ["", ""],
            "tgt_img_path": [f"{n}.png", f"{names[(i + 1) % 4]}.png"],
        }
        for i, n in enumerate(names)
    ]
    video = [
        {
            "qry_inst": "Recognize the category of the video content.",
            "qry_text": "",
            "qry_video_path": f"frames/{n}",
            "tgt_text": [f"{n} video"],
        }
        for n in names
    ]
    for name, rows in {"cls": cls, "vqa": vqa, "ret": ret, "gd": grounding, "video": video}.items():
        _write_jsonl(root / f"{name}.jsonl", rows)
    doc = root / "visdoc"
    doc.mkdir()
    _write_jsonl(doc / "corpus.jsonl", [{"corpus-id": f"p{i}", "image": f"{n}.png"} for i, n in enumerate(names)])
    _write_jsonl(doc / "queries.jsonl", [{"query-id": f"q{i}", "query": f"the {n} page"} for i, n in enumerate(names)])
    qrels = [{"query-id": f"q{i}", "corpus-id": f"p{i}", "score": 2} for i in range(4)]
    qrels += [{"query-id": "q0", "corpus-id": "p1", "score": 1}, {"query-id": "q1", "corpus-id": "p3", "score": 0}]
    _write_jsonl(doc / "qrels.jsonl", qrels)
    spec = [
        {"name": "toy-cls", "modality": "image", "meta_task": "CLS", "data_files": "cls.jsonl", "image_root": "images"},
        {"name": "toy-vqa", "modality": "image", "meta_task": "QA", "data_files": "vqa.jsonl", "image_root": "images"},
        {"name": "toy-t2i", "modality": "image", "meta_task": "RET", "data_files": "ret.jsonl", "image_root": "images"},
        {"name": "toy-gd", "modality": "image", "meta_task": "GD", "data_files": "gd.jsonl", "image_root": "images"},
        {"name": "toy-video-cls", "modality": "video", "meta_task": "V-CLS", "data_files": "video.jsonl",
         "image_root": "images", "ranking": "global", "num_frames": 4},
        {"name": "toy-visdoc", "modality": "visdoc", "meta_task": "ViDoRe-V1", "data_format": "beir",
         "metric": "ndcg@5", "ranking": "global", "data_files": "visdoc", "image_root": "images",
         "query_instruction": "Find a document image that matches the given query:",
         "document_instruction": "Understand the content of the provided document image."},
    ]  # fmt: skip
    (root / "tasks.json").write_text(json.dumps(spec))
    return load_task_file(root / "tasks.json")


class Recorder:
    """Wraps a model, counts what it encodes, and can fail on a given call to simulate a crash."""

    def __init__(self, model, fail_on_call: int | None = None):
        self.model, self.fail_on_call, self.calls, self.inputs = model, fail_on_call, 0, []

    def _encode(self, method, inputs, **kwargs):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.inputs.extend(inputs)
        stripped = [{k: v for k, v in x.items() if k != "reasoning"} if isinstance(x, dict) else x for x in inputs]
        return getattr(self.model, method)(stripped, **kwargs)

    def eval_fingerprint(self):
        """The wrapped model's: recording changes no vector."""
        from tte_hf.evaluation.fingerprint import model_fingerprint

        return model_fingerprint(self.model)

    def encode_query(self, inputs, **kwargs):
        return self._encode("encode_query", inputs, **kwargs)

    def encode_document(self, inputs, **kwargs):
        return self._encode("encode_document", inputs, **kwargs)


def tiny_st_model(path: str):
    """A plain sentence-transformers model over the tiny VLM: ST's own Transformer, last-token pooling, Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(path, processing_kwargs={"chat_template": {"add_generation_prompt": True}})
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")


def write_hub_dataset(folder: Path, configs: dict, split: str) -> None:
    """Lay `datasets.Dataset` configs out as a Hub dataset repo does (what a local mirror holds):
    ``<config>/<split>-00000-of-00001.parquet`` and the README's ``configs`` YAML."""
    yaml = ["---", "configs:"]
    for name, data in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        data.to_parquet(str(folder / name / f"{split}-00000-of-00001.parquet"))
        yaml += [f"- config_name: {name}", "  data_files:", f"  - split: {split}", f"    path: {name}/{split}-*"]
    (folder / "README.md").write_text("\n".join(yaml + ["---", ""]))

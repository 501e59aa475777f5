"""Registered MMEB tasks read offline from a local mirror laid out like their Hub repos."""

import json

import datasets
import pytest
from eval_toy_data import COLORS, Recorder, tiny_st_model
from PIL import Image

from tte_hf.evaluation import evaluate


def _hub_repo(folder, configs: dict[str, datasets.Dataset], split: str) -> None:
    """Write datasets as ``<config>/<split>-00000-of-00001.parquet`` with the README's ``configs`` YAML."""
    yaml = ["---", "configs:"]
    for name, data in configs.items():
        (folder / name).mkdir(parents=True)
        data.to_parquet(str(folder / name / f"{split}-00000-of-00001.parquet"))
        yaml += [f"- config_name: {name}", "  data_files:", f"  - split: {split}", f"    path: {name}/{split}-*"]
    (folder / "README.md").write_text("\n".join(yaml + ["---", ""]))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    images = root / "media" / "image-tasks" / "ImageNet-1K"
    images.mkdir(parents=True)
    names = list(COLORS)
    for name, rgb in COLORS.items():
        Image.new("RGB", (56, 56), rgb).save(images / f"{name}.jpg")
    imagenet = datasets.Dataset.from_list(
        [
            {"qry_inst": "<|image_1|> Represent the given image for classification", "qry_text": "",
             "qry_img_path": f"ImageNet-1K/{n}.jpg", "tgt_inst": "", "tgt_text": [n] + [m for m in names if m != n],
             "tgt_img_path": ["", "", "", ""]}
            for n in names
        ]
    )  # fmt: skip
    _hub_repo(root / "data" / "ziyjiang" / "MMEB_Test_Instruct", {"ImageNet-1K": imagenet}, "test")
    image_feature = datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()})
    corpus = datasets.Dataset.from_dict(
        {"corpus-id": [0, 1, 2], "image": [Image.new("RGB", (56, 56), COLORS[n]) for n in names[:3]]}, image_feature
    )
    queries = datasets.Dataset.from_list([{"query-id": i, "query": f"a {n} page"} for i, n in enumerate(names[:3])])
    qrels = datasets.Dataset.from_list([{"query-id": i, "corpus-id": i, "score": 1} for i in range(3)])
    _hub_repo(root / "data" / "vidore" / "arxivqa_test_subsampled_beir", {"corpus": corpus, "queries": queries, "qrels": qrels}, "test")  # fmt: skip
    return root


def test_registered_tasks_run_from_a_local_mirror(mirror, tiny_vlm, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = Recorder(tiny_st_model(tiny_vlm))
    report = evaluate(
        model,
        "mmeb-v2",
        tmp_path,
        tasks=["ImageNet-1K", "ViDoRe_arxivqa", "MSR-VTT"],
        data_root=mirror / "data",
        image_root=mirror / "media",
        show_progress_bar=False,
    )
    imagenet, vidore = report["tasks"]["ImageNet-1K"], report["tasks"]["ViDoRe_arxivqa"]
    assert (imagenet["num_queries"], imagenet["num_candidates"]) == (4, 4)
    assert (vidore["num_queries"], vidore["num_candidates"], vidore["metric"]) == (3, 3, "ndcg@5")
    # The VLM2Vec query forms: instruction without the Phi-3-V marker; visdoc instruction + query.
    queries = [x for x in model.inputs if isinstance(x, dict) and x.get("text", "").startswith("Represent")]
    assert queries and queries[0]["text"] == "Represent the given image for classification"
    assert "Find a document image that matches the given query: a red page" in model.inputs
    # Published baselines sit beside the run in the Markdown table and the chart.
    markdown = (tmp_path / "report.md").read_text()
    assert "| | ours | TTE-t-7B | TTE-t-2B |" in markdown
    assert "**Partial run: 2 of 78 tasks.**" in markdown
    assert set(report["skipped"]) == {"MSR-VTT"}  # its raw-video loader is not implemented: reported, not fatal
    assert "- MSR-VTT: Hub loader not implemented" in markdown
    assert f"| image / CLS (1) | {imagenet['main_score']:.1f} |" in markdown
    assert "62.9" in markdown  # VLM2Vec-V2-2B's CLS mean
    assert json.loads((tmp_path / "report.json").read_text())["baselines"]["TTE-t-7B"]["overall"] == 71.5
    assert (tmp_path / "meta_tasks.png").stat().st_size > 0

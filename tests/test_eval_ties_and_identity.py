"""A negative identical to the gold under each protocol (a hit by name under ``leaderboard``, a tie
against the model under ``strict``), and a finished task is not reused for a model that embeds
differently under the same id string, nor under another protocol or input format."""

import json

import pytest
import torch
from eval_toy_data import tiny_st_model

from tte_hf.evaluation import TaskSpec, evaluate, evaluate_task
from tte_hf.evaluation.fingerprint import model_fingerprint


class TextHashModel:
    """Embeds a text as a fixed random vector seeded by the text itself: equal texts, equal vectors."""

    def _vectors(self, inputs):
        out = []
        for item in inputs:
            text = item if isinstance(item, str) else item.get("text", "")
            seed = sum((i + 1) * ord(ch) for i, ch in enumerate(text))
            out.append(torch.randn(16, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(out)

    def encode_query(self, inputs, **kwargs):
        return self._vectors(inputs)

    encode_document = encode_query


@pytest.mark.parametrize(
    ("protocol", "hits", "first_mrr", "decided"),
    [
        ("strict", [0.0, 1.0], 0.5, 1),  # the listed duplicate ties with the gold: a miss
        ("leaderboard", [1.0, 1.0], 1.0, 1),  # VLM2Vec compares names: the duplicate *is* the gold
    ],
)
def test_a_negative_equal_to_the_gold(tmp_path, protocol, hits, first_mrr, decided):
    # Query text == "crane", so it is closest to both "crane" candidates; one of them is a negative
    # (two ImageNet classes share the name).
    rows = [
        {"qry_text": "crane", "tgt_text": ["crane", "crane", "heron"]},
        {"qry_text": "heron", "tgt_text": ["heron", "crane", "stork"]},  # no duplicate: a clean hit
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskSpec(name="dup", modality="image", meta_task="CLS", data_files=str(tmp_path / "t.jsonl"))
    kwargs = dict(show_progress_bar=False, chart=False, model_id="hash", protocol=protocol)
    report = evaluate(TextHashModel(), [task], tmp_path / "out", **kwargs)
    per_query = [json.loads(x) for x in (tmp_path / "out/tasks/dup/per_query.jsonl").read_text().splitlines()]
    assert [q["hit@1"] for q in per_query] == hits
    assert per_query[0]["mrr"] == pytest.approx(first_mrr)
    assert report["tasks"]["dup"]["main_score"] == pytest.approx(50.0 * sum(hits))
    assert report["protocol"] == protocol
    assert report["ties"]["duplicate_gold_queries"] == 1
    assert report["ties"]["duplicate_gold_decided"] == decided
    markdown = (tmp_path / "out/report.md").read_text()
    assert f"Protocol: **{protocol}**" in markdown
    assert "listed more than once: 1 (hit@1 decided by the protocol: 1)" in markdown


def test_a_folder_scored_under_one_protocol_is_not_reused_for_the_other(tmp_path):
    rows = [{"qry_text": "crane", "tgt_text": ["crane", "crane", "heron"]}]
    (tmp_path / "t.jsonl").write_text(json.dumps(rows[0]) + "\n")
    task = TaskSpec(name="dup", modality="image", meta_task="CLS", data_files=str(tmp_path / "t.jsonl"))
    kwargs = dict(show_progress_bar=False, chart=False, model_id="hash")
    evaluate(TextHashModel(), [task], tmp_path / "out", protocol="leaderboard", **kwargs)
    with pytest.raises(ValueError, match=r"differing: \[.*'protocol'"):
        evaluate(TextHashModel(), [task], tmp_path / "out", protocol="strict", **kwargs)
    fingerprint = model_fingerprint(TextHashModel())
    with pytest.raises(ValueError, match=r"differing: \['input_format'\]"):
        evaluate_task(TextHashModel(), task, tmp_path / "out", model_id="hash", fingerprint=fingerprint, input_format="vlm2vec")  # fmt: skip
    with pytest.raises(ValueError, match="the model applies 'tte'"):
        evaluate(TextHashModel(), [task], tmp_path / "out", input_format="vlm2vec", **kwargs)


# --- resume identity: what determines the vectors, not only the model id string -----------------


@pytest.fixture
def toy_task(tmp_path):
    rows = [{"qry_text": f"q{i}", "tgt_text": [f"c{i}", f"c{i + 1}", f"c{i + 2}"]} for i in range(3)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskSpec(name="toy", modality="image", meta_task="CLS", data_files=str(tmp_path / "t.jsonl"))


def _changes():
    def weights(model):
        with torch.no_grad():
            next(model.parameters()).add_(0.5)

    def prompts(model):
        model.prompts = {**model.prompts, "query": "Represent the query:"}

    def dtype(model):
        model.to(torch.float64)

    def module_config(model):
        model[1].pooling_mode = "mean"  # a pooling setting lives in the module config, not the weights

    return {"weights": weights, "prompts": prompts, "dtype": dtype, "module_config": module_config}


@pytest.mark.parametrize("change", list(_changes()))
def test_same_model_id_with_other_vectors_is_not_reused(tiny_vlm, toy_task, tmp_path, change):
    # "org/tte-2b" re-pushed with new weights (or loaded with another dtype, prompt or module setting)
    # keeps its id string; its old scores must not come back as the new model's.
    kwargs = dict(model_id="org/tte-2b", show_progress_bar=False, chart=False, chunk_size=2)
    evaluate(tiny_st_model(tiny_vlm), [toy_task], tmp_path / "out", **kwargs)
    changed = tiny_st_model(tiny_vlm)
    _changes()[change](changed)
    with pytest.raises(ValueError, match=r"different run.*fingerprint") as err:
        evaluate(changed, [toy_task], tmp_path / "out", **kwargs)
    assert change in str(err.value)


def test_same_model_reloaded_is_reused(tiny_vlm, toy_task, tmp_path):
    kwargs = dict(model_id="org/tte-2b", show_progress_bar=False, chart=False, chunk_size=2)
    first = evaluate(tiny_st_model(tiny_vlm), [toy_task], tmp_path / "out", **kwargs)
    stamp = (tmp_path / "out/tasks/toy/score.json").stat().st_mtime_ns
    again = evaluate(tiny_st_model(tiny_vlm), [toy_task], tmp_path / "out", **kwargs)
    assert again["tasks"] == first["tasks"]
    assert (tmp_path / "out/tasks/toy/score.json").stat().st_mtime_ns == stamp


class NamedReasoner:
    """A runtime reasoner (``set_reasoner``): a fixed trace per input; ``name`` is all ``describe()`` says."""

    def __init__(self, name: str = "first"):
        self.name = name

    def describe(self):
        return {"name": self.name}

    def generate(self, requests):
        return [f"<think>{self.name} thinks about {r.text}</think> {r.text}" for r in requests]


def _tte_changes():
    """Issue 13's TTE-specific parts of the resume key: each changes the query vectors, not the weights."""

    def trace_mode(model):
        model[0].trace_mode = "final"

    def think(model):
        model[0].query_reasoning = False

    def reasoner(model):
        model[0].set_reasoner(NamedReasoner("second"))

    return {"trace_mode": trace_mode, "think": think, "reasoner": reasoner}


@pytest.mark.parametrize("change", list(_tte_changes()))
def test_tte_model_with_other_reasoning_is_not_reused(tiny_vlm, toy_task, tmp_path, change):
    from tte_hf.sentence_transformers import build_sentence_transformer

    kwargs = dict(model_id="org/tte-2b", show_progress_bar=False, chart=False, chunk_size=2, require_ecr=False)
    evaluate(build_sentence_transformer(tiny_vlm, reasoner=NamedReasoner()), [toy_task], tmp_path / "out", **kwargs)
    changed = build_sentence_transformer(tiny_vlm, reasoner=NamedReasoner())
    _tte_changes()[change](changed)
    with pytest.raises(ValueError, match=r"different run.*fingerprint: module_config"):
        evaluate(changed, [toy_task], tmp_path / "out", **kwargs)


def test_configured_reasoner_loaded_by_the_first_run_does_not_block_its_resume(tiny_vlm, toy_task, tmp_path):
    """A reasoner named in the module config is built on first use; the same model object evaluated again
    into the same folder (a notebook resuming after an interruption) must reuse the finished task."""
    from tte_hf.sentence_transformers import build_sentence_transformer

    model = build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm, max_new_tokens=2)
    kwargs = dict(model_id="org/tte-2b", show_progress_bar=False, chart=False, chunk_size=2, require_ecr=False)
    first = evaluate(model, [toy_task], tmp_path / "out", **kwargs)
    assert model[0]._reasoner is not None  # the first run built it
    stamp = (tmp_path / "out/tasks/toy/score.json").stat().st_mtime_ns
    again = evaluate(model, [toy_task], tmp_path / "out", **kwargs)
    assert again["tasks"] == first["tasks"]
    assert (tmp_path / "out/tasks/toy/score.json").stat().st_mtime_ns == stamp
    # a fresh load of the same model (reasoner not built yet) reuses it too
    fresh = build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm, max_new_tokens=2)
    assert evaluate(fresh, [toy_task], tmp_path / "out", **kwargs)["tasks"] == first["tasks"]

"""Adaptive thinking (``think="auto"``): the reasoning gate's decisions, what a skipped or reasoned input
embeds to, forced modes, save/load (also by repo id without tte_hf), fitting, ``train-gate`` and export."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_helpers import populate_hf_cache
from test_sentence_transformer import _save_unified

from tte_hf.models.tte.gate_tte import GATE_FEATURE, NO_TRACE_EMBEDDING, TEXT_EMBEDDINGS, ReasoningGate
from tte_hf.sentence_transformers import build_sentence_transformer, save_sentence_transformer

INSTRUCTION = "Find the picture that answers the question."
QUERIES = [
    "what color is the bus",
    "which object is red",
    "a cat sitting on a mat near the window",
    "two dogs",
    "the sky at night over a long quiet road",
    "count the apples",
    "who wrote this sign",
    "is the door open",
]


def _median_gate(model, inputs=QUERIES, seed: int = 0, feature: str = GATE_FEATURE) -> ReasoningGate:
    """A random probe on ``feature`` whose threshold splits ``inputs`` in half (so both modes occur)."""
    module = model[0]
    gate = ReasoningGate(module.gate_feature_dim(feature), feature=feature)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gate.linear.weight.copy_(torch.randn(gate.linear.weight.shape, generator=generator) * 4)
        gate.linear.bias.zero_()
    module.set_gate(gate)
    gate.threshold.fill_(1.0)  # score everything without deciding
    _, scores = model.gate_decisions(inputs)
    ordered = sorted(scores)
    gate.threshold.fill_((ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2)
    return gate


@contextlib.contextmanager
def text_gate(model, seed: int = 0):
    """``model`` with a median gate on the text feature (`TEXT_EMBEDDINGS`) inside the block, its own after."""
    previous = model[0].gate
    try:
        yield _median_gate(model, seed=seed, feature=TEXT_EMBEDDINGS)
    finally:
        model[0].set_gate(previous)


@pytest.fixture(scope="module")
def embedder_model(tiny_vlm, tiny_vlm_25):
    model = build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm_25, max_new_tokens=8, prompts={"query": INSTRUCTION})
    _median_gate(model)
    return model


@pytest.fixture(scope="module")
def unified_path(tiny_vlm, tmp_path_factory):
    return _save_unified(tiny_vlm, tmp_path_factory.mktemp("unified_gate"))


@pytest.fixture(scope="module")
def unified_model(unified_path):
    model = build_sentence_transformer(unified_path, max_new_tokens=8, prompts={"query": INSTRUCTION})
    _median_gate(model, seed=1)
    return model


@pytest.fixture(params=["embedder", "unified"])
def gated(request):
    return request.getfixturevalue(f"{request.param}_model")


def test_auto_skipped_rows_are_the_no_trace_vectors_and_the_rest_reason(gated):
    think, _ = gated.gate_decisions(QUERIES)
    assert 0 < sum(think) < len(QUERIES), "the fixture's threshold splits the inputs"
    auto = gated.encode_query(QUERIES, think="auto", batch_size=3, convert_to_tensor=True)
    assert gated[0].last_gate_decisions == think  # the whole call's, in input order
    never = gated.encode_query(QUERIES, think=False, batch_size=3, convert_to_tensor=True)
    always = gated.encode_query(QUERIES, think=True, batch_size=3, convert_to_tensor=True)
    assert gated[0].last_gate_decisions is None  # forced modes do not consult the gate
    for row, reasons in enumerate(think):
        expected = always[row] if reasons else never[row]
        torch.testing.assert_close(auto[row], expected, atol=1e-5, rtol=0, msg=f"row {row} (think={reasons})")
    assert not torch.allclose(never, always, atol=1e-3), "the trace must change the vector for this test to mean anything"  # fmt: skip
    traces = gated.get_reasoning(QUERIES, think="auto")
    forced = gated.get_reasoning(QUERIES, think=True)
    assert [t is None for t in traces] == [not t for t in think]
    assert [t for t, r in zip(traces, think) if r] == [t for t, r in zip(forced, think) if r]


def test_decisions_are_deterministic_and_batch_invariant(gated):
    think, scores = gated.gate_decisions(QUERIES)
    again = gated.gate_decisions(QUERIES)
    assert again == (think, scores)
    alone = [gated.gate_decisions([q]) for q in QUERIES]
    assert [d[0][0] for d in alone] == think
    np.testing.assert_allclose([s[1][0] for s in alone], scores, atol=1e-5, rtol=0)
    features = gated.gate_features(QUERIES)  # the no-trace embeddings: a padded batch's float noise at most
    for i, query in enumerate(QUERIES):
        torch.testing.assert_close(gated.gate_features([query])[0], features[i], atol=1e-5, rtol=0)
    text = gated.gate_features(QUERIES, feature=TEXT_EMBEDDINGS)  # each row averaged unpadded: the same bits
    assert all(
        torch.equal(gated.gate_features([q], feature=TEXT_EMBEDDINGS)[0], text[i]) for i, q in enumerate(QUERIES)
    )
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    shuffled = gated.gate_decisions([QUERIES[i] for i in order])
    assert shuffled[0] == [think[i] for i in order]
    tokenizer = gated[0].processor.tokenizer
    side = tokenizer.padding_side
    if side == "right":  # the embedder: the gate must not depend on the padding side either
        tokenizer.padding_side = "left"
        try:
            left = gated.gate_decisions(QUERIES)
        finally:
            tokenizer.padding_side = side
        assert left[0] == think
        np.testing.assert_allclose(left[1], scores, atol=1e-5, rtol=0)


def test_query_reasoning_auto_is_the_default_and_think_forces_a_mode(tiny_vlm, tiny_vlm_25, embedder_model):
    model = build_sentence_transformer(
        tiny_vlm, reasoner=tiny_vlm_25, max_new_tokens=8, prompts={"query": INSTRUCTION}, query_reasoning="auto"
    )
    model[0].set_gate(embedder_model[0].gate)
    think, _ = model.gate_decisions(QUERIES)
    default = model.get_reasoning(QUERIES)
    assert [t is not None for t in default] == think
    assert all(t is not None for t in model.get_reasoning(QUERIES, think=True))
    assert all(t is None for t in model.get_reasoning(QUERIES, think=False))
    vectors = model.encode_query(QUERIES, convert_to_tensor=True)
    torch.testing.assert_close(vectors, model.encode_query(QUERIES, think="auto", convert_to_tensor=True))


def test_auto_without_a_gate_or_with_a_bad_mode_says_what_to_do(tiny_vlm):
    model = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    with pytest.raises(ValueError, match="train-gate"):
        model.encode_query(["a red bus"], think="auto")
    with pytest.raises(ValueError, match="think='sometimes' must be True, False or 'auto'"):
        model.encode_query(["a red bus"], think="sometimes")
    with pytest.raises(ValueError, match="query_reasoning='yes'"):
        build_sentence_transformer(tiny_vlm, query_reasoning="yes")
    with pytest.raises(ValueError, match="reads 3-d features"):
        model[0].set_gate(ReasoningGate(3))


_LOAD_SCRIPT = """
import json, sys
sys.modules["tte_hf"] = None  # any tte_hf import fails
import numpy as np
from sentence_transformers import SentenceTransformer

queries = json.loads(sys.argv[2])
out = {}
for name in ("org/tte-gated", "org/tte-unified-gated"):
    model = SentenceTransformer(name, trust_remote_code=True)
    assert type(model[0]).__module__.startswith("transformers_modules."), type(model[0]).__module__
    think, scores = model.gate_decisions(queries)
    vectors = model.encode_query(queries)  # query_reasoning: auto in the saved config
    out[name] = {"think": think, "scores": scores, "vectors": vectors.tolist()}
json.dump(out, open(sys.argv[1], "w"))
"""


def test_save_and_load_keep_the_gate_also_by_repo_id_without_tte_hf(embedder_model, unified_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    expected = {}
    for name, model in (("org/tte-gated", embedder_model), ("org/tte-unified-gated", unified_model)):
        model[0].query_reasoning = "auto"
        try:
            folder = tmp_path / name.split("/")[1]
            save_sentence_transformer(model, folder)
        finally:
            model[0].query_reasoning = True
        config = json.loads((folder / "gate_config.json").read_text())
        assert config["threshold"] == pytest.approx(float(model[0].gate.threshold))
        loaded = SentenceTransformer(str(folder), trust_remote_code=True)
        torch.testing.assert_close(loaded[0].gate.linear.weight, model[0].gate.linear.weight, atol=0, rtol=0)
        assert loaded[0].query_reasoning == "auto"
        think, scores = model.gate_decisions(QUERIES)
        loaded_think, loaded_scores = loaded.gate_decisions(QUERIES)
        assert loaded_think == think
        np.testing.assert_allclose(loaded_scores, scores, atol=1e-5, rtol=0)
        vectors = model.encode_query(QUERIES, think="auto", convert_to_tensor=True)
        torch.testing.assert_close(loaded.encode_query(QUERIES, convert_to_tensor=True), vectors, atol=1e-5, rtol=0)
        expected[name] = (think, scores, vectors)
        populate_hf_cache(folder, name, tmp_path / "hub")

    script = tmp_path / "load.py"
    script.write_text(_LOAD_SCRIPT)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "out.json"), json.dumps(QUERIES)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    for name, (think, scores, vectors) in expected.items():
        assert got[name]["think"] == think, name
        np.testing.assert_allclose(got[name]["scores"], scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.array(got[name]["vectors"]), vectors.numpy(), atol=1e-5, rtol=0)


def test_a_module_saved_without_a_gate_drops_an_old_one(tiny_vlm, embedder_model, tmp_path):
    save_sentence_transformer(embedder_model, tmp_path)
    plain = build_sentence_transformer(tiny_vlm)
    plain.save(str(tmp_path))
    assert not (tmp_path / "gate_config.json").exists() and not (tmp_path / "gate.safetensors").exists()


# --- fitting ------------------------------------------------------------------------------------


def test_probe_learns_a_separable_signal_and_the_threshold_is_the_brute_force_one():
    from tte_hf.training.gate_fit import (
        choose_threshold,
        fit_probe,
        gold_margins,
        gold_ranks,
        thin_curve,
        trace_helps,
        tradeoff_curve,
    )

    generator = torch.Generator().manual_seed(0)
    dim, n = 16, 200
    kind = torch.arange(n) % 2  # 1: "riddles" (the trace helps), 0: plain queries
    direction = torch.zeros(dim)
    direction[0] = 1.0
    features = torch.randn(n, dim, generator=generator) * 0.3 + direction * (2 * kind.float() - 1).view(-1, 1)
    weight, bias = fit_probe(features, kind.float(), l2=1e-3)
    unit = features / features.norm(dim=1, keepdim=True)
    probability = 1 / (1 + np.exp(-(unit.numpy() @ weight.numpy() + bias.item())))
    assert ((probability >= 0.5) == kind.numpy().astype(bool)).mean() == 1.0

    # the curve and the budget's choice: compare with an exhaustive search over every cut of the sorted
    # scores, with tied scores (a cut never splits a tie)
    scores = (torch.rand(n, generator=generator) * 50).round() / 50
    hit_with = (torch.rand(n, generator=generator) < 0.7).float()
    hit_without = torch.where(kind.bool(), torch.zeros(n), hit_with)
    hit_without[::7] = 1 - hit_without[::7]  # some rows the trace gets wrong and a skip right
    s, h1, h0 = scores.numpy(), hit_with.numpy(), hit_without.numpy()
    only = (h1 > 0) & (h0 == 0)
    curve = tradeoff_curve(scores, hit_with, hit_without)
    cuts = [-math.inf, *sorted(set(s.tolist()))]  # think for scores > cut
    assert len(curve) == len(cuts)
    for point, cut in zip(curve, cuts):
        think = s > cut
        assert (scores >= point.threshold).numpy().tolist() == think.tolist()
        assert point.call_share == pytest.approx(think.mean())
        assert point.hit_at_1 == pytest.approx(np.where(think, h1, h0).mean())
        assert point.lost_share == pytest.approx((~think & only).sum() / only.sum())
    assert curve[0].call_share == 1.0 and curve[-1].call_share == 0.0
    for budget in (0.0, 0.05, 0.3, 1.0):
        chosen = choose_threshold(curve, budget, call_margin=0.0)
        fewest = min(p.call_share for p in curve if p.lost_share <= budget + 1e-9)
        assert chosen.call_share == pytest.approx(fewest) and chosen.lost_share <= budget + 1e-9
        for margin in (0.05, 0.2):  # brute force: the fewest losses within the margin, then the fewest calls
            window = [p for p in curve if p.lost_share <= budget + 1e-9 and p.call_share <= fewest + margin + 1e-9]
            least = min(p.lost_share for p in window)
            calls = min(p.call_share for p in window if p.lost_share == least)
            moved = choose_threshold(curve, budget, call_margin=margin)
            assert (moved.lost_share, moved.call_share) == (pytest.approx(least), pytest.approx(calls))
    assert choose_threshold(curve, 1.0, 0.0).call_share == 0.0, "a budget of every trace-only hit never reasons"
    with pytest.raises(ValueError, match="max_lost_share must be in \\[0, 1\\], got 1.5"):
        choose_threshold(curve, 1.5)
    with pytest.raises(ValueError, match="call_margin must be in \\[0, 1\\].* got -0.01"):
        choose_threshold(curve, 0.05, -0.01)
    assert len(thin_curve(curve, 11)) <= 12 and thin_curve(curve, 11)[0] == curve[0]

    # ranks and labels against a direct count
    q, c = torch.randn(5, 4, generator=generator), torch.randn(7, 4, generator=generator)
    gold = torch.tensor([0, 3, 6, 2, 2])
    cos = (q / q.norm(dim=1, keepdim=True)) @ (c / c.norm(dim=1, keepdim=True)).T
    assert gold_ranks(q, c, gold).tolist() == [int((cos[i] > cos[i, g]).sum()) for i, g in enumerate(gold.tolist())]
    assert trace_helps(torch.tensor([3, 0, 2]), torch.tensor([1, 0, 2]), 2, min_margin_gain=None).tolist() == [
        1.0,
        0.0,
        0.0,
    ]
    margins = gold_margins(q, c, gold).tolist()
    for i, g in enumerate(gold.tolist()):
        assert margins[i] == pytest.approx(float(cos[i, g] - max(cos[i, j] for j in range(7) if j != g)), abs=1e-6)
    # a query right without its trace (rank 0 -> 0) whose trace widens the margin: helped by the margin rule only
    ranks0, ranks1 = torch.tensor([0, 0, 4]), torch.tensor([0, 0, 1])
    margin0, margin1 = torch.tensor([0.01, 0.2, -0.3]), torch.tensor([0.3, 0.21, -0.1])
    assert trace_helps(ranks0, ranks1, 1, min_margin_gain=None).tolist() == [0.0, 0.0, 1.0]
    assert trace_helps(ranks0, ranks1, 1, margin0, margin1, 0.05).tolist() == [1.0, 0.0, 1.0]
    assert trace_helps(ranks0, ranks1, 5, margin0, margin1, 0.5).tolist() == [0.0, 0.0, 0.0]
    # a trace that widens a margin the query already wins by clear_margin (row 1 of these) does not help
    margin1 = torch.tensor([0.3, 0.4, -0.1])
    assert trace_helps(ranks0, ranks1, 1, margin0, margin1, 0.05, clear_margin=None).tolist() == [1.0, 1.0, 1.0]
    assert trace_helps(ranks0, ranks1, 1, margin0, margin1, 0.05, clear_margin=0.1).tolist() == [1.0, 0.0, 1.0]
    assert trace_helps(ranks0, ranks1, 1, margin0, margin1, 0.05, clear_margin=0.25).tolist() == [1.0, 1.0, 1.0]
    ranks1 = torch.tensor([0, 0, 3])  # a rank gain is a help whatever the margins: the no-trace answer was wrong
    assert trace_helps(ranks0, ranks1, 1, margin0, margin0, 0.05, clear_margin=-1.0).tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="gold_margins"):
        trace_helps(ranks0, ranks1, 1, min_margin_gain=0.05)


def test_train_gate_refuses_a_margin_gain_that_labels_everything(tmp_path):
    from tte_hf.training.train_gate import train_gate

    for bad in (0, -0.1):
        with pytest.raises(ValueError, match=f"min_margin_gain must be > 0 .* got {bad}"):
            train_gate(
                {"model_name_or_path": str(tmp_path), "output_dir": str(tmp_path / "out"), "min_margin_gain": bad}
            )
    with pytest.raises(ValueError, match="fold_by must be 'row' or 'target', got 'answer'"):
        train_gate({"model_name_or_path": str(tmp_path), "output_dir": str(tmp_path / "out"), "fold_by": "answer"})
    with pytest.raises(ValueError, match="max_lost_share must be in \\[0, 1\\].* got -0.1"):
        train_gate({"model_name_or_path": str(tmp_path), "output_dir": str(tmp_path / "out"), "max_lost_share": -0.1})
    with pytest.raises(ValueError, match="call_margin must be in \\[0, 1\\].* got 2"):
        train_gate({"model_name_or_path": str(tmp_path), "output_dir": str(tmp_path / "out"), "call_margin": 2})
    with pytest.raises(ValueError, match="l2 must be >= 0 .* got -1"):
        train_gate({"model_name_or_path": str(tmp_path), "output_dir": str(tmp_path / "out"), "l2": -1})
    assert not (tmp_path / "out").exists(), "refused before any output is written"


def test_train_gate_command_writes_a_gate_whose_numbers_recompute(tiny_vlm, tiny_vlm_25, tmp_path):
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from tte_hf.cli import main
    from tte_hf.training.gate_fit import FOLDS, L2_GRID
    from tte_hf.training.synthetic import write_synthetic_retrieval

    data = write_synthetic_retrieval(tmp_path / "data", num_items=16)
    source = tmp_path / "tte"
    build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm_25, max_new_tokens=4, prompts={"query": INSTRUCTION}).save(str(source))  # fmt: skip
    rows = [json.loads(line) for line in Path(data["data"]).read_text().splitlines()]
    traces = {json.loads(line)["id"]: json.loads(line)["ecr"] for line in Path(data["query_ecr"]).read_text().splitlines()}  # fmt: skip
    queries = [
        {
            "text": "Find the color and shape of the object in this image",
            "images": [Image.open(data["image_root"] / r["qry_image_path"])],
            "task": "classification",
        }  # fmt: skip
        for r in rows
    ]

    # The labels, recomputed here from the model's vectors (independently of train-gate's code)
    model = SentenceTransformer(str(source), trust_remote_code=True)
    targets = model.encode_document([r["pos_text"] for r in rows], convert_to_numpy=True)
    without = model.encode_query(queries, think=False, convert_to_numpy=True)
    with_trace = model.encode_query([{**q, "reasoning": traces[r["id"]]} for q, r in zip(queries, rows)], convert_to_numpy=True)  # fmt: skip

    def ranks_and_margins(q):
        scores = q @ targets.T
        gold = np.diag(scores)
        others = np.where(np.eye(len(scores), dtype=bool), -np.inf, scores)
        return (scores > gold[:, None]).sum(1), gold - others.max(1)

    (rank0, margin0), (rank1, margin1) = ranks_and_margins(without), ranks_and_margins(with_trace)
    # On this random tiny model a trace that widens a margin also moves ranks: a rank gain no row reaches
    # and a small margin gain make the labels the margin's alone, and a clear_margin between the no-trace
    # margins of the widened rows leaves out those that won more clearly without their trace.
    widened = margin1 - margin0 >= 0.001
    clear = float(np.median(margin0[widened]))
    labels = ((rank0 - rank1 >= 100) | (widened & (margin0 < clear))).astype(float)
    assert 0 < labels.mean() < widened.mean(), "this data cannot tell the margin rules apart"

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "gate" / "tiny.yaml"
    text = recipe.read_text().replace("out/tiny-data", str(data["image_root"]))
    text = text.replace("out/tiny-tte-gated", str(tmp_path / "gated")).replace("out/tiny-tte", str(source))
    (tmp_path / "gate.yaml").write_text(text + "l2: null  # chosen by cross-fitting\n")
    overrides = ["--max_lost_share", "0.0", "--min_rank_gain", "100", "--min_margin_gain", "0.001", "--clear_margin", str(clear)]  # fmt: skip
    assert main(["train-gate", "--config", str(tmp_path / "gate.yaml"), *overrides]) == 0

    gated = tmp_path / "gated"
    info = json.loads((gated / "gate_config.json").read_text())["info"]
    assert json.loads((gated / "sentence_bert_config.json").read_text())["query_reasoning"] == "auto"
    assert not (source / "gate_config.json").exists(), "the source folder is left as it was"
    assert info["trace_helps_rate"] == pytest.approx(labels.mean())
    model = SentenceTransformer(str(gated), trust_remote_code=True)
    think, _ = model.gate_decisions(queries)  # the runtime path: the gate's own feature, not train-gate's
    assert info["skip_rate_all"] == pytest.approx(1 - np.mean(think))
    assert info["held_out"]["hit_at_1_auto"] >= info["held_out"]["hit_at_1_always"] - 1e-9  # max_lost_share 0
    assert info["held_out"]["lost_share"] == 0.0
    searched = {float(k): v for k, v in info["probe_l2"]["out_of_fold_loss"].items()}
    assert info["recipe"]["l2"] is None and set(searched) == set(L2_GRID)
    assert info["probe_l2"]["l2"] == min(searched, key=searched.get)
    curve = info["curve"]  # out of fold, from reasoning on every query to none
    assert curve[0]["call_share"] == 1.0 and curve[-1]["call_share"] == 0.0
    assert curve[0]["hit_at_1"] == pytest.approx(info["held_out"]["hit_at_1_always"], abs=1e-6)
    assert curve[-1]["hit_at_1"] == pytest.approx(info["held_out"]["hit_at_1_never"], abs=1e-6)
    chosen = [p for p in curve if p["threshold"] == pytest.approx(json.loads((gated / "gate_config.json").read_text())["threshold"], abs=1e-6)]  # fmt: skip
    assert chosen and 1 - chosen[0]["call_share"] == pytest.approx(info["held_out"]["skip_rate"], abs=1e-6)
    assert (gated / "gate_tradeoff.png").stat().st_size > 1000
    assert info["held_out"]["queries"] == info["queries"] == len(rows) and info["held_out"]["folds"] == FOLDS
    vectors = model.encode_query(queries, convert_to_numpy=True)  # auto by default (thinking rows: the reasoner)
    skipped = ~np.array(think)
    np.testing.assert_allclose(vectors[skipped], without[skipped], atol=1e-5)


# --- export -------------------------------------------------------------------------------------


def test_export_ships_the_gate_sets_auto_and_says_how_it_was_trained(tiny_vlm, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tte_hf import TTEEmbedderModel
    from tte_hf.hub import ExportError, export_model

    checkpoint = tmp_path / "embedder"
    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(checkpoint)
    gate = ReasoningGate(build_sentence_transformer(tiny_vlm)[0].gate_feature_dim(), threshold=0.5)
    gate.info = {
        "trained_with": "tte-hf train-gate",
        "queries": 40,
        "datasets": [{"name": "shapes", "queries": 40}],
        "label": "1 when the trace helps",
        "threshold_rule": "keep Hit@1",
        "probe_l2": {"l2": 0.3, "out_of_fold_loss": {"0.1": 0.5, "0.3": 0.4, "1.0": 0.45}},
        "held_out": {
            "queries": 10,
            "skip_rate": 0.6,
            "hit_at_1_auto": 0.8,
            "hit_at_1_always": 0.8,
            "hit_at_1_never": 0.5,
        },  # fmt: skip
        "curve": [  # out-of-fold trade-off, every call share from 100% to 0%
            {"threshold": t / 10 - 0.05, "call_share": 1 - t / 10, "hit_at_1": 0.8 - 0.03 * t, "lost_share": t / 10}
            for t in range(11)
        ],
    }
    gate.save(str(tmp_path / "gated"))
    (tmp_path / "gated" / "gate_tradeoff.png").write_bytes(b"\x89PNG plot")
    with pytest.raises(ExportError, match="has no gate_config.json"):
        export_model(checkpoint, tmp_path / "bad", processor=tiny_vlm, gate=tmp_path)
    repo = export_model(checkpoint, tmp_path / "repo", processor=tiny_vlm, gate=tmp_path / "gated")
    assert json.loads((repo / "sentence_bert_config.json").read_text())["query_reasoning"] == "auto"
    card = (repo / "README.md").read_text()
    assert "Reasoning on queries: **auto (gated)**" in card
    assert "skips **60.0%** of reasoner calls" in card and "shapes: 40" in card
    # the gate's recorded feature (the default, joint)
    assert "probe on the query's no-trace embedding, images included, beside the mean input embedding of its" in card
    assert "| 100% | 0.800 | 0% |" in card and "| 40% | 0.620 | 60% |" in card and "| 0% | 0.500 | 100% |" in card
    assert "Probe: L2 penalty 0.3, the lowest out-of-fold log-loss of 3 tried." in card
    assert (repo / "gate_tradeoff.png").read_bytes() == b"\x89PNG plot"  # the plot ships with the gate
    model = SentenceTransformer(str(repo), trust_remote_code=True)
    torch.testing.assert_close(model[0].gate.linear.weight, gate.linear.weight, atol=0, rtol=0)
    # a repo folder that holds a gate passes it on by itself
    again = export_model(repo, tmp_path / "again", processor=tiny_vlm)
    assert (again / "gate.safetensors").read_bytes() == (repo / "gate.safetensors").read_bytes()


# --- training both modes ------------------------------------------------------------------------


def test_trace_dropout_drops_query_traces_of_a_fixed_hashed_fraction(tmp_path):
    import hashlib

    from tte_hf.training.data import DatasetSpec, load_pairs
    from tte_hf.training.synthetic import write_synthetic_retrieval

    paths = write_synthetic_retrieval(tmp_path, num_items=64)
    raw = {
        "name": "shapes",
        "path": str(paths["data"]),
        "image_root": str(tmp_path),
        "query_ecr": str(paths["query_ecr"]),
        "target_ecr": str(paths["target_ecr"]),
    }
    full = load_pairs(DatasetSpec.from_dict(raw, 0))
    dropped = load_pairs(DatasetSpec.from_dict({**raw, "trace_dropout": 0.4, "trace_dropout_seed": 3}, 0))
    expected = [
        int.from_bytes(hashlib.sha256(f"3:{p.item_id}".encode()).digest()[:8], "big") / 2**64 < 0.4 for p in full
    ]
    assert [p.query.trace is None for p in dropped] == expected
    assert 10 < sum(expected) < 40
    assert all(p.positive.trace == f.positive.trace is not None for p, f in zip(dropped, full))  # targets keep theirs
    assert [p.query.trace for p, e in zip(dropped, expected) if not e] == [f.query.trace for f, e in zip(full, expected) if not e]  # fmt: skip
    assert load_pairs(DatasetSpec.from_dict({**raw, "trace_dropout": 0.4, "trace_dropout_seed": 3}, 0)) == dropped
    with pytest.raises(ValueError, match="trace_dropout must lie in"):
        DatasetSpec.from_dict({**raw, "trace_dropout": 1.5}, 0)
    with pytest.raises(ValueError, match="trace_dropout needs query_ecr"):
        DatasetSpec.from_dict({"name": "x", "path": "y", "trace_dropout": 0.3}, 0)

    # no_trace_copies: of the rows marked `trace_optional: true`, the same hashed rows come twice, traced
    # (as in `full`) and as a no-trace copy after it; unmarked rows (here: every third) get none
    rows = [json.loads(line) for line in Path(paths["data"]).read_text().splitlines()]
    marked = [i % 3 != 0 for i in range(len(rows))]
    optional_file = tmp_path / "marked.jsonl"
    optional_file.write_text("".join(json.dumps({**row, "trace_optional": m}) + "\n" for row, m in zip(rows, marked)))
    raw = {**raw, "path": str(optional_file)}
    assert load_pairs(DatasetSpec.from_dict(raw, 0)) == full  # the field alone changes nothing
    copied = load_pairs(DatasetSpec.from_dict({**raw, "no_trace_copies": 0.4, "trace_dropout_seed": 3}, 0))
    assert [p for p in copied if not p.item_id.endswith("#no-trace")] == full
    copies = iter(p for p in copied if p.item_id.endswith("#no-trace"))
    chosen_rows = [chosen and m for chosen, m in zip(expected, marked)]
    assert 0 < sum(chosen_rows) < sum(expected)
    for pair, chosen in zip(full, chosen_rows):
        if chosen:
            copy = next(copies)
            assert copy.item_id == f"{pair.item_id}#no-trace" and copy.query.trace is None
            assert (copy.query.text, copy.query.images, copy.positive) == (pair.query.text, pair.query.images, pair.positive)  # fmt: skip
    assert next(copies, None) is None and len(copied) == len(full) + sum(chosen_rows)
    with pytest.raises(ValueError, match="no_trace_copies must lie in"):
        DatasetSpec.from_dict({**raw, "no_trace_copies": -0.1}, 0)
    # no row marked: copies would silently be none, so it is an error naming the field
    with pytest.raises(ValueError, match=r"copies only rows marked `trace_optional: true`"):
        load_pairs(DatasetSpec.from_dict({**raw, "path": str(paths["data"]), "no_trace_copies": 1.0}, 0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "trace_optional": "yes"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: `trace_optional` must be true or false, got 'yes'"):
        load_pairs(DatasetSpec.from_dict({**raw, "path": str(bad)}, 0))


def test_auto_packs_the_reasoned_inputs_of_a_call_into_full_batches(tiny_vlm, embedder_model):
    class Counting:
        name = "counting"

        def __init__(self):
            self.calls: list[int] = []

        def generate(self, requests):
            self.calls.append(len(requests))
            return [f"<think> {r.text} </think> answer" for r in requests]

    model = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    model[0].set_gate(embedder_model[0].gate)
    reasoner = Counting()
    model[0].set_reasoner(reasoner)
    think, _ = model.gate_decisions(QUERIES)
    model.encode_query(QUERIES, think="auto", batch_size=sum(think))
    # one decode batch for every reasoned input, not one per ST batch with only some rows reasoning
    assert reasoner.calls == [sum(think)]


def test_every_input_crosses_the_decoder_once_and_the_text_gate_reads_neither_it_nor_the_images(gated):
    """A gate on the text feature runs no processor, vision tower or decoder; then a skipped input takes
    its no-trace pass and a reasoned one only its traced pass (the embedder's) or its generation (the
    unified model's, whose prefill is that input's only multi-token pass). Counted at the backbone's
    first decoder layer and its vision tower."""
    from PIL import Image

    module = gated[0]
    unified = hasattr(module, "trace_token_ids")
    vlm = module.model.backbone.model if unified else getattr(module.model, "backbone", module.model)  # a Qwen2VLModel
    rows: list[int] = []
    images: list[int] = []

    def count(layer, args, kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        if states.shape[1] > 1:  # a whole sequence, not one decode step
            rows.append(states.shape[0])

    picture = Image.fromarray(np.arange(56 * 56 * 3, dtype=np.uint8).reshape(56, 56, 3))
    inputs = [{"text": QUERIES[0], "image": picture}, *QUERIES[1:]]
    handles = [
        vlm.language_model.layers[0].register_forward_pre_hook(count, with_kwargs=True),
        vlm.visual.register_forward_pre_hook(lambda *_: images.append(1)),
    ]
    try:
        with text_gate(gated):
            think, _ = gated.gate_decisions(inputs)
            assert rows == [] and images == [], "the gate's pass ran the decoder or the vision tower"
            module.ecr_cache.clear()  # fresh traces: the unified model embeds them while generating
            gated.encode_query(inputs, think="auto", batch_size=4)
    finally:
        for handle in handles:
            handle.remove()
    assert 0 < sum(think) < len(inputs)
    assert sum(rows) == len(inputs) and images


def test_gate_recipes_parse_and_name_traces_for_every_dataset():
    from tte_hf.training.config import parse_recipe
    from tte_hf.training.data import DatasetSpec
    from tte_hf.training.train_gate import GateArguments

    root = Path(__file__).resolve().parents[1] / "recipes" / "gate"
    for name in ("tiny.yaml", "qwen2vl_2b.yaml"):
        (args,) = parse_recipe([GateArguments], root / name)
        specs = [DatasetSpec.from_dict(raw, i) for i, raw in enumerate(args.datasets)]
        assert specs and all(spec.query_ecr for spec in specs), name
    with pytest.raises(ValueError, match="unknown_key"):
        parse_recipe([GateArguments], root / "tiny.yaml", ["--unknown_key", "1"])


def test_an_inputs_own_trace_is_read_under_auto_even_where_the_gate_skips(embedder_model):
    think, _ = embedder_model.gate_decisions(QUERIES)
    given = [{"text": q, "reasoning": "<think> a given trace </think> yes"} for q in QUERIES]
    auto = embedder_model.encode_query(given, think="auto", convert_to_tensor=True)
    forced = embedder_model.encode_query(given, think=True, convert_to_tensor=True)
    assert not all(think)
    torch.testing.assert_close(auto, forced, atol=1e-5, rtol=0)


def test_the_candidate_pool_holds_every_distinct_positive_and_hard_negative():
    """train-gate ranks each gold target among the dataset's positives *and* hard negatives: with a few,
    mutually unlike positives alone, a query would rank first without being understood."""
    from tte_hf.training.data import PairExample, Side
    from tte_hf.training.train_gate import _targets

    def pair(answer, negative=None):
        return PairExample(answer, Side("q"), Side(answer), Side(negative) if negative else None)

    pairs = [pair("a red dog", "a red cat"), pair("a blue cat", "a red dog"), pair("a red dog", "a blue dog")]
    targets, gold = _targets(pairs)
    assert [t.text for t in targets] == ["a red dog", "a blue cat", "a red cat", "a blue dog"]
    assert gold.tolist() == [0, 1, 0]


def _image(seed: int):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (56, 56, 3), dtype=np.uint8))


def test_the_gate_reads_the_mean_text_token_embedding_of_the_no_trace_sequence(gated):
    """The gate's feature: the token embeddings of each input's no-trace sequence as the processor
    builds it for the forward pass (padded, image placeholders expanded), averaged over the unpadded
    positions that are not image placeholders; computed here from those ids by table lookup."""
    module = gated[0]
    inputs = [{"text": "which object is red", "image": _image(0)}, "the sky at night over a long quiet road, seen from a bridge"]  # fmt: skip
    features = gated.gate_features(inputs, feature=TEXT_EMBEDDINGS)
    items = module.parse_inputs(inputs)
    unified = hasattr(module, "trace_token_ids")
    if unified:  # prompt + end token, left-padded
        batch = module._forward_features(items, [0, 1], [None, None], {}, INSTRUCTION)
    else:
        batch = module._features(items, module.embedder_texts(items, [None, None], INSTRUCTION))
    table = module.model.backbone.get_input_embeddings() if unified else module.model.get_input_embeddings()
    pad = module.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"][0] == pad).sum()) > 1  # the expanded image: many placeholder positions
    for row in range(2):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        torch.testing.assert_close(features[row], table(ids[ids != pad]).mean(0), atol=1e-6, rtol=1e-6)
    assert features.shape == (2, module.gate_feature_dim(TEXT_EMBEDDINGS))


@pytest.mark.parametrize("arch", ["tiny_vlm", "tiny_vlm_25", "tiny_vlm_3"])
def test_the_gate_feature_is_what_a_complete_pass_feeds_the_first_layer_at_the_text_positions(arch, request):
    """On every supported architecture, with an image and padding: the feature is transformers' own
    first-layer input (``hidden_states[0]``) of a complete pass, averaged over the text positions; so the
    picture does not enter it (another picture, same text: same bits) while the text does."""
    model = build_sentence_transformer(request.getfixturevalue(arch), prompts={"query": INSTRUCTION})
    module = model[0]
    inputs = [{"text": "which object is red", "image": _image(0)}, "the sky at night over a long quiet road"]
    features = model.gate_features(inputs, feature=TEXT_EMBEDDINGS)
    items = module.parse_inputs(inputs)
    batch = module._features(items, module.embedder_texts(items, [None, None], INSTRUCTION))
    batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    vlm = getattr(module.model, "backbone", module.model)
    with torch.no_grad():
        first = vlm(**batch, use_cache=False, output_hidden_states=True).hidden_states[0]
    text = batch["attention_mask"].bool() & (batch["input_ids"] != vlm.config.image_token_id)
    expected = torch.stack([first[row][text[row]].mean(0) for row in range(2)])
    torch.testing.assert_close(features, expected.float(), atol=1e-6, rtol=1e-6)
    other = model.gate_features(
        [{"text": "which object is red", "image": _image(1)}, "which object is blue"], feature=TEXT_EMBEDDINGS
    )
    assert torch.equal(other[0], features[0]) and not torch.allclose(other[1], features[1])


def test_a_gate_fitted_on_other_features_is_refused(embedder_model, tmp_path):
    module = embedder_model[0]
    old = ReasoningGate(module.gate_feature_dim(), feature="no-trace embedding")
    with pytest.raises(ValueError, match="retrain it with `tte-hf train-gate`"):
        module.set_gate(old)
    old.save(str(tmp_path))
    config = json.loads((tmp_path / "gate_config.json").read_text())
    del config["feature"]  # as the gates of the first release were saved
    (tmp_path / "gate_config.json").write_text(json.dumps(config))
    loaded = ReasoningGate.load(str(tmp_path / "gate_config.json"), str(tmp_path / "gate.safetensors"))
    with pytest.raises(ValueError, match="no-trace embedding"):
        module.set_gate(loaded)
    with pytest.raises(ValueError, match="reads 65-d features; this model's .mean input embedding.* is 64-d"):
        module.set_gate(ReasoningGate(module.gate_feature_dim(TEXT_EMBEDDINGS) + 1, feature=TEXT_EMBEDDINGS))
    with pytest.raises(ValueError, match="reads 65-d features; this model's .no-trace embedding.* is 64-d"):
        module.set_gate(ReasoningGate(module.gate_feature_dim(NO_TRACE_EMBEDDING) + 1, feature=NO_TRACE_EMBEDDING))


def test_the_probe_finds_a_signal_small_next_to_what_all_inputs_share():
    """Mean input embeddings are mostly the template every prompt repeats: a small difference on top of a
    large common part must still be learned (the probe standardises before its L2 penalty)."""
    from tte_hf.training.gate_fit import fit_probe

    generator = torch.Generator().manual_seed(1)
    n, dim = 200, 32
    kind = (torch.arange(n) % 2).float()
    common = torch.randn(dim, generator=generator) * 10
    features = common + torch.randn(n, dim, generator=generator) * 0.01
    features[:, 3] += 0.02 * (2 * kind - 1)  # the signal: 2 % of one coordinate's spread of the common part
    weight, bias = fit_probe(features, kind, l2=0.1)
    unit = torch.nn.functional.normalize(features, dim=-1)
    assert (((unit @ weight + bias) > 0).float() == kind).float().mean() >= 0.95


def test_the_budget_picks_the_fewest_calls_that_lose_at_most_its_share_of_the_trace_only_hits():
    from tte_hf.training.gate_fit import choose_threshold, tradeoff_curve

    # plain rows (the trace never helps) score low, riddles high; 4 trace-only hits among the riddles
    scores = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.7, 0.72, 0.8, 0.85, 0.9, 0.95])
    hit_with = torch.ones(10)
    hit_without = torch.tensor([1.0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    curve = tradeoff_curve(scores, hit_with, hit_without)
    strict = choose_threshold(curve, 0.0, call_margin=0.0)
    assert strict.call_share == pytest.approx(0.4) and strict.threshold == pytest.approx(0.76)
    assert strict.hit_at_1 == pytest.approx(1.0)
    one_lost = choose_threshold(curve, 0.25, call_margin=0.0)  # one of the four trace-only hits may go
    assert one_lost.call_share == pytest.approx(0.3) and one_lost.hit_at_1 == pytest.approx(0.9)
    assert choose_threshold(curve, 0.24, 0.0).call_share == pytest.approx(0.4), "a quarter is one hit, not less"
    # the margin: one more call (10% of the rows) wins the lost hit back; a margin below that does not
    assert choose_threshold(curve, 0.25, call_margin=0.1).call_share == pytest.approx(0.4)
    assert choose_threshold(curve, 0.25, call_margin=0.09).call_share == pytest.approx(0.3)
    # ...and past the last loss, more calls buy nothing: the margin stops at the fewest calls that lose none
    assert choose_threshold(curve, 0.25, call_margin=0.5).call_share == pytest.approx(0.4)


def test_the_probe_penalty_is_chosen_by_what_carries_to_held_out_answers():
    """`choose_l2` picks a penalty strong enough to ignore label noise tied to answers a held-out fold
    never shows (the weakest fits it, and its held-out scores suffer) yet weak enough to keep the signal
    (the strongest flattens it), and a weak one where a clean signal has many rows."""
    from tte_hf.training.gate_fit import L2_GRID, choose_l2, fold_members

    generator = torch.Generator().manual_seed(3)
    n, targets, dim = 256, 32, 96
    group = torch.arange(n) % targets
    kind = (torch.arange(n) // targets % 2).float()  # every answer is asked both ways
    per_answer = torch.randn(targets, dim, generator=generator)
    features = per_answer[group] + torch.randn(n, dim, generator=generator) * 0.3
    features[:, 0] += 2 * kind - 1
    noisy = group < targets // 3  # a third of the answers: known without the trace, labelled 0 either way
    labels = torch.where(noisy, torch.zeros(n), kind)
    members = fold_members(group.tolist(), 4, by="target")
    l2, losses = choose_l2(features, labels, members)
    assert set(losses) == set(L2_GRID) and l2 == min(losses, key=losses.get)
    assert losses[l2] < losses[min(L2_GRID)] - 0.1 and losses[l2] < losses[max(L2_GRID)] - 0.05, losses

    clean = torch.randn(2000, 24, generator=generator)
    direction = torch.randn(24, generator=generator)
    clean_labels = (clean @ direction > 0).float()
    l2, losses = choose_l2(clean, clean_labels, fold_members(list(range(2000)), 4, by="row"))
    assert l2 <= 0.1 and losses[l2] < losses[max(L2_GRID)] - 0.1, losses


def test_target_folds_hold_out_whole_answers_and_row_folds_deal_out_shuffled_rows():
    import random

    from tte_hf.training.gate_fit import fold_members

    groups = [(0, i % 6) for i in range(30)] + [(1, 0)] * 4  # six answers of one dataset, one of another
    folds = fold_members(groups, 4, seed=3, by="target")
    assert sorted(i for fold in folds for i in fold) == list(range(len(groups)))  # a partition
    held_out = [{groups[i] for i in fold} for fold in folds]
    for n, answers in enumerate(held_out):
        rest = {groups[i] for fold in folds[:n] + folds[n + 1 :] for i in fold}
        assert answers and not answers & rest, f"fold {n} shares an answer with the rows its probe fits on"
    assert sorted(map(len, held_out)) == [1, 2, 2, 2]  # 7 answers: gold index 0 of each dataset is its own
    assert fold_members(groups, 4, seed=3, by="target") == folds  # seeded
    assert fold_members(groups, 4, seed=4, by="target") != folds

    order = list(range(len(groups)))
    random.Random(3).shuffle(order)  # what train-gate dealt out before target folds existed
    assert fold_members(groups, 4, seed=3, by="row") == [sorted(order[f::4]) for f in range(4)]
    with pytest.raises(ValueError, match="at least 4 distinct gold targets, got 3"):
        fold_members([(0, i % 3) for i in range(9)], 4, by="target")
    with pytest.raises(ValueError, match="fold_by must be 'row' or 'target', got 'answer'"):
        fold_members(groups, 4, by="answer")


def test_train_gate_refuses_data_too_small_for_its_folds_before_writing_or_encoding(unified_path, tiny_vlm, tmp_path):
    from tte_hf.training.synthetic import write_synthetic_retrieval
    from tte_hf.training.train_gate import _is_unified, train_gate

    embedder = tmp_path / "tte"
    build_sentence_transformer(tiny_vlm, max_new_tokens=4).save(str(embedder))
    unified = tmp_path / "unified"
    save_sentence_transformer(build_sentence_transformer(unified_path, max_new_tokens=4), str(unified))
    assert (_is_unified(embedder), _is_unified(unified)) == (False, True)  # which traces the gate reads

    data = write_synthetic_retrieval(tmp_path / "data", num_items=3)  # 3 queries, 3 distinct targets
    twice = tmp_path / "data" / "twice.jsonl"  # 6 queries, each target the answer of two
    ecr = tmp_path / "data" / "twice_ecr.jsonl"
    for source, copy in ((data["data"], twice), (data["query_ecr"], ecr)):
        lines = Path(source).read_text().splitlines()
        copy.write_text("\n".join(lines + [line.replace('"shape-', '"again-') for line in lines]) + "\n")
    dataset = {"name": "tiny", "path": str(data["data"]), "image_root": str(data["image_root"]), "query_ecr": str(data["query_ecr"])}  # fmt: skip
    for source in (embedder, unified):
        out = tmp_path / f"{source.name}-gated"
        recipe = {"model_name_or_path": str(source), "output_dir": str(out), "datasets": [dataset], "folds": 4}
        with pytest.raises(ValueError, match="3 queries cannot fill 4 folds"):
            train_gate(recipe)
        with pytest.raises(ValueError, match="at least 4 distinct gold targets, got 3; lower folds"):
            train_gate({**recipe, "datasets": [{**dataset, "path": str(twice), "query_ecr": str(ecr)}]})
        assert not out.exists(), "refused before output_dir is written (and before anything is encoded)"


def test_the_gate_step_is_an_object_the_module_calls_with_its_own_features(tmp_path):
    """`GateStep` holds the gate and gets everything module-specific as arguments: the features of parsed
    inputs and their width. Its decisions are per thread, and its gate is a child module (moved by
    ``.to()``, in the parameters the embedding cache's fingerprint reads)."""
    import threading

    from tte_hf.models.tte.st_gate import GateStep
    from tte_hf.models.tte.st_input_types import ParsedInput

    calls = []

    def features(items, instruction):
        calls.append((len(items), instruction))
        return torch.tensor([[1.0, 0.0], [-1.0, 0.0]])[: len(items)]

    step = GateStep({GATE_FEATURE: features}, lambda feature: 2)
    items = [ParsedInput(text="a"), ParsedInput(text="b")]
    assert step.rows(items, "find", True) == [True, True] and step.last_decisions is None and not calls
    with pytest.raises(ValueError, match="think='auto' needs a reasoning gate"):
        step.rows(items, "find", "auto")
    with pytest.raises(ValueError, match="the gate reads 3-d features; this model's .* is 2-d"):
        step.set(ReasoningGate(3))
    with pytest.raises(ValueError, match="a feature this model does not give .* retrain it with `tte-hf train-gate`"):
        step.set(ReasoningGate(2, feature=TEXT_EMBEDDINGS))
    gate = ReasoningGate(2, threshold=0.5)
    with torch.no_grad():
        gate.linear.weight.copy_(torch.tensor([[10.0, 0.0]]))
    step.set(gate)
    assert step.rows(items, "find", "auto") == [True, False] and calls == [(2, "find")]
    assert step.last_decisions == [True, False] and step.last_scores[0] > 0.99 > 0.01 > step.last_scores[1]
    seen = []
    other = threading.Thread(target=lambda: seen.append(step.last_decisions))
    other.start(), other.join()
    assert seen == [None], "another thread sees its own (no) decisions"
    assert dict(step.named_parameters()).keys() == {"gate.linear.weight", "gate.linear.bias"}
    step.save(str(tmp_path))
    assert (tmp_path / "gate_config.json").exists()
    step.set(None)
    step.save(str(tmp_path))
    assert not (tmp_path / "gate_config.json").exists() and not (tmp_path / "gate.safetensors").exists()


def test_an_input_scored_exactly_at_the_threshold_reasons():
    """The boundary is pinned: think where score >= threshold, so the threshold itself reasons."""
    gate = ReasoningGate(4)
    features = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    with torch.no_grad():
        gate.linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
        gate.linear.bias.zero_()
        scores = gate.score(features)
        gate.threshold.copy_(scores[2])  # the third input's score is the threshold, exactly
    think, got = gate.decide(features)
    assert got[2] == float(gate.threshold)
    assert think == [True, False, True]

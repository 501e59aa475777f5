"""The reasoning gate on the no-trace embedding (the default feature): what ``think="auto"`` costs per
query, what a skipped input returns, decisions independent of the batch (images of several sizes), a
score that depends on the picture, text-feature gates that keep working, unknown ones refused, save/load,
and ``train-gate``'s ``feature`` option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import test_gate
import torch
from test_gate import INSTRUCTION, QUERIES, _median_gate

from tte_hf.models.tte.gate_tte import GATE_FEATURE, JOINT_FEATURES, NO_TRACE_EMBEDDING, TEXT_EMBEDDINGS, ReasoningGate
from tte_hf.sentence_transformers import build_sentence_transformer, save_sentence_transformer

# the gate tests' tiny models (module-scoped: this file gets its own) and ``gated``, each of them in turn
embedder_model, unified_path, unified_model = test_gate.embedder_model, test_gate.unified_path, test_gate.unified_model
gated = test_gate.gated


def _picture(seed: int, width: int = 56, height: int = 56):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


#: text and images of several sizes, mixed with text-only queries
MIXED = [
    {"text": "which object is red", "image": _picture(0)},
    "count the apples",
    {"text": "which object is red", "image": _picture(1, 84, 56)},
    {"text": "is the door open", "image": _picture(2, 56, 112)},
    "the sky at night over a long quiet road",
    {"image": _picture(3, 112, 84)},
    {"text": "who wrote this sign", "image": _picture(4, 28 * 5, 28 * 3)},
    "two dogs",
]


class CountingReasoner:
    """A reasoner stub: one request is one prefill of a real reasoner."""

    name = "counting"

    def __init__(self):
        self.requests = 0

    def generate(self, requests):
        self.requests += len(requests)
        return [f"<think> {r.text or 'a picture'} and what it shows </think> the answer" for r in requests]


@pytest.fixture(scope="module")
def stub_embedder(tiny_vlm):
    """The embedder with a counting reasoner stub and a median gate on the no-trace embedding of `MIXED`."""
    model = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    model[0].set_reasoner(CountingReasoner())
    _median_gate(model, MIXED, seed=2)
    return model


def _prompt_passes(model):
    """A counter of multi-token passes (rows) at the backbone's first decoder layer, and its hook handle:
    every pass over a prompt (embedding, no-trace or traced, and a generation's prefill), not decode steps."""
    module = model[0]
    vlm = module.model.backbone.model if hasattr(module, "trace_token_ids") else getattr(module.model, "backbone", module.model)  # fmt: skip
    rows = []

    def count(layer, args, kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        if states.shape[1] > 1:
            rows.append(states.shape[0])

    return rows, vlm.language_model.layers[0].register_forward_pre_hook(count, with_kwargs=True)


def _cost(model, inputs, mode, batch_size: int = 32) -> int:
    """Passes over prompt tokens of ``encode_query(inputs, think=mode)`` with empty caches: the backbone's
    multi-token passes (rows) plus the requests a stub reasoner received (a real one prefills each)."""
    module = model[0]
    module.ecr_cache.clear()
    if hasattr(module, "trace_token_ids"):
        module.trace_token_ids.clear()
    reasoner = module.reasoner
    before = getattr(reasoner, "requests", 0)
    rows, handle = _prompt_passes(model)
    try:
        model.encode_query(inputs, think=mode, batch_size=batch_size)
    finally:
        handle.remove()
    return sum(rows) + getattr(reasoner, "requests", 0) - before


@pytest.mark.parametrize("name", ["stub_embedder", "unified_model"])
def test_a_skipped_query_costs_what_never_costs_and_a_reasoned_one_one_pass_more_than_always(name, request):
    model = request.getfixturevalue(name)
    if name == "unified_model":
        _median_gate(model, MIXED, seed=3)
    think, _ = model.gate_decisions(MIXED)
    assert 0 < sum(think) < len(MIXED), "the gate's threshold splits the queries"
    for index, query in enumerate(MIXED):
        never, always, auto = (_cost(model, query, mode) for mode in (False, True, "auto"))
        assert never == 1 and always >= never, (index, never, always)
        assert model[0].last_gate_decisions == [think[index]]
        assert auto == (always + 1 if think[index] else never), (index, think[index], never, always, auto)
    # a whole call: one no-trace pass over every query, then only the reasoned ones as under always
    always_each = _cost(model, MIXED[0], True)
    assert _cost(model, MIXED, "auto", batch_size=3) == _cost(model, MIXED, False) + sum(think) * always_each


def test_the_unified_module_driven_directly_also_returns_its_no_trace_pass_for_skipped_rows(unified_model):
    """Without `TTESentenceTransformer` (a caller running the module's preprocess + forward), the unified
    module gates the same way: one no-trace pass for the batch, skipped rows' vectors taken from it."""
    from sentence_transformers.util import batch_to_device

    model, module = unified_model, unified_model[0]
    _median_gate(model, MIXED, seed=3)
    think, _ = model.gate_decisions(MIXED)
    expected = model.encode_query(MIXED, think="auto", convert_to_tensor=True)
    module.ecr_cache.clear()
    module.trace_token_ids.clear()
    rows, handle = _prompt_passes(model)
    try:
        features = module.preprocess(MIXED, prompt=INSTRUCTION, task="query", think="auto")
        vectors = model(batch_to_device(features, model.device), think="auto")["sentence_embedding"]
    finally:
        handle.remove()
    assert module.last_gate_decisions == think
    assert sum(rows) == len(MIXED) + sum(think)  # the no-trace pass, then each reasoned row's prefill
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)


def test_a_skipped_input_returns_its_think_false_vector_with_the_callers_options(gated):
    _median_gate(gated, MIXED, seed=4)
    think, _ = gated.gate_decisions(MIXED)
    assert 0 < sum(think) < len(MIXED)
    for options in ({}, {"normalize_embeddings": True, "truncate_dim": 16}, {"convert_to_tensor": True}):
        auto = gated.encode_query(MIXED, think="auto", batch_size=3, **options)
        never = gated.encode_query(MIXED, think=False, batch_size=3, **options)
        always = gated.encode_query(MIXED, think=True, batch_size=3, **options)
        for row, reasons in enumerate(think):
            np.testing.assert_allclose(
                np.asarray(auto[row]), np.asarray(always[row] if reasons else never[row]), atol=1e-5, rtol=0
            )
    skipped = think.index(False)
    alone = gated.encode_query(MIXED[skipped], think="auto", convert_to_tensor=True)
    torch.testing.assert_close(alone, gated.encode_query(MIXED[skipped], think=False, convert_to_tensor=True), atol=1e-5, rtol=0)  # fmt: skip


def test_decisions_are_deterministic_and_batch_invariant_with_images_of_several_sizes(gated):
    _median_gate(gated, MIXED, seed=5)
    think, scores = gated.gate_decisions(MIXED)
    assert 0 < sum(think) < len(MIXED)
    assert gated.gate_decisions(MIXED) == (think, scores)
    orders = [list(reversed(range(len(MIXED)))), [3, 0, 6, 1, 7, 2, 5, 4]]
    for order in orders:
        got = gated.gate_decisions([MIXED[i] for i in order])
        assert got[0] == [think[i] for i in order]
        np.testing.assert_allclose(got[1], [scores[i] for i in order], atol=1e-5, rtol=0)
    for batch_size in (1, 3):
        got = gated.gate_decisions(MIXED, batch_size=batch_size)
        assert got[0] == think
        np.testing.assert_allclose(got[1], scores, atol=1e-5, rtol=0)
    gated.encode_query([MIXED[i] for i in orders[1]], think="auto", batch_size=3)  # ST's own length-sorted batches
    assert gated[0].last_gate_decisions == [think[i] for i in orders[1]]
    np.testing.assert_allclose(gated[0].last_gate_scores, [scores[i] for i in orders[1]], atol=1e-5, rtol=0)


def test_the_score_depends_on_the_image(gated):
    """The text feature cannot tell these two inputs apart (same text: same bits); the no-trace embedding can."""
    _median_gate(gated, MIXED, seed=6)
    inputs = [{"text": "which object is red", "image": _picture(10)}, {"text": "which object is red", "image": _picture(11)}]  # fmt: skip
    _, scores = gated.gate_decisions(inputs)
    assert abs(scores[0] - scores[1]) > 1e-4
    text = gated.gate_features(inputs, feature=TEXT_EMBEDDINGS)
    assert torch.equal(text[0], text[1])


def _write_gate(folder, dim: int, feature: str, weight: torch.Tensor, threshold: float) -> None:
    """A gate's two files as a tte-hf that wrote ``feature`` saved them (safetensors + a hand-written config)."""
    from safetensors.torch import save_file

    save_file(
        {
            "linear.weight": weight.view(1, -1).contiguous(),
            "linear.bias": torch.zeros(1),
            "threshold": torch.tensor(threshold),
        },  # fmt: skip
        str(folder / "gate.safetensors"),
    )
    config = {"dim": dim, "threshold": threshold, "feature": feature, "info": {"trained_with": "tte-hf train-gate"}}
    (folder / "gate_config.json").write_text(json.dumps(config))


def test_a_text_feature_gate_still_loads_and_decides_and_an_unknown_feature_is_refused(tiny_vlm, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    dim = model[0].gate_feature_dim(TEXT_EMBEDDINGS)
    text = model.gate_features(QUERIES, feature=TEXT_EMBEDDINGS)
    weight = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    scores = torch.sigmoid(torch.nn.functional.normalize(text, dim=-1) @ weight)  # the probe, by hand
    threshold = float(scores.median())
    folder = tmp_path / "old"
    model.save(str(folder))
    _write_gate(folder, dim, TEXT_EMBEDDINGS, weight, threshold)

    loaded = SentenceTransformer(str(folder), trust_remote_code=True)
    assert loaded[0].gate.feature == TEXT_EMBEDDINGS and not loaded[0].gate_step.reads_embeddings
    think, got = loaded.gate_decisions(QUERIES)
    np.testing.assert_allclose(got, scores.tolist(), atol=1e-6, rtol=0)
    assert think == (scores >= threshold).tolist() and 0 < sum(think) < len(QUERIES)
    loaded[0].set_reasoner(CountingReasoner())
    auto = loaded.encode_query(QUERIES, think="auto", convert_to_tensor=True)
    never = loaded.encode_query(QUERIES, think=False, convert_to_tensor=True)
    skipped = [i for i, t in enumerate(think) if not t]
    torch.testing.assert_close(auto[skipped], never[skipped], atol=1e-5, rtol=0)

    _write_gate(folder, dim, "mean hidden state of layer 3", weight, threshold)
    with pytest.raises(ValueError, match=r"'mean hidden state of layer 3'.*retrain it with `tte-hf train-gate`"):
        SentenceTransformer(str(folder), trust_remote_code=True)


def test_save_and_load_keep_the_no_trace_embedding_gate_and_its_decisions(gated, tmp_path):
    from sentence_transformers import SentenceTransformer

    gate = _median_gate(gated, MIXED, seed=7, feature=NO_TRACE_EMBEDDING)
    save_sentence_transformer(gated, tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "gate_config.json").read_text())
    assert config["feature"] == NO_TRACE_EMBEDDING and config["dim"] == gated[0].get_embedding_dimension()
    loaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    assert loaded[0].gate.feature == NO_TRACE_EMBEDDING
    torch.testing.assert_close(loaded[0].gate.linear.weight, gate.linear.weight, atol=0, rtol=0)
    assert float(loaded[0].gate.threshold) == float(gate.threshold)
    think, scores = gated.gate_decisions(MIXED)
    loaded_think, loaded_scores = loaded.gate_decisions(MIXED)
    assert loaded_think == think
    np.testing.assert_allclose(loaded_scores, scores, atol=1e-5, rtol=0)


def test_train_gate_fits_the_feature_it_is_asked_for_and_reuses_the_no_trace_vectors(tiny_vlm, tmp_path, monkeypatch):
    """``feature: embedding`` fits on the no-trace vectors the labelling computed, without another pass
    (``gate_features`` is never called); ``feature: text`` on the text feature, ``joint`` (the default) on
    both. Each is recorded; an unknown one is refused before anything is written; a source gate with an
    unknown feature is replaced."""
    from sentence_transformers import SentenceTransformer

    from tte_hf.training import train_gate as train_gate_module
    from tte_hf.training.synthetic import write_synthetic_retrieval
    from tte_hf.training.train_gate import train_gate

    data = write_synthetic_retrieval(tmp_path / "data", num_items=16)
    source = tmp_path / "tte"
    build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION}).save(str(source))
    _write_gate(source, 3, "mean hidden state of layer 3", torch.ones(3), 0.5)  # another version's gate
    dataset = {"name": "shapes", "path": str(data["data"]), "image_root": str(data["image_root"]), "task": "classification", "query_ecr": str(data["query_ecr"])}  # fmt: skip
    recipe = {"model_name_or_path": str(source), "datasets": [dataset], "batch_size": 8, "device": "cpu"}
    with pytest.raises(ValueError, match="feature must be 'embedding' or 'text' or 'joint', got 'pixels'"):
        train_gate({**recipe, "output_dir": str(tmp_path / "bad"), "feature": "pixels"})
    assert not (tmp_path / "bad").exists()

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the no-trace embedding was computed again for the gate")

    measure = train_gate_module._measure

    def measure_without_gate_features(model, *args):  # the model train-gate loaded (the folder's remote code)
        model.gate_features = no_second_pass
        return measure(model, *args)

    with monkeypatch.context() as patch:
        patch.setattr(train_gate_module, "_measure", measure_without_gate_features)
        info = train_gate({**recipe, "output_dir": str(tmp_path / "embedding"), "feature": "embedding"})
    text_info = train_gate({**recipe, "output_dir": str(tmp_path / "text"), "feature": "text"})
    joint_info = train_gate({**recipe, "output_dir": str(tmp_path / "joint")})  # the default
    fitted = (("embedding", NO_TRACE_EMBEDDING, info), ("text", TEXT_EMBEDDINGS, text_info), ("joint", JOINT_FEATURES, joint_info))  # fmt: skip
    for name, feature, recorded in fitted:
        config = json.loads((tmp_path / name / "gate_config.json").read_text())
        assert config["feature"] == recorded["feature"] == feature and recorded["recipe"]["feature"] == name
        model = SentenceTransformer(str(tmp_path / name), trust_remote_code=True)
        assert model[0].gate.feature == feature and model[0].gate.dim == model[0].gate_feature_dim(feature)
    assert json.loads((source / "gate_config.json").read_text())["feature"] == "mean hidden state of layer 3"


def test_reasoning_gate_refuses_features_of_the_wrong_width():
    gate = ReasoningGate(4)
    assert gate.feature == GATE_FEATURE == JOINT_FEATURES  # train-gate's default feature
    with pytest.raises(ValueError, match=r"the gate takes \(n, 4\) features, got shape \(2, 5\)"):
        gate.score(torch.zeros(2, 5))


def test_a_copied_or_unpickled_model_still_gates_on_its_own_modules(tiny_vlm):
    """The embedder's no-trace embedding runs the modules after it, found through a weak reference to the
    model: a deep copy points at the copy, an unpickled model re-attaches on its next call."""
    import copy
    import pickle

    embedder_model = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    _median_gate(embedder_model, MIXED, seed=8)
    expected = embedder_model.gate_decisions(MIXED)
    clone = copy.deepcopy(embedder_model)
    assert clone[0].sentence_transformer() is clone
    assert clone.gate_decisions(MIXED)[0] == expected[0]
    unpickled = pickle.loads(pickle.dumps(embedder_model))
    with pytest.raises(ValueError, match="not inside a SentenceTransformer"):
        unpickled[0].gate_features(MIXED[:1])
    assert unpickled.gate_decisions(MIXED)[0] == expected[0]


def test_a_joint_gate_reads_the_no_trace_embedding_and_the_words_returns_skipped_rows_and_reloads(gated, tmp_path):
    """``feature: joint``: the no-trace embedding and the text feature, each unit length, concatenated.
    Its score is the probe on that vector (by hand), it changes with the picture and with the words, a
    skipped input returns its ``think=False`` vector, and save -> load keeps its decisions."""
    from sentence_transformers import SentenceTransformer

    previous = gated[0].gate
    try:
        gate = _median_gate(gated, MIXED, seed=8, feature=JOINT_FEATURES)
        assert gated[0].gate_step.reads_embeddings
        embedding = gated.gate_features(MIXED, feature=NO_TRACE_EMBEDDING)
        text = gated.gate_features(MIXED, feature=TEXT_EMBEDDINGS)
        unit = torch.nn.functional.normalize
        joint = torch.cat([unit(embedding, dim=-1), unit(text, dim=-1)], dim=-1)
        by_hand = torch.sigmoid(unit(joint, dim=-1) @ gate.linear.weight.view(-1) + gate.linear.bias)
        think, scores = gated.gate_decisions(MIXED)
        np.testing.assert_allclose(scores, by_hand.tolist(), atol=1e-5, rtol=0)
        assert 0 < sum(think) < len(MIXED)

        auto = gated.encode_query(MIXED, think="auto", batch_size=3, convert_to_tensor=True)
        assert gated[0].last_gate_decisions == think
        never = gated.encode_query(MIXED, think=False, batch_size=3, convert_to_tensor=True)
        always = gated.encode_query(MIXED, think=True, batch_size=3, convert_to_tensor=True)
        for row, reasons in enumerate(think):
            torch.testing.assert_close(auto[row], (always if reasons else never)[row], atol=1e-5, rtol=0)

        same_text = [{"text": "which object is red", "image": _picture(20)}, {"text": "which object is red", "image": _picture(21)}]  # fmt: skip
        same_image = [{"text": "which object is red", "image": _picture(20)}, {"text": "count the apples", "image": _picture(20)}]  # fmt: skip
        for pair in (same_text, same_image):
            _, pair_scores = gated.gate_decisions(pair)
            assert abs(pair_scores[0] - pair_scores[1]) > 1e-4

        save_sentence_transformer(gated, tmp_path / "saved")
        assert json.loads((tmp_path / "saved" / "gate_config.json").read_text())["feature"] == JOINT_FEATURES
        loaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
        loaded_think, loaded_scores = loaded.gate_decisions(MIXED)
        assert loaded_think == think
        np.testing.assert_allclose(loaded_scores, scores, atol=1e-5, rtol=0)
    finally:
        gated[0].set_gate(previous)

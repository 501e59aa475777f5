"""`--engine vllm`: the sequences it feeds vLLM are the transformers path's own; on CPU, a clear error;
on a GPU (`-m gpu`), vLLM's pooling runner against transformers for the same exported model."""

import time

import pytest
import torch
from PIL import Image

from tte_hf.evaluation.vllm_engine import VLLMEmbedder


class FakeReasoner:
    def __init__(self):
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        return [f"<think>about {r.text or 'the picture'}</think> answer {k}" for k, r in enumerate(requests)]


def _inputs():
    red, blue = Image.new("RGB", (56, 56), (220, 30, 30)), Image.new("RGB", (56, 56), (30, 30, 220))
    return [
        "a red bus",
        red,
        {"text": "what colour is it?", "image": blue, "reasoning": "<think>blue</think> blue"},
        {"text": "Recognize the category of the video content.", "video": [red, blue, red, blue]},
    ]


def test_engine_inputs_are_the_transformers_sequences(tiny_vlm):
    from tte_hf.sentence_transformers import build_sentence_transformer

    instruction = "Find the matching item."
    reasoner = FakeReasoner()
    st = build_sentence_transformer(tiny_vlm, prompts={"query": instruction}, device="cpu")
    module = st[0]
    module.set_reasoner(FakeReasoner())
    inputs = _inputs()
    traces = module.get_reasoning(inputs, task="query", prompt=instruction)
    expected = module.embedder_texts(module.parse_inputs(inputs), traces, instruction)

    engine = VLLMEmbedder(tiny_vlm, reasoner=reasoner, prompts={"query": instruction})
    got = engine.engine_inputs(inputs, side="query")
    assert [g["prompt"] for g in got] == expected
    assert len(reasoner.requests) == 3  # the input with its own trace is not reasoned about
    assert "<think>blue</think> blue" in got[2]["prompt"]
    assert "multi_modal_data" not in got[0] and got[1]["multi_modal_data"]["image"].size == (56, 56)
    assert got[3]["multi_modal_data"]["video"].shape == (4, 56, 56, 3)
    # Documents do not reason by default, as in TTETransformer.
    docs = engine.engine_inputs(["a red bus"], side="document")
    doc_traces = module.get_reasoning(["a red bus"], task="document", prompt=None)
    assert docs[0]["prompt"] == module.embedder_texts(module.parse_inputs(["a red bus"]), doc_traces, None)[0]


def test_vllm_engine_on_a_cpu_machine_is_a_clear_error(tiny_vlm, capsys):
    try:
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("vLLM and a GPU are present; see the gpu test")
    except ImportError:
        pass
    engine = VLLMEmbedder(tiny_vlm)
    with pytest.raises((ImportError, RuntimeError), match="needs vLLM and a CUDA GPU|needs a CUDA GPU"):
        engine.encode_query(["a red bus"])
    from tte_hf.cli import main

    assert main(["eval", "--model", tiny_vlm, "--engine", "vllm", "--output", "unused", "--tasks", "ImageNet-1K"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


@pytest.mark.gpu
def test_vllm_pooling_matches_transformers_and_is_faster(tiny_vlm, tmp_path):
    pytest.importorskip("vllm", reason="pip install 'tte-hf[vllm]'")
    from tte_hf import TTEEmbedderModel
    from tte_hf.hub import export_vllm
    from tte_hf.sentence_transformers import build_sentence_transformer

    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(tmp_path / "embedder")
    folder = export_vllm(tmp_path / "embedder", tmp_path / "vllm", processor=tiny_vlm)
    reference = build_sentence_transformer(str(folder), device="cuda")
    engine = VLLMEmbedder(folder, dtype="float32", engine_kwargs={"enforce_eager": True, "max_model_len": 2048})
    inputs = _inputs() * 64
    engine.encode_query(inputs[:4])  # engine start-up and warm-up outside the timing
    reference.encode_query(inputs[:4], convert_to_tensor=True)
    start = time.perf_counter()
    got = engine.encode_query(inputs)
    t_vllm = time.perf_counter() - start
    start = time.perf_counter()
    expected = reference.encode_query(inputs, batch_size=32, convert_to_tensor=True).float().cpu()
    t_hf = time.perf_counter() - start
    cos = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
    print(f"vLLM pooling {len(inputs) / t_vllm:.1f} items/s, transformers {len(inputs) / t_hf:.1f} items/s, min cos {cos.min():.5f}")  # fmt: skip
    assert cos.min() >= 0.999, cos

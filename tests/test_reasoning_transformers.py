import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from tte_hf.models.tte.ecr import task_prompt
from tte_hf.models.tte.reasoner_transformers import TransformersReasoner
from tte_hf.reasoning import ReasoningRequest, load_reasoner


def _image(color):
    return Image.new("RGB", (56, 42), color)


@pytest.fixture(scope="module")
def reasoner(tiny_vlm):
    return load_reasoner({"backend": "transformers", "model": tiny_vlm, "max_new_tokens": 12, "batch_size": 4})


REQUESTS = [
    ReasoningRequest(text="what color is the square?", images=(_image("red"),), task="vqa", item_id="a"),
    ReasoningRequest(text="a dog on a road", task="retrieval", item_id="b"),
    ReasoningRequest(
        text="classify", images=(_image("blue"),), instruction="Represent the image", task="classification"
    ),
    ReasoningRequest(text="the man left of the car", images=(_image("green"),), task="grounding", item_id="d"),
    ReasoningRequest(text="what happens?", video=(_image("red"), _image("blue")), task="video_qa", item_id="e"),
    ReasoningRequest(images=(_image("gray"),), task="visdoc", item_id="f"),
]


def _raw_generate(path, request, max_new_tokens):
    """Independent reference: hand-written chat messages, one prompt at a time, plain model.generate."""
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    content = [{"type": "image"} for _ in request.images] + ([{"type": "video"}] if request.video else [])
    words = " ".join(w for w in (request.instruction, request.text) if w)
    if words:
        content.append({"type": "text", "text": words})
    messages = [
        {"role": "system", "content": task_prompt(request.task)},
        {"role": "user", "content": content},
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {"images": list(request.images)} if request.images else {}
    if request.video:
        kwargs["videos"] = [list(request.video)]
    inputs = processor(text=[prompt], return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_batched_traces_match_raw_generate_one_by_one(reasoner, tiny_vlm):
    traces = reasoner.generate(REQUESTS)  # batches of 4 with left padding, mixed image/video/text-only
    expected = [_raw_generate(tiny_vlm, r, 12) for r in REQUESTS]
    assert traces == expected
    assert all(t for t in traces)


def test_prompt_uses_the_task_system_prompt_and_left_padding(reasoner):
    inputs = reasoner.processor_inputs(REQUESTS[:2])
    assert inputs["attention_mask"][:, -1].eq(1).all()  # left padded
    lengths = inputs["attention_mask"].sum(1)
    assert lengths[0] != lengths[1] and inputs["attention_mask"][lengths.argmin(), 0] == 0  # padded on the left
    text = reasoner.processor.tokenizer.decode(inputs["input_ids"][1], skip_special_tokens=False)
    assert task_prompt("retrieval") in text and text.endswith("<|im_start|>assistant\n")


def test_unknown_task_fails_before_generating(reasoner):
    with pytest.raises(ValueError, match="Unknown ECR task 'caption'"):
        reasoner.generate([ReasoningRequest(text="x", task="caption")])


def test_seeded_sampling_is_reproducible(tiny_vlm):
    def run(seed):
        sampler = TransformersReasoner(tiny_vlm, max_new_tokens=12, do_sample=True, temperature=1.5, seed=seed)
        return sampler.generate(REQUESTS[:3])

    first = run(1)
    assert first == run(1)
    assert first != run(2)


def test_describe_names_everything_that_changes_the_output(reasoner):
    description = reasoner.describe()
    assert description["model"] == reasoner.model_name and description["max_new_tokens"] == 12
    assert description["do_sample"] is False and description["prompt_version"]


def test_load_reasoner_rejects_unknown_backend_and_options(tiny_vlm):
    with pytest.raises(ValueError, match="Unknown reasoner backend 'hf'"):
        load_reasoner(backend="hf")
    with pytest.raises(TypeError, match="Bad options for the transformers reasoner"):
        load_reasoner(backend="transformers", model=tiny_vlm, max_tokens=3)


def test_vllm_backend_without_vllm_or_gpu_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    if has_vllm and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are present; see the gpu test")
    with pytest.raises((ImportError, RuntimeError), match=r"tte-hf\[vllm\]|CUDA GPU"):
        load_reasoner(backend="vllm", model="any")


@pytest.mark.gpu
def test_vllm_backend_matches_transformers_greedy(tiny_vlm):
    pytest.importorskip("vllm")
    vllm_reasoner = load_reasoner(backend="vllm", model=tiny_vlm, max_new_tokens=12, max_model_len=2048)
    hf = load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=12, dtype="float32")
    requests = [r for r in REQUESTS if not r.video]
    got = vllm_reasoner.generate(requests)
    assert len(got) == len(requests) and all(isinstance(t, str) for t in got)
    # fp32 tiny model: the greedy traces agree on their first tokens at least
    expected = hf.generate(requests)
    assert sum(g[:5] == e[:5] for g, e in zip(got, expected)) >= len(requests) - 1

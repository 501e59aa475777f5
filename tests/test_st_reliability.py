"""Issue 13 faults of the ST model: stale embedding cache, per-call state shared across threads,
image failures that are not ``ValueError`` naming the input index."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from test_sentence_transformer import ForwardCounter
from transformers import AutoProcessor

from tte_hf.sentence_transformers import build_sentence_transformer


def _image(seed: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def _uncached(model, encode):
    kept, model.embedding_cache = model.embedding_cache, None
    try:
        return encode()
    finally:
        model.embedding_cache = kept


# --- embedding cache ----------------------------------------------------------------------------


def test_embedding_cache_follows_adapters_data_writes_and_mode(tiny_vlm):
    from peft import LoraConfig, get_peft_model

    model = build_sentence_transformer(tiny_vlm, embedding_cache_size=64)

    def lora():  # random B matrices: each adapter changes the vector
        return LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_dropout=0.5)

    backbone = model[0].model = get_peft_model(model[0].model, lora(), adapter_name="first")
    backbone.add_adapter("second", lora())
    inputs = ["is it a cat", {"text": "which one", "image": _image(0, 40, 60)}]

    def encode():
        return model.encode_document(inputs, convert_to_tensor=True)

    seen = [encode()]
    torch.testing.assert_close(seen[0], _uncached(model, encode), atol=0, rtol=0)
    changes = {
        "set_adapter": lambda: backbone.set_adapter("second"),
        "disable_adapters": lambda: backbone.base_model.disable_adapter_layers(),
        "enable_adapters": lambda: backbone.base_model.enable_adapter_layers(),
        "param.data.copy_": lambda: backbone.get_input_embeddings().weight.data.copy_(
            torch.randn(backbone.get_input_embeddings().weight.shape, generator=torch.Generator().manual_seed(1))
        ),
    }
    for name, change in changes.items():
        change()
        cached = encode()
        torch.testing.assert_close(cached, _uncached(model, encode), atol=0, rtol=0, msg=name)
        assert not torch.allclose(cached, seen[-1], atol=1e-4), f"{name} changed nothing"
        seen.append(cached)

    # LoRA dropout makes train-mode forwards differ; encode runs in eval mode, cached or not
    model.train()
    features = model.preprocess(inputs)
    torch.manual_seed(0)
    train_a = model(dict(features))["sentence_embedding"]
    train_b = model(dict(features))["sentence_embedding"]
    assert not torch.allclose(train_a, train_b, atol=1e-4)
    model.train()
    cached = encode()
    assert not model.training  # as an uncached encode leaves it
    torch.testing.assert_close(cached, seen[-1], atol=0, rtol=0)
    model.train()
    torch.testing.assert_close(_uncached(model, encode), cached, atol=0, rtol=0)


def test_embedding_cache_clear_and_lru_bound_from_config(tiny_vlm, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = build_sentence_transformer(tiny_vlm, embedding_cache_size=2)
    cache = model.embedding_cache
    assert cache.max_entries == 2
    forwards = ForwardCounter(model[0].model.get_input_embeddings())
    try:

        def encode(text):
            calls = forwards.calls
            vector = model.encode_document(text, convert_to_tensor=True)
            return vector, forwards.calls - calls

        a, ran = encode("first text")
        assert ran == 1
        encode("second text")
        assert encode("first text")[1] == 0  # a hit, and now the most recently used
        encode("third text")  # evicts "second text", the least recently used
        assert (len(cache), cache.evictions) == (2, 1)
        assert encode("first text")[1] == 0
        assert encode("second text")[1] == 1
        assert cache.evictions == 2
        cache.clear()
        assert len(cache) == 0
        again, ran = encode("first text")
        assert ran == 1
        torch.testing.assert_close(again, a, atol=0, rtol=0)
    finally:
        forwards.handle.remove()

    model.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    assert reloaded.embedding_cache.max_entries == 2
    assert build_sentence_transformer(tiny_vlm).embedding_cache is None  # off unless configured


# --- concurrent encode calls --------------------------------------------------------------------

THREADS = 8


class BarrierReasoner:
    """A deterministic trace per input; every call waits until all threads are inside it."""

    name = "barrier"
    thread_safe = True  # stateless, so the module lets calls overlap (and the barrier can fill)

    def __init__(self, threads: int):
        self.barrier = threading.Barrier(threads, timeout=60)

    def describe(self):
        return {"name": self.name}

    def generate(self, requests):
        self.barrier.wait()
        return [f"<think>about {r.text}</think> {r.text[::-1]}" for r in requests]


def _run_threads(work):
    results, errors = [None] * THREADS, []

    def run(index):
        try:
            results[index] = work(index)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _thread_inputs(index):
    return [f"question {index} about the bus", f"thread {index} asks something else entirely"]


def test_concurrent_encodes_get_their_own_vectors_and_last_reasoning(tiny_vlm):
    model = build_sentence_transformer(tiny_vlm, reasoner=BarrierReasoner(1))
    expected = [
        (model.encode_query(_thread_inputs(i), convert_to_tensor=True), model[0].last_reasoning) for i in range(THREADS)
    ]
    threaded = build_sentence_transformer(tiny_vlm, reasoner=BarrierReasoner(THREADS))
    after_encode = threading.Barrier(THREADS, timeout=60)

    def work(index):
        vectors = threaded.encode_query(_thread_inputs(index), convert_to_tensor=True)
        after_encode.wait()  # every thread has encoded before any reads its last_reasoning
        return vectors, threaded[0].last_reasoning

    for (vectors, reasoning), (want_vectors, want_reasoning) in zip(_run_threads(work), expected):
        torch.testing.assert_close(vectors, want_vectors, atol=0, rtol=0)
        assert reasoning == want_reasoning


@pytest.fixture(scope="module")
def unified_dir(tiny_vlm, tmp_path_factory):
    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel

    path = tmp_path_factory.mktemp("unified")
    model = TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 2})
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(path)
    return str(path)


def test_concurrent_unified_encodes_keep_their_generated_embeddings(unified_dir):
    reference = build_sentence_transformer(unified_dir, max_new_tokens=6)
    expected = [reference.encode_query(_thread_inputs(i), convert_to_tensor=True) for i in range(THREADS)]
    model = build_sentence_transformer(unified_dir, max_new_tokens=6)
    module = model[0]
    real, start = module.parse_inputs, threading.Barrier(THREADS, timeout=60)

    def parse_inputs(inputs, load=True):
        if load:  # in `preprocess`: every thread starts reasoning at the same moment
            start.wait()
        return real(inputs, load)

    module.parse_inputs = parse_inputs
    got = _run_threads(lambda i: model.encode_query(_thread_inputs(i), convert_to_tensor=True))
    for index, (vectors, want) in enumerate(zip(got, expected)):
        torch.testing.assert_close(vectors, want, atol=0, rtol=0, msg=f"thread {index}")
    assert isinstance(model[0].trace_token_ids.max_entries, int)  # bounded


# --- image failures -----------------------------------------------------------------------------


def test_every_image_failure_is_a_value_error_naming_the_input(tiny_vlm, tmp_path, monkeypatch):
    model = build_sentence_transformer(tiny_vlm)
    big = tmp_path / "big.png"
    _image(1, 100, 100).save(big)
    # PIL's own bomb check (in Image.open) fires below our max_image_pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(ValueError, match=r"Input 1: image 0: .*big.png.*decompression bomb"):
        model.encode_document(["fine", {"text": "x", "image": big}])
    monkeypatch.undo()

    truncated = tmp_path / "truncated.png"
    _image(2, 64, 64).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    lazy = Image.open(truncated)  # the caller's own PIL image, not decoded yet
    with pytest.raises(ValueError, match=r"Input 2: image 0: .*could not be decoded"):
        model.encode_document(["fine", "also fine", {"text": "x", "image": lazy}])
    with pytest.raises(ValueError, match=r"Input 0: .*could not be decoded"):
        model.encode_document([Image.open(truncated), "fine"])


def test_image_urls_in_process_are_fetched_as_safely_as_by_the_server(tiny_vlm, tmp_path):
    """The path ``SentenceTransformer(..., trust_remote_code=True).encode_query([{"image": url}])``:
    the saved repo's own code refuses a loopback URL before connecting, a redirect and an EPS body,
    naming the input; the allowed host (``image_url_allow_hosts``, saved with the model) is fetched."""
    from image_web import EPS, Web, small_image
    from sentence_transformers import SentenceTransformer

    with Web({"/eps.png": ("image/png", EPS)}) as web:
        allowed = f"127.0.0.1:{web.allowed_port}"
        built = build_sentence_transformer(tiny_vlm, allow_image_urls=True, image_url_allow_hosts=[allowed])
        built.save(str(tmp_path / "saved"))
        model = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
        assert type(model[0]).__module__ != type(built[0]).__module__  # the saved copy of the code runs
        fetched = model.encode_query([{"image": f"http://{allowed}/ok.png"}], convert_to_tensor=True)
        expected = model.encode_query([{"image": small_image(3)}], convert_to_tensor=True)
        torch.testing.assert_close(fetched, expected, atol=0, rtol=0)
        for url, named in [
            (f"http://127.0.0.1:{web.target_port}/secret.png", "refused before connecting"),
            (f"http://{allowed}/redirect.png", r"redirect \(not followed\)"),
            (f"http://{allowed}/eps.png", "not a readable image in an accepted format"),
        ]:
            with pytest.raises(ValueError, match=rf"Input 1: image 0: image URL .*{named}"):
                model.encode_query(["fine", {"text": "x", "image": url}])
        time.sleep(0.3)
        assert web.target_connections == 0

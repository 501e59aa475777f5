"""``tte-hf serve`` against a real server on 127.0.0.1: the official ``openai`` client and raw HTTP get
the in-process vectors; 64 concurrent clients are each answered once and correctly; bad requests get a
4xx naming the item while others are served; a failing reasoner costs only its own requests (502)."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from chat_server import ChatServer  # noqa: E402

from tte_hf.sentence_transformers import build_sentence_transformer  # noqa: E402
from tte_hf.serving import BackgroundServer, ServeConfig, create_app  # noqa: E402
from tte_hf.serving.schemas import Limits  # noqa: E402

INSTRUCTION = "Find the picture that answers the question."
API_KEY = "sk-test-secret-1234"


def _image(seed: int, height: int = 36, width: int = 44) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def _data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def chat():
    with ChatServer() as server:
        yield server


@pytest.fixture(scope="module")
def model(tiny_vlm, chat):
    """Embedder tiny_vlm; reasoner: the fake OpenAI-compatible generation server (a remote backend)."""
    return build_sentence_transformer(
        tiny_vlm, reasoner_endpoint=chat.base_url, reasoner_model="fake-reasoner", prompts={"query": INSTRUCTION}
    )


@pytest.fixture(scope="module")
def server(model):
    config = ServeConfig(
        model_name="tte-tiny",
        max_batch=16,
        batch_window_ms=20,
        limits=Limits(max_image_bytes=20_000, max_image_pixels=200 * 200),
        api_key=API_KEY,
    )
    app = create_app(model, config)
    with BackgroundServer(app) as url:
        yield url, app


def _post(url: str, body, *, key: str | None = API_KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/embeddings", content=content, headers=headers, timeout=120)


def _vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


# --- equality with in-process encode -------------------------------------------------------------


def test_openai_client_matches_in_process_encode(server, model):
    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    texts = ["which vehicle is red", "a dog near the camera", "two pictures of a tree"]
    # the client asks for base64 by default: this checks our encoding too
    got = client.embeddings.create(model="tte-tiny", input=texts, extra_body={"input_type": "query"})
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    expected = model.encode_query(texts, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    # documents, no reasoning, Matryoshka 16 dims (re-normalised), float lists
    got = client.embeddings.create(
        model="tte-tiny", input=texts, dimensions=16, encoding_format="float", extra_body={"input_type": "document"}
    )
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    expected = model.encode_document(texts, truncate_dim=16, normalize_embeddings=True)
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [m.id for m in client.models.list().data] == ["tte-tiny"]


def test_raw_http_multimodal_items_match_in_process_encode(server, model):
    url, _ = server
    images = [_image(1), _image(2, 50, 30)]
    body_items = [
        {"text": "which object is red", "image": _data_url(images[0])},
        {"images": [_data_url(images[1], "JPEG")]},
        [
            {"type": "text", "text": "what is left of"},
            {"type": "image_url", "image_url": {"url": _data_url(images[0])}},
        ],
        "plain text query",
    ]
    decoded_jpeg = Image.open(io.BytesIO(base64.b64decode(body_items[1]["images"][0].split(",", 1)[1]))).convert("RGB")
    local_items = [
        {"text": "which object is red", "image": images[0]},
        decoded_jpeg,
        {"text": "what is left of", "image": images[0]},
        "plain text query",
    ]
    for think in (True, False):
        vectors = _vectors(_post(url, {"model": "tte-tiny", "input": body_items, "think": think}))
        expected = model.encode_query(local_items, think=think, normalize_embeddings=True)
        np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    thought = _vectors(_post(url, {"input": body_items[:1], "think": True}))
    plain = _vectors(_post(url, {"input": body_items[:1], "think": False}))
    assert not np.allclose(thought, plain, atol=1e-3)  # the trace changes the vector: think reached the model
    vectors = _vectors(_post(url, {"input": body_items, "input_type": "document", "dimensions": 8}))
    expected = model.encode_document(local_items, truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)


def test_usage_counts_input_and_reasoning_tokens(server, model):
    url, _ = server
    texts = ["usage question about a red bus", "usage question about a dog"]
    tokenizer = model[0].processor.tokenizer
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    expected = sum(counts)
    image = _image(5, 56, 56)  # 3136 pixels: 4 tokens of 28x28 (14-pixel patches merged 2x2)
    body = {"input": [*texts, {"text": texts[0], "image": _data_url(image)}], "think": False}
    usage = _post(url, body).json()["usage"]
    assert usage == {"prompt_tokens": expected + counts[0] + 4, "total_tokens": expected + counts[0] + 4}
    usage = _post(url, {"input": texts, "think": True}).json()["usage"]
    traces = model[0].get_reasoning(texts, task="query", prompt=INSTRUCTION, think=True)
    reasoning = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in traces)
    assert usage["prompt_tokens"] == expected and usage["reasoning_tokens"] == reasoning > 0
    assert usage["total_tokens"] == expected + reasoning


# --- concurrency ---------------------------------------------------------------------------------


def test_64_concurrent_clients_each_answered_once_and_correctly(server, model):
    url, app = server
    pool = [f"query number {i} about a red bus" for i in range(12)] + [{"image": _image(10 + i)} for i in range(4)]
    wire = [p if isinstance(p, str) else {"image": _data_url(p["image"])} for p in pool]
    local = [p if isinstance(p, str) else p["image"] for p in pool]
    variants = [  # (extension fields, in-process call): several batch keys in flight at once
        ({"input_type": "query"}, lambda x: model.encode_query(x, normalize_embeddings=True)),
        (
            {"input_type": "query", "think": False},
            lambda x: model.encode_query(x, think=False, normalize_embeddings=True),
        ),  # fmt: skip
        ({"input_type": "document"}, lambda x: model.encode_document(x, normalize_embeddings=True)),
        (
            {"input_type": "document", "dimensions": 16},
            lambda x: model.encode_document(x, truncate_dim=16, normalize_embeddings=True),
        ),  # fmt: skip
    ]
    expected = [fn(local) for _, fn in variants]  # also fills the ECR cache: the reasoner is not the bottleneck
    calls_before = len(app.state.batcher.calls)
    rows_before = sum(app.state.batcher.calls)

    def client(c: int) -> list[tuple[int, int, list[int], np.ndarray]]:
        out = []
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            for r in range(8):
                v = (c + r) % len(variants)
                picks = [(c * 8 + r + k * 5) % len(pool) for k in range(1 + (c + r) % 3)]
                body = {"input": [wire[i] for i in picks], **variants[v][0]}
                response = http.post(f"{url}/v1/embeddings", json=body)
                out.append((c, v, picks, _vectors(response)))
        return out

    with ThreadPoolExecutor(max_workers=64) as executor:
        results = [row for rows in executor.map(client, range(64), timeout=300) for row in rows]
    assert len(results) == 64 * 8
    assert len({(c, i) for i, (c, *_rest) in enumerate(results)}) == 512
    for _, v, picks, vectors in results:
        np.testing.assert_allclose(vectors, expected[v][picks], atol=1e-5, rtol=0)
    calls = app.state.batcher.calls[calls_before:]
    sent_rows = sum(len(picks) for _, _, picks, _ in results)
    assert sum(app.state.batcher.calls) - rows_before == sent_rows  # every item encoded exactly once
    assert max(calls) > 3 and len(calls) < 512  # requests really shared encode calls


# --- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "raw", "status", "named"),
    [
        (None, b'{"input": ["a", ', 400, "malformed JSON"),
        ({"input": 5}, None, 400, "'input'"),
        ({"input": ["fine", 7]}, None, 400, "input[1]"),
        ({"input": ["fine", {"text": 3}]}, None, 400, "input[1].text"),
        ({"input": ["fine", {"image": "data:image/png;base64,@@@notbase64"}]}, None, 400, "input[1].image"),
        ({"input": ["fine", {"image": "data:image/png;base64,aGVsbG8="}]}, None, 400, "input[1].image"),
        ({"input": ["a", "b", {"text": "c", "images": ["BIG"]}]}, None, 400, "input[2].images[0]"),
        ({"input": ["fine", {"image": "HUGE_PIXELS"}]}, None, 400, "input[1].image"),
        ({"input": [{"image": "http://127.0.0.1:9/x.png"}]}, None, 400, "input[0].image"),
        ({"input": ["fine"], "think": "maybe"}, None, 400, "'think'"),
        ({"input": ["fine"], "input_type": "passage"}, None, 400, "'input_type'"),
        ({"input": ["fine"], "encoding_format": "int8"}, None, 400, "'encoding_format'"),
        ({"input": ["fine"], "dimensions": 0}, None, 400, "'dimensions'"),
        ({"input": ["fine"], "thinking": True}, None, 400, "thinking"),
        ({"input": ["fine"], "model": "other"}, None, 404, "other"),
        ({"input": ["fine", {"text": "x", "colour": "red"}]}, None, 400, "input[1]"),
        ({"input": ["fine", "word " * 6000]}, None, 400, "input[1] has"),  # over the model's 4096 positions
    ],
)
def test_bad_requests_get_4xx_naming_the_item(server, body, raw, status, named):
    url, _ = server
    if body is not None:
        text = json.dumps(body)
        noise = np.random.default_rng(0).integers(0, 255, (120, 120, 3)).astype("uint8")
        text = text.replace('"BIG"', json.dumps(_data_url(Image.fromarray(noise))))  # > 20 kB of PNG
        text = text.replace('"HUGE_PIXELS"', json.dumps(_data_url(Image.new("RGB", (300, 300)))))  # small file, 90k px
        raw = text.encode()
    response = _post(url, None, raw=raw)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert named in message, message
    # the server keeps serving
    assert _post(url, {"input": ["still alive"], "think": False}).status_code == 200


def test_api_key_required_and_never_echoed(server, caplog):
    url, _ = server
    for key in (None, "wrong"):
        response = _post(url, {"input": ["x"]}, key=key)
        assert response.status_code == 401
        assert API_KEY not in response.text
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(ServeConfig(api_key=API_KEY))


# --- reasoner failure ----------------------------------------------------------------------------


def test_failing_reasoner_gives_502_for_its_requests_only(server, model, chat):
    url, _ = server
    chat.faults["BROKENTOPIC"] = "always500"
    bad = {"input": ["a fine question about cats", "BROKENTOPIC question", "another fine one"], "think": True}
    goods = [{"input": [f"fresh question {i} about a tree"], "think": True} for i in range(6)]
    barrier = threading.Barrier(7)

    def send(body):
        barrier.wait()  # all at once, so they share micro-batches with the failing one
        return _post(url, body)

    with ThreadPoolExecutor(max_workers=7) as executor:
        futures = [executor.submit(send, body) for body in [bad, *goods]]
        responses = [f.result(timeout=300) for f in futures]
    assert responses[0].status_code == 502, responses[0].text
    error = responses[0].json()["error"]
    assert error["param"] == "input[1]" and "reasoner" in error["message"]
    for body, response in zip(goods, responses[1:]):
        np.testing.assert_allclose(
            _vectors(response), model.encode_query(body["input"], normalize_embeddings=True), atol=1e-5, rtol=0
        )
    assert _post(url, {"input": ["after the failure"], "think": True}).status_code == 200


# --- image URLs, when the server allows them ------------------------------------------------------


def test_http_image_urls_when_allowed_match_in_process_encode(model):
    """With ``allow_image_urls`` (and 127.0.0.1 allowed: loopback is refused otherwise) an ``http`` image
    is fetched and embedded like the same image given in process; one larger than ``max_image_bytes`` or
    unreachable is a 400 naming the item."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    buffer = io.BytesIO()
    _image(7, 40, 52).save(buffer, format="PNG")
    small = buffer.getvalue()
    noise = np.random.default_rng(1).integers(0, 255, (150, 150, 3)).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    files = {"/small.png": small, "/big.png": buffer.getvalue()}
    assert len(files["/big.png"]) > 20_000 > len(small)

    class Images(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    images = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{images.server_port}"
    limits = Limits(max_image_bytes=20_000, allow_image_urls=True, image_url_allow_hosts=("127.0.0.1",))
    config = ServeConfig(model_name="tte-tiny", limits=limits)
    try:
        with BackgroundServer(create_app(model, config)) as url:
            body = {"input": [{"text": "which object is red", "image": f"{base}/small.png"}], "think": False}
            expected = model.encode_query(
                [{"text": "which object is red", "image": Image.open(io.BytesIO(small)).convert("RGB")}],
                think=False,
                normalize_embeddings=True,
            )
            np.testing.assert_allclose(_vectors(_post(url, body, key=None)), expected, atol=1e-5, rtol=0)
            for name in ("big.png", "missing.png"):
                items = ["fine", {"text": "x", "image": f"{base}/{name}"}]
                response = _post(url, {"input": items, "think": False}, key=None)
                assert response.status_code == 400, response.text
                assert "input[1].image" in response.json()["error"]["message"], name
    finally:
        images.shutdown()
        images.server_close()

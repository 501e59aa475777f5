import logging

import numpy as np
import pytest
from chat_server import ChatServer
from PIL import Image

from tte_hf.models.tte.ecr import parse_ecr, task_prompt
from tte_hf.models.tte.reasoner_openai import ReasonerRequestError
from tte_hf.reasoning import ReasoningRequest, load_reasoner

SECRET = "sk-test-do-not-leak-1234"


@pytest.fixture
def server():
    with ChatServer(slow_seconds=1.0) as srv:
        yield srv


def _reasoner(server, **kwargs):
    options = dict(
        backend="openai",
        model="teacher",
        base_url=server.base_url,
        api_key_env="TTE_TEST_KEY",
        timeout=0.5,
        max_retries=4,
        backoff=0.01,
        max_concurrency=3,
    )
    return load_reasoner({**options, **kwargs})


def test_requests_carry_prompt_images_key_and_keep_order(server, monkeypatch):
    monkeypatch.setenv("TTE_TEST_KEY", SECRET)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    requests = [ReasoningRequest(text=f"question {i}", task="vqa", item_id=f"q{i}") for i in range(8)]
    requests[3] = ReasoningRequest(text="question 3", images=(image,), task="grounding", item_id="q3")
    # A generous timeout: a retried timeout would leave the abandoned request running on the server.
    traces = _reasoner(server, timeout=30.0).generate(requests)
    assert traces == [f"<think> question {i} </think> ok" for i in range(8)]
    assert 1 < server.max_concurrent <= 3  # bounded concurrency, and really concurrent
    with_image = [b for b in server.received if ChatServer.user_text(b) == "question 3"][0]
    assert with_image["messages"][0] == {"role": "system", "content": task_prompt("grounding")}
    assert np.array_equal(np.asarray(ChatServer.images(with_image)[0]), pixels)  # lossless data URL
    assert all(b["_authorization"] == f"Bearer {SECRET}" for b in server.received)
    assert with_image["model"] == "teacher" and with_image["temperature"] == 0.0


def test_retries_recover_from_500_429_timeouts_and_malformed_json(server, monkeypatch, caplog):
    monkeypatch.setenv("TTE_TEST_KEY", SECRET)
    server.faults = {
        "item-a": ["500", "429", "500"],
        "item-b": ["timeout"],
        "item-c": ["malformed", "no_choices"],
        "item-d": ["429", "timeout", "malformed", "500"],
    }
    requests = [ReasoningRequest(text=name, item_id=name) for name in ("item-a", "item-b", "item-c", "item-d", "x")]
    with caplog.at_level(logging.WARNING):
        traces = _reasoner(server).generate(requests)
    assert traces == [f"<think> {r.text} </think> ok" for r in requests]
    assert server.attempts == {"item-a": 4, "item-b": 2, "item-c": 3, "item-d": 5}
    assert "HTTP 500" in caplog.text and "timed out" in caplog.text and "malformed" in caplog.text
    assert SECRET not in caplog.text


def test_endpoint_that_keeps_failing_names_the_item_and_never_the_key(server, monkeypatch, caplog):
    monkeypatch.setenv("TTE_TEST_KEY", SECRET)
    server.faults = {"broken": "always500"}
    reasoner = _reasoner(server, max_retries=2)
    requests = [ReasoningRequest(text="fine", item_id="ok-1"), ReasoningRequest(text="broken", item_id="row-17")]
    with caplog.at_level(logging.WARNING), pytest.raises(ReasonerRequestError) as info:
        reasoner.generate(requests)
    message = str(info.value)
    assert "'row-17'" in message and "3 attempts" in message and "HTTP 500" in message
    assert server.attempts["broken"] == 3
    assert SECRET not in message + caplog.text + repr(reasoner) + str(reasoner.describe())


def test_client_errors_are_not_retried(server):
    reasoner = _reasoner(server, base_url=server.base_url.replace("/v1", "/nowhere"))
    with pytest.raises(ReasonerRequestError, match="item 'z'.*HTTP 404"):
        reasoner.generate([ReasoningRequest(text="z", item_id="z")])
    assert server.paths == ["/nowhere/chat/completions"]  # one attempt: a 404 is not retried


def test_unreachable_server_is_retried_then_reported():
    reasoner = load_reasoner(
        backend="openai", model="m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01, timeout=0.5
    )
    with pytest.raises(ReasonerRequestError, match="item 'u'.*2 attempts.*connection failed"):
        reasoner.generate([ReasoningRequest(text="u", item_id="u")])


def test_a_thought_returned_apart_is_kept_inside_think_tags(server):
    # vLLM's reasoning parsers move the thought into `reasoning_content`; the ECR is thought + final part.
    server.faults = {"split": ["split"], "budget": ["thought_only"]}
    texts = ["split reply", "budget spent", "plain"]
    requests = [ReasoningRequest(text=t, item_id=t) for t in texts]
    traces = _reasoner(server, max_retries=0).generate(requests)
    assert traces == ["<think>split reply</think>ok", "<think>budget spent</think>", "<think> plain </think> ok"]
    assert parse_ecr(traces[0]).thought == "split reply" and parse_ecr(traces[0]).final == "ok"

import dataclasses
import threading

import pytest
from PIL import Image

import tte_hf.models.tte.fingerprints as key_module
from tte_hf.reasoning import CachedReasoner, ECRCache, ReasoningRequest, cache_key, load_reasoner


class CountingReasoner:
    """Wraps a real backend and records which requests reached it."""

    def __init__(self, backend):
        self.backend, self.name, self.seen = backend, backend.name, []

    def describe(self):
        return self.backend.describe()

    def generate(self, requests):
        self.seen.extend(r.item_id for r in requests)
        return self.backend.generate(requests)


@pytest.fixture(scope="module")
def backend(tiny_vlm):
    return load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=8)


def _requests():
    return [
        ReasoningRequest(text="a red square", images=(Image.new("RGB", (40, 40), "red"),), task="vqa", item_id="1"),
        ReasoningRequest(text="a dog", task="retrieval", item_id="2"),
        ReasoningRequest(text="a cat", instruction="Find the caption", task="retrieval", item_id="3"),
    ]


def test_hits_skip_generation_and_return_the_same_traces(backend, tmp_path):
    counting = CountingReasoner(backend)
    cached = CachedReasoner(counting, tmp_path / "ecr.sqlite")
    requests = _requests()
    first = cached.generate(requests)
    assert first == backend.generate(requests)  # a miss returns the backend's own traces
    assert counting.seen == ["1", "2", "3"] and (cached.hits, cached.misses) == (0, 3)

    new = ReasoningRequest(text="a bird", task="retrieval", item_id="4")
    second = cached.generate([requests[2], new, requests[0]])
    assert counting.seen == ["1", "2", "3", "4"]  # only the new request was generated
    assert second[0] == first[2] and second[2] == first[0]
    assert (cached.hits, cached.misses) == (2, 4)

    # a second process (new connection) reads the same file
    reopened = CachedReasoner(CountingReasoner(backend), ECRCache(tmp_path / "ecr.sqlite"))
    assert reopened.generate(requests) == first and reopened.backend.seen == []


def test_every_key_part_invalidates(backend, monkeypatch):
    base = _requests()[0]
    description = backend.describe()
    key = cache_key(description, base)
    assert key == cache_key(dict(description), dataclasses.replace(base, item_id="other"))  # id is not content
    variants = {
        "text": cache_key(description, dataclasses.replace(base, text="a red square!")),
        "instruction": cache_key(description, dataclasses.replace(base, instruction="Answer")),
        "task": cache_key(description, dataclasses.replace(base, task="classification")),
        "image pixels": cache_key(
            description, dataclasses.replace(base, images=(Image.new("RGB", (40, 40), (254, 0, 0)),))
        ),
        "image count": cache_key(description, dataclasses.replace(base, images=base.images * 2)),
        "model": cache_key({**description, "model": "other"}, base),
        "revision": cache_key({**description, "revision": "abc123"}, base),
        "generation": cache_key({**description, "max_new_tokens": 9}, base),
    }
    monkeypatch.setattr(key_module, "PROMPT_VERSION", "ecr-v999")
    variants["prompt version"] = cache_key(description, base)
    monkeypatch.setattr(key_module, "task_prompt", lambda task: "a reworded prompt")
    variants["prompt text"] = cache_key(description, base)
    assert all(v != key for v in variants.values())
    assert len(set(variants.values())) == len(variants)


def test_changed_generation_settings_miss(tiny_vlm, tmp_path):
    requests = _requests()[1:]
    short = CountingReasoner(load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=4))
    CachedReasoner(short, tmp_path / "c.sqlite").generate(requests)
    longer = CountingReasoner(load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=6))
    traces = CachedReasoner(longer, tmp_path / "c.sqlite").generate(requests)
    assert longer.seen == ["2", "3"] and traces == longer.backend.generate(requests)


def test_concurrent_readers_and_one_writer(tmp_path):
    path = tmp_path / "shared.sqlite"
    ECRCache(path)
    errors, stop = [], threading.Event()

    def write():
        try:
            cache = ECRCache(path)
            for i in range(200):
                cache.put_many({f"k{i}": f"trace {i}"})
        except Exception as err:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(err)
        finally:
            stop.set()

    def read():
        try:
            cache = ECRCache(path)
            while not stop.is_set():
                found = cache.get_many([f"k{i}" for i in range(200)])
                assert all(found[k] == f"trace {k[1:]}" for k in found)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(ECRCache(path)) == 200


def test_load_reasoner_wraps_in_cache(tiny_vlm, tmp_path):
    reasoner = load_reasoner(backend="transformers", model=tiny_vlm, max_new_tokens=4, cache=str(tmp_path / "x.db"))
    assert isinstance(reasoner, CachedReasoner) and (tmp_path / "x.db").exists()


def test_key_scheme_is_unchanged_for_cache_files_on_disk():
    """The key as the SQLite cache has always computed it, written out here: a change would orphan every
    ECR cache already on disk (the sentence-transformers module now shares this scheme, not the reverse)."""
    import hashlib
    import json

    from tte_hf.models.tte.ecr import PROMPT_VERSION, task_prompt

    image = Image.new("RGB", (6, 4), (10, 200, 30))
    request = ReasoningRequest(text="a cat", images=(image,), video=(image, image), instruction="Find", task="vqa")
    head = {
        "reasoner": {"model": "m"},
        "prompt_version": PROMPT_VERSION,
        "prompt": task_prompt("vqa"),
        "task": "vqa",
        "instruction": "Find",
        "text": "a cat",
        "images": 1,
        "video": 2,
    }
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for _ in range(3):
        digest.update(b"RGB:(6, 4)")
        digest.update(image.tobytes())
    assert cache_key({"model": "m"}, request) == digest.hexdigest()


def test_a_generated_trace_keeps_its_token_ids_through_copy_and_pickle():
    """A model whose ECR cache holds generated traces can be deep-copied and pickled (ST does both)."""
    import copy
    import pickle

    from tte_hf.models.tte.reasoner_base import GeneratedText

    trace = GeneratedText("<think> red </think> a red cat", [5, 6, 7])
    for clone in (copy.deepcopy(trace), copy.copy(trace), pickle.loads(pickle.dumps(trace))):
        assert isinstance(clone, GeneratedText) and clone == trace and clone.token_ids == (5, 6, 7)

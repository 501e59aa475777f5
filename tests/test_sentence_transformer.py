"""The Think-Then-Embed sentence-transformers model: equality with the model classes, reasoning,
batch invariance, loading by repo id without tte_hf, bad inputs, ST features and training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from tte_hf.models.tte.ecr import parse_ecr, task_prompt
from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt
from tte_hf.models.tte.modeling_tte import TTEEmbedderModel
from tte_hf.sentence_transformers import build_sentence_transformer, save_sentence_transformer

INSTRUCTION = "Find the picture that answers the question."


def _image(seed: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def images():
    return [_image(i, h, w) for i, (h, w) in enumerate([(40, 60), (80, 50), (56, 56), (30, 90), (64, 64)])]


@pytest.fixture(scope="module")
def embedder(tiny_vlm):
    return TTEEmbedderModel.from_backbone(tiny_vlm).eval()


@pytest.fixture(scope="module")
def processor(tiny_vlm):
    return AutoProcessor.from_pretrained(tiny_vlm)


@pytest.fixture(scope="module")
def st_off(tiny_vlm):
    return build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})


@pytest.fixture(scope="module")
def st_reasoning(tiny_vlm, tiny_vlm_25):
    """Embedder tiny_vlm, separate reasoner tiny_vlm_25 (transformers generate, 12 new tokens)."""
    return build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm_25, max_new_tokens=12, prompts={"query": INSTRUCTION})


def _embed_by_hand(embedder, processor, text, images, instruction=None, trace=None) -> torch.Tensor:
    """The reference: TTEEmbedderModel on render_prompt + trace + end token, one input at a time. With a
    trace the sequence is the reasoner's own, so it starts with the reasoner's task prompt."""
    system = task_prompt("generic") if trace is not None else None
    prompt = render_prompt(processor, build_messages(text, len(images), False, instruction, system))
    batch = processor(text=[embedder_text(prompt, trace)], images=images or None, return_tensors="pt")
    with torch.no_grad():
        return embedder(**batch).embeddings[0]


def _generate_by_hand(reasoner_path, text, images, instruction) -> str:
    """The reference trace: raw transformers generate on the reasoner's ECR prompt, then the parser."""
    model = AutoModelForImageTextToText.from_pretrained(reasoner_path).eval()
    proc = AutoProcessor.from_pretrained(reasoner_path)
    prompt = render_prompt(proc, build_messages(text, len(images), False, instruction, task_prompt("generic")))
    batch = proc(text=[prompt], images=images or None, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    raw = proc.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return parse_ecr(raw).for_embedder("full")


# --- equality with the model classes ------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_vlm", "tiny_vlm_25", "tiny_vlm_3"])
def test_reasoning_off_equals_tte_embedder_model(request, fixture, images):
    path = request.getfixturevalue(fixture)
    st_off = build_sentence_transformer(path, prompts={"query": INSTRUCTION})
    embedder, processor = TTEEmbedderModel.from_backbone(path).eval(), AutoProcessor.from_pretrained(path)
    cases = [
        ("a red bus on the left", []),
        (None, [images[0]]),
        ("which dog is closest", [images[1]]),
        ("two pictures", [images[2], images[3]]),
    ]
    inputs = [text if not imgs else {"text": text, "images": imgs} if text else imgs[0] for text, imgs in cases]
    documents = st_off.encode_document(inputs, convert_to_tensor=True)
    queries = st_off.encode_query(inputs, convert_to_tensor=True)  # off: no reasoner, instruction from prompts
    for row, (text, imgs) in enumerate(cases):
        torch.testing.assert_close(documents[row], _embed_by_hand(embedder, processor, text, imgs), atol=1e-5, rtol=0)
        expected = _embed_by_hand(embedder, processor, text, imgs, instruction=INSTRUCTION)
        torch.testing.assert_close(queries[row], expected, atol=1e-5, rtol=0)


def test_reasoning_on_equals_embedder_of_query_plus_reasoner_trace(
    st_reasoning, embedder, processor, images, tiny_vlm_25
):
    cases = [("what color is the bus", []), ("which object is red", [images[1]])]
    inputs = [text if not imgs else {"text": text, "image": imgs[0]} for text, imgs in cases]
    queries = st_reasoning.encode_query(inputs, convert_to_tensor=True)
    traces = st_reasoning[0].get_reasoning(inputs, task="query")
    for row, (text, imgs) in enumerate(cases):
        trace = _generate_by_hand(tiny_vlm_25, text, imgs, INSTRUCTION)
        assert trace.strip(), "the tiny reasoner should write something"
        assert traces[row] == trace
        expected = _embed_by_hand(embedder, processor, text, imgs, instruction=INSTRUCTION, trace=trace)
        torch.testing.assert_close(queries[row], expected, atol=1e-5, rtol=0)
    # documents are not reasoned about by default; a query without its trace is another vector
    documents = st_reasoning.encode_document(inputs, prompt=INSTRUCTION, convert_to_tensor=True)
    assert st_reasoning[0].last_reasoning == [None, None]
    assert not torch.allclose(documents, queries, atol=1e-3)


def test_precomputed_reasoning_is_used_as_is(st_off, embedder, processor):
    trace = "<think>the bus is red</think> red"
    vector = st_off.encode_document({"text": "what color is the bus", "reasoning": trace}, convert_to_tensor=True)
    expected = _embed_by_hand(embedder, processor, "what color is the bus", [], trace=trace)
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)


class CountingReasoner:
    """Delegates to a real backend and counts the requests it is given."""

    def __init__(self, backend):
        self.backend, self.requests = backend, 0
        self.name, self.describe = backend.name, backend.describe  # same identity: same cache keys

    def generate(self, requests):
        self.requests += len(requests)
        return self.backend.generate(requests)


def test_built_models_hold_tte_hf_classes(st_reasoning, unified_dir, tiny_vlm):
    """One class identity in the process: the factory's modules and reasoners are the package's own."""
    from tte_hf.models.tte.reasoner_openai import OpenAIReasoner
    from tte_hf.models.tte.reasoner_transformers import TransformersReasoner
    from tte_hf.models.tte.sentence_transformer_tte import TTESentenceTransformer, TTETransformer, TTEUnifiedTransformer

    assert type(st_reasoning) is TTESentenceTransformer and type(st_reasoning[0]) is TTETransformer
    assert type(st_reasoning[0].reasoner) is TransformersReasoner
    served = build_sentence_transformer(tiny_vlm, reasoner_endpoint="http://127.0.0.1:9/v1", reasoner_model="m")
    assert type(served[0].reasoner) is OpenAIReasoner
    assert type(build_sentence_transformer(unified_dir, max_new_tokens=4)[0]) is TTEUnifiedTransformer


def test_ecr_cache_key_is_the_shared_one_with_the_prompt_version(st_reasoning, images, monkeypatch):
    import tte_hf.models.tte.fingerprints
    from tte_hf.reasoning import ReasoningRequest, cache_key

    module = st_reasoning[0]
    counting = CountingReasoner(module.reasoner)
    module.set_reasoner(counting)
    module.ecr_cache.clear()
    try:
        st_reasoning.encode_query([{"text": "which dog", "image": images[0]}])
        request = ReasoningRequest(text="which dog", images=(images[0],), instruction=INSTRUCTION, task="generic")
        assert list(module.ecr_cache) == [cache_key(counting.describe(), request)]  # as generate-ecr's SQLite cache
        # reworded prompts: traces are stale
        monkeypatch.setattr(tte_hf.models.tte.fingerprints, "PROMPT_VERSION", "ecr-v999")
        st_reasoning.encode_query([{"text": "which dog", "image": images[0]}])
        assert counting.requests == 2
    finally:
        module.set_reasoner(counting.backend)


def test_repeated_queries_hit_the_ecr_cache(st_reasoning, images):
    module = st_reasoning[0]
    counting = CountingReasoner(module.reasoner)
    module.set_reasoner(counting)
    try:
        inputs = ["is it a cat", {"text": "is it a dog", "image": images[4]}, "is it a cat"]
        first = st_reasoning.encode_query(inputs, convert_to_tensor=True)
        assert counting.requests == 2  # the duplicate is generated once
        second = st_reasoning.encode_query(list(reversed(inputs)), convert_to_tensor=True)
        assert counting.requests == 2
        torch.testing.assert_close(second, first.flip(0), atol=1e-6, rtol=0)
    finally:
        module.set_reasoner(counting.backend)


class ForwardCounter:
    """Counts forward passes of a module (a forward pre-hook)."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._count)

    def _count(self, *args):
        self.calls += 1


def test_embedding_cache_skips_reasoner_and_embedder_and_is_never_stale(tiny_vlm, tiny_vlm_25, images, tmp_path):
    model = build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm_25, max_new_tokens=8)
    module = model[0]
    counting = CountingReasoner(module.reasoner)
    module.set_reasoner(counting)
    picture = tmp_path / "picture.png"
    images[0].save(picture)
    inputs = ["is it a cat", {"text": "which one", "image": str(picture)}, {"text": "and this", "image": images[2]}]
    uncached = model.encode_query(inputs, convert_to_tensor=True)

    model.embedding_cache = {}
    forwards = ForwardCounter(module.model.get_input_embeddings())
    try:
        first = model.encode_query(inputs, convert_to_tensor=True)
        torch.testing.assert_close(first, uncached, atol=1e-6, rtol=0)
        requests, calls = counting.requests, forwards.calls
        assert requests > 0 and calls > 0
        second = model.encode_query(list(reversed(inputs)), convert_to_tensor=True)
        assert (counting.requests, forwards.calls) == (requests, calls)  # neither model ran
        torch.testing.assert_close(second, first.flip(0), atol=0, rtol=0)

        # Each of these changes the vector, so each must miss and equal an uncached encode.
        changed = {
            "document side": lambda: model.encode_document(inputs, convert_to_tensor=True),
            "think=False": lambda: model.encode_query(inputs, think=False, convert_to_tensor=True),
            "prompt": lambda: model.encode_query(inputs, prompt="Find a picture.", convert_to_tensor=True),
            "truncate_dim": lambda: model.encode_query(inputs, truncate_dim=16, convert_to_tensor=True),
        }
        for name, encode in changed.items():
            cached = encode()
            model.embedding_cache, kept = None, model.embedding_cache
            torch.testing.assert_close(cached, encode(), atol=1e-6, rtol=0, msg=name)
            model.embedding_cache = kept

        images[3].save(picture)  # same path, new pixels
        calls = forwards.calls
        vector = model.encode_query(inputs[1], convert_to_tensor=True)
        assert forwards.calls == calls + 1
        assert not torch.allclose(vector, first[1], atol=1e-3)

        with torch.no_grad():  # an in-place weight update, as an optimizer step makes
            weight = module.model.get_input_embeddings().weight
            weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
        after_step = model.encode_query(inputs, convert_to_tensor=True)
        model.embedding_cache = None
        torch.testing.assert_close(after_step, model.encode_query(inputs, convert_to_tensor=True), atol=1e-6, rtol=0)
        assert not torch.allclose(after_step, first, atol=1e-3)
    finally:
        forwards.handle.remove()


# --- batch invariance ---------------------------------------------------------------------------


def test_batch_invariance_over_mixed_inputs_in_any_order(st_off, images, tmp_path):
    inputs = [
        "short",
        "a much longer text about a red bus parked near the blue house on the left side of the street",
        images[0],
        {"text": "a dog", "image": images[1]},
        {"text": "two", "images": [images[2], images[3]]},
        {"text": "a clip", "video": [images[4]] * 4},
        {"text": "with a trace", "reasoning": "<think>it is a trace</think> trace"},
        tmp_path / "probe.png",
    ]
    images[3].save(tmp_path / "probe.png")
    alone = torch.stack([st_off.encode_document(x, convert_to_tensor=True) for x in inputs])
    rng = np.random.default_rng(0)
    for batch_size in (len(inputs), 3):
        order = rng.permutation(len(inputs))
        together = st_off.encode_document([inputs[i] for i in order], batch_size=batch_size, convert_to_tensor=True)
        torch.testing.assert_close(together, alone[order], atol=1e-5, rtol=0)


# --- loading by repo id, without tte_hf ---------------------------------------------------------

_LOAD_SCRIPT = """
import sys
sys.modules["tte_hf"] = None  # the editable install must not help: any tte_hf import fails
try:
    import tte_hf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("tte_hf is importable in the isolated subprocess")
import numpy as np
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("org/tte-tiny", trust_remote_code=True)
assert type(model[0]).__module__.startswith("transformers_modules."), type(model[0]).__module__
queries = model.encode_query(["what color is the bus", "which object is red"])
documents = model.encode_document(["a red bus", "a blue house"])
np.save(sys.argv[1], np.concatenate([queries, documents]))
print(model[0].get_reasoning(["what color is the bus"])[0])
if len(sys.argv) > 2:  # the unified model: its own backbone reasons, its head embeds
    unified = SentenceTransformer("org/tte-unified-tiny", trust_remote_code=True)
    np.save(sys.argv[2], unified.encode_query(["what color is the bus", "which object is red"]))
"""


def _as_hub_snapshot(folder: Path, cache: Path, repo_id: str) -> None:
    """Lay ``folder`` out the way ``snapshot_download`` leaves a repo in the HF cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_loads_by_repo_id_offline_without_tte_hf(st_reasoning, tiny_vlm_25, unified_dir, tmp_path):
    queries = st_reasoning.encode_query(["what color is the bus", "which object is red"], convert_to_tensor=True)
    unified = build_sentence_transformer(unified_dir, max_new_tokens=8)
    unified_queries = unified.encode_query(["what color is the bus", "which object is red"], convert_to_tensor=True)
    unified.save(str(tmp_path / "unified"))
    documents = st_reasoning.encode_document(["a red bus", "a blue house"], convert_to_tensor=True)
    saved = tmp_path / "saved"
    module = st_reasoning[0]
    save_sentence_transformer(st_reasoning, saved)  # the reasoner ships inside the repo, in reasoner/
    assert module.reasoner_name_or_path == tiny_vlm_25
    assert json.loads((saved / "sentence_bert_config.json").read_text())["reasoner_name_or_path"] == "reasoner"
    assert (saved / "reasoner" / "model.safetensors").is_file()
    assert {"modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "model.safetensors"} <= {
        p.name for p in saved.iterdir()
    }
    assert {"sentence_transformer_tte.py", "inputs.py", "ecr.py"} <= {p.name for p in saved.iterdir()}
    modules = json.loads((saved / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformer_tte.TTETransformer"
    assert not list(saved.rglob("*.bin"))

    cache = tmp_path / "hub"
    _as_hub_snapshot(saved, cache, "org/tte-tiny")
    _as_hub_snapshot(tmp_path / "unified", cache, "org/tte-unified-tiny")
    script = tmp_path / "load.py"
    script.write_text(_LOAD_SCRIPT)
    out = tmp_path / "vectors.npy"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(out), str(tmp_path / "unified.npy")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.from_numpy(np.load(out))
    torch.testing.assert_close(loaded, torch.cat([queries, documents]), atol=1e-5, rtol=0)
    assert result.stdout.strip().endswith(module.get_reasoning(["what color is the bus"])[0].strip())
    unified_loaded = torch.from_numpy(np.load(tmp_path / "unified.npy"))
    torch.testing.assert_close(unified_loaded, unified_queries, atol=1e-5, rtol=0)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error", "reason"),
    [
        (None, TypeError, "None"),
        ("   ", ValueError, "empty string"),
        ({"task": "vqa"}, ValueError, "no text, image or video"),
        ({"text": "x", "colour": "red"}, ValueError, "unknown key"),
        (object(), TypeError, "unsupported input type object"),
        ({"text": "x", "image": "/does/not/exist.png"}, ValueError, "does not exist"),
        ({"text": "x", "image": 3.5}, TypeError, "unsupported image type float"),
        ({"image": "http://example.invalid/a.png"}, ValueError, "URL loading is off"),
        (np.zeros((4, 4, 7), dtype=np.uint8), ValueError, "is not HxW"),
    ],
)
def test_bad_input_names_the_index_and_reason(st_off, bad, error, reason):
    with pytest.raises(error, match=rf"Input 2: .*{reason}"):
        st_off.encode_document(["fine", "also fine", bad, "fine"])


def test_unreadable_image_and_decompression_bomb(st_off, tmp_path, images):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"these bytes are no image")
    with pytest.raises(ValueError, match="Input 1: image 0: .*notes.png is not a readable image"):
        st_off.encode_document(["ok", {"image": not_an_image}])
    # images are read batch by batch after ST's length sort; the index is still the caller's
    with pytest.raises(ValueError, match="Input 0: image 0: .*notes.png is not a readable image"):
        st_off.encode_document([{"image": not_an_image}, "a much longer text that ST sorts first"], batch_size=1)
    large = tmp_path / "large.png"
    Image.new("RGB", (300, 200)).save(large)
    module = st_off[0]
    module.max_image_pixels = 50_000
    try:
        with pytest.raises(ValueError, match=r"Input 0: .*300x200 pixels exceeds max_image_pixels=50000"):
            st_off.encode_document([large])
    finally:
        module.max_image_pixels = 178_956_970


class BrokenReasoner:
    """Returns nothing for the request about "second ...", or too few outputs."""

    name = "broken"

    def __init__(self, failure):
        self.failure = failure

    def generate(self, requests):
        if self.failure == "too few":
            return ["only one"]
        return ["" if request.text.startswith("second") else "<think>ok</think> ok" for request in requests]


@pytest.mark.parametrize(
    ("failure", "match"),
    [("empty", r"Input 1: the reasoner returned no trace"), ("too few", r"returned 1 outputs for 2 inputs")],
)
def test_reasoner_that_returns_nothing_is_an_error(tiny_vlm, failure, match):
    model = build_sentence_transformer(tiny_vlm, reasoner=BrokenReasoner(failure))
    with pytest.raises(ValueError, match=match):
        model.encode_query(["first question", "second question, sorted first by ST as the longer one"])
    assert model[0].ecr_cache == {}  # nothing half-written


def test_think_true_without_a_reasoner_is_an_error(st_off):
    with pytest.raises(ValueError, match="no reasoner is configured"):
        st_off.encode_query(["a question"], think=True)


# --- ST features --------------------------------------------------------------------------------


def test_similarity_truncate_dim_and_embedding_dimension(st_off, tiny_vlm):
    assert st_off.get_embedding_dimension() == 64
    queries = st_off.encode_query(["a red bus", "a dog"], convert_to_tensor=True)
    documents = st_off.encode_document(["a bus", "a cat", "a tree"], convert_to_tensor=True)
    scores = st_off.similarity(queries, documents)
    torch.testing.assert_close(scores, queries @ documents.T, atol=1e-6, rtol=0)  # unit vectors: cosine = dot
    short = st_off.encode_query(["a red bus", "a dog"], truncate_dim=16, convert_to_tensor=True)
    torch.testing.assert_close(short, queries[:, :16], atol=1e-6, rtol=0)
    matryoshka = build_sentence_transformer(tiny_vlm, truncate_dim=16)
    assert matryoshka.get_embedding_dimension() == 16


@pytest.mark.parametrize("loss_name", ["MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss"])
def test_trainer_takes_a_step(tiny_vlm, tmp_path, loss_name):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses

    model = build_sentence_transformer(tiny_vlm)
    data = Dataset.from_dict(
        {
            "anchor": [{"text": f"question {i}", "reasoning": f"<think>about {i}</think> {i}"} for i in range(4)],
            "positive": [f"answer number {i}" for i in range(4)],
        }
    )
    loss_kwargs = {"mini_batch_size": 2} if loss_name.startswith("Cached") else {}
    loss = getattr(losses, loss_name)(model, **loss_kwargs)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    output = trainer.train()
    assert np.isfinite(output.training_loss) and output.training_loss > 0
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "one optimiser step should move the backbone weights"


# --- OpenAI-compatible reasoner -----------------------------------------------------------------


class _ChatCompletions(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(payload)
        words = [p["text"] for p in payload["messages"][1]["content"] if p["type"] == "text"]
        body = {"choices": [{"message": {"reasoning_content": f"about {words[0]}", "content": "an answer"}}]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_reasoner(tiny_vlm, embedder, processor, images):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        model = build_sentence_transformer(tiny_vlm, reasoner_endpoint=url, reasoner_model="teacher")
        vector = model.encode_query({"text": "which dog", "image": images[0]}, convert_to_tensor=True)
    finally:
        server.shutdown()
    payload = _ChatCompletions.requests[-1]
    assert payload["model"] == "teacher"
    assert payload["messages"][0] == {"role": "system", "content": task_prompt("generic")}
    assert payload["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    trace = parse_ecr("<think>about which dog</think>an answer").for_embedder("full")  # the canonical layout
    expected = _embed_by_hand(embedder, processor, "which dog", [images[0]], trace=trace)
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)


def test_chat_conversation_input_matches_dict_input(st_off, images):
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "a dog"}]},
        {"role": "assistant", "content": "<think>fur</think> dog"},
    ]
    as_dict = {"text": "a dog", "image": images[0], "reasoning": "<think>fur</think> dog"}
    a = st_off.encode_document([conversation], convert_to_tensor=True)
    b = st_off.encode_document([as_dict], convert_to_tensor=True)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_saved_code_is_the_shipped_set_without_tte_hf_imports(st_off, tmp_path):
    from tte_hf.models.remote_code import REMOTE_CODE_FILES

    st_off.save(str(tmp_path / "m"))
    saved = sorted(p.name for p in (tmp_path / "m").glob("*.py"))
    assert saved == sorted(REMOTE_CODE_FILES)
    for name in saved:
        source = (tmp_path / "m" / name).read_text()
        assert "import tte_hf" not in source and "from tte_hf" not in source, name


# --- unified model: its own backbone reasons, its head embeds --------------------------------------


def _save_unified(backbone: str, path: Path) -> str:
    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel

    model = TTEUnifiedModel.from_backbone(backbone, head_type="mhsa", head_kwargs={"head_num_layers": 2})
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(backbone).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def unified_dir(tiny_vlm, tmp_path_factory):
    return _save_unified(tiny_vlm, tmp_path_factory.mktemp("unified"))


@pytest.mark.parametrize("fixture", ["tiny_vlm", "tiny_vlm_3"])
def test_unified_model_generates_and_embeds_in_one_pass(request, fixture, images, tmp_path):
    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel

    unified_dir = _save_unified(request.getfixturevalue(fixture), tmp_path / "unified")

    st = build_sentence_transformer(unified_dir, max_new_tokens=8, prompts={"query": INSTRUCTION})
    inputs = ["what color is the bus", {"text": "which dog", "image": images[0]}]
    queries = st.encode_query(inputs, convert_to_tensor=True)

    reference = TTEUnifiedModel.from_pretrained(unified_dir).eval()
    proc = AutoProcessor.from_pretrained(unified_dir)
    proc.tokenizer.padding_side = "left"
    prompts = [
        render_prompt(proc, build_messages(text, n, False, INSTRUCTION, task_prompt("generic")))
        for text, n in [("what color is the bus", 0), ("which dog", 1)]
    ]
    batch = proc(text=prompts, images=[images[0]], padding=True, return_tensors="pt")
    out = reference.generate_and_embed(**batch, max_new_tokens=8)
    torch.testing.assert_close(queries, out.embeddings, atol=1e-5, rtol=0)
    traces = proc.batch_decode([ids.tolist() for ids in out.trace_ids], skip_special_tokens=True)
    assert st.get_reasoning(inputs) == traces

    counting = CountingReasoner(st[0].reasoner)
    st[0].set_reasoner(counting)
    again = st.encode_query(inputs, convert_to_tensor=True)  # cached trace: one forward pass, same vector
    assert counting.requests == 0
    torch.testing.assert_close(again, queries, atol=1e-5, rtol=0)

    documents = st.encode_document(inputs, convert_to_tensor=True)  # no reasoning: prompt + end token
    texts = [
        embedder_text(render_prompt(proc, build_messages(text, n, False, None)), None)
        for text, n in [("what color is the bus", 0), ("which dog", 1)]
    ]
    with torch.no_grad():
        expected = reference(**proc(text=texts, images=[images[0]], padding=True, return_tensors="pt")).embeddings
    torch.testing.assert_close(documents, expected, atol=1e-5, rtol=0)

    st.save(str(tmp_path / "saved"))
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    torch.testing.assert_close(reloaded.encode_document(inputs, convert_to_tensor=True), documents, atol=1e-5, rtol=0)


@pytest.mark.slow  # starts two worker processes (~25 s on 2 cores)
def test_multi_process_encoding_matches_single_process(st_off, images):
    inputs = ["a red bus", {"text": "a dog", "image": images[0]}, "a tree near a house", images[1]]
    single = st_off.encode_document(inputs, convert_to_tensor=True)
    pooled = st_off.encode_document(inputs, device=["cpu", "cpu"], chunk_size=2, convert_to_tensor=True)
    torch.testing.assert_close(pooled.cpu(), single.cpu(), atol=1e-5, rtol=0)


def test_pixel_budget_from_config_resizes_images(tiny_vlm, embedder, processor):
    model = build_sentence_transformer(tiny_vlm, max_pixels=28 * 28 * 4)
    large = _image(7, 280, 168)
    vector = model.encode_document(large, convert_to_tensor=True)
    resized = large.resize(
        (int(round(168 * (3136 / (280 * 168)) ** 0.5)), int(round(280 * (3136 / (280 * 168)) ** 0.5)))
    )
    assert resized.size[0] * resized.size[1] <= 28 * 28 * 4
    torch.testing.assert_close(vector, _embed_by_hand(embedder, processor, None, [resized]), atol=1e-5, rtol=0)
    unbounded = build_sentence_transformer(tiny_vlm).encode_document(large, convert_to_tensor=True)
    assert not torch.allclose(vector, unbounded, atol=1e-3)


def test_tte_embedder_checkpoint_as_embedder(embedder, processor, tmp_path):
    embedder.save_pretrained(tmp_path / "tte_embedder")
    processor.save_pretrained(tmp_path / "tte_embedder")
    model = build_sentence_transformer(tmp_path / "tte_embedder")
    vector = model.encode_document("a red bus", convert_to_tensor=True)
    torch.testing.assert_close(vector, _embed_by_hand(embedder, processor, "a red bus", []), atol=1e-5, rtol=0)

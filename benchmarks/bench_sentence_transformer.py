"""Benchmarks of the Think-Then-Embed sentence-transformers model (tiny random Qwen2-VL, CPU or GPU).

Prints three ratios, each measured side by side in this one run:
1. ``encode`` with reasoning off vs the raw backbone forward + last-token pooling on the same batches
   (same texts, same processor calls): the module's overhead, goal <= 1.10x.
2. the second ``encode_query`` on the same 256 queries vs the first (reasoner + embedder), goal
   >= 20x faster: with the ECR cache alone (the reasoner is skipped, the embedder pass remains), and
   with the opt-in embedding cache as well (both are skipped).
   The embedding cache is timed with its weights key (`weights_state_key`: version counters and a
   sample of the values) and, alternating with it, with the key it had before (a fused float32 norm
   of every parameter and buffer, per call).
3. ST's length-sorted batching vs batches in input order on a mixed-length corpus, goal >= 1.3x.
4. the weights key alone, per call: `weights_state_key` vs the norm of every weight it replaced, and
   once `weights_digest` (the exact digest of the evaluation record and the hidden-state cache).

Each time is wall-clock seconds and user CPU seconds of this process (``getrusage``).
``--width real`` builds the embedder at Qwen2-VL-2B's width instead (hidden 1536, 12 heads, 2 KV
heads, MLP 8960, vocabulary 151936, tied embeddings; ``--layers`` text layers, a 2-block vision tower
of its width), random, no download; the reasoner stays tiny, so there the embedder is most of the
first ``encode_query`` and the ECR cache alone saves little. It runs sections 2 and 4 by default.

    python benchmarks/bench_sentence_transformer.py [--device cpu] [--max-new-tokens 64]
    python benchmarks/bench_sentence_transformer.py --width real --layers 4 --queries 32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import tte_hf.models.tte.st_model as st_model
from tte_hf.models.tte.fingerprints import adapter_state, weights_digest, weights_state_key
from tte_hf.models.tte.heads import last_token_pool
from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.testing import _WORDS, build_tiny_vlm


def _user_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _timed(fn) -> tuple[float, float]:
    """Wall-clock and user CPU seconds of ``fn()``."""
    start, cpu = time.perf_counter(), _user_cpu()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, _user_cpu() - cpu


def paired_best(repeats: int, first, second) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best (wall, user CPU) of each, the two runs alternating so that load drift on a shared machine
    hits both."""
    times = [(_timed(first), _timed(second)) for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def fmt(timing: tuple[float, float]) -> str:
    return f"{timing[0]:.4f}s wall / {timing[1]:.4f}s user CPU"


@torch.no_grad()
def norm_key(model: torch.nn.Module) -> str:
    """The embedding cache's weights key before `weights_state_key`: storage and version counter of
    every parameter and buffer, their fused float32 norms (reads every weight) and the adapter state."""
    digest = hashlib.sha256()
    groups: dict[tuple[str, torch.dtype], list[torch.Tensor]] = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tensor.data_ptr()}:{tensor._version}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.is_floating_point() and tensor.numel():
            groups.setdefault((str(tensor.device), tensor.dtype), []).append(tensor.detach())
    for key in sorted(groups, key=str):
        norms = torch._foreach_norm(groups[key], 2, dtype=torch.float32)
        digest.update(torch.stack(norms).cpu().numpy().tobytes())
    digest.update(json.dumps(adapter_state(model), default=str).encode())
    return digest.hexdigest()


def build_real_width_vlm(output_dir: str, num_layers: int, seed: int = 0) -> Path:
    """A random Qwen2-VL checkpoint of Qwen2-VL-2B's widths with ``num_layers`` text layers and a
    2-block vision tower; tokenizer and processor are the tiny checkpoint's (ids past its vocabulary
    are never looked up, the table is there for its size)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    path = build_tiny_vlm(output_dir, seed=seed)
    config = Qwen2VLConfig.from_pretrained(path)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.vocab_size = 1536, 8960, 151936
    text.num_attention_heads, text.num_key_value_heads, text.num_hidden_layers = 12, 2, num_layers
    text.layer_types = ["full_attention"] * num_layers
    text.rope_parameters["mrope_section"] = [16, 24, 24]  # Qwen2-VL's, of a 128-wide head
    config.tie_word_embeddings = text.tie_word_embeddings = True
    vision = config.vision_config
    vision.embed_dim, vision.depth, vision.num_heads, vision.mlp_ratio, vision.hidden_size = 1280, 2, 16, 4, 1536
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    (path / "model.safetensors").unlink()
    model.save_pretrained(path)
    return path


def sentences(rng: random.Random, count: int, low: int, high: int) -> list[str]:
    return [" ".join(rng.choices(_WORDS, k=rng.randint(low, high))) for _ in range(count)]


def module_overhead(args, embedder_path: str, rng: random.Random) -> None:
    """1. module overhead, reasoning off, same batches (already in the order ST would use)."""
    model = build_sentence_transformer(embedder_path, device=args.device)
    module, bs = model[0], args.batch_size
    texts = sorted(sentences(rng, 256, 8, 40), key=len, reverse=True)

    @torch.inference_mode()
    def raw_forward():
        for start in range(0, len(texts), bs):
            chunk = texts[start : start + bs]
            prompts = [embedder_text(render_prompt(module.processor, build_messages(t)), None) for t in chunk]
            batch = module.processor(text=prompts, padding=True, return_tensors="pt").to(args.device)
            hidden = module.model(**batch, use_cache=False).last_hidden_state
            F.normalize(last_token_pool(hidden, batch["attention_mask"]), dim=-1).cpu()

    def st_encode():
        model.encode_document(texts, batch_size=bs, convert_to_tensor=True)

    st_encode(), raw_forward()  # warm-up
    t_raw, t_st = paired_best(args.repeats, raw_forward, st_encode)
    print(f"[1] encode (reasoning off) {fmt(t_st)} vs raw forward + pooling {fmt(t_raw)}: {t_st[0] / t_raw[0]:.2f}x")


def second_query(args, embedder_path: str, reasoner_path: str, rng: random.Random) -> None:
    """2. caches: the second encode_query on the same queries."""
    model = build_sentence_transformer(
        embedder_path, reasoner=reasoner_path, max_new_tokens=args.max_new_tokens, device=args.device
    )
    queries = sentences(rng, args.queries, 6, 20)
    assert model[0].reasoner is not None  # loads the reasoner checkpoint outside the timing

    def encode_queries():
        return model.encode_query(queries, batch_size=args.batch_size, convert_to_tensor=True)

    def with_norm_key():
        st_model.weights_state_key = norm_key
        try:
            return encode_queries()
        finally:
            st_model.weights_state_key = weights_state_key

    model.embedding_cache = {}
    t_first = _timed(encode_queries)  # fills the ECR cache and the embedding cache
    first = encode_queries()
    with_norm_key()  # fills the embedding cache under the old keys
    t_norm, t_state = paired_best(args.repeats, with_norm_key, encode_queries)
    model.embedding_cache = None
    t_ecr = min(_timed(encode_queries) for _ in range(args.repeats))
    assert torch.allclose(first, encode_queries(), atol=1e-5)
    trace_tokens = sum(len(model[0].processor.tokenizer(t).input_ids) for t in model.get_reasoning(queries))
    print(
        f"[2] encode_query of {len(queries)} queries, first {fmt(t_first)} (reasoner, mean trace "
        f"{trace_tokens / len(queries):.0f} tokens) vs second:\n"
        f"    ECR cache {fmt(t_ecr)} ({t_first[0] / t_ecr[0]:.1f}x faster)\n"
        f"    ECR + embedding cache, weights_state_key {fmt(t_state)} ({t_first[0] / t_state[0]:.0f}x faster)\n"
        f"    ECR + embedding cache, norm of every weight {fmt(t_norm)} ({t_first[0] / t_norm[0]:.1f}x faster)"
    )


def length_sorting(args, embedder_path: str, rng: random.Random) -> None:
    """3. length-sorted batching (ST's encode) vs input order, on a mixed-length corpus."""
    model = build_sentence_transformer(embedder_path, device=args.device)
    bs = args.batch_size
    corpus = sentences(rng, 128, 2, 8) + sentences(rng, 128, 150, 400)
    rng.shuffle(corpus)

    @torch.inference_mode()
    def input_order():
        for start in range(0, len(corpus), bs):
            features = model.preprocess(corpus[start : start + bs], task="document")
            features = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            model(features)["sentence_embedding"].cpu()

    def length_sorted():
        model.encode_document(corpus, batch_size=bs, convert_to_tensor=True)

    length_sorted(), input_order()  # warm-up
    t_in_order, t_sorted = paired_best(args.repeats, input_order, length_sorted)
    print(
        f"[3] length-sorted {fmt(t_sorted)} vs input order {fmt(t_in_order)}: "
        f"{t_in_order[0] / t_sorted[0]:.2f}x faster (device {args.device}, batch {bs})"
    )


def weights_key(args, embedder_path: str) -> None:
    """4. the weights key alone, per call, and the exact digest once."""
    model = build_sentence_transformer(embedder_path, device=args.device)
    params = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    weights_state_key(model), norm_key(model)  # warm-up
    t_norm, t_state = paired_best(args.repeats, lambda: norm_key(model), lambda: weights_state_key(model))
    t_digest = _timed(lambda: weights_digest(model))
    print(
        f"[4] weights key of {params / 1e6:.1f}M parameters and buffers ({size / 2**30:.3f} GiB, "
        f"{next(model.parameters()).dtype}): weights_state_key {fmt(t_state)} vs norm of every weight "
        f"{fmt(t_norm)}: {t_norm[0] / t_state[0]:.0f}x faster; weights_digest (once) {fmt(t_digest)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--layers", type=int, default=4, help="text layers of the --width real embedder")
    parser.add_argument("--queries", type=int, help="queries of section 2 (default: 256 tiny, 32 real)")
    parser.add_argument("--sections", help="comma-separated, of 1,2,3,4 (default: all tiny, 2,4 real)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    real = args.width == "real"
    args.queries = args.queries or (32 if real else 256)
    sections = {int(s) for s in (args.sections or ("2,4" if real else "1,2,3,4")).split(",")}
    rng = random.Random(0)
    workdir = tempfile.mkdtemp(prefix="bench_st_")
    if real:
        embedder_path = str(build_real_width_vlm(f"{workdir}/embedder", args.layers))
    else:
        embedder_path = str(build_tiny_vlm(f"{workdir}/embedder", seed=0))
    reasoner_path = str(build_tiny_vlm(f"{workdir}/reasoner", seed=1))
    print(f"embedder: {args.width} width; device {args.device}; torch threads {torch.get_num_threads()}")
    if 1 in sections:
        module_overhead(args, embedder_path, rng)
    if 2 in sections:
        second_query(args, embedder_path, reasoner_path, rng)
    if 3 in sections:
        length_sorting(args, embedder_path, rng)
    if 4 in sections:
        weights_key(args, embedder_path)


if __name__ == "__main__":
    main()

"""Benchmarks of the Think-Then-Embed sentence-transformers model (tiny random Qwen2-VL, CPU or GPU).

Prints three ratios, each measured side by side in this one run:
1. ``encode`` with reasoning off vs the raw backbone forward + last-token pooling on the same batches
   (same texts, same processor calls): the module's overhead, goal <= 1.10x.
2. the second ``encode_query`` on the same 256 queries vs the first (reasoner + embedder), goal
   >= 20x faster: with the ECR cache alone (the reasoner is skipped, the embedder pass remains), and
   with the opt-in embedding cache as well (both are skipped).
3. ST's length-sorted batching vs batches in input order on a mixed-length corpus, goal >= 1.3x.

    python benchmarks/bench_sentence_transformer.py [--device cpu] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch
import torch.nn.functional as F

from tte_hf.models.tte.heads import last_token_pool
from tte_hf.models.tte.inputs import build_messages, embedder_text, render_prompt
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.testing import _WORDS, build_tiny_vlm


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def paired_best(repeats: int, first, second) -> tuple[float, float]:
    """Best time of each, the two runs alternating so that load drift on a shared machine hits both."""
    times = [(_timed(first), _timed(second)) for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def sentences(rng: random.Random, count: int, low: int, high: int) -> list[str]:
    return [" ".join(rng.choices(_WORDS, k=rng.randint(low, high))) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    workdir = tempfile.mkdtemp(prefix="bench_st_")
    embedder_path = str(build_tiny_vlm(f"{workdir}/embedder", seed=0))
    reasoner_path = str(build_tiny_vlm(f"{workdir}/reasoner", seed=1))
    bs = args.batch_size

    # 1. module overhead, reasoning off, same batches (already in the order ST would use)
    model = build_sentence_transformer(embedder_path, device=args.device)
    module = model[0]
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
    print(f"[1] encode (reasoning off) {t_st:.3f}s vs raw forward + pooling {t_raw:.3f}s: {t_st / t_raw:.2f}x")

    # 2. caches: second encode_query on the same 256 queries
    model = build_sentence_transformer(
        embedder_path, reasoner=reasoner_path, max_new_tokens=args.max_new_tokens, device=args.device
    )
    queries = sentences(rng, 256, 6, 20)
    assert model[0].reasoner is not None  # loads the reasoner checkpoint outside the timing

    def encode_queries():
        return model.encode_query(queries, batch_size=bs, convert_to_tensor=True)

    model.embedding_cache = {}
    t_first = _timed(encode_queries)  # fills the ECR cache and the embedding cache
    first = encode_queries()
    t_embedding_cache = min(_timed(encode_queries) for _ in range(args.repeats))
    model.embedding_cache = None
    t_ecr_cache = min(_timed(encode_queries) for _ in range(args.repeats))
    assert torch.allclose(first, encode_queries(), atol=1e-5)
    trace_tokens = sum(len(module.processor.tokenizer(t).input_ids) for t in model.get_reasoning(queries)) / 256
    print(
        f"[2] encode_query first {t_first:.2f}s (reasoner, mean trace {trace_tokens:.0f} tokens) vs second: "
        f"ECR cache {t_ecr_cache:.3f}s ({t_first / t_ecr_cache:.1f}x faster), ECR + embedding cache "
        f"{t_embedding_cache:.4f}s ({t_first / t_embedding_cache:.0f}x faster)"
    )

    # 3. length-sorted batching (ST's encode) vs input order, on a mixed-length corpus
    model = build_sentence_transformer(embedder_path, device=args.device)
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
        f"[3] length-sorted {t_sorted:.3f}s vs input order {t_in_order:.3f}s: {t_in_order / t_sorted:.2f}x faster "
        f"(device {args.device}, batch {bs})"
    )


if __name__ == "__main__":
    main()

"""Embed queries and documents with a TTE model from the Hub, through sentence-transformers and transformers.

    python examples/embed_with_hub_model.py --model org/tte-2b --image street.jpg --device cuda

The repo ships its own code (``trust_remote_code=True``): tte-hf need not be installed. A query is
reasoned about first (the ECR trace is printed), then embedded; documents are embedded as they are.
The `AutoModel` part embeds the documents again from the chat sequence the model reads: prompt, the
(here empty) trace as the assistant turn, then ``<|im_end|>``, whose hidden state is the embedding.
"""

from __future__ import annotations

import argparse
import json

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoProcessor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="org/tte-2b", help="Hub repo id or folder of a TTE model.")
parser.add_argument("--query", nargs="+", default=["Which vehicle is second closest to the camera?"])
parser.add_argument("--image", help="Image the queries ask about (path or URL).")
parser.add_argument("--documents", nargs="+", default=["a red bus", "a bicycle leaning on a wall"])
parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: sentence-transformers' choice).")
parser.add_argument("--max-new-tokens", type=int, help="Cap on each query's trace (default: the model's setting).")
parser.add_argument("--output", help="Write vectors, scores and traces to this JSON file.")
args = parser.parse_args()

model = SentenceTransformer(args.model, trust_remote_code=True, device=args.device)
if args.max_new_tokens:
    model[0].max_new_tokens = args.max_new_tokens  # a saved module setting; read when the reasoner first runs
queries = [{"text": text, "image": args.image} if args.image else text for text in args.query]
traces = model.get_reasoning(queries)  # cached: encode_query below does not generate them again
q = model.encode_query(queries, convert_to_tensor=True)
d = model.encode_document(args.documents, convert_to_tensor=True)
scores = model.similarity(q, d)
for text, trace, row in zip(args.query, traces, scores.tolist()):
    print(f"{text!r}\n  ECR: {trace!r}\n  scores: {[round(s, 3) for s in row]}")

# The same documents through transformers' AutoModel (TTEEmbedderModel).
embedder = AutoModel.from_pretrained(args.model, trust_remote_code=True).to(model.device).eval()
processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
texts = [
    processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": doc}]}], tokenize=False, add_generation_prompt=True
    )
    + "<|im_end|>"  # prompt + trace (none) + end token: the pooled position
    for doc in args.documents
]
processor.tokenizer.padding_side = "left"
with torch.no_grad():
    auto = embedder(**processor(text=texts, return_tensors="pt", padding=True).to(model.device)).embeddings
print(f"AutoModel vs sentence-transformers, max |diff|: {(auto - d).abs().max().item():.2e}")

if args.output:
    result = {"query": q.tolist(), "document": d.tolist(), "scores": scores.tolist(), "reasoning": traces}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result | {"automodel_document": auto.tolist()}, handle)

"""``tte-hf serve``: an OpenAI-compatible ``/v1/embeddings`` server for a TTE model (micro-batched)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="TTE sentence-transformers model: local folder or Hub repo id.")
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (0.0.0.0 to listen on all interfaces).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="The 'model' clients send (default: the folder / repo name).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the model's choice).")
    parser.add_argument("--trust-remote-code", action="store_true", help="Needed for TTE models from the Hub.")
    reasoner = parser.add_argument_group("reasoner (default: the one the model's config names)")
    reasoner.add_argument("--reasoner-endpoint", help="OpenAI-compatible generation server, e.g. http://gpu1:8001/v1 (vllm serve).")  # fmt: skip
    reasoner.add_argument("--reasoner-model", help="Model name on that server (or the checkpoint for --reasoner-vllm).")
    reasoner.add_argument("--reasoner-vllm", action="store_true", help="Run --reasoner-model in process with vLLM.")
    reasoner.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism (in process).")
    reasoner.add_argument("--reasoner-max-new-tokens", type=int, default=256)
    reasoner.add_argument("--reasoner-max-retries", type=int, default=2, help="Retries per remote reasoner call.")
    reasoner.add_argument("--ecr-cache", help="SQLite file: traces persist across restarts and replicas.")
    limits = parser.add_argument_group("batching and limits")
    limits.add_argument("--max-batch", type=int, default=32, help="Most inputs per encode call.")
    limits.add_argument("--batch-window-ms", type=float, default=5.0, help="How long the batcher waits for more.")
    limits.add_argument("--max-queue", type=int, default=1024, help="Requests waiting; beyond it: HTTP 429.")
    limits.add_argument("--max-items", type=int, default=256, help="Inputs per request.")
    limits.add_argument("--max-request-mb", type=float, default=64.0)
    limits.add_argument("--max-image-mb", type=float, default=10.0)
    limits.add_argument("--max-image-pixels", type=int, default=4096 * 4096)
    limits.add_argument("--allow-image-urls", action="store_true", help="Fetch http(s) image URLs (off: data URLs only).")  # fmt: skip
    limits.add_argument("--default-input-type", choices=["query", "document"], default="query")
    parser.add_argument("--api-key-env", default="TTE_HF_API_KEY", help="Env var holding the API key (required when set).")  # fmt: skip
    parser.add_argument("--graceful-timeout", type=float, default=30.0, help="Seconds to finish requests on shutdown.")


def _reasoner(args: argparse.Namespace):
    from ..reasoning import load_reasoner

    if args.reasoner_vllm:
        if not args.reasoner_model:
            raise ValueError("--reasoner-vllm needs --reasoner-model (the reasoner checkpoint).")
        return load_reasoner(
            backend="vllm",
            model=args.reasoner_model,
            tensor_parallel_size=args.tensor_parallel_size,
            max_new_tokens=args.reasoner_max_new_tokens,
        )
    if args.reasoner_endpoint:
        if not args.reasoner_model:
            raise ValueError("--reasoner-endpoint needs --reasoner-model (the model name on that server).")
        return load_reasoner(
            backend="openai",
            model=args.reasoner_model,
            base_url=args.reasoner_endpoint,
            max_new_tokens=args.reasoner_max_new_tokens,
            max_retries=args.reasoner_max_retries,
        )
    return None


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    try:
        from ..serving import ServeConfig, create_app
        from ..serving import run as serve
        from ..serving.schemas import Limits
    except ImportError as err:
        print(f"tte-hf serve: error: {err}", file=sys.stderr)
        return 2
    model = SentenceTransformer(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    module = model[0]
    try:
        backend = _reasoner(args)
        if backend is not None:
            module.set_reasoner(backend)
        if args.ecr_cache:
            if getattr(module, "reasoner", None) is None:
                raise ValueError("--ecr-cache needs a reasoner (the model's own or --reasoner-*).")
            from ..reasoning import CachedReasoner

            module.set_reasoner(CachedReasoner(module.reasoner, args.ecr_cache))
    except (ValueError, TypeError) as err:
        print(f"tte-hf serve: error: {err}", file=sys.stderr)
        return 2
    config = ServeConfig(
        model_name=args.served_model_name or Path(args.model.rstrip("/")).name,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        max_request_bytes=int(args.max_request_mb * 2**20),
        limits=Limits(
            max_items=args.max_items,
            max_image_bytes=int(args.max_image_mb * 2**20),
            max_image_pixels=args.max_image_pixels,
            allow_image_urls=args.allow_image_urls,
        ),
        default_input_type=args.default_input_type,
        api_key=os.environ.get(args.api_key_env) or None,
    )
    print(
        f"Serving {config.model_name!r} on http://{args.host}:{args.port}/v1/embeddings "
        f"(API key {'required' if config.api_key else 'off'}; reasoner: {getattr(getattr(module, 'reasoner', None), 'name', None)})",
        file=sys.stderr,
    )
    serve(create_app(model, config), host=args.host, port=args.port, graceful_timeout=args.graceful_timeout)
    return 0

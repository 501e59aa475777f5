"""``tte-hf export SOURCE OUTPUT_DIR``: a drop-in Hub repo folder (weights, processor, code, ST files, card)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="Checkpoint folder: TTE embedder, unified model, reasoner, or a LoRA adapter.")
    parser.add_argument("output_dir", help="Folder to write the repo to (must be empty or absent).")
    parser.add_argument("--kind", choices=("embedder", "unified", "reasoner"), help="Default: read from the config.")
    parser.add_argument("--processor", help="Folder or repo id of the processor when SOURCE has none.")
    parser.add_argument("--adapter-base", help="Base model of a LoRA adapter SOURCE whose adapter_config names none.")
    parser.add_argument("--reasoner", help="Repo id (or path) of the reasoner an embedder calls at query time.")
    parser.add_argument("--reasoner-revision", help="Pin the reasoner to this revision (branch, tag or commit).")
    parser.add_argument("--no-merge-lora", dest="merge_lora", action="store_false", help="Keep a LoRA as an adapter.")
    parser.add_argument("--vllm", action="store_true", help="Plain merged Qwen2-VL embedder for vLLM's pooling runner.")
    parser.add_argument(
        "--no-sentence-transformers",
        dest="sentence_transformers",
        action="store_false",
        help="Do not write the sentence-transformers files.",
    )
    parser.add_argument("--no-query-reasoning", dest="query_reasoning", action="store_false")
    parser.add_argument("--document-reasoning", action="store_true", help="Also reason about documents.")
    parser.add_argument("--prompts", help='JSON object of ST prompts, e.g. \'{"query": "...", "document": "..."}\'.')
    parser.add_argument("--repo-id", help="The repo id the card's usage snippets name (default: your-org/<name>).")
    parser.add_argument("--base-model", help="Hub id of the base model, for the card metadata.")
    parser.add_argument("--dataset", dest="datasets", action="append", default=[], help="Training dataset id (repeat).")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--tag", dest="tags", action="append", default=[], help="Extra card tag (repeat).")
    parser.add_argument("--eval-report", help="Eval report JSON: MMEB results go into the card's model-index.")
    parser.add_argument("--recipe", help="Training recipe YAML, summarised in the card.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUTPUT_DIR if it is not empty.")
    parser.add_argument(
        "--gate", help="Folder with a reasoning gate (train-gate output); default: SOURCE's own, if any."
    )


def run(args: argparse.Namespace) -> int:
    from ..hub import CardInfo, ExportError, export_model, export_vllm

    card = CardInfo(
        repo_id=args.repo_id,
        base_model=args.base_model,
        datasets=args.datasets,
        license=args.license,
        tags=args.tags,
        eval_report=args.eval_report,
        recipe=args.recipe,
    )
    try:
        prompts = json.loads(args.prompts) if args.prompts else None
        if prompts is not None and not isinstance(prompts, dict):
            raise ExportError("--prompts must be a JSON object mapping prompt names to texts.")
        if args.vllm:
            path = export_vllm(
                args.source,
                args.output_dir,
                processor=args.processor,
                adapter_base=args.adapter_base,
                card=card,
                overwrite=args.overwrite,
            )
        else:
            path = export_model(
                args.source,
                args.output_dir,
                kind=args.kind,
                processor=args.processor,
                adapter_base=args.adapter_base,
                reasoner=args.reasoner,
                reasoner_revision=args.reasoner_revision,
                merge_lora=args.merge_lora,
                sentence_transformers=args.sentence_transformers,
                query_reasoning=args.query_reasoning,
                document_reasoning=args.document_reasoning,
                prompts=prompts,
                card=card,
                overwrite=args.overwrite,
                gate=args.gate,
            )
    except (ExportError, json.JSONDecodeError) as err:
        print(f"tte-hf export: error: {err}")
        return 2
    print(f"Wrote {path}; upload it with: tte-hf push {path} <org>/<name>")
    return 0

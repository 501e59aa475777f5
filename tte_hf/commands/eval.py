"""``tte-hf eval``: score a model on MMEB-V1 / MMEB-V2 (or a local task list) with Hit@1 / NDCG@5 reports."""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="sentence-transformers model: local folder or Hub repo id.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--benchmark", default="mmeb-v2", help="mmeb-v1, mmeb-v2, mmeb-v2-image|video|visdoc.")
    source.add_argument("--tasks-file", help="JSON/YAML list of local task definitions (TaskSpec fields).")
    parser.add_argument("--tasks", nargs="+", help="Only these task names (exact, as in the benchmark).")
    parser.add_argument("--output", required=True, help="Results folder; rerunning into it resumes.")
    parser.add_argument("--data-root", help="Local mirror: Hub datasets are read from DATA_ROOT/<repo id>.")
    parser.add_argument("--image-root", help="Folder holding MMEB's image-tasks/ (and other media folders).")
    parser.add_argument("--ecr", nargs="+", default=[], help="Precomputed ECR JSONL files (id, ecr) to attach.")
    parser.add_argument("--allow-missing-ecr", action="store_true", help="Embed queries without a trace as is.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=256, help="Items per cached embedding file.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the model's choice; under torchrun / accelerate launch, each process's own device).")  # fmt: skip
    parser.add_argument("--engine", choices=["sentence-transformers", "vllm"], default="sentence-transformers", help="vllm: vLLM's pooling runner (GPU) for a folder written by `tte-hf export --vllm`.")  # fmt: skip
    parser.add_argument("--vllm-reasoner", metavar="MODEL", help="Write missing query traces with this reasoner on a vLLM generation engine (GPU).")  # fmt: skip
    parser.add_argument("--reasoner-max-new-tokens", type=int, default=256, help="Trace length cap of --vllm-reasoner.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Needed for TTE models from the Hub.")
    parser.add_argument("--overwrite", action="store_true", help="Discard cached results in --output.")
    parser.add_argument("--no-chart", action="store_true", help="Skip the PNG chart.")
    parser.add_argument("--baselines", choices=["mmeb-v1", "mmeb-v2"], help="Published scores to show beside a task file.")  # fmt: skip
    parser.add_argument("--protocol", choices=["leaderboard", "strict"], default="leaderboard", help="leaderboard: VLM2Vec's candidate identity and tie rules (comparable with published scores); strict: every listed candidate scored on its own, ties against the model.")  # fmt: skip
    parser.add_argument("--input-format", choices=["auto", "tte", "vlm2vec", "gme", "qwen3-vl-embedding"], default="auto", help="What the model reads: tte (the model's own input) or a baseline's reference input; auto: from the repo's name / config.")  # fmt: skip


def load_model(args: argparse.Namespace, device: str | None):
    """The model `evaluate` calls: a baseline behind its input profile (``--input-format``), a
    sentence-transformers model or a vLLM pooling engine, with the query-side reasoner moved to a vLLM
    generation engine when ``--vllm-reasoner`` asks for it."""
    from ..evaluation.profile_encoder import ProfileEncoder, detect_input_format

    input_format = detect_input_format(args.model) if args.input_format == "auto" else args.input_format
    if input_format != "tte":
        if args.engine == "vllm" or args.vllm_reasoner:
            raise ValueError(f"--input-format {input_format} runs on transformers; drop --engine vllm / --vllm-reasoner.")  # fmt: skip
        return ProfileEncoder(args.model, input_format, device=device, trust_remote_code=args.trust_remote_code)
    reasoner = None
    if args.vllm_reasoner:
        from ..reasoning import load_reasoner

        reasoner = load_reasoner(backend="vllm", model=args.vllm_reasoner, max_new_tokens=args.reasoner_max_new_tokens)
    if args.engine == "vllm":
        from ..evaluation.vllm_engine import VLLMEmbedder, import_vllm

        import_vllm()  # fail before any work with a clear message on a CPU machine
        return VLLMEmbedder(args.model, reasoner=reasoner)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device=device, trust_remote_code=args.trust_remote_code)
    if reasoner is not None:
        if not callable(getattr(model[0], "set_reasoner", None)):
            raise ValueError(f"--vllm-reasoner: {args.model} has no reasoning step (not a TTE model).")
        model[0].set_reasoner(reasoner)
    return model


def run(args: argparse.Namespace) -> int:
    from ..evaluation import TaskDataError, evaluate, get_benchmark, load_task_file
    from ..evaluation.distributed import current_processes

    try:
        source = load_task_file(args.tasks_file) if args.tasks_file else get_benchmark(args.benchmark)
    except (ValueError, OSError) as err:
        print(f"tte-hf eval: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tte_hf.evaluation").setLevel(logging.INFO)  # which process embeds which chunks
    cpu = args.device == "cpu"
    processes = current_processes(cpu=cpu)
    try:
        model = load_model(args, args.device or processes.device)
    except (ImportError, RuntimeError, ValueError) as err:
        print(f"tte-hf eval: error: {err}", file=sys.stderr)
        return 2
    try:
        report = evaluate(
            model,
            source,
            args.output,
            tasks=args.tasks,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            data_root=args.data_root,
            image_root=args.image_root,
            ecr_files=args.ecr,
            require_ecr=not args.allow_missing_ecr,
            model_id=args.model,
            overwrite=args.overwrite,
            chart=not args.no_chart,
            baselines=args.baselines,
            cpu=cpu,
            protocol=args.protocol,
        )
    except (TaskDataError, ValueError) as err:
        print(f"tte-hf eval: error: {err}", file=sys.stderr)
        return 2
    processes.close()
    if not processes.is_main:
        return 0
    print(f"{report['benchmark']}: overall {report['overall']:.1f} over {report['num_tasks']} tasks (protocol {report['protocol']}, input format {report['input_format']})")  # fmt: skip
    for name, entry in report["modality"].items():
        print(f"  {name}: {entry['score']:.1f} ({entry['num_tasks']} tasks)")
    print(f"Reports in {args.output}: report.json, report.md" + ("" if args.no_chart else ", meta_tasks.png"))
    return 0

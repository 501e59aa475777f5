"""Adaptive thinking: end-to-end ``encode_query`` wall time of ``think="auto"`` vs ``think=True`` on the
demo's mixed held-out set, with the demo's own trained models and gates.

Same queries (the held-out riddles and plain queries, as `tte-hf demo` evaluates them), same batches,
one run, interleaved rounds after a warm-up round; the ECR cache is emptied before every call, so each
reasoned query really runs the reasoner. Times are medians over the rounds; a ratio is the median of
the rounds' own ratios, with their range (one round's ratio moves by 0.1 or more between rounds on a
shared 2-core machine). Prints, for the student (embedder + a separate reasoner) and the unified
model, reasoner calls and the auto / always time ratio (goal <= 0.65), and beside it an oracle gate's
ratio: reason on exactly the riddles, none of the plain queries (the kind is known from the data),
each kind encoded in one call. That is about the least time a gate that keeps the riddles' Hit@1 can
take on this set, with no gate pass at all. Last, the gate's pass alone (`gate_decisions`: tokenizer
and embedding lookup of the prompts' text) beside ``never``'s complete no-trace pass. And ``reasoned only``: ``think=True`` on just the queries ``auto`` reasons on, one call,
which is what ``auto`` would cost if its gate and its skipped queries were free: the floor of any
engineering on the gate's pass (reusing its work for the skipped queries and so on) at this gate.
Beside the wall-time ratio, the same ratio of this process's CPU time (every thread): time another
process takes from the two cores stretches wall time, not this process's CPU time.

``--trace-tokens N`` makes every trace exactly N tokens long (the reasoner may not stop earlier and
must stop there), as long as a real reasoner's ECR (a few hundred tokens) rather than the demo's 30: the
time ratio that matters to a user. The embeddings are then meaningless; the timings are not.

    tte-hf demo --output tte-demo
    python benchmarks/bench_adaptive.py --demo tte-demo [--batch 64 --repeats 3 --device cuda --trace-tokens 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

MODES = {"always": True, "auto": "auto", "never": False}
ORACLE = "oracle"  # think on the riddles only
GATE = "gate"  # the gate's decisions alone: its features (the prompts' text tokens) and probe
REASONED = "reasoned"  # think=True on the queries the gate reasons on, nothing else


def mixed_queries(demo: Path) -> tuple[list, int]:
    """The demo's held-out riddles then plain queries, materialised as its evaluation feeds them, and
    how many of them (the first ones) are riddles."""
    from tte_hf.demo.pipeline import EVAL_TASK_NAME, PLAIN_TASK_NAME
    from tte_hf.evaluation import TaskSpec
    from tte_hf.evaluation.data import load_task, materialize

    inputs, riddles = [], 0
    for name, file in ((EVAL_TASK_NAME, "test.jsonl"), (PLAIN_TASK_NAME, "test_plain.jsonl")):
        data_dir = (demo / "data").resolve()
        task = TaskSpec(name, "image", "VQA", data_files=str(data_dir / file), image_root=str(data_dir))
        inputs += [materialize(task, query) for query in load_task(task).queries]
        riddles = riddles or len(inputs)
    return inputs, riddles


def time_modes(
    model, queries, riddles: int, batch: int, repeats: int
) -> dict[str, tuple[list[float], int, list[float]]]:
    """Each mode's wall times (one per round), reasoner calls and CPU times (this process, all threads)."""
    module = model[0]
    modes = [*MODES, ORACLE, GATE, REASONED]
    reasoned = [query for query, think in zip(queries, model.gate_decisions(queries, batch_size=batch)[0]) if think]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    calls: dict[str, int] = {}
    for repeat in range(repeats + 1):  # the first round warms up (lazy reasoner load, allocator) and is not kept
        for mode in modes:
            module.ecr_cache.clear()
            if hasattr(module, "trace_token_ids"):
                module.trace_token_ids.clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            if mode == GATE:
                model.gate_decisions(queries, batch_size=batch)
            elif mode == REASONED:
                model.encode_query(reasoned, think=True, batch_size=batch, show_progress_bar=False)
            elif mode == ORACLE:
                model.encode_query(queries[:riddles], think=True, batch_size=batch, show_progress_bar=False)
                model.encode_query(queries[riddles:], think=False, batch_size=batch, show_progress_bar=False)
            else:
                model.encode_query(queries, think=MODES[mode], batch_size=batch, show_progress_bar=False)
            if repeat:
                times[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
            calls[mode] = len(module.ecr_cache)  # one entry per query the reasoner ran on
    return {mode: (values, calls[mode], cpu[mode]) for mode, values in times.items()}


def force_trace_length(module, tokens: int) -> None:
    """Every trace of ``module``'s reasoner exactly ``tokens`` long (``min_new_tokens`` holds the end token
    back, the cap forces it): the unified model's own generation settings, or the separate reasoner
    backend's (loaded here)."""
    from tte_hf.models.tte.generation_tte import decoding_settings

    if hasattr(module, "generation_settings"):  # the unified module generates itself
        module.generation_settings = {**(module.generation_settings or {}), "min_new_tokens": tokens}
        module.max_new_tokens = tokens
        return
    backend = module.reasoner
    backend.max_new_tokens = tokens
    backend.generation_settings = lambda: decoding_settings(min_new_tokens=tokens)


def check_trace_length(model, queries, tokens: int) -> None:
    """Refuse to time traces that are not ``tokens`` long: a demo folder saved before the unified pass
    honoured ``min_new_tokens`` ships code where the setting is inert (re-run the demo)."""
    module = model[0]
    model.encode_query(queries[:2], think=True, show_progress_bar=False)
    if hasattr(module, "trace_token_ids"):
        lengths = [len(ids) for ids in module.trace_token_ids.values()]
    else:
        lengths = [len(trace.token_ids) for trace in module.ecr_cache.values()]
    if any(length != tokens for length in lengths):
        raise SystemExit(f"--trace-tokens {tokens}: the model wrote traces of {lengths} tokens; its folder's shipped code predates forced lengths, re-run the demo.")  # fmt: skip
    module.ecr_cache.clear()


def ratio(times: dict, mode: str, base: str, column: int = 0) -> str:
    """The median of the rounds' ratios of ``mode`` to ``base``, and their range (``column`` 2: CPU time)."""
    ratios = [a / b for a, b in zip(times[mode][column], times[base][column])]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="A finished `tte-hf demo --output` folder.")
    parser.add_argument("--batch", type=int, default=64, help="encode batch size (the demo evaluates with 64).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (the demo's two threads) or cuda.")
    parser.add_argument("--trace-tokens", type=int, help="Force every trace to this many tokens (e.g. 256).")
    args = parser.parse_args(argv)
    if not (args.demo / "report.json").is_file():
        parser.error(f"{args.demo} holds no finished demo (no report.json); run `tte-hf demo --output {args.demo}`.")

    import torch
    from sentence_transformers import SentenceTransformer

    from tte_hf.demo.pipeline import ADAPTIVE_MODELS
    from tte_hf.demo.runtime import pin_threads

    if args.device == "cpu":
        pin_threads()  # the demo's two threads
    queries, riddles = mixed_queries(args.demo)
    where = f"{torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    print(f"{len(queries)} queries (the demo's held-out riddles + plain queries), batch {args.batch}, "
          f"{where}, median of {args.repeats}, traces {args.trace_tokens or 'as the models write them'} tokens")  # fmt: skip
    print("| model | reasoner calls always / auto / oracle | always (s) | auto (s) | never (s) | oracle (s) | gate pass (s) | auto / always | auto / always, CPU time | oracle / always | gate pass / never | reasoned only / always |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ADAPTIVE_MODELS:
        model = SentenceTransformer(str(args.demo / "models" / name), trust_remote_code=True, device=args.device)
        if args.trace_tokens:
            force_trace_length(model[0], args.trace_tokens)
            check_trace_length(model, queries, args.trace_tokens)
        timing = time_modes(model, queries, riddles, args.batch, args.repeats)
        calls = " / ".join(str(timing[m][1]) for m in ("always", "auto", ORACLE))
        seconds = " | ".join(f"{statistics.median(timing[m][0]):.2f}" for m in (*MODES, ORACLE, GATE))
        ratios = [ratio(timing, m, base) for m, base in (("auto", "always"), (ORACLE, "always"), (GATE, "never"), (REASONED, "always"))]  # fmt: skip
        cpu = ratio(timing, "auto", "always", column=2)
        print(f"| {name} | {calls} | {seconds} | **{ratios[0]}** | {cpu} | {' | '.join(ratios[1:])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

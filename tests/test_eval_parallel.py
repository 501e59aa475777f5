"""Data-parallel `tte-hf eval`: 2 gloo processes on CPU (torchrun) against 1 process, and a killed run
resumed with another number of processes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from eval_toy_data import Recorder, build_tasks, tiny_st_model
from safetensors.torch import load_file

from tte_hf.evaluation import evaluate, load_task, load_task_file
from tte_hf.evaluation.__main__ import main as eval_main

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--batch-size", "2", "--chunk-size", "2", "--device", "cpu", "--no-chart"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(_free_port()), "-m", "tte_hf.evaluation", *args]  # fmt: skip


ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def _kill_tree(run: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers (torchrun starts each worker in a session of its own)."""
    import psutil

    procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=60)
    run.wait(timeout=60)


@pytest.fixture(scope="module")
def setup(tiny_vlm, tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    build_tasks(root)
    model_dir = root / "model"
    tiny_st_model(tiny_vlm).save(str(model_dir))
    args = ["--model", str(model_dir), "--tasks-file", str(root / "tasks.json"), *RUN]
    torch.set_num_threads(1)  # the same kernels as the single-threaded launched processes
    assert eval_main([*args, "--output", str(root / "one")]) == 0
    return root, args


def _shares(stderr: str) -> dict[str, dict[int, tuple[int, int]]]:
    """task -> rank -> (chunks it embedded, chunks missing), from each process's log line."""
    shares: dict[str, dict[int, tuple[int, int]]] = {}
    for task, rank, mine, missing in re.findall(
        r"(\S+): process (\d) of 2 embeds (\d+) of (\d+) missing chunks", stderr
    ):
        shares.setdefault(task, {})[int(rank)] = (int(mine), int(missing))
    return shares


def _chunks(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in (out / "tasks").glob("*/*.safetensors")}


def test_two_processes_give_the_one_process_report(setup):
    root, args = setup
    done = subprocess.run(_torchrun(2, [*args, "--output", str(root / "two")]), env=ENV, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # The processes split the work: per task, their shares add up to all its chunks, half each.
    shares = _shares(done.stderr)
    per_task = {}
    for path in _chunks(root / "one").values():
        per_task[path.parent.name] = per_task.get(path.parent.name, 0) + 1
    assert set(shares) == set(per_task)
    for task, by_rank in shares.items():
        assert set(by_rank) == {0, 1} and {m for _, m in by_rank.values()} == {per_task[task]}, (task, by_rank)
        assert sorted(n for n, _ in by_rank.values()) == [per_task[task] // 2, (per_task[task] + 1) // 2], task
    one = json.loads((root / "one" / "report.json").read_text())
    two = json.loads((root / "two" / "report.json").read_text())
    assert {t["modality"] for t in one["tasks"].values()} == {"image", "video", "visdoc"}
    assert set(two["tasks"]) == set(one["tasks"]) and len(one["tasks"]) == 6
    for name, task in one["tasks"].items():
        assert two["tasks"][name]["metrics"] == pytest.approx(task["metrics"], abs=1e-12), name
    assert two["overall"] == pytest.approx(one["overall"], abs=1e-12)
    reference, parallel = _chunks(root / "one"), _chunks(root / "two")
    assert set(parallel) == set(reference) and len(reference) > 12
    for key, path in reference.items():
        torch.testing.assert_close(load_file(parallel[key])["embeddings"], load_file(path)["embeddings"], atol=1e-5, rtol=0)  # fmt: skip


def test_killed_two_process_run_resumes_in_one_process_with_only_missing_chunks(setup):
    root, args = setup
    out = root / "killed"
    run = subprocess.Popen(_torchrun(2, [*args, "--output", str(out)]), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while len(_chunks(out)) < 4 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        _kill_tree(run)
    survivors = _chunks(out)
    total = _chunks(root / "one")
    assert 4 <= len(survivors) < len(total), "the run must be killed midway"
    stamps = {key: path.stat().st_mtime_ns for key, path in survivors.items()}
    kept_items = sum(load_file(path)["embeddings"].shape[0] for path in survivors.values())

    from sentence_transformers import SentenceTransformer

    model = Recorder(SentenceTransformer(args[1], device="cpu"))
    tasks = load_task_file(root / "tasks.json")
    report = evaluate(model, tasks, out, batch_size=2, chunk_size=2, chart=False, show_progress_bar=False, model_id=args[1])  # fmt: skip
    all_items = sum(load_file(path)["embeddings"].shape[0] for path in total.values())
    assert len(model.inputs) == all_items - kept_items  # only the missing chunks were embedded
    assert all(path.stat().st_mtime_ns == stamps[key] for key, path in survivors.items())
    one = json.loads((root / "one" / "report.json").read_text())
    for name, task in one["tasks"].items():
        assert report["tasks"][name]["metrics"] == pytest.approx(task["metrics"], abs=1e-12), name


def test_one_process_run_resumes_with_two_processes(setup):
    root, args = setup
    out = root / "grown"
    tasks = load_task_file(root / "tasks.json")
    from sentence_transformers import SentenceTransformer

    crashing = Recorder(SentenceTransformer(args[1], device="cpu"), fail_on_call=9)
    with pytest.raises(KeyboardInterrupt):
        evaluate(crashing, tasks, out, batch_size=2, chunk_size=2, chart=False, show_progress_bar=False, model_id=args[1])  # fmt: skip
    survivors = {key: path.stat().st_mtime_ns for key, path in _chunks(out).items()}
    assert 0 < len(survivors) < len(_chunks(root / "one"))
    done = subprocess.run(_torchrun(2, [*args, "--output", str(out)]), env=ENV, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shares = _shares(done.stderr)
    embedded = sum(n for by_rank in shares.values() for n, _ in by_rank.values())
    assert embedded == len(_chunks(root / "one")) - len(survivors)  # only the missing chunks, split
    assert all((out / key).stat().st_mtime_ns == stamp for key, stamp in survivors.items())
    assert set(_chunks(out)) == set(_chunks(root / "one"))
    one = json.loads((root / "one" / "report.json").read_text())
    grown = json.loads((out / "report.json").read_text())
    for name, task in one["tasks"].items():
        assert grown["tasks"][name]["metrics"] == pytest.approx(task["metrics"], abs=1e-12), name


# Counts, per process, the prompts the in-process reasoner generates for (RANK is set by torchrun). The
# model's own code is loaded from its folder (trust_remote_code), so transformers' generate is wrapped.
_COUNT_REASONING = """
import os
if "RANK" in os.environ:
    from transformers.generation.utils import GenerationMixin

    _generate = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        with open(os.path.join({out!r}, os.environ["TTE_TEST_RUN"] + ".rank" + os.environ["RANK"]), "a") as log:
            log.write(f"{{ids.shape[0]}}\\n")
        return _generate(self, *args, **kwargs)

    GenerationMixin.generate = generate
"""


def test_in_process_reasoning_is_split_like_the_embedding(setup, tiny_vlm, tmp_path):
    """A TTE model that reasons in process: under 2 processes each reasons over its own share of the
    queries (together exactly the 1-process run's), and the report is the 1-process one."""
    from tte_hf.sentence_transformers import build_sentence_transformer

    root, _ = setup
    model_dir = tmp_path / "tte"
    build_sentence_transformer(tiny_vlm, reasoner=tiny_vlm, max_new_tokens=3).save(str(model_dir))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_COUNT_REASONING.format(out=str(tmp_path)))
    args = ["--model", str(model_dir), "--trust-remote-code", "--tasks-file", str(root / "tasks.json")]
    args += ["--tasks", "toy-cls", "toy-t2i", *RUN]
    env = ENV | {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    reports = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        run_env = env | {"TTE_TEST_RUN": f"n{nproc}"}
        done = subprocess.run(_torchrun(nproc, [*args, "--output", str(out)]), env=run_env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        reports[nproc] = json.loads((out / "report.json").read_text())

    def asked(name: str) -> int:
        path = tmp_path / name
        return sum(int(line) for line in path.read_text().split()) if path.exists() else 0

    tasks = {task.name: task for task in load_task_file(root / "tasks.json")}
    queries = sum(len(load_task(tasks[name]).queries) for name in ("toy-cls", "toy-t2i"))
    single = asked("n1.rank0")
    shares = [asked("n2.rank0"), asked("n2.rank1")]
    assert single == queries and sum(shares) == single, (queries, single, shares)  # queries only, each once
    assert min(shares) > 0 and abs(shares[0] - shares[1]) <= 2, shares  # chunks of 2 queries, split by chunk
    assert set(reports[2]["tasks"]) == set(reports[1]["tasks"]) == {"toy-cls", "toy-t2i"}
    for name, task in reports[1]["tasks"].items():
        assert reports[2]["tasks"][name]["metrics"] == pytest.approx(task["metrics"], abs=1e-12), name

"""Every `tte-hf` command line in README.md's ```bash blocks runs, in README order, through the `tte-hf`
entry point in a subprocess, on tiny local stand-ins: README is the spec of the command line.

Covering a new README line is one entry in `CASES`: a regex for the line, optional text substitutions
(real data paths -> the toy mirror, real recipes -> their ``tiny.yaml``), extra arguments, a check on what
it wrote, or a named `skip` reason for a GPU-only engine. A README `tte-hf` line that no entry matches
fails the test, and so does an entry that matches no README line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hub_helpers import populate_hf_cache
from test_eval_mirror import mirror  # noqa: F401 - the toy MMEB mirror (ImageNet-1K, MSR-VTT, ...) as a fixture

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ECR_TRACE = "<think> the picture is one colour </think> a colour"
ECR_SHARDS = [f"queries.shard-{k:05d}-of-00002.jsonl" for k in range(2)]


def readme_commands(text: str | None = None) -> list[str]:
    """The `tte-hf ...` commands of README's ```bash blocks, in order: continuation lines joined, comments
    dropped, every ``&&`` segment on its own."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            for segment in line.split("&&"):
                segment = " ".join(segment.split())
                # a command of its own, or one a scheduler runs (`sbatch --wrap 'tte-hf ...'`)
                found = re.match(r"(?:.* --wrap ['\"])?(tte-hf .*?)['\"]?$", segment)
                if found:
                    commands.append(found.group(1))
    return commands


@dataclass
class Case:
    """How one README command runs here. ``subs`` replace text (``{mirror}``, ``{work}`` are filled in);
    bracketed optional arguments are kept (brackets dropped), so every option README shows runs."""

    pattern: str
    subs: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    runner: str = "cli"  # "cli": python -m tte_hf.cli; "push": the same main() with huggingface_hub faked
    skip: str | None = None
    check: Callable[[Path], None] | None = None
    setup: Callable[[Path], None] | None = None  # writes what the command reads besides earlier commands' output


def _check_demo(work: Path) -> None:
    report = json.loads((work / "tte-demo" / "report.json").read_text())
    assert report["settings"]["num_test"] > 0 and set(report["adaptive"]) == {"tte-student", "tte-unified"}


def _check_demo_rl(work: Path) -> None:
    report = json.loads((work / "tte-demo-rl" / "report.json").read_text())
    assert report["settings"]["rl"] and "tte-student-rl" in report["hit_at_1"]


def _check_ecr(work: Path) -> None:
    rows = [json.loads(line) for line in (work / "out" / "ecr" / "tiny.jsonl").read_text().splitlines()]
    inputs = (ROOT / "recipes" / "ecr" / "tiny_data" / "train.jsonl").read_text().splitlines()
    assert len(rows) == len(inputs) and all(row["ecr"] for row in rows)


def _check_eval(work: Path) -> None:
    report = json.loads((work / "results" / "report.json").read_text())
    assert set(report["tasks"]) == {"ImageNet-1K", "MSR-VTT"}


def _check_export(work: Path) -> None:
    repo = work / "hub" / "tte-2b"
    assert json.loads((repo / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_tte.TTEEmbedderModel"
    manifest = json.loads((repo / "tte_export.json").read_text())
    assert manifest["reasoner"] == {"name_or_path": "my-org/tte-reasoner-2b", "revision": "v1"}
    st_config = json.loads((repo / "sentence_bert_config.json").read_text())
    assert (st_config["reasoner_name_or_path"], st_config["reasoner_revision"]) == ("my-org/tte-reasoner-2b", "v1")
    assert "model-index" in (repo / "README.md").read_text()  # from --eval-report


def _check_push(work: Path) -> None:
    calls = json.loads((work / "push_calls.json").read_text())
    assert calls["create_repo"] == [["my-org/tte-2b", True]]
    folder = work / "hub" / "tte-2b"
    assert sorted(calls["files"]) == sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _check_vllm(work: Path) -> None:
    config = json.loads((work / "hub" / "tte-2b-vllm" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"] and "auto_map" not in config


def _gate_data(work: Path) -> None:
    from tte_hf.training.synthetic import write_synthetic_retrieval

    write_synthetic_retrieval(work / "out" / "tiny-data", num_items=12)


def _check_gate(work: Path) -> None:
    config = json.loads((work / "out" / "tiny-tte-gated" / "gate_config.json").read_text())
    assert config["info"]["queries"] == 12
    st_config = json.loads((work / "out" / "tiny-tte-gated" / "sentence_bert_config.json").read_text())
    assert st_config["query_reasoning"] == "auto"


CASES = [
    # The full demo takes ~8 min on 2 cores; --quick runs every stage on fewer items.
    Case(r"tte-hf demo --output tte-demo$", extra=["--quick"], check=_check_demo),
    Case(r"tte-hf demo --rl --output tte-demo-rl$", extra=["--quick"], check=_check_demo_rl),
    Case(r"tte-hf make-tiny tiny-vlm$", check=lambda work: (work / "tiny-vlm" / "config.json").is_file()),
    Case(r"tte-hf generate-ecr --config recipes/ecr/tiny\.yaml$", check=_check_ecr),
    Case(
        r"tte-hf generate-ecr --config recipes/ecr/teacher_qwen25vl_72b\.yaml",
        skip="needs vLLM + GPUs (a 72B teacher at TP=8)",
    ),
    Case(
        r"tte-hf eval --model org/tte-2b --trust-remote-code --benchmark mmeb-v2 --output results/ --image-root ",
        subs={"/data/MMEB-V2": "{mirror}/media", "/data/hf-mirror": "{mirror}/data"},
        check=_check_eval,
    ),
    # The traces of a SLURM array of `generate-ecr` shards (the fixture writes two); the shell would expand
    # the glob, so the test does; the toy mirror stands in for the data roots README leaves implicit.
    Case(
        r"tte-hf eval --model org/tte-2b --trust-remote-code --benchmark mmeb-v2 --output results/ --ecr ecr/queries",
        subs={
            "--output results/": "--output results/ --image-root {mirror}/media --data-root {mirror}/data "
            "--tasks ImageNet-1K MSR-VTT",
            "ecr/queries.shard-*.jsonl": " ".join(f"ecr/{name}" for name in ECR_SHARDS),
        },
        check=_check_eval,
    ),
    Case(r"tte-hf serve org/tte-2b --trust-remote-code --host 0\.0\.0\.0 --port 8000$", runner="serve"),
    Case(r"tte-hf serve org/tte-2b .*--device cuda", skip="needs a CUDA GPU and a vLLM reasoner server"),
    Case(r"tte-hf export \./out/tte-2b \./hub/tte-2b --reasoner ", check=_check_export),
    Case(r"tte-hf push \./hub/tte-2b my-org/tte-2b", runner="push", check=_check_push),
    Case(r"tte-hf export \./out/tte-2b \./hub/tte-2b-vllm --vllm$", check=_check_vllm),
    # the real recipe's model and data -> the tiny recipe on the exported tiny repo and synthetic shapes
    Case(
        r"tte-hf train-gate --config recipes/gate/qwen2vl_2b\.yaml$",
        subs={"qwen2vl_2b.yaml": "tiny.yaml"},
        extra=["--model_name_or_path", "hub/tte-2b"],
        setup=_gate_data,
        check=_check_gate,
    ),
]

# `tte-hf push` runs the real entry point, main(), in a subprocess whose huggingface_hub API stops at the
# network boundary and records what it would send (HF_ENDPOINT points at a closed port, so anything not
# faked fails instead of reaching the Hub). A fake HTTP Hub would have to mimic its commit protocol.
_PUSH = """
import json, os, sys
from huggingface_hub import CommitInfo, HfApi, RepoUrl, hf_api
calls = {"create_repo": [], "files": []}
hf_api.is_xet_available = lambda: False
def create_repo(self, repo_id, **kw):
    calls["create_repo"].append([repo_id, kw.get("private")])
    return RepoUrl(f"https://huggingface.co/{repo_id}")
def create_commit(self, repo_id, operations, **kw):
    calls["files"] += [op.path_in_repo for op in operations]
    return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}", commit_message="",
                      commit_description="", oid="0" * 40)
HfApi.create_repo, HfApi.create_commit = create_repo, create_commit
HfApi.create_branch = lambda self, repo_id, **kw: None
HfApi._validate_yaml = lambda self, content, **kw: None
from tte_hf.cli import main
code = main(sys.argv[1:])
json.dump(calls, open("push_calls.json", "w"))
sys.exit(code)
"""


def _case_for(command: str) -> Case:
    matches = [case for case in CASES if re.match(case.pattern, command)]
    if len(matches) != 1:
        pytest.fail(
            f"README command {command!r} is matched by {len(matches)} CASES entries; add exactly one entry "
            "in tests/test_readme_commands.py saying how it runs on tiny models (or why it cannot)."
        )
    return matches[0]


def test_every_readme_command_has_exactly_one_case():
    commands = readme_commands()
    assert commands, "README.md shows no tte-hf commands"
    for command in commands:
        _case_for(command)
    unused = [case.pattern for case in CASES if not any(re.match(case.pattern, c) for c in commands)]
    assert not unused, f"CASES entries match no README line (remove them): {unused}"


def test_an_uncovered_readme_line_fails():
    text = "```bash\ntte-hf serve org/tte-2b --port 8000   # new\n```\n"
    (command,) = readme_commands(text)
    wrapped = "```bash\nsbatch --array=0-3 --wrap 'tte-hf eval --model m \\\n    --output o'\n```\n"
    assert readme_commands(wrapped) == ["tte-hf eval --model m --output o"]
    with pytest.raises(pytest.fail.Exception, match="add exactly one entry"):
        _case_for(command)


@pytest.fixture
def workdir(tmp_path, tiny_vlm, mirror):  # noqa: F811
    """A folder laid out the way README's commands expect, with README's repo ids in an offline HF cache."""
    from transformers import AutoProcessor

    from tte_hf import TTEEmbedderModel
    from tte_hf.evaluation import get_benchmark, load_task
    from tte_hf.evaluation.tasks import select_tasks, with_data_root
    from tte_hf.hub import export_model

    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")  # read only: every output goes under work/
    checkpoint = work / "out" / "tte-2b"  # a trained embedder stand-in, processor included
    TTEEmbedderModel.from_backbone(tiny_vlm).save_pretrained(checkpoint)
    AutoProcessor.from_pretrained(tiny_vlm).save_pretrained(checkpoint)
    populate_hf_cache(tiny_vlm, "my-org/tte-reasoner-2b", cache, revision="v1")
    export_model(checkpoint, tmp_path / "org-tte-2b", sentence_transformers=True)
    populate_hf_cache(tmp_path / "org-tte-2b", "org/tte-2b", cache)
    # ecr.jsonl: a trace for every query of README's --tasks, as `tte-hf generate-ecr` writes them.
    tasks = select_tasks(get_benchmark("mmeb-v2"), ["ImageNet-1K", "MSR-VTT"])
    keys = [q.key for task in tasks for q in load_task(with_data_root(task, mirror / "data", mirror / "media")).queries]
    (work / "ecr.jsonl").write_text("".join(json.dumps({"id": k, "ecr": ECR_TRACE}) + "\n" for k in keys))
    (work / "ecr").mkdir()
    for shard, name in enumerate(ECR_SHARDS):  # as a 2-task SLURM array of generate-ecr writes them
        rows = [json.dumps({"id": k, "ecr": ECR_TRACE}) + "\n" for k in keys[shard :: len(ECR_SHARDS)]]
        (work / "ecr" / name).write_text("".join(rows))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return work, env


def _argv(command: str, case: Case, mirror_root: Path, work: Path) -> list[str]:
    for old, new in case.subs.items():
        command = command.replace(old, new.format(mirror=mirror_root, work=work))
    args = shlex.split(command.replace("[", " ").replace("]", " "))[1:] + case.extra
    if case.runner == "push":
        return [sys.executable, "-c", _PUSH, *args]
    return [sys.executable, "-m", "tte_hf.cli", *args]


def _serve_and_embed(argv: list[str], work: Path, env: dict[str, str]) -> None:
    """Start README's `tte-hf serve` line (on 127.0.0.1 and a free port instead of 0.0.0.0:8000), embed one
    query and one document through the OpenAI route, then stop it with SIGTERM as a supervisor would."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [a if a != "0.0.0.0" else "127.0.0.1" for a in argv]
    argv[argv.index("--port") + 1] = str(port)
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (work / "serve.log").read_text()[-5000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "tte-hf serve did not come up in 300 s"
                time.sleep(0.5)
        body = {"model": "tte-2b", "input": ["a red bus", "a blue car"], "think": False, "input_type": "document"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/embeddings",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            data = json.loads(response.read())["data"]
        assert [row["index"] for row in data] == [0, 1]
        norms = [sum(x * x for x in row["embedding"]) ** 0.5 for row in data]
        assert norms == pytest.approx([1.0, 1.0], abs=1e-4) and data[0]["embedding"] != data[1]["embedding"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    output = (work / "serve.log").read_text()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output[-5000:]


def test_readme_commands_run(workdir, mirror):  # noqa: F811
    work, env = workdir
    ran = []
    for command in readme_commands():
        case = _case_for(command)
        if case.skip:
            continue
        if case.setup:
            case.setup(work)
        if case.runner == "serve":
            _serve_and_embed(_argv(command, case, mirror, work), work, env)
            ran.append(command)
            continue
        env_now = env | ({"HF_HUB_OFFLINE": "0"} if case.runner == "push" else {})
        proc = subprocess.run(
            _argv(command, case, mirror, work), cwd=work, env=env_now, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"README command failed: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        if case.check:
            assert case.check(work) is not False, command
        ran.append(command)
    assert len(ran) == len([c for c in readme_commands() if not _case_for(c).skip])

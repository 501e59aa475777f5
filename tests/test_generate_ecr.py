import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from chat_server import ChatServer
from PIL import Image

from tte_hf.models.tte.ecr import PROMPT_VERSION, parse_ecr, task_prompt
from tte_hf.models.tte.reasoner_openai import ReasonerRequestError
from tte_hf.reasoning import ReasoningRequest, load_reasoner
from tte_hf.reasoning.generate import GenerateECRConfig, generate_ecr, read_items, repair_jsonl
from tte_hf.reasoning.sources import BadInputError

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def _write_mmeb(root: Path, n: int) -> Path:
    """An MMEB-train style JSONL of ``n`` rows (every third one text-only) with real PNG files."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = ""
        if i % 3:
            image = f"images/{i}.png"
            Image.new("RGB", (28 + 4 * (i % 5), 28), COLORS[i % len(COLORS)]).save(root / image)
        qry = f"<|image_1|>\nRepresent the given image with the following question: what is {i} here?"
        rows.append(
            {
                "qry": qry if image else f"Find a caption for item {i}",
                "qry_image_path": image,
                "pos_text": f"answer {i}",
                "pos_image_path": "",
                "neg_text": "",
                "neg_image_path": "",
            }
        )
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, tiny_vlm, n=12, **overrides):
    data = _write_mmeb(tmp_path / "data", n)
    config = {
        "input": str(data),
        "image_root": str(tmp_path / "data"),
        "dataset_name": "OK-VQA",
        "output": str(tmp_path / "out" / "ecr.jsonl"),
        "chunk_size": 4,
        "progress": False,
        "reasoner": {"backend": "transformers", "model": tiny_vlm, "max_new_tokens": 16, "batch_size": 4},
    }
    config.update(overrides)
    return config


def _records(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_records_are_the_backend_traces_parsed_with_stable_ids(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=6)
    result = generate_ecr(config)
    records = _records(result.output)
    assert (result.written, result.already_done, result.total) == (6, 0, 6)
    # independent reference: the same items through the backend directly
    rows = _records(config["input"])
    reasoner = load_reasoner(config["reasoner"])
    requests = []
    for row in rows:
        text = row["qry"].replace("<|image_1|>", "").strip()
        image = row["qry_image_path"]
        images = (Image.open(Path(config["image_root"]) / image).convert("RGB"),) if image else ()
        requests.append(ReasoningRequest(text=text, images=images, task="vqa"))
    expected = reasoner.generate(requests)
    assert [r["raw"] for r in records] == expected
    for record, raw in zip(records, expected):
        parsed = parse_ecr(raw, max_chars=4000)
        assert record["ecr"] == parsed.for_embedder("full") and record["thought"] == parsed.thought
        assert record["final"] == parsed.final and record["task"] == "vqa" and record["side"] == "query"
        assert record["prompt_version"] == PROMPT_VERSION
    assert [r["source"] for r in records] == [f"{config['input']}:{i}" for i in range(1, 7)]
    assert len({r["id"] for r in records}) == 6
    # ids are content hashes: the same rows elsewhere, in another order, get the same ids
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    items = read_items(GenerateECRConfig.from_any({**config, "input": str(moved)}))
    assert [i.id for i in items] == [r["id"] for r in reversed(records)]

    manifest = json.loads(result.manifest.read_text())
    assert manifest["complete"] and manifest["counts"] == {"items": 6, "records": 6, "skipped": 0}
    assert manifest["reasoner"] == reasoner.describe() and manifest["prompt_version"] == PROMPT_VERSION
    assert {"torch", "transformers", "python"} <= set(manifest["versions"])


def test_targets_and_package_format_and_datasets_input(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=3, sides=["query", "target"])
    records = _records(generate_ecr(config).output)
    assert [r["side"] for r in records] == ["query", "target"] * 3
    assert records[1]["source"].endswith(":1 (target)")

    own = tmp_path / "own.jsonl"
    frame = str(tmp_path / "data" / "images" / "1.png")
    rows = [
        {"id": "doc-1", "image": frame, "task": "visdoc"},
        {"id": "vid-1", "video": [frame, frame], "text": "what happens?", "task": "video_qa"},
        {"id": "txt-1", "text": "a dog", "instruction": "Find an image", "task": "retrieval"},
    ]
    own.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = generate_ecr(
        {**_config(tmp_path, tiny_vlm, n=1), "input": str(own), "output": str(tmp_path / "own_out.jsonl")}
    )
    assert [(r["id"], r["task"]) for r in _records(out.output)] == [
        ("doc-1", "visdoc"),
        ("vid-1", "video_qa"),
        ("txt-1", "retrieval"),
    ]

    import datasets

    images = [Image.new("RGB", (32, 32), c) for c in COLORS[:3]]
    folder = tmp_path / "hf_dataset"
    datasets.Dataset.from_dict(
        {"id": ["a", "b", "c"], "text": ["one", "two", "three"], "image": images},
        features=datasets.Features(
            {"id": datasets.Value("string"), "text": datasets.Value("string"), "image": datasets.Image()}
        ),
    ).save_to_disk(str(folder))
    config = {**_config(tmp_path, tiny_vlm, n=1), "input": str(folder), "task": "classification"}
    config.update(output=str(tmp_path / "ds_out.jsonl"), dataset_name=None)
    records = _records(generate_ecr(config).output)
    reasoner = load_reasoner(config["reasoner"])
    expected = reasoner.generate(
        [ReasoningRequest(text=t, images=(i,), task="classification") for t, i in zip(["one", "two", "three"], images)]
    )
    assert [r["id"] for r in records] == ["a", "b", "c"] and [r["raw"] for r in records] == expected


def test_shards_partition_the_items(tmp_path, tiny_vlm):
    base = _config(tmp_path, tiny_vlm, n=10)
    whole = {r["id"]: r for r in _records(generate_ecr(base).output)}
    parts = []
    for shard in range(3):
        result = generate_ecr({**base, "num_shards": 3, "shard_id": shard})
        assert result.output.name == f"ecr.shard-{shard:05d}-of-00003.jsonl"
        parts.append(_records(result.output))
    ids = [r["id"] for part in parts for r in part]
    assert sorted(ids) == sorted(whole) and all(part for part in parts)
    assert all(r == whole[r["id"]] for part in parts for r in part)


def test_cut_off_last_line_is_repaired_on_resume(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=8)
    reference = Path(generate_ecr(config).output).read_text()
    output = Path(config["output"])
    lines = reference.splitlines(keepends=True)
    output.write_text("".join(lines[:5]) + lines[5][:37])  # a crash in the middle of line 6
    assert repair_jsonl(output) == {json.loads(line)["id"] for line in lines[:5]}
    assert output.read_text() == "".join(lines[:5])
    output.write_text("".join(lines[:5]) + lines[5][:37])
    result = generate_ecr(config)
    assert (result.already_done, result.written) == (5, 3)
    assert output.read_text() == reference


def test_corrupt_line_in_the_middle_is_reported_not_dropped(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=4)
    output = Path(generate_ecr(config).output)
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + "{garbage\n" + "".join(lines[1:]))
    with pytest.raises(ValueError, match=r"ecr.jsonl:2: not valid JSON.*not an interrupted write"):
        generate_ecr(config)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=4, max_items=2)
    generate_ecr(config)
    config["reasoner"] = {**config["reasoner"], "max_new_tokens": 8}
    config.pop("max_items")
    with pytest.raises(ValueError, match="started with another reasoner or settings"):
        generate_ecr(config)


def _bad_rows(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (30, 30), "red").save(root / "images" / "ok.png")
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows = [
        json.dumps({"qry": "good one", "qry_image_path": "images/ok.png", "pos_text": "x"}),
        json.dumps({"qry": "missing", "qry_image_path": "images/nope.png", "pos_text": "x"}),
        json.dumps({"qry": "corrupt", "qry_image_path": "images/corrupt.png", "pos_text": "x"}),
        json.dumps({"qry": "  <|image_1|> ", "qry_image_path": "", "pos_text": "x"}),
        '{"qry": "cut off',
        json.dumps({"qry": "good two", "qry_image_path": "", "pos_text": "x"}),
    ]
    path = root / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


BAD_CASES = [
    ("images/nope.png", r"bad.jsonl:2, item 'q-[0-9a-f]+': image file not found: .*nope.png"),
    ("corrupt.png", r"bad.jsonl:3, item 'q-[0-9a-f]+': cannot read image .*corrupt.png"),
    ("empty", r"bad.jsonl:4, item 'q-[0-9a-f]+': empty input"),
    ("malformed", r"bad.jsonl:5, item 'line-5': malformed JSON line"),
]


@pytest.mark.parametrize("case,message", BAD_CASES)
def test_bad_input_fails_with_line_and_id(tmp_path, tiny_vlm, case, message):
    path = _bad_rows(tmp_path / "bad")
    lines = path.read_text().splitlines()
    keep = {"images/nope.png": 1, "corrupt.png": 2, "empty": 3, "malformed": 4}[case]
    path.write_text("\n".join([lines[0], lines[keep], lines[5]]) + "\n")
    message = message.replace(f":{keep + 1},", ":2,").replace(f"'line-{keep + 1}'", "'line-2'")
    config = _config(tmp_path, tiny_vlm, n=1, input=str(path), image_root=str(tmp_path / "bad"), chunk_size=1)
    with pytest.raises(BadInputError, match=message):
        generate_ecr(config)
    output = Path(config["output"])
    written = _records(output) if output.exists() else []
    # read-time problems stop the run before anything is generated; a corrupt image stops it at its chunk
    assert [r["source"].rsplit(":", 1)[1] for r in written] == (["1"] if case == "corrupt.png" else [])


def test_unknown_task_in_a_row_names_the_line(tmp_path, tiny_vlm):
    own = tmp_path / "own.jsonl"
    own.write_text(
        json.dumps({"id": "a", "text": "x", "task": "vqa"}) + "\n" + json.dumps({"text": "y", "task": "ocr"})
    )
    with pytest.raises(BadInputError, match=r"own.jsonl:2.*unknown task 'ocr'; use one of generic"):
        generate_ecr({**_config(tmp_path, tiny_vlm, n=1), "input": str(own)})
    with pytest.raises(ValueError, match="not an MMEB-train subset"):
        generate_ecr(_config(tmp_path, tiny_vlm, n=1, dataset_name="NotASubset"))


def test_skip_bad_logs_every_bad_row_and_writes_the_rest(tmp_path, tiny_vlm):
    path = _bad_rows(tmp_path / "bad")
    config = _config(tmp_path, tiny_vlm, n=1, input=str(path), image_root=str(tmp_path / "bad"), skip_bad=True)
    result = generate_ecr(config)
    assert (result.written, result.skipped) == (2, 4)
    assert [r["source"].rsplit(":", 1)[1] for r in _records(result.output)] == ["1", "6"]
    skipped = _records(str(result.output) + ".skipped.jsonl")
    assert [s["source"].rsplit(":", 1)[1] for s in skipped] == ["2", "3", "4", "5"]
    assert "not found" in skipped[0]["error"] and "cannot read image" in skipped[1]["error"]
    again = generate_ecr(config)  # resuming neither duplicates records nor skip entries
    assert (again.written, again.skipped, again.already_done) == (0, 0, 6)
    assert len(_records(str(result.output) + ".skipped.jsonl")) == 4


def test_failing_endpoint_names_the_item_and_writes_nothing_half(tmp_path, tiny_vlm):
    own = tmp_path / "own.jsonl"
    rows = [{"id": f"row-{i}", "text": f"question {i}", "task": "vqa"} for i in range(6)]
    rows[4]["text"] = "broken question"
    own.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer() as server:
        server.faults = {"broken": "always500"}
        reasoner = {"backend": "openai", "model": "m", "base_url": server.base_url, "max_retries": 1, "backoff": 0.01}
        config = {"input": str(own), "output": str(tmp_path / "o.jsonl"), "chunk_size": 2, "progress": False}
        with pytest.raises(ReasonerRequestError, match="item 'row-4'.*2 attempts"):
            generate_ecr({**config, "reasoner": reasoner})
        records = _records(tmp_path / "o.jsonl")
        assert [r["id"] for r in records] == ["row-0", "row-1", "row-2", "row-3"]  # whole chunks only
        assert records[0]["raw"] == "<think> question 0 </think> ok" and records[0]["final"] == "ok"
        assert server.received[0]["messages"][0]["content"] == task_prompt("vqa")
        server.faults = {}
        result = generate_ecr({**config, "reasoner": reasoner})
        assert (result.already_done, result.written) == (4, 2)
        assert [r["id"] for r in _records(tmp_path / "o.jsonl")] == [f"row-{i}" for i in range(6)]


def _cli_child(argv):
    import torch

    torch.set_num_threads(1)
    from tte_hf.cli import main

    sys.exit(main(argv))


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_and_resume_ends_identical_to_an_uninterrupted_run(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=40, chunk_size=4)
    config["reasoner"]["max_new_tokens"] = 32
    reference = _records(generate_ecr({**config, "output": str(tmp_path / "reference.jsonl")}).output)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    output = Path(config["output"])
    argv = ["generate-ecr", "--config", str(recipe), "--no-progress"]
    rng = random.Random(1234)
    kills, mid_run_kills = 0, 0
    # Processes forked from this one (imports already done) are SIGKILLed at random points of the run.
    ctx = multiprocessing.get_context("fork")
    for _ in range(8):
        before = _line_count(output)
        target = before + rng.choice([0, 1, 4, 8])
        child = ctx.Process(target=_cli_child, args=(argv,))
        child.start()
        while child.is_alive() and _line_count(output) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        if child.exitcode == -signal.SIGKILL:
            kills += 1
            mid_run_kills += before < _line_count(output) < 40  # killed after writing some chunks
        if kills >= 3 and mid_run_kills >= 2:
            break
    assert kills >= 3 and mid_run_kills >= 2
    assert _line_count(output) < 40  # the runs really were cut short

    # the last run is the real command line, in a fresh interpreter
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "tte_hf.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    records = _records(output)
    assert len(records) == len({r["id"] for r in records}) == 40  # every item exactly once
    assert {r["id"]: r for r in records} == {r["id"]: r for r in reference}
    assert json.loads(Path(str(output) + ".manifest.json").read_text())["complete"] is True


def test_cli_flags_override_the_recipe(tmp_path):
    import argparse

    from tte_hf.cli import parse_args
    from tte_hf.commands.generate_ecr import build_config

    recipe = Path(__file__).parents[1] / "recipes" / "ecr" / "teacher_qwen25vl_72b.yaml"
    args = parse_args(
        ["generate-ecr", "--config", str(recipe), "--num-shards", "8", "--shard_id", "3", "--skip-bad"]
        + ["--model", "local/72b", "--reasoner.max_new_tokens", "64", "--set", "sides=[query, target]"]
    )
    assert isinstance(args, argparse.Namespace)
    config = GenerateECRConfig.from_any(build_config(args))
    assert (config.num_shards, config.shard_id, config.skip_bad) == (8, 3, True)
    assert config.reasoner["model"] == "local/72b" and config.reasoner["max_new_tokens"] == 64
    assert config.reasoner["tensor_parallel_size"] == 8 and config.reasoner["backend"] == "vllm"
    assert config.sides == ["query", "target"] and config.dataset_name == "OK-VQA"
    assert config.output_path.name == "OK-VQA.shard-00003-of-00008.jsonl"
    for name in ("tiny.yaml", "student_qwen2vl_2b.yaml", "teacher_openai_server.yaml"):
        GenerateECRConfig.from_any(recipe.with_name(name))  # every recipe holds only known keys
    with pytest.raises(ValueError, match=r"Unknown ECR generation config keys \['batch'\]"):
        GenerateECRConfig.from_any({"output": "x", "batch": 3})


def test_precomputed_reasoner_serves_a_generated_file(tmp_path, tiny_vlm):
    config = _config(tmp_path, tiny_vlm, n=3)
    records = _records(generate_ecr(config).output)
    reasoner = load_reasoner(backend="precomputed", path=config["output"])
    requests = [ReasoningRequest(text="ignored", item_id=r["id"]) for r in reversed(records)]
    assert reasoner.generate(requests) == [r["raw"] for r in reversed(records)]
    with pytest.raises(KeyError, match="Request 1 \\(item_id='nope'\\) has no trace"):
        reasoner.generate([requests[0], ReasoningRequest(text="x", item_id="nope")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(records[0]) + "\n" + json.dumps({"ecr": "no id"}) + "\n")
    with pytest.raises(ValueError, match="broken.jsonl:2: ECR row has no `id`"):
        load_reasoner(backend="precomputed", path=str(broken))


def test_cli_reports_bad_input_without_a_traceback(tmp_path, tiny_vlm, capsys):
    from tte_hf.cli import main

    path = _bad_rows(tmp_path / "bad")
    config = _config(tmp_path, tiny_vlm, n=1, input=str(path), image_root=str(tmp_path / "bad"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(config))
    assert main(["generate-ecr", "--config", str(recipe)]) == 2
    assert "bad.jsonl:2, item 'q-" in capsys.readouterr().err


# --- issue 13: skipped rows retried on request, duplicate explicit ids refused --------------------


def test_skipped_rows_are_retried_when_asked_and_the_manifest_says_so(tmp_path, tiny_vlm):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rows = [
        {"id": "ok", "text": "a red square", "task": "vqa"},
        {"id": "late", "text": "what is shown", "image": "images/late.png", "task": "vqa"},
    ]
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tmp_path, tiny_vlm, n=1, input=str(path), image_root=str(root), skip_bad=True)
    first = generate_ecr(config)
    assert (first.written, first.skipped) == (1, 1)
    skip_list = Path(str(first.output) + ".skipped.jsonl")
    assert [s["id"] for s in _records(skip_list)] == ["late"]

    Image.new("RGB", (32, 32), "blue").save(root / "images" / "late.png")  # the row is fixed
    plain = generate_ecr(config)  # a plain resume keeps the skip list as done
    assert (plain.written, plain.already_done) == (0, 2)
    retried = generate_ecr({**config, "retry_skipped": True})
    assert (retried.written, retried.skipped, retried.retried) == (1, 0, 1)
    assert [r["id"] for r in _records(first.output)] == ["ok", "late"]
    assert _records(skip_list) == []
    manifest = json.loads(retried.manifest.read_text())
    assert manifest["retried_skipped"] == {"rows": 1, "written": 1, "skipped_again": 0}
    assert manifest["counts"] == {"items": 2, "records": 2, "skipped": 0}

    # a row still bad is skipped again, once, and counted as such
    rows.append({"id": "gone", "text": "x", "image": "images/gone.png", "task": "vqa"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    generate_ecr(config)
    again = generate_ecr({**config, "retry_skipped": True})
    assert (again.written, again.skipped, again.retried) == (0, 1, 1)
    assert [s["id"] for s in _records(skip_list)] == ["gone"]
    assert json.loads(again.manifest.read_text())["retried_skipped"] == {"rows": 1, "written": 0, "skipped_again": 1}


def test_cli_retry_skipped_flag(tmp_path):
    from tte_hf.cli import build_parser
    from tte_hf.commands.generate_ecr import build_config

    args = build_parser().parse_args(["generate-ecr", "--output", "x.jsonl", "--retry-skipped"])
    assert build_config(args)["retry_skipped"] is True
    assert GenerateECRConfig.from_any(build_config(args)).retry_skipped


def test_duplicate_explicit_ids_are_refused_naming_both_lines(tmp_path, tiny_vlm):
    path = tmp_path / "rows.jsonl"
    rows = [
        {"id": "a", "text": "first question", "task": "vqa"},
        {"id": "b", "text": "second question", "task": "vqa"},
        {"id": "a", "text": "another question", "task": "vqa"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tmp_path, tiny_vlm, n=1, input=str(path), skip_bad=True)
    with pytest.raises(BadInputError, match=r"Duplicate item id 'a' at .*rows.jsonl:1 and at .*rows.jsonl:3"):
        generate_ecr(config)
    assert not Path(config["output"]).exists()  # refused before anything is generated
    for shard in range(2):  # every shard refuses, not only the one the id falls in
        with pytest.raises(BadInputError, match="Duplicate item id 'a'"):
            generate_ecr({**config, "num_shards": 2, "shard_id": shard})

    # MMEB rows with ids: query and target of a row share the id, so one side per output
    mmeb = tmp_path / "mmeb.jsonl"
    mmeb.write_text(json.dumps({"id": "r1", "qry": "a question", "qry_image_path": "", "pos_text": "an answer"}) + "\n")
    both = {**config, "input": str(mmeb), "dataset_name": "OK-VQA", "sides": ["query", "target"]}
    with pytest.raises(BadInputError, match=r"'r1' at .*mmeb.jsonl:1 \(query\) and at .*mmeb.jsonl:1 \(target\)"):
        generate_ecr(both)
    # the same content twice without ids is one item, reasoned about once (not an error)
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"text": "same question", "task": "vqa"}) + "\n" for _ in range(2)))
    result = generate_ecr({**config, "input": str(same), "output": str(tmp_path / "same_out.jsonl")})
    assert (result.total, result.written) == (1, 1)

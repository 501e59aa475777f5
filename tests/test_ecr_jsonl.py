"""One ECR JSONL reader with one duplicate policy, the same through every place that reads traces."""

from __future__ import annotations

import json
import re

import pytest

from tte_hf.evaluation.runner import load_ecr_files
from tte_hf.reasoning.generate import repair_jsonl
from tte_hf.reasoning.precomputed import PrecomputedReasoner
from tte_hf.training.data import load_ecr, load_raw_traces


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _row(item_id, ecr, raw=None):
    return {"id": item_id, "ecr": ecr, "raw": raw if raw is not None else f"<think>t</think>{ecr}"}


READERS = {
    "training": lambda paths: load_ecr(paths[0]) if len(paths) == 1 else None,
    "evaluation": load_ecr_files,
    "precomputed": PrecomputedReasoner,
    "raw": lambda paths: load_raw_traces(paths[0]) if len(paths) == 1 else None,
    "resume": lambda paths: repair_jsonl(paths[0]) if len(paths) == 1 else None,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_identical_duplicates_are_kept_once(tmp_path, reader):
    path = _write(tmp_path / "a.jsonl", [_row("1", "cat"), _row("2", "dog"), _row("1", "cat")])
    result = READERS[reader]([path])
    traces = result.traces if isinstance(result, PrecomputedReasoner) else result
    assert sorted(traces) == ["1", "2"]


@pytest.mark.parametrize("reader", sorted(READERS))
def test_conflicting_duplicate_is_an_error_naming_both_lines(tmp_path, reader):
    path = _write(tmp_path / "a.jsonl", [_row("1", "cat"), _row("2", "dog"), _row("1", "a cat")])
    with pytest.raises(ValueError, match=re.escape(f"{path}:1") + ".*" + re.escape(f"{path}:3")):
        READERS[reader]([path])


@pytest.mark.parametrize("reader", ["evaluation", "precomputed"])
def test_conflict_across_files_names_both_files(tmp_path, reader):
    first = _write(tmp_path / "a.jsonl", [_row("1", "cat")])
    second = _write(tmp_path / "b.jsonl", [_row("0", "x"), _row("1", "dog")])
    with pytest.raises(ValueError, match=re.escape(f"{first}:1") + ".*" + re.escape(f"{second}:2")):
        READERS[reader]([first, second])
    same = _write(tmp_path / "c.jsonl", [_row("1", "cat")])  # a shard listed twice, or a file concatenated
    assert READERS[reader]([first, same]) is not None


def test_raw_differing_is_a_conflict_even_with_equal_ecr(tmp_path):
    path = _write(tmp_path / "a.jsonl", [_row("1", "cat", raw="<think>a</think>cat"), _row("1", "cat", raw="cat")])
    with pytest.raises(ValueError, match="different traces"):
        load_ecr_files([path])


@pytest.mark.parametrize(
    ("row", "reader", "message"),
    [
        ({"ecr": "x"}, load_ecr, "no `id`"),
        ({"id": "1", "raw": "x"}, load_ecr, "no `ecr`"),
        ({"id": "1", "ecr": 3}, load_ecr_files, "`ecr` must be a string"),
        ({"id": "1", "ecr": "x"}, load_raw_traces, "no `raw` string"),
        ({"id": "1"}, lambda p: PrecomputedReasoner(p), "neither `raw` nor `ecr`"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, reader, message):
    path = _write(tmp_path / "a.jsonl", [_row("0", "ok"), row])
    with pytest.raises(ValueError, match=re.escape(f"{path}:2") + ".*" + re.escape(message)):
        reader(path if reader in (load_ecr, load_raw_traces) else [path])

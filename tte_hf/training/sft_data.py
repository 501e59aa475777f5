"""Teacher ECR traces + MMEB-style rows -> TRL vision SFT rows (``images`` + ``messages``).

The user/system turns are exactly the prompt the reasoner sees at inference
(`tte_hf.models.tte.inputs.build_messages` with the task's system prompt); the trace is the assistant turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.tte.ecr import task_prompt
from ..models.tte.inputs import build_messages
from .data import (
    DatasetSpec,
    MissingTraceError,
    _clean_text,
    _image_paths,
    load_ecr,
    read_jsonl,
    report_skipped,
    selected_rows,
    side_id,
)

_SIDES = {"query": ("qry", "qry_image_path"), "target": ("pos_text", "pos_image_path")}


def sft_rows(spec: DatasetSpec, side: str = "query") -> list[dict[str, Any]]:
    """One SFT row per data row: ``{"id", "images": [path, ...], "messages": [system, user, assistant]}``.

    ``side`` picks which input the traces describe (``spec.query_ecr`` or ``spec.target_ecr``). Every data
    row must have a trace (the file may hold more, e.g. one file for several datasets).
    """
    if side not in _SIDES:
        raise ValueError(f"side must be one of {sorted(_SIDES)}, got {side!r}.")
    ecr_path = spec.query_ecr if side == "query" else spec.target_ecr
    if not ecr_path:
        raise ValueError(f"Dataset {spec.name!r} names no {side}_ecr file; SFT needs the teacher's traces.")
    traces = load_ecr(ecr_path)
    rows = selected_rows(spec, read_jsonl(spec.path))  # held-out rows and max_examples as every loader
    text_key, image_key = _SIDES[side]
    image_root = None if spec.image_root is None else Path(spec.image_root)
    system = task_prompt(spec.resolved_task or "generic")
    out, skipped = [], 0
    for index, (line_no, row) in enumerate(rows):
        where = f"{spec.path}:{line_no}"
        key = side_id(row, side, spec, index)
        if key not in traces:
            if spec.skip_missing_traces:
                skipped += 1
                continue
            raise MissingTraceError(
                f"{where}: no ECR trace with id {key!r} in {ecr_path}; the trace file must come from this data."
            )
        trace = traces[key].strip()
        if not trace:
            raise ValueError(f"{ecr_path}: the trace of id {key!r} is empty; regenerate it or drop the row.")
        images = _image_paths(row.get(image_key), image_root, f"{where} field `{image_key}`")
        text = _clean_text(row.get(text_key))
        messages = build_messages(text, num_images=len(images), instruction=spec.instruction, system=system)
        # Arrow needs one content type per column: the system string as a text block renders the same.
        messages = [{**m, "content": _as_blocks(m["content"])} for m in messages]
        messages.append({"role": "assistant", "content": [{"type": "text", "text": trace}]})
        out.append({"id": key, "images": list(images), "messages": messages})
    report_skipped(spec, skipped, len(rows))
    return out


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content

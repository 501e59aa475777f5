"""The demo's teacher reasoner: it writes ECR from the scene's ground truth.

A large teacher sees more than a small model; here the teacher literally reads the scene
description. It is a real `ReasoningBackend`, so `generate_ecr` drives it like any other model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest
from .data import PICTURE_OBJECT


def scene_trace(scene: dict[str, Any]) -> str:
    """The ECR for one scene: perceive the colour, resolve the riddle (a plain query names its object),
    state the answer. About 30 tokens: long enough to carry what the query needs, short enough for the
    demo's CPU budget (long traces are `benchmarks/bench_adaptive.py`'s business). A picture-task
    scene's trace says which colour is the background and which the shape's."""
    if scene.get("object") == PICTURE_OBJECT:
        return (
            f"<think> The background is {scene.get('background') or 'grey'}. "
            f"The shape on it is {scene['colour']}. </think> {scene['answer']}"
        )
    resolved = f"The {scene['riddle']} is a" if scene.get("riddle") else "The query names a"
    return (
        f"<think> The shape in the picture is {scene['colour']}. "
        f"{resolved} {scene['object']}. </think> {scene['answer']}"
    )


class SceneTeacher(ReasoningBackend):
    """Looks each request up by ``item_id`` in ``scenes.jsonl`` and writes its trace."""

    name = "demo-scene-teacher"

    def __init__(self, scenes_path: str | Path):
        with open(scenes_path, encoding="utf-8") as f:
            self.scenes = {row["id"]: row for row in map(json.loads, f)}

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        traces = []
        for request in requests:
            scene_id = (request.item_id or "").rsplit("/", 1)[-1]  # evaluation ids are "<task>/<row id>"
            if scene_id not in self.scenes:
                raise KeyError(f"The demo teacher knows no scene with id {request.item_id!r}.")
            traces.append(scene_trace(self.scenes[scene_id]))
        return traces

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scenes": len(self.scenes)}

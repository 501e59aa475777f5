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


def scene_trace(scene: dict[str, Any]) -> str:
    """The ECR for one scene: perceive the colour, resolve the riddle (a plain query names its object),
    state and check the answer.

    About 80-85 tokens for riddles and plain queries alike. Real ECR traces run to hundreds of tokens,
    and a trace's length is what `think="auto"` saves: with 30-token traces a skipped query's no-trace
    pass cost about a quarter of a reasoned one on the demo's tiny CPU models, so even a perfect gate
    could not take the unified model below ~0.63 of `always`'s time (benchmarks/RESULTS.md). The
    closing check is the same words for every query, so both kinds' traces stay equally long.
    """
    resolved = f"The {scene['riddle']} is a" if scene.get("riddle") else "The query names a"
    colour, obj = scene["colour"], scene["object"]
    return (
        f"<think> I look at the shape in the picture and read the query. The shape in the picture is {colour}. "
        f"{resolved} {obj}. So the answer is the {obj} in {colour}. I have checked the colour of the shape "
        f"and the object, and the answer names both of them. </think> {scene['answer']}"
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

"""A synthetic compositional multimodal retrieval benchmark, generated on the fly.

Each query is a picture of one coloured shape plus a text; its target is the text
"a <colour> <object>". A **riddle** names the object indirectly ("the animal that barks") and asks
for the picture's colour: answering needs a reasoning step (read the colour, resolve the riddle). A
**plain** query names both ("Find the green cat."): the answer is in the text, and a trace cannot
help (what ``think="auto"`` should learn to skip). Compositions come in three disjoint sets: train
(the embedders and the student), dev (never trained on: the reasoning gate and GRPO learn there)
and held-out (evaluation). Files follow MMEB's formats, so the demo drives the same readers as real
data: MMEB-train JSONL for training and dev, MMEB-eval JSONL (``qry_inst``, ``qry_text``,
``qry_img_path``, ``tgt_text`` with the gold first) for evaluation.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
RIDDLES = {
    "dog": ["animal that barks", "pet that fetches a stick"],
    "cat": ["animal that meows", "pet that chases mice"],
    "car": ["vehicle with four wheels", "thing you drive on a road"],
    "bird": ["animal that flies and sings", "animal with feathers and a beak"],
    "fish": ["animal that swims with fins", "animal that lives in water"],
    "tree": ["plant with leaves and roots", "tall plant with a trunk"],
    "house": ["building where people live", "home with a roof and a door"],
    "boat": ["thing that floats on the sea", "vessel with a sail"],
    # only with ``num_objects`` above 8 (the default demo's data has the eight above)
    "bus": ["vehicle that carries many people", "vehicle that stops on the street"],
    "chair": ["seat with four legs", "thing you sit on at a table"],
}
#: how many of `RIDDLES`' objects the demo's data uses by default
NUM_OBJECTS = 8
SHAPES = ("circle", "square", "triangle", "star")
INSTRUCTION = "Find the object the query describes, in the colour of the shape in the picture."
QUERY_TEMPLATES = ("Which {riddle} has this colour?", "Find the {riddle}, painted like this shape.")
PLAIN_TEMPLATES = ("Find the {colour} {object}.", "Show me a {colour} {object}.")
RIDDLE, PLAIN = "riddle", "plain"
#: The picture task: every query has this one instruction and text, as an MMEB task does, and only the
#: picture tells a query whose trace helps from one whose trace cannot: a **clear** picture shows the
#: shape on the usual grey background; a **camouflaged** one paints the background in the colour
#: nearest to the shape's (`LOOKALIKE`), so two similar colours fill the picture and the larger one is
#: not the answer. The teacher's trace names the background and the shape's colour.
PICTURE_INSTRUCTION = "Find the colour of the shape in the picture."
PICTURE_QUERY = "What colour is the shape?"
CLEAR, CAMOUFLAGED = "clear", "camouflaged"
PICTURE_OBJECT = "shape"  # a picture query's answer is "a <colour> shape"


def _rgb_distance(a: str, b: str) -> int:
    """Squared RGB distance between two `COLOURS`."""
    return sum((x - y) ** 2 for x, y in zip(COLOURS[a], COLOURS[b]))


def _nearest_other(colour: str) -> str:
    return min((c for c in COLOURS if c != colour), key=lambda c: _rgb_distance(c, colour))


def _farthest_other(colour: str) -> str:
    return max((c for c in COLOURS if c != colour), key=lambda c: _rgb_distance(c, colour))


#: Each colour's background on a camouflaged picture: the nearest other colour in RGB.
LOOKALIKE = {colour: _nearest_other(colour) for colour in COLOURS}
#: ...or, with ``picture_background="distinct"``, the farthest: two colours the tiny models can tell
#: apart, so the picture is ambiguous (which colour is the shape's?) without being hard to see.
DISTINCT = {colour: _farthest_other(colour) for colour in COLOURS}
PICTURE_BACKGROUNDS = {"lookalike": LOOKALIKE, "distinct": DISTINCT}


@dataclass(frozen=True)
class Scene:
    """Ground truth of one query: what the picture shows and what the riddle means."""

    id: str
    colour: str
    shape: str
    object: str
    riddle: str | None  # None for a plain query
    query: str
    kind: str = RIDDLE
    background: str | None = None  # a camouflaged picture's background colour (else grey)

    @property
    def answer(self) -> str:
        return f"a {self.colour} {self.object}"

    @property
    def instruction(self) -> str:
        return PICTURE_INSTRUCTION if self.kind in (CLEAR, CAMOUFLAGED) else INSTRUCTION

    @property
    def trace_optional(self) -> bool:
        """Whether the query is embedded right without a trace: its answer is in the text (a plain
        query) or plain to see (a clear picture)."""
        return self.kind in (PLAIN, CLEAR)


def split_compositions(
    dev_compositions: int = 8, num_objects: int = NUM_OBJECTS
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Train, dev and held-out (colour, object) pairs of the 8 colours and the first ``num_objects``
    (8–10) objects, disjoint: 8 held-out, ``dev_compositions`` (8, 16 or 24) dev, the rest train (48 /
    8 / 8 of the 8 x 8 with this function's defaults; the demo's settings take 10 objects and 16 dev:
    56 / 16 / 8 of 80). The pairs go by offset (object index - colour index, mod
    ``num_objects``), 8 per offset, so each colour occurs once per offset in dev and held-out. The
    student's answers generalise to new compositions only when training covers most of them (with 40
    of 64 it wrote a training composition for a fifth of the held-out riddles on some seeds, with 32
    for most), while a reasoning gate fitted on dev rows learns from only as many answers as dev has:
    more objects give dev more compositions without taking them from training."""
    if dev_compositions not in (8, 16, 24):
        raise ValueError(f"dev_compositions must be 8, 16 or 24 (8 per offset), got {dev_compositions!r}.")
    if not NUM_OBJECTS <= num_objects <= len(RIDDLES):
        raise ValueError(f"num_objects must be {NUM_OBJECTS} to {len(RIDDLES)}, got {num_objects!r}.")
    middle = num_objects // 2
    dev_offsets = (middle, middle - 2, middle + 2)[: dev_compositions // 8]
    train, dev, held_out = [], [], []
    for i, colour in enumerate(COLOURS):
        for j, obj in enumerate(list(RIDDLES)[:num_objects]):
            offset = (j - i) % num_objects
            (held_out if offset == 0 else dev if offset in dev_offsets else train).append((colour, obj))
    return train, dev, held_out


def render_shape(
    colour: str, shape: str, rng: random.Random, size: int = 56, background: str | None = None
) -> Image.Image:
    """A coloured shape at a random place and size on a noisy background: grey, or ``background``'s colour."""
    grey = rng.randint(110, 150)
    base = COLOURS[background] if background else (grey, grey, grey)
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # speckle, so the background is not a constant
        x, y = rng.randrange(size), rng.randrange(size)
        g = rng.randint(90, 170)
        speckle = tuple(min(255, max(0, v + g - 130)) for v in base) if background else (g, g, g)
        draw.point((x, y), fill=speckle)
    r = rng.randint(size // 4, size // 2 - 2)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r // 2
            angle = k * math.pi / 5
            points.append((cx + radius * math.sin(angle), cy - radius * math.cos(angle)))
        draw.polygon(points, fill=fill)
    return image


def make_scenes(
    pairs: list[tuple[str, str]], n: int, rng: random.Random, prefix: str, kind: str = RIDDLE
) -> list[Scene]:
    """``n`` scenes of one kind; every pair occurs once before any repeats."""
    scenes = []
    for i in range(n):
        colour, obj = pairs[i % len(pairs)] if i < len(pairs) else rng.choice(pairs)
        shape = rng.choice(SHAPES)
        if kind == PLAIN:
            query = rng.choice(PLAIN_TEMPLATES).format(colour=colour, object=obj)
            scenes.append(Scene(f"{prefix}-plain-{i:05d}", colour, shape, obj, None, query, PLAIN))
        else:
            riddle = rng.choice(RIDDLES[obj])
            query = rng.choice(QUERY_TEMPLATES).format(riddle=riddle)
            scenes.append(Scene(f"{prefix}-{i:05d}", colour, shape, obj, riddle, query))
    return scenes


def _mixed(pairs, n: int, plain_fraction: float, rng: random.Random, prefix: str) -> list[Scene]:
    """Riddles and plain queries in one shuffled list (``round(n * plain_fraction)`` plain)."""
    plain = round(n * plain_fraction)
    scenes = make_scenes(pairs, n - plain, rng, prefix) + make_scenes(pairs, plain, rng, prefix, PLAIN)
    rng.shuffle(scenes)
    return scenes


def candidates_for(scene: Scene, rng: random.Random, num_candidates: int, objects: list[str]) -> list[str]:
    """The gold answer first, then distractors of the data's ``objects``: same colour, same object,
    then any other pair."""
    same_colour = [f"a {scene.colour} {o}" for o in objects if o != scene.object]
    same_object = [f"a {c} {scene.object}" for c in COLOURS if c != scene.colour]
    others = [f"a {c} {o}" for c in COLOURS for o in objects if c != scene.colour and o != scene.object]
    rng.shuffle(same_colour), rng.shuffle(same_object), rng.shuffle(others)
    k = (num_candidates - 1) // 3
    distractors = same_colour[:k] + same_object[:k] + others[: num_candidates - 1 - 2 * k]
    return [scene.answer, *distractors]


def _train_row(scene: Scene, image_path: str, negative: str = "") -> dict:
    return {
        "id": scene.id,
        "qry": f"<|image_1|> {scene.instruction} {scene.query}",  # MMEB-train (Phi-3-V) placeholder
        "qry_image_path": image_path,
        "pos_text": scene.answer,
        "pos_image_path": "",
        "neg_text": negative,
        "neg_image_path": "",
        # embedded right without a trace: the rows that get no-trace copies in training
        # (`DatasetSpec.no_trace_copies`)
        "trace_optional": scene.trace_optional,
    }


def hard_negative(scene: Scene, pairs: list[tuple[str, str]], rng: random.Random) -> str:
    """A composition of ``pairs`` that shares exactly one of the scene's colour and object."""
    confusers = [(c, o) for c, o in pairs if (c == scene.colour) != (o == scene.object)]
    colour, obj = rng.choice(confusers)
    return f"a {colour} {obj}"


def _eval_row(scene: Scene, image_path: str, candidates: list[str]) -> dict:
    return {
        "id": scene.id,
        "qry_inst": scene.instruction,
        "qry_text": scene.query,
        "qry_img_path": image_path,
        "tgt_text": candidates,
        "tgt_img_path": [""] * len(candidates),
    }


def make_picture_scenes(
    n: int, rng: random.Random, prefix: str, camouflaged_fraction: float = 0.5, backgrounds: dict = LOOKALIKE
) -> list[Scene]:
    """``n`` picture-task scenes, ``round(n * camouflaged_fraction)`` of them camouflaged (on their
    colour's ``backgrounds`` colour), shuffled; every colour in turn."""
    colours = list(COLOURS)
    hard = set(rng.sample(range(n), round(n * camouflaged_fraction)))
    scenes = []
    for i in range(n):
        colour, shape = colours[i % len(colours)], rng.choice(SHAPES)
        kind, background = (CAMOUFLAGED, backgrounds[colour]) if i in hard else (CLEAR, None)
        scenes.append(
            Scene(f"{prefix}-picture-{i:05d}", colour, shape, PICTURE_OBJECT, None, PICTURE_QUERY, kind, background)
        )
    rng.shuffle(scenes)
    return scenes


def picture_candidates(scene: Scene) -> list[str]:
    """The gold answer first, then the shape in every other colour (the background's among them)."""
    return [scene.answer, *(f"a {c} {PICTURE_OBJECT}" for c in COLOURS if c != scene.colour)]


#: file written per split: (file name, MMEB format)
SPLIT_FILES = {
    "train": ("train.jsonl", "train"),
    "dev": ("dev.jsonl", "train"),
    "test": ("test.jsonl", "eval"),
    "test_plain": ("test_plain.jsonl", "eval"),
    "test_picture": ("test_picture.jsonl", "eval"),
}


def write_benchmark(
    output_dir: str | Path,
    *,
    seed: int = 0,
    num_train: int = 768,
    num_test: int = 256,
    num_candidates: int = 16,
    train_plain_fraction: float = 0.0,
    num_dev: int = 0,
    num_test_plain: int = 0,
    num_picture_train: int = 0,
    num_picture_dev: int = 0,
    num_picture_test: int = 0,
    picture_background: str = "lookalike",
    dev_compositions: int = 8,
    num_objects: int = NUM_OBJECTS,
) -> dict[str, Path]:
    """Write images, ``scenes.jsonl`` and one JSONL per split: ``train.jsonl`` and ``dev.jsonl``
    (MMEB-train, plus ``trace_optional``: true on a plain query or a clear picture; ``train_plain_fraction``
    of the train rows and half the dev rows are plain queries), ``test.jsonl`` (held-out riddles),
    ``test_plain.jsonl`` (held-out plain queries) and ``test_picture.jsonl`` (picture task), MMEB-eval.
    Dev rows carry a hard negative (``neg_text``) from the train and dev compositions, never a held-out
    one; a picture row, its background's colour. The picture task's rows (``num_picture_*``, half of
    them camouflaged on a `PICTURE_BACKGROUNDS` colour) follow the mixed set's in train and dev and come
    from their own random stream, so the mixed set is the same with or without them. A split of size 0
    is not written. ``dev_compositions`` and ``num_objects``: the grid (`split_compositions`)."""
    if picture_background not in PICTURE_BACKGROUNDS:
        raise ValueError(
            f"picture_background must be one of {sorted(PICTURE_BACKGROUNDS)}, got {picture_background!r}."
        )
    backgrounds = PICTURE_BACKGROUNDS[picture_background]
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rng, picture_rng = random.Random(seed), random.Random(f"picture-{seed}")
    train_pairs, dev_pairs, held_out_pairs = split_compositions(dev_compositions, num_objects)
    objects = list(RIDDLES)[:num_objects]
    splits = {
        "train": _mixed(train_pairs, num_train, train_plain_fraction, rng, "train"),
        "dev": _mixed(dev_pairs, num_dev, 0.5, rng, "dev"),
        "test": make_scenes(held_out_pairs, num_test, rng, "test"),
        "test_plain": make_scenes(held_out_pairs, num_test_plain, rng, "test", PLAIN),
    }
    pictures = {
        "train": make_picture_scenes(num_picture_train, picture_rng, "train", backgrounds=backgrounds),
        "dev": make_picture_scenes(num_picture_dev, picture_rng, "dev", backgrounds=backgrounds),
        "test_picture": make_picture_scenes(num_picture_test, picture_rng, "test", backgrounds=backgrounds),
    }
    paths = {"scenes": output_dir / "scenes.jsonl"}
    with open(paths["scenes"], "w") as scenes_file:
        for split in SPLIT_FILES:
            name, fmt = SPLIT_FILES[split]
            rows = []
            for scenes, stream in ((splits.get(split, []), rng), (pictures.get(split, []), picture_rng)):
                for scene in scenes:
                    rows.append(_write_scene(scene, split, fmt, output_dir, stream, scenes_file, num_candidates, train_pairs + dev_pairs, backgrounds, objects))  # fmt: skip
            if rows:
                paths[split] = output_dir / name
                with open(paths[split], "w") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
    return paths


def _write_scene(scene: Scene, split: str, fmt: str, output_dir: Path, rng: random.Random, scenes_file, num_candidates: int, negative_pairs: list, backgrounds: dict, objects: list[str]) -> dict:  # fmt: skip
    """Render ``scene``'s picture, record it in ``scenes.jsonl`` and return its row in ``fmt`` (a dev
    picture's hard negative: the shape in its colour's ``backgrounds`` colour)."""
    image_path = f"images/{scene.id}.png"
    render_shape(scene.colour, scene.shape, rng, background=scene.background).save(output_dir / image_path)
    scenes_file.write(json.dumps({**asdict(scene), "split": split, "answer": scene.answer}) + "\n")
    picture = scene.kind in (CLEAR, CAMOUFLAGED)
    if fmt == "eval":
        return _eval_row(scene, image_path, picture_candidates(scene) if picture else candidates_for(scene, rng, num_candidates, objects))  # fmt: skip
    if split != "dev":
        return _train_row(scene, image_path)
    negative = f"a {scene.background or backgrounds[scene.colour]} {PICTURE_OBJECT}" if picture else hard_negative(scene, negative_pairs, rng)  # fmt: skip
    return _train_row(scene, image_path, negative)

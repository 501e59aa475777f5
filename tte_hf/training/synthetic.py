"""A small synthetic MMEB-style retrieval set with images and ECR traces, for tests, the demo and
the tiny recipes: each query is a picture of a coloured shape, its target names colour and shape.

    python -m tte_hf.training.synthetic out/tiny-data --num-items 16
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = ("left", "right", "top", "bottom")


def _draw(color: tuple[int, int, int], shape: str, position: str, size: int = 56):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    offset = {"left": (-10, 0), "right": (10, 0), "top": (0, -10), "bottom": (0, 10)}[position]
    cx, cy = size // 2 + offset[0], size // 2 + offset[1]
    r = size // 4
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    else:
        draw.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=color)
        draw.rectangle((cx - r // 3, cy - r, cx + r // 3, cy + r), fill=color)
    return image


def write_synthetic_retrieval(output_dir: str | Path, num_items: int = 16, seed: int = 0) -> dict[str, Path]:
    """Write ``train.jsonl`` (MMEB-train fields, hard negatives included), ``images/``,
    ``query_ecr.jsonl`` and ``target_ecr.jsonl`` (ids as `tte_hf.training.data` expects); return the paths."""
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = [(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS]
    rng.shuffle(combos)
    if num_items > len(combos):
        raise ValueError(f"num_items must be at most {len(combos)}, got {num_items}.")
    chosen = combos[:num_items]
    rows, query_ecr, target_ecr = [], [], []
    for index, (color, shape, position) in enumerate(chosen):
        item = f"shape-{index}"
        name = f"{item}.png"
        _draw(COLORS[color], shape, position).save(output_dir / "images" / name)
        neg_color, neg_shape, _ = chosen[(index + 1) % num_items]
        rows.append(
            {
                "id": item,
                "qry": "<|image_1|>\nFind the color and shape of the object in this image",
                "qry_image_path": f"images/{name}",
                "pos_text": f"a {color} {shape} on the {position}",
                "pos_image_path": "",
                "neg_text": f"a {neg_color} {neg_shape}",
                "neg_image_path": "",
            }
        )
        thought = f"the object is a {color} {shape} near the {position}"
        final = f"{color} {shape}"
        trace = f"<think> {thought} </think> {final}"
        query_ecr.append({"id": item, "ecr": trace, "thought": thought, "final": final, "raw": trace})
        for key, text in ((item, f"{color} {shape} {position}"), (f"{item}:neg", f"{neg_color} {neg_shape}")):
            trace = f"<think> {text} </think> {text}"
            target_ecr.append({"id": key, "ecr": trace, "thought": text, "final": text, "raw": trace})
    paths = {
        "data": output_dir / "train.jsonl",
        "query_ecr": output_dir / "query_ecr.jsonl",
        "target_ecr": output_dir / "target_ecr.jsonl",
    }
    for key, items in (("data", rows), ("query_ecr", query_ecr), ("target_ecr", target_ecr)):
        paths[key].write_text("".join(json.dumps(row) + "\n" for row in items))
    paths["image_root"] = output_dir
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--num-items", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_retrieval(args.output_dir, args.num_items, args.seed)
    print(f"Wrote {args.num_items} items to {paths['data']}")


if __name__ == "__main__":
    main()

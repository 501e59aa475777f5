"""The picture task per kind of picture: for each finished ``tte-hf demo --settings pictures[-distinct]``
folder and each adaptive model, Hit@1 on its clear and camouflaged held-out pictures without and with
the trace (the demo's own evaluations), what a gate that knew the kind would score (skip exactly the
clear pictures), and how well the model's own gate tells the kinds apart: the AUC of its scores,
camouflaged (the trace helps) above clear (0.5 is chance).

    python benchmarks/gate_pictures.py tte-demo-37 tte-demo-38 ...

Diagnoses the picture-task rows of `bench_gate_tasks.py`; reads the demo folders only. One thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_gate_feature import MODELS
from bench_gate_tasks import gate_scores, per_query_hits

FILE, TASK = "test_picture.jsonl", "held-out-pictures"
KINDS = ("clear", "camouflaged")


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def picture_kinds(demo: Path) -> dict[str, str]:
    """Held-out picture id -> its kind, from the demo's ground truth (``data/scenes.jsonl``)."""
    scenes = (json.loads(line) for line in (demo / "data" / "scenes.jsonl").read_text().splitlines())
    return {scene["id"]: scene["kind"] for scene in scenes if scene["kind"] in KINDS}


def own_gate_scores(demo: Path, model: str) -> list[float]:
    """The model's own gate's scores on the held-out pictures, in file order."""
    from sentence_transformers import SentenceTransformer

    folder = demo / "models" / model
    return gate_scores(SentenceTransformer(str(folder), trust_remote_code=True, device="cpu"), folder, demo, FILE)


def measure(demo: Path, model: str) -> dict[str, float]:
    """Per kind, Hit@1 never and always; the oracle's Hit@1 against always and against a random gate at
    the oracle's calls; the model's gate's AUC (camouflaged above clear)."""
    ids = [json.loads(line)["id"] for line in (demo / "data" / FILE).read_text().splitlines()]
    kind = picture_kinds(demo)
    hits = {mode: per_query_hits(demo, model, mode, "pictures", TASK) for mode in ("never", "always")}
    out = {}
    for k in KINDS:
        rows = [i for i in ids if kind[i] == k]
        for mode in ("never", "always"):
            out[f"{k} {mode}"] = 100 * sum(hits[mode][i] for i in rows) / len(rows)
    never, always = (100 * sum(hits[mode][i] for i in ids) / len(ids) for mode in ("never", "always"))
    oracle = 100 * sum(hits["always" if kind[i] == "camouflaged" else "never"][i] for i in ids) / len(ids)
    calls = sum(kind[i] == "camouflaged" for i in ids) / len(ids)
    out["oracle - always"] = oracle - always
    out["oracle - random"] = oracle - (never + calls * (always - never))
    scores = dict(zip(ids, own_gate_scores(demo, model)))
    camouflaged = [scores[i] for i in ids if kind[i] == "camouflaged"]
    out["gate AUC"] = auc(camouflaged, [scores[i] for i in ids if kind[i] == "clear"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", type=Path, nargs="+", help="Finished `tte-hf demo --settings pictures...` folders.")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    print("| demo | model | clear never → always | camouflaged never → always | oracle − always | oracle − random | gate AUC |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for demo in args.demos:
        for model in MODELS:
            m = measure(demo, model)
            cells = [demo.name, model, f"{m['clear never']:.0f} → {m['clear always']:.0f}",
                     f"{m['camouflaged never']:.0f} → {m['camouflaged always']:.0f}",
                     f"{m['oracle - always']:+.1f}", f"{m['oracle - random']:+.1f}", f"{m['gate AUC']:.2f}"]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

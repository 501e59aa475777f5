"""Published MMEB scores to print beside a run (percent).

- Overall / modality figures: `/work/shared/PAPER.md` (the TTE paper and its sources; "unverified"
  where PAPER.md says so).
- Meta-task figures: means of the per-dataset scores VLM2Vec publishes in
  `experiments/public/all_scores/v2.1-baselines-visdoc-page-fixed/*.json` (hit@1 image/video,
  ndcg_linear@5 visdoc), grouped as in `tasks.py`. Those files lack ViDoSeek-doc and MMLongBench-doc,
  so their VisDoc-OOD means cover 2 of 4 tasks. Their modality means agree with PAPER.md's
  VLM2Vec-V2-2B figures (64.9 / 34.7 / 69.2).
"""

from __future__ import annotations

BASELINES: dict[str, dict[str, dict]] = {
    "mmeb-v2": {
        "TTE-t-7B": {"overall": 71.5},
        "TTE-t-2B": {"overall": 68.6},
        "TTE-s-7B": {"overall": 68.6, "note": "unverified"},
        "IFM-TTE-8B": {"overall": 74.1, "modality": {"image": 77.9, "video": 59.2, "visdoc": 79.5}},
        "Qwen3-VL-Embedding-8B": {"overall": 77.8, "modality": {"image": 80.1, "video": 67.1, "visdoc": 82.4}},
        "VLM2Vec-V2-2B": {
            "overall": 58.0,
            "modality": {"image": 64.9, "video": 34.6, "visdoc": 69.2},
            "meta_task": {
                "CLS": 62.9, "QA": 56.4, "RET": 69.6, "GD": 77.1,
                "V-CLS": 39.2, "V-QA": 34.7, "V-RET": 28.4, "V-MRET": 37.5,
                "ViDoRe-V1": 74.4, "ViDoRe-V2": 44.6, "VisRAG": 79.3, "VisDoc-OOD": 62.5,
            },
        },
        "GME-7B": {
            "overall": 59.1,
            "meta_task": {
                "CLS": 57.6, "QA": 34.6, "RET": 71.2, "GD": 59.5,
                "V-CLS": 37.3, "V-QA": 50.3, "V-RET": 28.3, "V-MRET": 37.5,
                "ViDoRe-V1": 89.6, "ViDoRe-V2": 55.5, "VisRAG": 85.0, "VisDoc-OOD": 69.4,
            },
        },
        "GME-2B": {
            "overall": 55.3,
            "meta_task": {
                "CLS": 54.5, "QA": 29.8, "RET": 66.8, "GD": 55.6,
                "V-CLS": 34.7, "V-QA": 41.7, "V-RET": 25.4, "V-MRET": 31.8,
                "ViDoRe-V1": 87.1, "ViDoRe-V2": 53.9, "VisRAG": 82.4, "VisDoc-OOD": 65.6,
            },
        },
    },
    "mmeb-v1": {
        "TTE-t-7B": {"overall": 78.5},
        "TTE-s-7B": {"overall": 73.3},
        "VLM2Vec-V1": {"overall": 65.8},
    },
}  # fmt: skip


def baselines_for(key: str | None) -> dict[str, dict]:
    """Published scores for a benchmark key (``mmeb-v1`` / ``mmeb-v2``); empty for custom task lists."""
    return BASELINES.get(key or "", {})

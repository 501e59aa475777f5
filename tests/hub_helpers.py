"""Test helpers for the Hub path: a Hugging Face cache populated the way a download populates it, and a
subprocess that loads repos from it offline without being able to import tte_hf."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def populate_hf_cache(folder: str | Path, repo_id: str, cache_dir: str | Path, revision: str = "main") -> str:
    """Lay ``folder`` out as huggingface_hub's cache does after a download: content-addressed blobs,
    a snapshot of relative symlinks under a commit hash, and ``refs/<revision>`` naming that commit."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files) + repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for path in files:
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(path.relative_to(folder).parts) + 1  # up from snapshots/<commit>/<dirs...>
        link.symlink_to(Path(*[".."] * depth, "blobs", blob.name))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return commit


_PRELUDE = """
import importlib.abc, importlib.util, sys

class _NoTTE(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tte_hf" or name.startswith("tte_hf."):
            raise ImportError("tte_hf is blocked in this subprocess: the Hub repo must be self-contained")

sys.meta_path.insert(0, _NoTTE())
sys.path = [p for p in sys.path if p not in ("", ".")]
"""


def run_offline(script: str, cache_dir: str | Path, workdir: str | Path, timeout: int = 240) -> dict:
    """Run ``script`` in a fresh interpreter with HF_HUB_OFFLINE=1 and the given cache; tte_hf cannot be
    imported there. The script writes a JSON result to ``RESULT_PATH``; that result is returned."""
    workdir = Path(workdir)
    result_path = workdir / "result.json"
    code = _PRELUDE + f"RESULT_PATH = {str(result_path)!r}\n" + textwrap.dedent(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache_dir),
        HF_HOME=str(workdir / "hf_home"),
        HF_MODULES_CACHE=str(workdir / "modules"),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"offline subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(result_path.read_text())

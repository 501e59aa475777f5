"""What an installed wheel carries: the model card templates as package data, read with importlib.resources."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # setuptools writes build/ and egg-info beside the sources
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tte_hf", source / "tte_hf", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("tte_hf-*.whl")
    return path


def test_wheel_ships_every_card_template(wheel):
    from tte_hf.hub.cards import CARD_TEMPLATES, VLLM_TEMPLATE

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(n).name for n in names if n.startswith("tte_hf/hub/templates/")}
    source = ROOT / "tte_hf" / "hub" / "templates"
    includes = {m for f in source.glob("*.j2") for m in re.findall(r'{% include "([^"]+)" %}', f.read_text())}
    assert {*CARD_TEMPLATES.values(), VLLM_TEMPLATE, *includes} <= shipped
    assert shipped == {p.name for p in source.glob("*.md.j2")}


def test_cards_render_from_the_wheel_alone(wheel, tmp_path):
    """Only the wheel on sys.path (zipimport), run from an empty folder: no checkout to fall back on."""
    script = """
import tte_hf.hub.cards as cards
assert cards.__file__.startswith(WHEEL), cards.__file__
env = cards.template_environment()
for name in [*cards.CARD_TEMPLATES.values(), cards.VLLM_TEMPLATE]:
    env.get_template(name)
print(env.get_template("_citation.md.j2").render(paper_url="https://arxiv.org/abs/2510.05014").splitlines()[0])
""".replace("WHEEL", repr(str(wheel)))
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "## Citation"

"""The files a saved TTE repo carries for ``trust_remote_code``: every module in ``models/tte/``.

Derived from the folder, never listed by hand, so a new shipped module cannot be forgotten; the copy
fails loudly rather than writing a repo that cannot load. Used by export (``tte_hf.hub``) and by the
training commands that write a loadable folder (``train-gate``), so it lives here, not in ``hub/``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REMOTE_CODE_DIR = Path(__file__).resolve().parent / "tte"


def remote_code_files() -> tuple[str, ...]:
    """The shipped file names, sorted (the folder's ``__init__.py`` is the package marker, not shipped)."""
    return tuple(sorted(path.name for path in REMOTE_CODE_DIR.glob("*.py") if path.name != "__init__.py"))


REMOTE_CODE_FILES = remote_code_files()
# What saved repos name: `auto_map` (config.json) and `modules.json`.
ENTRY_FILES = ("configuration_tte.py", "modeling_tte.py", "sentence_transformer_tte.py")


_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)


def missing_remote_code(folder: str | Path | None = None) -> list[str]:
    """Sibling modules that a file in ``folder`` (default: the shipped folder) imports relatively but
    that the folder lacks: what a repo built from it would fail to import at load time."""
    folder = Path(folder or REMOTE_CODE_DIR)
    present = {path.stem for path in folder.glob("*.py")}
    wanted = {name for path in folder.glob("*.py") for name in _RELATIVE_IMPORT.findall(path.read_text("utf8"))}
    return sorted(f"{name}.py" for name in wanted - present)


def copy_remote_code(target: str | Path) -> list[str]:
    """Copy every shipped file flat into ``target``; raise, before copying, if the install lacks one."""
    missing = missing_remote_code() + [name for name in ENTRY_FILES if name not in REMOTE_CODE_FILES]
    if missing:
        raise FileNotFoundError(f"tte_hf's shipped code in {REMOTE_CODE_DIR} is incomplete: missing {missing}")
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(REMOTE_CODE_DIR / name, Path(target) / name)
    return list(REMOTE_CODE_FILES)

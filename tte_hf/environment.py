"""What computed a result: installed package versions and the CPU, for manifests and reports."""

from __future__ import annotations

import platform
from collections.abc import Iterable


def package_versions(names: Iterable[str], missing: str | None = None) -> dict[str, str]:
    """The installed version of each package in ``names``; one that is not installed maps to
    ``missing``, or is left out when ``missing`` is None."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere `platform.processor`): its vendor's
    kernels can move a result even with the code paths pinned (`tte_hf.demo.runtime`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine() or "unknown CPU"

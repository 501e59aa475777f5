"""The CPU demo: a synthetic compositional benchmark, a scene-reading teacher, and the whole pipeline."""

from .pipeline import DemoSettings, run_demo

__all__ = ["DemoSettings", "run_demo"]

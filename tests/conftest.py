import pytest
import torch

from tte_hf.testing import build_tiny_vlm


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    """A tiny random Qwen2-VL checkpoint, built once per test session."""
    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen2_vl"), arch="qwen2_vl"))


@pytest.fixture(scope="session")
def tiny_vlm_25(tmp_path_factory) -> str:
    """A tiny random Qwen2.5-VL checkpoint, built once per test session."""
    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), arch="qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_vlm_3(tmp_path_factory) -> str:
    """A tiny random Qwen3-VL checkpoint (interleaved M-RoPE, deepstack), built once per test session."""
    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen3_vl"), arch="qwen3_vl"))

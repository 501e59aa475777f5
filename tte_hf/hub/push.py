"""Upload an exported repo folder to the Hugging Face Hub with ``huggingface_hub`` (repo, branch, PR)."""

from __future__ import annotations

from pathlib import Path

from .sources import ExportError

REQUIRED_FILES = ("config.json", "README.md")


def check_export_folder(local_dir: str | Path) -> Path:
    """The folder must look like an export (config + card) before anything is sent."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise ExportError(f"{local_dir} is not a folder; push uploads a folder written by `tte-hf export`.")
    missing = [name for name in REQUIRED_FILES if not (local_dir / name).is_file()]
    adapter = (local_dir / "adapter_config.json").is_file()
    if missing and not (adapter and missing == ["config.json"]):
        raise ExportError(f"{local_dir} lacks {missing}; run `tte-hf export` first and push its output folder.")
    if not any(local_dir.glob("*.safetensors")):
        raise ExportError(f"{local_dir} has no *.safetensors weights; refusing to push a repo without weights.")
    return local_dir


def push_folder(
    local_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Create ``repo_id`` if needed (``private``), create branch ``revision`` if needed, upload the folder
    as one commit (or a pull request with ``create_pr``). The token comes from ``token`` or, when None,
    huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``). Returns huggingface_hub's CommitInfo.
    """
    from huggingface_hub import HfApi

    local_dir = check_export_folder(local_dir)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.upload_folder(
        folder_path=str(local_dir),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or f"Upload {local_dir.name} with tte-hf",
        ignore_patterns=[".*.partial-*", "**/.*.partial-*"],
    )

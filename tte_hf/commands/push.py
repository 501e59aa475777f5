"""``tte-hf push LOCAL_DIR REPO_ID``: upload an exported repo folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("local_dir", help="Folder written by `tte-hf export`.")
    parser.add_argument("repo_id", help="Target repo, e.g. my-org/tte-2b (created if missing).")
    parser.add_argument("--private", action="store_true", default=None, help="Create the repo as private.")
    parser.add_argument("--revision", help="Branch to upload to (created if missing).")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--commit-message", help="Commit message (default: 'Upload <folder> with tte-hf').")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the token saved by `hf auth login`).")


def run(args: argparse.Namespace) -> int:
    from ..hub import ExportError, push_folder

    try:
        info = push_folder(
            args.local_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
            token=args.token,
        )
    except ExportError as err:
        print(f"tte-hf push: error: {err}")
        return 2
    print(
        f"Pushed {args.local_dir} to {args.repo_id}: {getattr(info, 'pr_url', None) or getattr(info, 'commit_url', info)}"
    )
    return 0

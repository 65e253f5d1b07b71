#!/usr/bin/env python3
"""Check that a hub cache filled by crossfeed (`crossfeed fetch`, or a run) is one Python's
huggingface_hub reads as its own: every cached repo, revision and file resolves offline to the same
snapshot path through `scan_cache_dir` and `hf_hub_download(local_files_only=True)`.

    python3 scripts/check_hub_cache.py [CACHE_DIR]      # default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub

Exits non-zero with the offending repo/file when a file is not found or resolves elsewhere.
"""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
from huggingface_hub import hf_hub_download, scan_cache_dir  # noqa: E402


def main() -> int:
    cache = sys.argv[1] if len(sys.argv) > 1 else None
    info = scan_cache_dir(cache)
    for w in info.warnings:
        print(f"warning: {w}")
    bad, checked = 0, 0
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            refs = sorted(rev.refs) or [rev.commit_hash]
            for ref in refs:
                for f in sorted(rev.files, key=lambda f: f.file_name):
                    rel = f.file_path.relative_to(rev.snapshot_path).as_posix()
                    try:
                        got = hf_hub_download(repo.repo_id, rel, repo_type=repo.repo_type, revision=ref,
                                              cache_dir=cache, local_files_only=True)
                    except Exception as e:  # report every miss, not only the first
                        print(f"MISS {repo.repo_type} {repo.repo_id}@{ref} {rel}: {e}")
                        bad += 1
                        continue
                    if os.path.realpath(got) != os.path.realpath(f.file_path) or os.path.getsize(got) != f.size_on_disk:
                        print(f"DIFF {repo.repo_type} {repo.repo_id}@{ref} {rel}: {got}")
                        bad += 1
                    checked += 1
            print(f"ok   {repo.repo_type:<7} {repo.repo_id} {rev.commit_hash[:12]} refs={refs} files={len(rev.files)}")
    print(f"{checked} files checked, {bad} problems, {info.size_on_disk} bytes in {len(info.repos)} repos")
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-file integrity and durability: content digests, directory fsync, atomic replacement.

Shared by the downloads that verify what they fetched (`freshrec.offline.data.movielens`) and the
snapshots that verify what they load (`freshrec.retrieval.snapshot`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "replace_text", "sha256_file"]

# Read in 1 MiB blocks: large wheels and indexes are hashed without being held in memory.
_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in blocks.

    Args:
        path: the file.

    Returns:
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush the directory entry list of `path`, so a rename into it survives a crash.

    Args:
        path: the directory.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_text(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old content or the new, never a partial one.

    Args:
        path: the file; a `.tmp` file beside it is written first and renamed over it.
    """
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

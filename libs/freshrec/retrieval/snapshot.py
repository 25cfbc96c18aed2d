"""Index snapshots on disk: a directory with the index file and a `manifest.json`.

`manifest.json` names the index file, its sha256 and size, the feed cursor the index
reflects, the table, the dimension and the retriever kind. The index is written to a
temporary file and renamed; the manifest is written the same way afterwards, so its rename is
the commit point and a crash leaves the previous snapshot intact.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from freshrec.config import StrictModel
from freshrec.errors import SnapshotError
from freshrec.files import fsync_dir, sha256_file
from freshrec.retrieval.base import Retriever

__all__ = ["MANIFEST", "SnapshotManifest", "load_snapshot", "write_snapshot"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_INDEX_FILE = re.compile(r"^index-[0-9a-f]{32}\.bin$")


class SnapshotManifest(StrictModel):
    """What `manifest.json` of a snapshot directory says (format 1)."""

    format: Literal[1] = 1
    table: str
    dim: int = Field(ge=1)
    retriever: str = Field(description="Retriever kind, e.g. 'faiss-ivf' or 'exact'.")
    cursor: str = Field(description="Feed cursor of the last change the index reflects.")
    items: int = Field(ge=0)
    version: int = Field(ge=0)
    index_file: str = Field(pattern=_INDEX_FILE.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    created_at: float = Field(description="Unix seconds.")


def write_snapshot(
    directory: Path,
    table: str,
    retriever: Retriever,
    consistent: AbstractContextManager[object],
    cursor: Callable[[], str],
) -> SnapshotManifest:
    """Write `retriever` and the feed cursor it reflects to `directory`, atomically.

    Args:
        directory: the snapshot directory (created if missing).
        table: the item table's name, recorded in the manifest.
        retriever: the index to save.
        consistent: held while the cursor is read and the index saved, so that the two match
            (the follower's apply lock).
        cursor: the feed cursor of the last change `retriever` holds.

    Returns:
        The manifest written.

    Raises:
        SnapshotError: writing failed.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        tmp = directory / f".index-{token}.tmp"
        with consistent:
            at = cursor()
            version = retriever.version
            items = len(retriever)
            retriever.save(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        final = directory / f"index-{token}.bin"
        os.replace(tmp, final)
        manifest = SnapshotManifest(
            table=table,
            dim=retriever.dim,
            retriever=retriever.kind,
            cursor=at,
            items=items,
            version=version,
            index_file=final.name,
            sha256=sha256_file(final),
            bytes=final.stat().st_size,
            created_at=time.time(),
        )
        manifest_tmp = directory / f".manifest-{token}.tmp"
        with manifest_tmp.open("w") as fh:
            fh.write(manifest.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(manifest_tmp, directory / MANIFEST)
        fsync_dir(directory)
    except OSError as exc:
        raise SnapshotError(f"cannot write index snapshot to {directory}: {exc}") from exc
    _remove_stale(directory, keep=final.name)
    return manifest


def _remove_stale(directory: Path, keep: str) -> None:
    for path in directory.iterdir():
        stale = (_INDEX_FILE.match(path.name) and path.name != keep) or (
            path.name.startswith((".index-", ".manifest-")) and path.name.endswith(".tmp")
        )
        if stale:
            try:
                path.unlink()
            except OSError as exc:
                logger.warning("cannot remove stale snapshot file %s: %s", path, exc)


def load_snapshot(directory: Path, table: str, retriever: Retriever) -> SnapshotManifest:
    """Load the snapshot in `directory` into `retriever` after checking it.

    Args:
        directory: the snapshot directory.
        table: the item table's name the snapshot must be of.
        retriever: the index to fill; its `dim` and `kind` must match the manifest's.

    Returns:
        The manifest of the snapshot loaded.

    Raises:
        SnapshotError: unreadable manifest, a snapshot of another table, dimension or
            retriever kind, an index file missing or not matching its size or sha256, or
            holding another number of items than the manifest says.
    """
    try:
        manifest = SnapshotManifest.model_validate_json((directory / MANIFEST).read_bytes())
    except (OSError, ValidationError) as exc:
        raise SnapshotError(f"unreadable manifest: {exc}") from exc
    expected = {"table": table, "dim": retriever.dim, "retriever": retriever.kind}
    for field, want in expected.items():
        got = getattr(manifest, field)
        if got != want:
            raise SnapshotError(f"snapshot {field} is {got!r}, expected {want!r}")
    index_path = directory / manifest.index_file
    try:
        size = index_path.stat().st_size
    except OSError as exc:
        raise SnapshotError(f"index file missing: {exc}") from exc
    if size != manifest.bytes or sha256_file(index_path) != manifest.sha256:
        raise SnapshotError(f"{index_path} does not match its manifest (size or sha256)")
    retriever.load(index_path)
    if len(retriever) != manifest.items:
        raise SnapshotError(
            f"{index_path} holds {len(retriever)} items, manifest says {manifest.items}"
        )
    return manifest

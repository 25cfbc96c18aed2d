"""Portable table snapshots: a directory of raw little-endian arrays and a JSON manifest.

Layout (snapshot format 1)::

    <path>/manifest.json
    <path>/<table>/ids.bin         uint64   (N,)
    <path>/<table>/vectors.bin     float32  (N, D)
    <path>/<table>/state.bin       float32  (N, S)
    <path>/<table>/event_time.bin  float64  (N,)
    <path>/<table>/wall_time.bin   float64  (N,)
    <path>/<table>/count.bin       int64    (N,)

The manifest records the format and version, each table's full config, its row count, and
per data file the dtype, shape and SHA-256. Files are plain arrays (``np.fromfile`` reads
them), so any language can load a snapshot. A snapshot is written to a temporary directory
and renamed into place, so a crash never leaves a half-written snapshot at `path`.

`restore_snapshot` verifies every checksum and every table's dimension and optimizer before
it touches a store, then replaces each store's rows with the snapshot's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from freshrec.errors import SnapshotError
from freshrec.table.base import EmbeddingStore, Rows
from freshrec.table.optimizers import make_optimizer

__all__ = ["SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "restore_snapshot", "save_snapshot"]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "freshrec-table-snapshot"
SNAPSHOT_VERSION = 1

_FIELDS: dict[str, str] = {
    "ids": "<u8",
    "vectors": "<f4",
    "state": "<f4",
    "event_time": "<f8",
    "wall_time": "<f8",
    "count": "<i8",
}
_CHUNK_ROWS = 65536

Stores = Iterable[EmbeddingStore] | Mapping[str, EmbeddingStore]
"""Stores named by their config (a sequence, a `Tables`) or a name → store mapping."""


def _by_name(stores: Stores) -> dict[str, EmbeddingStore]:
    if isinstance(stores, Mapping):
        return dict(stores)
    named: dict[str, EmbeddingStore] = {}
    for store in stores:
        if store.config.name in named:
            raise SnapshotError(f"two stores for table {store.config.name!r}")
        named[store.config.name] = store
    return named


def _width(store: EmbeddingStore) -> int:
    return make_optimizer(store.config.optimizer).state_width(store.config.dim)


def save_snapshot(stores: Stores, path: Path) -> dict[str, Any]:
    """Write every row of `stores` to a snapshot directory at `path` (replaced if present).

    Args:
        stores: the tables, as stores named by their config (a sequence, a `Tables`) or a
            name → store mapping.
        path: the snapshot directory to create.

    Returns:
        The manifest written.
    """
    named = _by_name(stores)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        tables = [_save_table(name, store, tmp) for name, store in named.items()]
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "created_at": time.time(),
            "tables": tables,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("snapshot of %d tables written to %s", len(tables), path)
    return manifest


def _save_table(name: str, store: EmbeddingStore, root: Path) -> dict[str, Any]:
    folder = root / name
    folder.mkdir()
    dim, width = store.config.dim, _width(store)
    handles: dict[str, BinaryIO] = {f: (folder / f"{f}.bin").open("wb") for f in _FIELDS}
    digests = {f: hashlib.sha256() for f in _FIELDS}
    rows = 0
    try:
        for batch in store.export():
            rows += len(batch)
            for field, dtype in _FIELDS.items():
                data = np.ascontiguousarray(getattr(batch, field), dtype=dtype).tobytes()
                handles[field].write(data)
                digests[field].update(data)
    finally:
        for handle in handles.values():
            handle.close()
    shapes: dict[str, list[int]] = {
        "ids": [rows],
        "vectors": [rows, dim],
        "state": [rows, width],
        "event_time": [rows],
        "wall_time": [rows],
        "count": [rows],
    }
    return {
        "name": name,
        "config": store.config.model_dump(mode="json"),
        "rows": rows,
        "files": {
            f: {
                "path": f"{name}/{f}.bin",
                "dtype": dtype,
                "shape": shapes[f],
                "sha256": digests[f].hexdigest(),
            }
            for f, dtype in _FIELDS.items()
        },
    }


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot {path}: unreadable manifest.json ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"snapshot {path}: not a {SNAPSHOT_FORMAT} manifest")
    if manifest.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(
            f"snapshot {path}: format version {manifest.get('version')} is not supported "
            f"(this build reads version {SNAPSHOT_VERSION})"
        )
    return manifest


def _check_table(path: Path, entry: dict[str, Any], store: EmbeddingStore) -> None:
    name = store.config.name
    config = entry.get("config", {})
    dim = config.get("dim")
    if dim != store.config.dim:
        raise SnapshotError(
            f"snapshot {path}: table {name!r} has dim {dim}, the table config says "
            f"{store.config.dim}"
        )
    optimizer = config.get("optimizer", {}).get("type")
    if optimizer != store.config.optimizer.type:
        raise SnapshotError(
            f"snapshot {path}: table {name!r} was trained with optimizer {optimizer!r}, the "
            f"table config says {store.config.optimizer.type!r}"
        )
    if config != store.config.model_dump(mode="json"):
        logger.warning("snapshot %s: table %r config differs in non-structural fields", path, name)
    rows = int(entry.get("rows", -1))
    expected = {
        "ids": [rows],
        "vectors": [rows, store.config.dim],
        "state": [rows, _width(store)],
        "event_time": [rows],
        "wall_time": [rows],
        "count": [rows],
    }
    files = entry.get("files", {})
    for field, dtype in _FIELDS.items():
        meta = files.get(field)
        if meta is None or meta.get("dtype") != dtype or meta.get("shape") != expected[field]:
            raise SnapshotError(f"snapshot {path}: table {name!r} {field} file entry is invalid")
        file = path / meta["path"]
        size = int(np.prod(expected[field])) * np.dtype(dtype).itemsize
        try:
            actual = file.stat().st_size
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise SnapshotError(f"snapshot {path}: cannot read {meta['path']} ({exc})") from exc
        if actual != size:
            raise SnapshotError(
                f"snapshot {path}: {meta['path']} has {actual} bytes, expected {size}"
            )
        if digest.hexdigest() != meta.get("sha256"):
            raise SnapshotError(f"snapshot {path}: checksum mismatch in {meta['path']} (corrupt)")


def _load(path: Path, meta: dict[str, Any], start: int, stop: int) -> np.ndarray:
    dtype = np.dtype(meta["dtype"])
    shape = meta["shape"]
    row_items = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    count = (stop - start) * row_items
    data = np.fromfile(
        path / meta["path"], dtype=dtype, count=count, offset=start * row_items * dtype.itemsize
    )
    return data.reshape((stop - start, *shape[1:])) if len(shape) > 1 else data


def restore_snapshot(stores: Stores, path: Path) -> dict[str, int]:
    """Replace the rows of `stores` with those in the snapshot at `path`.

    Every checksum and every table's dimension and optimizer are verified before any store is
    changed. Tables in the snapshot but not in `stores` are ignored.

    Args:
        stores: the tables to restore, as stores (a sequence, a `Tables`) or a name → store
            mapping.
        path: the snapshot directory.

    Returns:
        Rows restored per table name.

    Raises:
        SnapshotError: unreadable or corrupt snapshot, a table missing from it, or a table
            whose dimension or optimizer differs from its store's config.
    """
    path = Path(path)
    named = _by_name(stores)
    manifest = _read_manifest(path)
    entries = {e.get("name"): e for e in manifest.get("tables", []) if isinstance(e, dict)}
    for name, store in named.items():
        if name not in entries:
            raise SnapshotError(f"snapshot {path}: has no table {name!r}")
        _check_table(path, entries[name], store)
    restored: dict[str, int] = {}
    for name, store in named.items():
        entry = entries[name]
        rows = int(entry["rows"])
        store.clear()
        files = entry["files"]
        for start in range(0, rows, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, rows)
            store.import_rows(
                Rows(
                    ids=_load(path, files["ids"], start, stop).astype(np.uint64),
                    vectors=_load(path, files["vectors"], start, stop).astype(np.float32),
                    state=_load(path, files["state"], start, stop).astype(np.float32),
                    event_time=_load(path, files["event_time"], start, stop).astype(np.float64),
                    wall_time=_load(path, files["wall_time"], start, stop).astype(np.float64),
                    count=_load(path, files["count"], start, stop).astype(np.int64),
                )
            )
        restored[name] = rows
        logger.info("restored %d rows of table %s from %s", rows, name, path)
    return restored

"""`IndexFollower`: keeps a `Retriever` in step with an item table through its change feed.

Life cycle::

    follower = IndexFollower(store, retriever, snapshot_path=Path("/var/lib/freshrec/index"))
    follower.bootstrap()     # snapshot if valid, else a full build from store.export()
    follower.start()         # background thread: poll the feed, apply, snapshot now and then
    ...
    follower.stop()

Applying a poll: the feed entries say *which* ids changed, the table says *what they are now*.
For each id the last op of the poll wins; ids last seen as upserts are read with one batched
`store.lookup`, and upserted with their current vector if the row still exists (and is
finite), removed otherwise; ids last seen as deletes are removed. Re-applying an entry is
harmless, so the feed can be read at-least-once.

Bootstrap and its race: a full build first reads the feed to its end (remembering the last
cursor), then exports the table, then follows the feed from that cursor. A write that lands
during the export is both in the export and on the feed after the cursor; applying it twice
is harmless, missing it is impossible.

Trimmed feed: the feed keeps a bounded history. When the follower's cursor is older than the
oldest entry kept (it was stopped, or its snapshot is old), entries may have been lost, so it
rebuilds from `store.export()` instead. Detection compares the cursor with the oldest entry
kept, as '-'-separated integer tuples (the in-memory store's sequence numbers, Redis stream
ids '<ms>-<seq>'); it runs after loading a snapshot, after a failed poll, and every
`trim_check_interval_s`. With gap-free sequence numbers it is exact. With Redis stream ids it
cannot tell "our entry was trimmed, nothing after it" from "entries after ours were trimmed"
unless the two ids are adjacent, and rebuilds in both cases: an unneeded rebuild at worst,
never a missed change.

Snapshots: `snapshot()` and `bootstrap()` write and read them through
`freshrec.retrieval.snapshot` (format and atomicity described there).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from freshrec.errors import FreshrecError, SnapshotError
from freshrec.retrieval.base import RESERVED_ID, Retriever
from freshrec.retrieval.metrics import (
    FOLLOW_ERRORS,
    INDEX_AGE,
    INDEX_APPLY_DELAY,
    INDEX_CHANGES,
    INDEX_FEED_LAG,
    INDEX_ITEMS,
    INDEX_REBUILDING,
    INDEX_REBUILDS,
    INDEX_VERSION,
)
from freshrec.retrieval.mirror import RowMirror
from freshrec.retrieval.snapshot import MANIFEST, SnapshotManifest, load_snapshot, write_snapshot
from freshrec.table.base import ChangeOp, EmbeddingStore, FeedLag, FloatArray, IdArray, Rows

__all__ = ["IndexFollower"]

logger = logging.getLogger(__name__)

_CURSOR_PART = re.compile(r"^\d+$")
_MAX_BACKOFF_S = 5.0


def _cursor_key(cursor: str) -> tuple[int, ...] | None:
    """A comparable form of `cursor` when it is '-'-separated integers, else None."""
    parts = cursor.split("-")
    if not all(_CURSOR_PART.match(p) for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _cursor_time(cursor: str) -> float | None:
    """Unix seconds encoded in a '<ms>-<seq>' cursor, else None."""
    key = _cursor_key(cursor)
    if key is None or len(key) != 2:
        return None
    return key[0] / 1000.0


class IndexFollower:
    """Builds a retriever from an item table and keeps it following the table's change feed.

    Args:
        store: the item table.
        retriever: the index to fill; its `dim` must equal the table's.
        snapshot_path: directory for snapshots; None disables them.
        name: the `index` label of the metrics and the name in logs (default: table name).
        poll_entries: at most this many feed entries per poll.
        block_ms: how long the background thread's poll waits for an entry; also bounds how
            long `stop()` takes.
        snapshot_interval_s: the background thread snapshots this often when the index
            changed since the last snapshot (None: only when `snapshot()` is called).
        trim_check_interval_s: how often `poll_once` checks that the cursor is still on the
            feed (it also checks after a failed poll of the background thread).
        export_batch_size: rows per `store.export` batch during a full build.
    """

    def __init__(
        self,
        store: EmbeddingStore,
        retriever: Retriever,
        snapshot_path: Path | None = None,
        *,
        name: str | None = None,
        poll_entries: int = 500,
        block_ms: int = 200,
        snapshot_interval_s: float | None = 300.0,
        trim_check_interval_s: float = 60.0,
        export_batch_size: int = 4096,
        mirror: RowMirror | None = None,
    ) -> None:
        if retriever.dim != store.config.dim:
            raise ValueError(
                f"retriever dim {retriever.dim} != table {store.config.name} dim {store.config.dim}"
            )
        self._store = store
        self._retriever = retriever
        self._snapshot_dir = snapshot_path
        self._name = name or store.config.name
        self._poll_entries = poll_entries
        self._block_ms = block_ms
        self._snapshot_interval_s = snapshot_interval_s
        self._trim_check_interval_s = trim_check_interval_s
        self._export_batch_size = export_batch_size
        self._mirror = mirror

        self._cursor = "0"
        self._bootstrapped = False
        # Serialises everything that reads the feed and mutates the index, so the cursor
        # always matches the index contents (a snapshot pairs them under this lock).
        self._apply_lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_applied = time.monotonic()
        self._last_trim_check = time.monotonic()
        self._suspect_gap = False
        self._snapshot_version = -1
        self._lag = FeedLag()

        INDEX_ITEMS.labels(index=self._name).set_function(lambda: len(self._retriever))
        INDEX_VERSION.labels(index=self._name).set_function(lambda: self._retriever.version)
        INDEX_AGE.labels(index=self._name).set_function(
            lambda: time.monotonic() - self._last_applied
        )
        INDEX_FEED_LAG.labels(index=self._name).set_function(self._lag.seconds)
        INDEX_REBUILDING.labels(index=self._name).set_function(
            lambda: float(bool(getattr(self._retriever, "rebuilding", False)))
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def cursor(self) -> str:
        """Feed cursor of the last change applied ("0": none yet)."""
        return self._cursor

    @property
    def retriever(self) -> Retriever:
        """The index this follower fills."""
        return self._retriever

    @property
    def running(self) -> bool:
        """Whether the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def age_s(self) -> float:
        """Seconds since the last change was applied (or the index was built)."""
        return time.monotonic() - self._last_applied

    # -- bootstrap -----------------------------------------------------------------------

    def bootstrap(self) -> Literal["snapshot", "export"]:
        """Fill the index: from the snapshot when present and valid, else from the table.

        A snapshot whose cursor fell off the trimmed feed is loaded and then replaced by a
        full build.

        Returns:
            Where the index came from.
        """
        with self._apply_lock:
            if self._snapshot_dir is not None and (self._snapshot_dir / MANIFEST).exists():
                try:
                    self._load_snapshot(self._snapshot_dir)
                except SnapshotError as exc:
                    logger.warning(
                        "index %s: ignoring snapshot in %s: %s", self._name, self._snapshot_dir, exc
                    )
                else:
                    self._bootstrapped = True
                    if self._cursor_lost():
                        logger.warning(
                            "index %s: snapshot cursor %s fell off the trimmed feed; rebuilding",
                            self._name,
                            self._cursor,
                        )
                        self._rebuild("feed_trimmed")
                        return "export"
                    return "snapshot"
            self._rebuild("bootstrap")
            return "export"

    def rebuild(self) -> None:
        """Rebuild the whole index from `store.export()` and follow the feed from its end."""
        self._rebuild("manual")

    def _rebuild(self, reason: str) -> None:
        started = time.monotonic()
        with self._apply_lock:
            head = self._feed_head()
            ids_parts: list[IdArray] = []
            vector_parts: list[FloatArray] = []
            row_parts: list[Rows] = []
            for rows in self._store.export(self._export_batch_size):
                if len(rows) == 0:
                    continue
                usable = self._usable(rows.ids, rows.vectors)
                ids_parts.append(rows.ids[usable])
                vector_parts.append(rows.vectors[usable])
                if self._mirror is not None:
                    row_parts.append(rows.take(usable))
            dim = self._retriever.dim
            ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.uint64)
            vectors = (
                np.concatenate(vector_parts)
                if vector_parts
                else np.zeros((0, dim), dtype=np.float32)
            )
            self._retriever.replace(ids, vectors.astype(np.float32, copy=False))
            if self._mirror is not None:
                self._mirror.replace(Rows.concat(row_parts, dim))
            self._cursor = head
            self._bootstrapped = True
            self._last_applied = time.monotonic()
            self._lag.polled(True)
            self._last_trim_check = self._last_applied
            self._suspect_gap = False
        INDEX_REBUILDS.labels(index=self._name, reason=reason).inc()
        logger.info(
            "index %s: built from the table (%s): %d items in %.2f s, following after %s",
            self._name,
            reason,
            ids.shape[0],
            time.monotonic() - started,
            head,
        )

    def _feed_head(self) -> str:
        """Cursor of the newest feed entry ("0" when the feed is empty)."""
        cursor = "0"
        while True:
            batch = self._store.changes(cursor, count=10_000)
            if not batch:
                return cursor
            cursor = batch[-1].cursor

    def _trim_check_due(self) -> bool:
        since = time.monotonic() - self._last_trim_check
        return self._suspect_gap or since >= self._trim_check_interval_s

    def _cursor_lost(self) -> bool:
        """Whether feed entries after the cursor may have been trimmed away."""
        self._last_trim_check = time.monotonic()
        self._suspect_gap = False
        mine = _cursor_key(self._cursor)
        if mine is None or self._cursor == "0":
            return False
        oldest = self._store.changes("0", count=1)
        if not oldest:
            return False
        first = _cursor_key(oldest[0].cursor)
        if first is None or len(first) != len(mine) or first <= mine:
            return False
        # The oldest entry kept directly follows ours: nothing was lost.
        if len(mine) == 1:
            return first[0] > mine[0] + 1
        return first != (*mine[:-1], mine[-1] + 1)

    # -- following -----------------------------------------------------------------------

    def poll_once(self, block_ms: int | None = None) -> int:
        """Read the feed after the cursor once and apply what it says.

        Bootstraps first if `bootstrap()` was not called.

        Args:
            block_ms: wait up to this long for a first entry; None returns at once.

        Returns:
            Feed entries applied (0 when the feed had nothing new).
        """
        with self._apply_lock:
            if not self._bootstrapped:
                self.bootstrap()
            elif self._trim_check_due() and self._cursor_lost():
                logger.warning(
                    "index %s: cursor %s fell off the trimmed feed; rebuilding",
                    self._name,
                    self._cursor,
                )
                self._rebuild("feed_trimmed")
                return 0
            changes = self._store.changes(self._cursor, count=self._poll_entries, block_ms=block_ms)
            if not changes:
                self._lag.polled(True)
                return 0
            id_parts = [c.ids.astype(np.uint64, copy=False) for c in changes]
            upsert_parts = [
                np.full(c.ids.shape[0], c.op == ChangeOp.UPSERT, dtype=np.bool_) for c in changes
            ]
            all_ids = np.concatenate(id_parts)
            is_upsert = np.concatenate(upsert_parts)
            # The last op of each id wins: take each id's first occurrence in reverse order.
            unique_ids, first_reversed = np.unique(all_ids[::-1], return_index=True)
            last_upsert = is_upsert[::-1][first_reversed]
            to_upsert = unique_ids[last_upsert]
            to_remove = [unique_ids[~last_upsert]]
            upserted = 0
            if to_upsert.shape[0] and self._mirror is not None:
                rows = self._store.read_rows(to_upsert)  # the mirror keeps the times too
                rows = rows.take(self._usable(rows.ids, rows.vectors))
                if len(rows):
                    self._retriever.upsert(rows.ids, rows.vectors)
                    self._mirror.put(rows)
                    upserted = len(rows)
                to_remove.append(np.setdiff1d(to_upsert, rows.ids))
            elif to_upsert.shape[0]:
                found = self._store.lookup(to_upsert)
                vectors = np.asarray(found.vectors, dtype=np.float32)
                keep = np.array(found.exists, dtype=np.bool_)  # a copy: it is narrowed below
                keep[keep] = self._usable(to_upsert[keep], vectors[keep])
                if keep.any():
                    self._retriever.upsert(to_upsert[keep], vectors[keep])
                    upserted = int(keep.sum())
                to_remove.append(to_upsert[~keep])
            removing = np.concatenate(to_remove)
            if removing.shape[0]:
                self._retriever.remove(removing)
                if self._mirror is not None:
                    self._mirror.remove(removing)
            self._cursor = changes[-1].cursor
            self._last_applied = time.monotonic()
            self._lag.polled(len(changes) < self._poll_entries)
        INDEX_CHANGES.labels(index=self._name, op="upsert").inc(upserted)
        INDEX_CHANGES.labels(index=self._name, op="remove").inc(int(removing.shape[0]))
        first = changes[0]
        written = first.written_at if first.written_at is not None else _cursor_time(first.cursor)
        if written is not None:
            INDEX_APPLY_DELAY.labels(index=self._name).observe(max(0.0, time.time() - written))
        return len(changes)

    def _usable(self, ids: IdArray, vectors: FloatArray) -> npt.NDArray[np.bool_]:
        """Rows the index can hold: finite vectors, and not the one id FAISS reserves."""
        usable: npt.NDArray[np.bool_] = np.isfinite(vectors).all(axis=1) & (ids != RESERVED_ID)
        left_out = int(ids.shape[0] - usable.sum())
        if left_out:
            logger.warning(
                "index %s: %d rows left out (non-finite vector or id 2**64-1)",
                self._name,
                left_out,
            )
        return usable

    def start(self) -> None:
        """Bootstrap if needed and follow the feed in a background thread."""
        if self.running:
            return
        if not self._bootstrapped:
            self.bootstrap()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"freshrec-index-follower-{self._name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background thread; returns within about `block_ms` plus one apply."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("index %s: follower did not stop in %.1f s", self._name, timeout_s)
            else:
                self._thread = None

    def _run(self) -> None:
        backoff = 0.1
        last_snapshot = time.monotonic()
        while not self._stop.is_set():
            try:
                self.poll_once(self._block_ms)
                backoff = 0.1
                if (
                    self._snapshot_dir is not None
                    and self._snapshot_interval_s is not None
                    and time.monotonic() - last_snapshot >= self._snapshot_interval_s
                ):
                    last_snapshot = time.monotonic()
                    if self._retriever.version != self._snapshot_version:
                        self.snapshot()
            except Exception as exc:
                # The thread must outlive a Redis outage: log, back off, and check the
                # cursor is still on the feed before the next poll.
                FOLLOW_ERRORS.labels(index=self._name).inc()
                logger.warning(
                    "index %s: follow step failed (retrying in %.1f s): %s",
                    self._name,
                    backoff,
                    exc,
                    exc_info=not isinstance(exc, FreshrecError),
                )
                self._suspect_gap = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> SnapshotManifest:
        """Persist the index and its feed cursor to `snapshot_path` (atomically).

        Returns:
            The manifest written.

        Raises:
            SnapshotError: the follower has no snapshot path, or writing failed.
        """
        directory = self._snapshot_dir
        if directory is None:
            raise SnapshotError("this index follower has no snapshot path")
        with self._snapshot_lock:
            manifest = write_snapshot(
                directory,
                self._store.config.name,
                self._retriever,
                self._apply_lock,
                lambda: self._cursor,
            )
            self._snapshot_version = manifest.version
        logger.info(
            "index %s: snapshot of %d items at cursor %s written to %s",
            self._name,
            manifest.items,
            manifest.cursor,
            directory / manifest.index_file,
        )
        return manifest

    def _load_snapshot(self, directory: Path) -> None:
        manifest = load_snapshot(directory, self._store.config.name, self._retriever)
        if self._mirror is not None:  # the snapshot holds vectors only: rows come from the table
            held = self._retriever.ids()
            parts = [
                self._store.read_rows(held[start : start + self._export_batch_size])
                for start in range(0, held.shape[0], self._export_batch_size)
            ]
            self._mirror.replace(Rows.concat(parts, self._retriever.dim))
        self._cursor = manifest.cursor
        self._snapshot_version = self._retriever.version
        self._last_applied = time.monotonic()
        logger.info(
            "index %s: loaded snapshot of %d items at cursor %s (written %.0f s ago)",
            self._name,
            manifest.items,
            manifest.cursor,
            time.time() - manifest.created_at,
        )

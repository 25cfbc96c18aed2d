"""Everything a ranker process holds between requests, opened and closed as one object.

`RankerRuntime` owns the Redis connection, the embedding tables, the retrieval index and
the follower that keeps it in step with the item table's change feed, the optional row
mirror, the hot-reloaded model, popularity, the `Recommender`, the bounded
`RecommendBatcher` and the sync thread that polls model versions and popularity. A service
opens it in its lifespan and hands each request to it; nothing in it knows about HTTP::

    async with RankerRuntime(RankerConfig(namespace="prod")) as runtime:
        answer = await runtime.recommend(Query("user-1", 10))

Redis being down when the runtime opens is not an error: the index starts empty, the sync
thread starts the follower once Redis answers, and requests meanwhile fail with
`StoreUnavailable` (503). Given prepared `tables` (e.g. on an `InMemoryTableBackend`), the
runtime serves those and opens no Redis connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import numpy as np
import numpy.typing as npt

from freshrec.errors import NotFound, StoreUnavailable
from freshrec.metrics.overview import IndexState, ModelState
from freshrec.models.model import DEFAULT_LIKE_WEIGHT
from freshrec.ranking.batcher import RecommendBatcher
from freshrec.ranking.model_holder import ModelHolder
from freshrec.ranking.popularity import POPULARITY_FEED_LAG, PopularityTracker
from freshrec.ranking.recommender import Query, Recommendation, Recommender
from freshrec.retrieval import IndexFollower, RowMirror, build_retriever
from freshrec.retrieval.config import ExactConfig, FlatConfig, HnswConfig, IvfConfig, SplitConfig
from freshrec.settings import default_table_config_path
from freshrec.table import Tables, TableStats, load_tables, open_backend, open_tables
from freshrec.table.backends import redis_backend_config
from freshrec.table.ids import hash_feature
from freshrec.threads import limit_compute_threads

__all__ = ["RankerConfig", "RankerRuntime", "ServedRow"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerConfig:
    """What a ranker is built from (a service maps its settings onto this).

    Attributes:
        redis_url: Redis holding the tables and models (unused with prepared tables).
        redis_cluster_nodes: Redis Cluster startup nodes; when set, used instead of
            `redis_url`.
        redis_cluster_shards: shards per table on the cluster.
        redis_wait_replicas: replicas a cluster commit waits for (the ranker only reads).
        namespace: key prefix of the deployment in Redis.
        table_config: YAML file defining the embedding tables.
        index: the retriever and its search parameters.
        item_rows: where candidates' rows are read: `mirror` (an in-process copy kept by the
            index follower) or `redis` (one read of all candidates per batch).
        index_snapshot: where the index snapshot is kept; None: no snapshot.
        index_snapshot_interval_s: how often the index snapshot is written.
        sync_interval_s: how often the model version and popularity are checked.
        candidates: items retrieval hands to the ranking model.
        like_weight: the serving order's weight of `log P(like | interact)` against
            `log P(interact)` (see `freshrec.models.model`).
        max_batch: most requests computed together.
        max_queue: most requests waiting for the next batch; more are refused (`Overloaded`).
        compute_threads: PyTorch / BLAS / OpenMP threads of the process.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster_nodes: str = ""
    redis_cluster_shards: int = 12
    redis_wait_replicas: int = 0
    namespace: str = "freshrec"
    table_config: Path = field(default_factory=default_table_config_path)
    index: ExactConfig | FlatConfig | IvfConfig | HnswConfig | SplitConfig = field(
        default_factory=FlatConfig
    )
    item_rows: Literal["mirror", "redis"] = "mirror"
    index_snapshot: Path | None = None
    index_snapshot_interval_s: float = 60.0
    sync_interval_s: float = 0.2
    candidates: int = 500
    like_weight: float = DEFAULT_LIKE_WEIGHT
    max_batch: int = 32
    max_queue: int = 64
    compute_threads: int = 1


@dataclass(frozen=True)
class ServedRow:
    """One table row as the ranker reads it.

    Attributes:
        table: the table's name.
        id: the row's 64-bit id (the raw id hashed for this table).
        vector: the embedding, shape `(D,)`.
        event_time: last update in event time (unix s).
        wall_time: last update in wall time (unix s).
        count: occurrences seen.
        age_s: wall-clock seconds since the last update.
    """

    table: str
    id: int
    vector: npt.NDArray[np.float32]
    event_time: float
    wall_time: float
    count: int
    age_s: float


class RankerRuntime:
    """The ranker's core: tables, index, model, recommender and their background threads.

    Args:
        config: what to build.
        tables: prepared tables (e.g. on an in-memory backend); None opens Redis at
            `config.redis_url` and the tables of `config.table_config` on it. The runtime
            closes only what it opened.
    """

    def __init__(self, config: RankerConfig, tables: Tables | None = None) -> None:
        self.config = config
        self._owns_backend = tables is None
        if tables is None:
            # a bounded socket timeout: a stalled Redis becomes a 503, not a hung request
            backend = open_backend(
                redis_backend_config(
                    config.redis_url,
                    config.namespace,
                    cluster_nodes=config.redis_cluster_nodes,
                    shards=config.redis_cluster_shards,
                    wait_replicas=config.redis_wait_replicas,
                    socket_timeout_s=2.0,
                )
            )
            tables = open_tables(load_tables(config.table_config), backend)
        self.tables = tables
        item = tables.item
        self.retriever = build_retriever(config.index, item.config.dim)
        mirror = RowMirror(self.retriever.dim) if config.item_rows == "mirror" else None
        self.follower = IndexFollower(
            item,
            self.retriever,
            config.index_snapshot,
            snapshot_interval_s=config.index_snapshot_interval_s,
            mirror=mirror,
        )
        self.models = ModelHolder(tables.backend)
        self.popularity = PopularityTracker(item)
        POPULARITY_FEED_LAG.set_function(self.popularity.feed_lag)
        self.recommender = Recommender(
            self.tables,
            self.retriever,
            self.models,
            self.popularity,
            candidates=config.candidates,
            like_weight=config.like_weight,
            item_rows=mirror,
        )
        self.batcher = RecommendBatcher(
            self.recommender.recommend_batch,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
        )
        self._stop = threading.Event()
        self._sync_thread = threading.Thread(
            target=self._sync_loop, name="ranker-sync", daemon=True
        )

    async def open(self) -> None:
        """Fill the index and load the model when Redis answers, and start the sync thread."""
        limit_compute_threads(self.config.compute_threads)
        try:
            await asyncio.to_thread(self.follower.start)
            await asyncio.to_thread(self.models.refresh)
        except StoreUnavailable as exc:
            logger.warning("index starts empty until Redis answers: %s", exc)
        self._sync_thread.start()

    async def close(self) -> None:
        """Answer queued requests, stop the threads, write a last snapshot, close Redis."""
        self._stop.set()
        await self.batcher.close()
        self.follower.stop()
        if self._sync_thread.is_alive():
            self._sync_thread.join(timeout=5)
        if self.config.index_snapshot is not None:
            try:
                self.follower.snapshot()
            except Exception:  # a failed snapshot must not keep the process from stopping
                logger.exception("final index snapshot failed")
        if self._owns_backend:
            self.tables.backend.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _sync_loop(self) -> None:
        """Model versions and popularity, polled beside the index follower (started late if
        Redis was down when the runtime opened)."""
        while not self._stop.wait(self.config.sync_interval_s):
            try:
                if not self.follower.running:
                    self.follower.start()
                self.models.refresh()
                self.popularity.drain()
            except StoreUnavailable as exc:
                logger.warning("sync paused, Redis unavailable: %s", exc)
            except Exception:  # the sync thread must outlive any single bad poll
                logger.exception("sync iteration failed")

    async def recommend(self, query: Query) -> Recommendation:
        """The answer to `query`, computed with the requests around it.

        Raises:
            Overloaded: the batcher's bound is reached.
            StoreUnavailable: Redis did not answer.
        """
        return await self.batcher.recommend(query)

    async def read_row(self, table: str, raw_id: str) -> ServedRow:
        """One row of `table` by its raw id (hashed for that table).

        Raises:
            NotFound: no such table, or no row for `raw_id`.
            StoreUnavailable: Redis did not answer.
        """
        store = self.tables.get(table)
        if store is None:
            raise NotFound(f"no table {table!r}; tables: {sorted(self.tables.names())}")
        key = hash_feature(table, raw_id)
        rows = await asyncio.to_thread(store.read_rows, np.array([key], dtype=np.uint64))
        if len(rows) == 0:
            raise NotFound(f"no row for {raw_id!r} in table {table!r}")
        wall_time = float(rows.wall_time[0])
        return ServedRow(
            table=table,
            id=int(key),
            vector=rows.vectors[0],
            event_time=float(rows.event_time[0]),
            wall_time=wall_time,
            count=int(rows.count[0]),
            age_s=max(0.0, time.time() - wall_time),
        )

    async def readiness(self) -> dict[str, bool]:
        """Whether Redis answers (when the runtime opened it) and the index follows its feed."""
        checks: dict[str, bool] = {}
        if self._owns_backend:
            checks["redis"] = await asyncio.to_thread(self.tables.backend.ping)
        checks["index"] = self.follower.running
        return checks

    def index_state(self) -> IndexState:
        """The retrieval index now."""
        return IndexState(
            items=len(self.retriever),
            version=self.retriever.version,
            age_s=self.follower.age_s,
            following=self.follower.running,
        )

    def model_state(self) -> ModelState | None:
        """The served model; None before the first publish."""
        current = self.models.current
        return None if current is None else ModelState(current.version, current.published_at)

    def table_stats(self) -> dict[str, TableStats]:
        """Each table's counters (reads Redis)."""
        return {store.config.name: store.stats() for store in self.tables}

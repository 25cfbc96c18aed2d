"""Answering concurrent requests together, on the event loop.

Per request, the fixed costs of serving (a Redis round trip for the user row, a FAISS call,
a forward pass, metrics) dwarf the arithmetic. Requests that arrive while a batch computes
wait for the next one, which takes all of them (up to `max_batch`) at once: under light load
a batch is a single request and nothing waits for company; under heavy load the fixed costs
are paid once per batch instead of once per request.

The batch computes on the event loop's own thread. A worker thread would have to win the
GIL back from a busy event loop after every Redis read, FAISS call or tensor operation that
released it (up to the interpreter's 5 ms switch interval each time), which costs more than
the computation; while a batch computes, new requests wait in the socket buffers and are
read as soon as it ends.

The batcher bounds its own work: at most `max_batch` requests computing and `max_queue`
waiting for the next batch. A request beyond that is refused at once with `Overloaded`
(429) rather than joining an ever longer queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from prometheus_client import Histogram

from freshrec.errors import Overloaded
from freshrec.ranking.recommender import Query, Recommendation

__all__ = ["RecommendBatcher"]

BATCH_SIZE = Histogram(
    "freshrec_ranker_batch_requests",
    "Requests answered together by one batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


_GATHER_TURNS = 4


class RecommendBatcher:
    """Queues queries and answers them in batches on the running event loop."""

    def __init__(
        self,
        compute: Callable[[Sequence[Query]], list[Recommendation]],
        *,
        max_batch: int = 32,
        max_queue: int = 64,
    ) -> None:
        """Create a batcher; its batch task starts with the first request.

        Args:
            compute: answers a batch of queries, one recommendation per query, in order
                (`Recommender.recommend_batch`).
            max_batch: most queries computed together.
            max_queue: most queries waiting for the next batch besides those computing;
                more are refused with `Overloaded`.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self._compute = compute
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._admitted = 0
        self._waiting: deque[tuple[Query, asyncio.Future[Recommendation]]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def admitted(self) -> int:
        """Requests computing or waiting right now."""
        return self._admitted

    async def recommend(self, query: Query) -> Recommendation:
        """The answer to `query`, computed in the next batch.

        Raises:
            RuntimeError: the batcher is closed.
            Overloaded: `max_batch + max_queue` requests are already computing or waiting.
            Exception: whatever computing the batch raised (e.g. `StoreUnavailable`).
        """
        if self._closed:
            raise RuntimeError("the recommendation batcher is closed")
        if self._admitted >= self._max_batch + self._max_queue:
            raise Overloaded(
                f"{self._admitted} requests in flight or queued (bound "
                f"{self._max_batch} + {self._max_queue})"
            )
        self._admitted += 1
        try:
            return await self._enqueue(query)
        finally:
            self._admitted -= 1

    async def _enqueue(self, query: Query) -> Recommendation:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[Recommendation] = asyncio.get_running_loop().create_future()
        self._waiting.append((query, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Answer what is queued, then stop the batch task."""
        self._closed = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task

    def _answer_next_batch(self) -> None:
        n = min(self._max_batch, len(self._waiting))
        batch = [self._waiting.popleft() for _ in range(n)]
        BATCH_SIZE.observe(n)
        results: Sequence[Recommendation | BaseException]
        try:
            results = self._compute([query for query, _ in batch])
        except Exception as exc:  # the same failure answers every request of the batch
            results = [exc] * n
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away and the request was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run(self) -> None:
        assert self._wake is not None
        while not (self._closed and not self._waiting):
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                # a few loop turns first: requests already read (whose handlers need a turn
                # or two to reach `recommend`) join this batch; microseconds when idle
                for _ in range(_GATHER_TURNS):
                    await asyncio.sleep(0)
                self._answer_next_batch()

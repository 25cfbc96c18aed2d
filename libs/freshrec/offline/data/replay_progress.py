"""`ReplayProgress`: the replay's progress line on stderr."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

__all__ = ["ExtraColumns", "ReplayProgress"]

logger = logging.getLogger(__name__)

ExtraColumns = Callable[[], Mapping[str, str]]
"""Returns extra `{name: text}` for the progress line (e.g. the trainer's lag)."""


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or 0.0
        return Text(f"{speed:,.0f} events/s", style="progress.data.speed")


class ReplayProgress:
    """A rich progress line on stderr: events sent, events/s, rejected, extra columns.

    Args:
        enabled: False shows nothing (every method is then a no-op).
        total: events to send, for a bar and a percentage; None shows counts only.
        extra: called at most once a second for more columns.
    """

    def __init__(self, enabled: bool, total: int | None, extra: ExtraColumns | None) -> None:
        self._extra = extra
        self._extra_at = 0.0
        self._progress: Progress | None = None
        self._task = TaskID(0)
        if not enabled:
            return
        columns: list[ProgressColumn | str] = [SpinnerColumn()]
        if total is not None:
            columns += [BarColumn(), TextColumn("{task.percentage:>5.1f}%")]
        columns += [
            TextColumn("{task.completed:,.0f} events"),
            _RateColumn(),
            TextColumn("{task.fields[rejected]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[extra]}"),
        ]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._task = self._progress.add_task("replay", total=total, rejected="", extra="")

    def __enter__(self) -> ReplayProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._update_extra(force=True)
            self._progress.stop()

    def update(self, sent: int, rejected: int) -> None:
        """Show `sent` and `rejected` events so far."""
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=sent,
            rejected=f"{rejected:,} rejected" if rejected else "",
        )
        self._update_extra()

    def _update_extra(self, force: bool = False) -> None:
        if self._progress is None or self._extra is None:
            return
        now = time.monotonic()
        # The callback may ask another service over the network: at most once a second.
        if not force and now - self._extra_at < 1.0:
            return
        self._extra_at = now
        try:
            text = "  ".join(f"{k}: {v}" for k, v in self._extra().items())
        except Exception as exc:  # a broken status callback must not stop a replay
            logger.debug("progress callback failed: %s", exc)
            text = "status unavailable"
        self._progress.update(self._task, extra=text)

"""What a replay into the ingest API did: `ReplayReport`, its `Rejection`s, `ReplayAborted`."""

from __future__ import annotations

from dataclasses import dataclass, field

from freshrec.errors import DependencyUnavailable

__all__ = ["MAX_KEPT_REJECTIONS", "Rejection", "ReplayAborted", "ReplayReport"]

MAX_KEPT_REJECTIONS = 1000
"""Rejections kept with their details; beyond this they are only counted."""


@dataclass(frozen=True)
class Rejection:
    """One event the server refused.

    Attributes:
        index: position of the event in the replayed stream (0-based).
        event_id: the event's `event_id`, when it has one.
        field: the offending field inside the event (`type`, `timestamp`, ...), or "".
        reason: the server's explanation.
    """

    index: int
    event_id: str | None
    field: str
    reason: str


@dataclass
class ReplayReport:
    """What a replay did. `read == sent + rejected + unsent` always holds.

    Attributes:
        read: events taken from the source.
        sent: events in batches the server answered 2xx.
        accepted: sum of the server's `accepted` counts.
        rejected: events refused (422, or too large on their own).
        unsent: events read but neither sent nor rejected (only after an abort).
        rejections: the first `MAX_KEPT_REJECTIONS` rejections with their reasons.
        batches: requests answered 2xx.
        retries: requests retried (429/5xx/connection errors).
        elapsed_s: wall time of the replay.
        max_behind_s: worst delay of a send behind its paced schedule (0 when unpaced).
        first_event_time: event time of the first event with a timestamp.
        last_event_time: event time of the last event with a timestamp.
    """

    read: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    unsent: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    max_behind_s: float = 0.0
    first_event_time: float | None = None
    last_event_time: float | None = None

    @property
    def events_per_s(self) -> float:
        """Events sent per second of wall time."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"read {self.read:,}, sent {self.sent:,} (accepted {self.accepted:,}), "
            f"rejected {self.rejected:,}, in {self.batches:,} batches, {self.retries:,} retries, "
            f"{self.elapsed_s:.1f} s, {self.events_per_s:,.0f} events/s"
        )
        if self.unsent:
            text += f", NOT SENT {self.unsent:,}"
        if self.max_behind_s > 0.0:
            text += f", at most {self.max_behind_s:.2f} s behind schedule"
        return text


class ReplayAborted(DependencyUnavailable):
    """The ingest API kept refusing a batch; `report` says what was and was not sent."""

    def __init__(self, message: str, report: ReplayReport) -> None:
        super().__init__(f"{message} ({report.summary()})")
        self.report = report

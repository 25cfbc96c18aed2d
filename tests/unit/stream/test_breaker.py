"""The producer's circuit breaker: fail at once during an outage, probe one call at a time."""

from __future__ import annotations

from freshrec.stream.producer import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_breaker_admits_every_call() -> None:
    breaker = CircuitBreaker(1.0, Clock())
    assert all(breaker.admit() for _ in range(5))


def test_after_a_failure_calls_fail_at_once_until_the_backoff_passes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1.0, clock)
    breaker.failed("timed out")
    assert breaker.reason == "timed out"
    assert not breaker.admit()
    clock.now += 0.99
    assert not breaker.admit()
    clock.now += 0.02
    assert breaker.admit()  # the probe
    assert not breaker.admit(), "a second call waits for the probe's outcome"


def test_a_failed_probe_restarts_the_backoff_and_a_good_one_closes_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1.0, clock)
    breaker.failed("down")
    clock.now += 2
    assert breaker.admit()
    breaker.failed("still down")
    assert not breaker.admit()
    clock.now += 1.5
    assert breaker.admit()
    breaker.succeeded()
    assert breaker.reason == ""
    assert all(breaker.admit() for _ in range(3))

"""Benchmarks: each module measures one component, prints figures and writes JSON.

Run one with ``freshrec bench <name>`` (all but ``ranker`` also with ``python -m
freshrec.offline.bench.<name> --help``). A benchmark that needs running services is handed their
URLs; the command line starts them. Benchmarks never run inside the test suite; tests never
assert on wall-clock speed.
"""

from __future__ import annotations

__all__: list[str] = []

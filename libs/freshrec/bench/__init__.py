"""Benchmarks: each module measures one component, prints figures and writes JSON.

Run one with ``python -m freshrec.bench.<name> --help``. Benchmarks never run inside the test
suite; tests never assert on wall-clock speed.
"""

from __future__ import annotations

__all__: list[str] = []

"""`read_event_file`: events from a JSON Lines file, plain or gzipped, or standard input."""

from __future__ import annotations

import contextlib
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from freshrec.errors import InvalidInput

__all__ = ["read_event_file"]


def read_event_file(path: Path | str) -> Iterator[dict[str, Any]]:
    """Events from a JSON Lines file (one object per line), lazily.

    Blank lines are skipped; `.gz` files are decompressed; `-` reads standard input.

    Args:
        path: the file.

    Yields:
        Each event object.

    Raises:
        InvalidInput: a line is not a JSON object (the message names the line).
    """
    name = str(path)
    with contextlib.ExitStack() as stack:
        stream: IO[bytes] | gzip.GzipFile
        if name == "-":
            stream = sys.stdin.buffer
        elif name.endswith(".gz"):
            stream = stack.enter_context(gzip.open(name, "rb"))
        else:
            stream = stack.enter_context(Path(name).open("rb"))
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"{name} line {number}: not JSON ({exc})") from exc
            if not isinstance(event, dict):
                raise InvalidInput(f"{name} line {number}: expected a JSON object")
            yield event
